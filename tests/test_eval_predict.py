"""`cnnlab predict` / cnnlab.predict on a mixed folder of real images and broken files."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.eval.predict import collect_files, predict


@pytest.fixture
def mixed(trained_run, tmp_path) -> Path:
    """Test images of the trained run in several formats and modes, a sub-folder, and junk."""
    split = json.loads((trained_run / "split.json").read_text())
    split = split.get("splits", split)
    hbar = [p for p, y in split["test"] if y == 0]
    vbar = [p for p, y in split["test"] if y == 1]
    root = tmp_path / "mixed"
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(hbar[0], root / "h0.png")
    Image.open(hbar[1]).save(root / "h1.bmp")
    Image.open(hbar[2]).convert("RGBA").save(root / "sub" / "h2_rgba.png")
    Image.open(vbar[0]).save(root / "v0.jpg", quality=95)
    shutil.copy(vbar[1], root / "sub" / "deeper" / "v1.png")
    Image.open(vbar[2]).save(root / "sub" / "v2.webp", lossless=True)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")  # unreadable
    (root / "notes.txt").write_text("not an image")  # not an image file: not listed
    shutil.copy(hbar[3], root / ".hidden.png")  # hidden: not listed
    return root


EXPECTED = {"h0.png": "hbar", "h1.bmp": "hbar", "h2_rgba.png": "hbar", "v0.jpg": "vbar", "v1.png": "vbar",
            "v2.webp": "vbar"}


def test_mixed_folder_with_one_unreadable_file(trained_run, mixed):
    rows = predict(trained_run, [mixed], top_k=2, device="cpu")
    names = [Path(r["path"]).name for r in rows]
    assert sorted(names) == sorted([*EXPECTED, "broken.jpg"])
    for r in rows:
        name = Path(r["path"]).name
        if name == "broken.jpg":
            assert r["label"] == "" and r["confidence"] is None and r["top_k"] == [] and r["error"]
            continue
        assert r["error"] == ""
        assert r["label"] == EXPECTED[name], name  # the model learned the bars
        assert [t["label"] for t in r["top_k"]][0] == r["label"]
        probs = [t["probability"] for t in r["top_k"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert r["confidence"] == probs[0] > 0.5


def test_batching_tta_and_the_python_api(trained_run, mixed, tmp_path):
    one_by_one = cnnlab.predict(trained_run, [mixed], top_k=2, batch_size=1, device="cpu")
    batched = predict(trained_run, [mixed], top_k=2, batch_size=64, device="cpu")
    for a, b in zip(one_by_one, batched):
        assert a["path"] == b["path"] and a["label"] == b["label"]
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)
    # TTA is the mean of the image's and its mirror image's probabilities.
    src = mixed / "h0.png"
    flipped = tmp_path / "h0_flipped.png"
    Image.fromarray(np.asarray(Image.open(src))[:, ::-1]).save(flipped)

    def p_vbar(row):
        return next(t["probability"] for t in row["top_k"] if t["label"] == "vbar")

    plain, mirror = predict(trained_run, [src, flipped], top_k=2, device="cpu")
    (tta,) = predict(trained_run, src, top_k=2, tta=True, device="cpu")
    assert p_vbar(tta) == pytest.approx((p_vbar(plain) + p_vbar(mirror)) / 2, abs=1e-5)


def test_collect_files_globs_and_missing_paths(mixed):
    top_png = collect_files([str(mixed / "*.png")])
    assert [Path(p).name for p, _ in top_png] == ["h0.png"]
    deep = collect_files([str(mixed / "**" / "*.png")])
    assert {Path(p).name for p, _ in deep} == {"h0.png", "h2_rgba.png", "v1.png"}
    found = collect_files([mixed / "h0.png", mixed, mixed / "nope.png", str(mixed / "*.gif")])
    assert found[0] == (str(mixed / "h0.png"), "")
    assert len(found) == 9 and len({p for p, _ in found}) == 9  # h0.png once, not twice
    assert dict(found)[str(mixed / "nope.png")] == "no such file or folder"
    assert dict(found)[str(mixed / "*.gif")] == "no file matches this pattern"


def test_no_image_at_all_is_an_error(trained_run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnlabError, match="no image files"):
        predict(trained_run, [tmp_path / "empty"], device="cpu")
    with pytest.raises(CnnlabError, match="--top-k"):
        predict(trained_run, [tmp_path], top_k=0, device="cpu")


def test_cli_csv_json_and_table(trained_run, mixed, tmp_path, capsys):
    out_csv = tmp_path / "preds.csv"
    assert main(["predict", str(trained_run), str(mixed), "--top-k", "5", "--out", str(out_csv)]) == 0
    err = capsys.readouterr().err
    assert "1 of 7 files could not be read" in err
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "confidence", "top1_label", "top1_prob", "top2_label",
                             "top2_prob", "error"]  # top-k is capped at the 2 classes
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["broken.jpg"]["error"] and by_name["broken.jpg"]["label"] == ""
    assert by_name["v0.jpg"]["label"] == "vbar" and float(by_name["v0.jpg"]["confidence"]) > 0.5

    out_json = tmp_path / "preds.json"
    assert main(["predict", str(trained_run), str(mixed / "h0.png"), "--out", str(out_json)]) == 0
    (row,) = json.loads(out_json.read_text())
    assert f"1 prediction written to {out_json}" in capsys.readouterr().err
    assert row["label"] == "hbar" and row["error"] == "" and len(row["top_k"]) == 2

    assert main(["predict", str(trained_run), str(mixed)]) == 0
    table = capsys.readouterr().out
    assert "h1.bmp" in table and "broken.jpg" in table and "hbar" in table

    assert main(["predict", str(trained_run), str(mixed), "--out", str(tmp_path / "p.txt")]) == 2
    assert ".csv or .json" in capsys.readouterr().err
    assert not (tmp_path / "p.txt").exists()
    assert main(["predict", str(trained_run), str(mixed / "broken.jpg")]) == 2
    assert "broken.jpg could not be read: " in capsys.readouterr().err
    os.mkfifo(tmp_path / "pipe.jpg")  # named on its own, a pipe gets the reason it gets in a folder
    assert main(["predict", str(trained_run), str(tmp_path / "pipe.jpg")]) == 2
    assert "pipe.jpg could not be read: not a regular file (a pipe, socket or device)" in capsys.readouterr().err


def test_a_weights_file_on_its_own(trained_run, mixed, tmp_path):
    """A shared best.safetensors, away from its run directory, predicts the same."""
    alone = tmp_path / "shared" / "bars.safetensors"
    alone.parent.mkdir()
    shutil.copy(trained_run / "weights" / "best.safetensors", alone)
    from_run = predict(trained_run, [mixed / "h0.png", mixed / "v0.jpg"], device="cpu")
    from_file = predict(alone, [mixed / "h0.png", mixed / "v0.jpg"], device="cpu")
    assert [r["label"] for r in from_file] == [r["label"] for r in from_run] == ["hbar", "vbar"]
    assert [r["confidence"] for r in from_file] == pytest.approx([r["confidence"] for r in from_run])
    assert main(["predict", str(alone), str(mixed / "h1.bmp")]) == 0


def test_decoding_side_by_side_gives_what_one_thread_gives(trained_run, mixed):
    """With the model on a GPU each batch is decoded by several threads; the files must come
    back in their order, the unreadable one named at its own index, the probabilities the
    one-thread decode gives (here forced on the CPU: decoders=3 against decoders=1)."""
    from cnnlab.eval.infer import predict_files
    from cnnlab.data.preprocess import Preprocessor
    from cnnlab.run import Run

    model, meta = Run(trained_run).load_model("best")
    pre = Preprocessor.from_meta(meta)
    files = [f for f, error in collect_files([mixed]) if not error] * 3  # 21 files in batches of 4
    one = predict_files(model, pre, files, batch_size=4, device="cpu", decoders=1)
    three = predict_files(model, pre, files, batch_size=4, device="cpu", decoders=3)
    assert one[1] == three[1] and one[2] == three[2]
    assert sorted(files[i] for i in one[2]) == sorted([str(mixed / "broken.jpg")] * 3)
    assert np.array_equal(one[0], three[0])
