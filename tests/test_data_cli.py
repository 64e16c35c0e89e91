"""`cnnlab data check` and `cnnlab data preview` from the command line."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

import badimages as bi
from cnnlab.cli import main
from imagegen import make_image_folder, make_split_folder


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_check_json_counts_bad_files_leaking_duplicates_and_imbalance(tmp_path, capsys):
    root = make_split_folder(tmp_path / "d", n={"train": 12, "val": 3, "test": 3}, size=(16, 16))
    for i in range(7):  # vbar: 5 training images against hbar's 12
        (root / "train" / "vbar" / f"vbar_{i + 5:03d}.png").unlink()
    shutil.copy(root / "train" / "hbar" / "hbar_000.png", root / "test" / "hbar" / "copy.png")  # a leak
    bad = bi.write_bad(root / "train" / "hbar", ["truncated_jpeg", "zero_bytes"])
    Image.new("L", (20, 10), 128).save(root / "val" / "vbar" / "gray.png")

    code, out, _ = run(capsys, "data", "check", str(root), "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["layout"] == "split-folders"
    assert data["classes"] == {"hbar": {"train": 12, "val": 3, "test": 4}, "vbar": {"train": 5, "val": 4, "test": 3}}
    assert sorted(b["path"] for b in data["bad_files"]) == sorted(str(p) for p in bad.values())
    assert {b["reason"].split()[0] for b in data["bad_files"]} == {"corrupt", "empty"}
    assert [sorted(p.rsplit("/", 3)[-3] for p in g) for g in data["duplicates"]] == [["test", "train"]]
    text = " ".join(data["warnings"])
    assert "imbalance" in text and "'hbar' has 12" in text and "leak" in text
    assert "2 file(s) cannot be read" in text and "1 grayscale image(s)" in text
    assert data["modes"] == {"RGB": 30, "L": 1} and data["sizes"]["width"]["max"] == 20


def test_check_table_and_strict_exit_code(tmp_path, capsys):
    root = make_image_folder(tmp_path / "d", n=12, size=(16, 16))
    code, out, _ = run(capsys, "data", "check", str(root))
    assert code == 0 and "hbar" in out and "no problems found" in out and "layout: folders" in out
    bi.write_bad(root / "vbar", ["text_as_jpg"])
    code, out, _ = run(capsys, "data", "check", str(root), "--strict", "--workers", "2")
    assert code == 1 and "notes.jpg" in out and "not an image" in out
    (root / "ship").mkdir()  # an empty class folder was dropped without a word
    code, out, _ = run(capsys, "data", "check", str(root), "--strict")
    assert code == 1 and "ship: a class folder with no images" in out.replace("\n", "")


def test_check_user_errors_exit_2_with_one_line(tmp_path, capsys):
    code, out, err = run(capsys, "data", "check", str(tmp_path / "missing"))
    assert code == 2 and err.strip().count("\n") == 0 and "missing: no such file or folder" in err


def test_preview_writes_a_grid(tmp_path, capsys):
    root = make_image_folder(tmp_path / "d", n=6, size=(24, 24))
    out_png = tmp_path / "out" / "grid.png"
    code, out, _ = run(capsys, "data", "preview", str(root), "--augment", "strong,fill=wrap",
                       "--out", str(out_png), "--size", "32", "--samples", "3", "--copies", "4")
    assert code == 0 and str(out_png) in out
    with Image.open(out_png) as im:
        w, h = im.size
    assert w > h > 100  # 3 rows x 5 columns
    code, _, err = run(capsys, "data", "preview", str(root), "--augment", "flip,twirl=3", "--out", str(out_png))
    assert code == 2 and "unknown augmentation option 'twirl'" in err


@pytest.mark.parametrize("argv", [["data"], ["data", "check"], ["data", "preview"]])
def test_help_has_examples(capsys, argv):
    with pytest.raises(SystemExit):
        main(argv + ["--help"])
    assert "examples:" in capsys.readouterr().out


def test_cache_lists_and_clears_entries(tmp_path, capsys, monkeypatch):
    from cnnlab.data.datasets import discover
    from cnnlab.data.loader import make_loader

    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = make_image_folder(tmp_path / "d", n=4, size=(16, 16))
    loader = make_loader(discover(root).splits["train"], size=8)
    code, out, _ = run(capsys, "data", "cache")
    assert code == 0 and "8x8x3-stretch-v1" in out and loader.cache_path.name in out
    code, out, _ = run(capsys, "data", "cache", "--clear", "--older-than", "1")
    assert "deleted 0 cache entries" in out and loader.cache_path.exists()  # used just now
    code, out, _ = run(capsys, "data", "cache", "--clear")
    assert "deleted 1 cache entry" in out and not loader.cache_path.exists()
    assert "the cache is empty" in run(capsys, "data", "cache")[1]
