"""A real dataset salted with every kind of bad and odd file, through every command.

The corpus (tests/badimages.py) is mixed into a learnable two-class folder: the BAD
files (truncated JPEG and PNG, zero bytes, text named .jpg, unknown bytes, PNG with a bad
CRC in the data and in the header, a real decompression bomb, a header claiming 10^10
pixels) go into ``hbar/``; the ODD but valid ones (16-bit PNG and TIFF, CMYK JPEG,
palette with transparency, animated GIF, EXIF-rotated JPEG, 1x1 and 300x1 images,
grayscale among RGB...) into ``vbar/``; plus a file nobody may read, two symbolic-link
loops (``hbar/again -> ..`` and ``hbar/self.jpg -> self.jpg``), a named pipe and a link to
``/dev/zero`` named like images (reading either naively never returns), and file names
that are not UTF-8 or hold a newline.

Then ``data check`` must name every bad file with its reason and none of the odd ones,
``train`` must finish and list what it skipped, and ``evaluate`` and ``predict`` must
report each unreadable file and carry on. No command may crash or print a traceback.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

import badimages as bi
from cnnlab.cli import main
from imagegen import make_image_folder
from tinymodels import TINY

GOOD_PER_CLASS = 8


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """(root, {bad path: word its reason must contain}, [odd paths that must be used])."""
    root = make_image_folder(tmp_path / "data", n=GOOD_PER_CLASS, size=(32, 32))
    bad = {str(p): bi.BAD_REASONS[name] for name, p in bi.write_bad(root / "hbar").items()}
    odd = [str(p) for p in bi.write_odd(root / "vbar").values()]
    trouble = bi.write_fs_trouble(root / "hbar")
    bi.deny_read(trouble["unreadable"], monkeypatch)
    bad[str(trouble["unreadable"])] = "ermission denied"
    bad[str(trouble["file_loop"])] = "symbolic links"
    bad[str(trouble["pipe"])] = "not a regular file"
    bad["/dev/zero"] = "not a regular file"  # what hbar/endless.png links to: datasets resolve links
    names = bi.odd_names(root / "vbar")  # not UTF-8, or with a newline
    odd += [str(names["latin1_name"]), str(names["newline_name"])]
    bad[str(names["latin1_name_broken"])] = "corrupt PNG"
    return root, bad, odd


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV cnnlab wrote; a file name that is not UTF-8 comes back as Python names it."""
    with path.open(newline="", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def as_named(bad: dict[str, str], root: Path) -> dict[str, str]:
    """The same files as `predict` names them: the link hbar/endless.png, not /dev/zero."""
    return {(str(root / "hbar" / "endless.png") if p == "/dev/zero" else p): w for p, w in bad.items()}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return code, out.out, out.err


def assert_reasons(found: dict[str, str], expected: dict[str, str]) -> None:
    """Exactly the expected files, each with a one-line reason containing its word."""
    assert sorted(found) == sorted(expected)
    for path, word in expected.items():
        assert word in found[path] and "\n" not in found[path], (path, found[path])


def test_data_check_lists_every_bad_file_with_its_reason(corpus, capsys):
    root, bad, odd = corpus
    code, out, _ = run_cli(capsys, "data", "check", root, "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert_reasons({b["path"]: b["reason"] for b in report["bad_files"]}, bad)
    # Every usable file is counted once: the loop `hbar/again -> ..` adds nothing.
    counts = report["classes"]
    assert sum(counts["hbar"].values()) == GOOD_PER_CLASS
    assert sum(counts["vbar"].values()) == GOOD_PER_CLASS + len(odd)
    assert report["ignored"] == {"symlink_loop": 1}
    text = " ".join(report["warnings"])
    assert f"{len(bad)} file(s) cannot be read" in text and "grayscale image(s) among colour" in text

    code, out, _ = run_cli(capsys, "data", "check", root)  # the table a person reads
    assert code == 0
    for path in bad:  # a name that is not UTF-8 is shown escaped: bro\udce9ken.png
        assert Path(path).name.encode("utf-8", "backslashreplace").decode() in out
    assert "decompression bomb refused" in out and "permission denied" in out.lower()


def test_train_completes_and_lists_what_it_skipped(corpus, tmp_path, capsys):
    root, bad, odd = corpus
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    code, out, err = run_cli(capsys, "train", root, "--model", tmp_path / "tiny.yaml", "--epochs", "2",
                             "--batch-size", "8", "--workers", "0", "--cache-dir", tmp_path / "cache",
                             "--out", tmp_path / "runs", "--name", "salted", "--no-evaluate", "--device", "cpu")
    assert code == 0, err
    run = tmp_path / "runs" / "salted"
    skipped = {r["path"]: r["reason"] for r in read_csv(run / "skipped.csv")}
    assert_reasons(skipped, bad)
    # Said on the console too, per split: "cnnlab: skipped 4 of 9 files that cannot be read:".
    assert sum(int(n) for n in re.findall(r"cnnlab: skipped (\d+) of \d+ files", err)) == len(bad)
    split = json.loads((run / "split.json").read_text())["splits"]
    used = [p for items in split.values() for p, _ in items]
    assert len(used) == len(set(used)) == 2 * GOOD_PER_CLASS + len(odd) + len(bad)
    with (run / "history.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    assert (run / "weights" / "best.safetensors").is_file()


def test_evaluate_reports_each_unreadable_file_and_carries_on(corpus, trained_run, tmp_path, capsys):
    root, bad, odd = corpus
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    code, out, _ = run_cli(capsys, "evaluate", run, "--data", root, "--no-report", "--device", "cpu")
    assert code == 0 and f"{len(bad)} image(s) could not be read" in out
    m = json.loads((run / "eval" / "data" / "metrics.json").read_text())
    assert_reasons({u["path"]: u["error"] for u in m["unreadable"]}, bad)
    assert m["n_images"] == 2 * GOOD_PER_CLASS + len(odd)
    rows = {r["path"]: r for r in read_csv(run / "eval" / "data" / "predictions.csv")}
    assert all(rows[p]["error"] and not rows[p]["predicted"] for p in bad)
    assert all(rows[p]["predicted"] in ("hbar", "vbar") for p in odd)


def test_predict_reports_each_unreadable_file_and_carries_on(corpus, trained_run, tmp_path, capsys):
    root, bad, odd = corpus
    out_file = tmp_path / "preds.json"
    code, _, err = run_cli(capsys, "predict", trained_run, root, "--out", out_file, "--device", "cpu")
    assert code == 0
    rows = {r["path"]: r for r in json.loads(out_file.read_text())}
    assert_reasons({p: r["error"] for p, r in rows.items() if r["error"]}, as_named(bad, root))
    assert all(rows[p]["label"] in ("hbar", "vbar") and rows[p]["confidence"] > 0 for p in odd)
    assert len(rows) == 2 * GOOD_PER_CLASS + len(odd) + len(bad)
    assert f"{len(bad)} of {len(rows)} files could not be read" in err

    # A recursive glob runs round the folder loop (hbar/again/hbar/again/...): each file once.
    code, out, _ = run_cli(capsys, "predict", trained_run, f"{root}/**/*.png", "--out", tmp_path / "g.csv",
                           "--device", "cpu")
    assert code == 0
    names = [Path(r["path"]).resolve() for r in read_csv(tmp_path / "g.csv")]
    assert len(names) == len(set(names)) == len([p for p in rows if p.endswith(".png")])
