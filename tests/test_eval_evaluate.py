"""`cnnlab evaluate` / evaluate_run on a real trained run (tests/runfactory.py)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data.decode import load_image
from cnnlab.data.normalize import Normalization
from cnnlab.errors import CnnlabError
from cnnlab.eval.evaluate import evaluate_run
from cnnlab.formats.weights import load_weights
from imagegen import make_image_folder, make_split_folder

FILES = ("metrics.json", "predictions.csv", "confusion_matrix.png", "confusion_matrix_normalized.png",
         "top_losses.png")


@pytest.fixture(scope="module")
def evaluated(trained_run, tmp_path_factory):
    """(run dir, metrics) of a copy of the trained run, evaluated once on its test split."""
    run = tmp_path_factory.mktemp("eval") / "small"
    shutil.copytree(trained_run, run)
    return run, evaluate_run(run, "test", device="cpu")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_writes_every_file_and_metrics_json(evaluated):
    run, m = evaluated
    out = run / "eval" / "test"
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    for name in FILES[2:]:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 200
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    for key in ("accuracy", "per_class", "macro_avg", "weighted_avg", "confusion_matrix", "classes", "roc_auc"):
        assert key in on_disk
    assert on_disk["classes"] == ["hbar", "vbar"]
    assert set(on_disk["per_class"]) == {"hbar", "vbar"}
    assert sum(map(sum, on_disk["confusion_matrix"])) == on_disk["n_images"] == 16
    assert [sum(r) for r in on_disk["confusion_matrix"]] == [8, 8]  # rows are the true classes
    assert on_disk["accuracy"] >= 0.85  # the fixture's model learned the bars
    assert on_disk["unreadable"] == [] and on_disk["split"] == "test" and on_disk["epoch"] == 15
    assert (run / "report.html").is_file() and (run / "curves.png").is_file()
    assert on_disk["report"] == str(run / "report.html")


def test_predictions_match_an_independent_forward_pass(evaluated):
    """p_<class> in predictions.csv equals the model run by hand on the decoded files."""
    run, m = evaluated
    rows = _rows(run / "eval" / "test" / "predictions.csv")
    split = json.loads((run / "split.json").read_text())
    split = split.get("splits", split)
    assert [r["path"] for r in rows] == [p for p, _ in split["test"]]
    model, meta = load_weights(run / "weights" / "best.safetensors")
    norm = Normalization.from_dict(meta["normalization"])
    x = np.stack([load_image(r["path"], (32, 32), 3) for r in rows])
    with torch.no_grad():
        expected = torch.softmax(model(norm.apply(torch.from_numpy(x).permute(0, 3, 1, 2))), 1).numpy()
    got = np.array([[float(r["p_hbar"]), float(r["p_vbar"])] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    truth = [r["true"] for r in rows]
    assert truth == ["hbar"] * 8 + ["vbar"] * 8
    assert np.mean([r["correct"] == "1" for r in rows]) == pytest.approx(m["accuracy"])
    losses = [float(r["loss"]) for r in rows]
    assert losses == pytest.approx(list(-np.log(expected[np.arange(16), [0] * 8 + [1] * 8])), abs=1e-4)


def test_unreadable_file_is_listed_and_left_out(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    split = json.loads((run / "split.json").read_text())
    split = split.get("splits", split)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    split["test"].append([str(broken), 0])
    (run / "split.json").write_text(json.dumps(split))
    m = evaluate_run(run, "test", device="cpu", report=False)
    assert m["n_images"] == 16
    assert [u["path"] for u in m["unreadable"]] == [str(broken)] and m["unreadable"][0]["error"]
    rows = _rows(run / "eval" / "test" / "predictions.csv")
    assert len(rows) == 17 and rows[-1]["error"] and rows[-1]["predicted"] == ""


def test_data_folder_maps_class_names_and_names_unknown_ones(trained_run, tmp_path):
    """Class sub-folders in another order, plus a class the model never saw."""
    data = make_image_folder(tmp_path / "new_photos", ("vbar", "square", "hbar"), n=4, seed=7)
    m = evaluate_run(_copy(trained_run, tmp_path), data=data, device="cpu", report=False)
    assert m["unknown_classes"] == {"square": 4}
    assert m["n_images"] == 8 and m["split"] == "all"
    assert [m["per_class"][c]["support"] for c in ("hbar", "vbar")] == [4, 4]
    assert Path(m["eval_dir"]).name == "new_photos"
    rows = _rows(Path(m["eval_dir"]) / "predictions.csv")
    assert {(Path(r["path"]).parent.name, r["true"]) for r in rows} == {("hbar", "hbar"), ("vbar", "vbar")}


def test_a_folder_of_one_class_is_evaluated(trained_run, tmp_path):
    """'How does the model do on these hbar images?': training needs two classes, evaluation one."""
    data = make_image_folder(tmp_path / "only_hbar", ("hbar",), n=5, seed=3)
    m = evaluate_run(_copy(trained_run, tmp_path), data=data, device="cpu", report=False)
    assert m["n_images"] == 5 and m["per_class"]["hbar"]["support"] == 5
    predicted_hbar = sum(r["predicted"] == "hbar" for r in _rows(Path(m["eval_dir"]) / "predictions.csv"))
    assert m["accuracy"] == pytest.approx(predicted_hbar / 5)  # counted by hand from the rows


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_cli_json_tta_and_split_layout(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    data = make_split_folder(tmp_path / "kaggle", n={"train": 2, "test": 3}, seed=5)
    code = main(["evaluate", str(run), "--data", str(data), "--tta", "--no-report", "--format", "json",
                 "--device", "cpu"])
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert m["tta"] is True and m["split"] == "test" and m["n_images"] == 6
    assert Path(m["eval_dir"]) == run / "eval" / "kaggle-test"
    assert not (run / "report.html").exists() and m["report"] is None


def test_cli_errors_are_one_sentence(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    split = json.loads((run / "split.json").read_text())
    split = split.get("splits", split)
    del split["test"]
    (run / "split.json").write_text(json.dumps(split))
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and "'test'" in err and "\n" not in err
    assert main(["evaluate", str(run), "--weights", "nope.safetensors"]) == 2
    assert "nope.safetensors" in capsys.readouterr().err
    with pytest.raises(CnnlabError, match="no such run directory"):
        evaluate_run(tmp_path / "missing")


def test_cli_table_output(evaluated, capsys):
    run, _ = evaluated
    assert main(["evaluate", str(run), "--split", "val", "--no-report", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "16 images (val split, best weights, fp32)" in out
    for word in ("accuracy", "macro avg", "weighted avg", "hbar", "vbar", "ROC-AUC", str(run / "eval" / "val")):
        assert word in out
    assert (run / "eval" / "val" / "metrics.json").is_file()
    assert main(["evaluate", str(run), "--split", "val", "--no-report", "--device", "cpu", "--tta-mode", "flip"]) == 0
    assert "16 images (val split, best weights, TTA flip, fp32)" in capsys.readouterr().out  # it said "TTA"


def test_bf16_inference_agrees_with_the_exact_fp32_forward_pass(trained_run, tmp_path):
    """precision bf16 (autocast) + channels_last: probabilities within bf16's rounding of the
    hand-run fp32 model's, the same predicted classes; "run" takes the run's config.yaml;
    fp32 stays the default and says so."""
    run = _copy(trained_run, tmp_path)
    model, meta = load_weights(run / "weights" / "best.safetensors")
    norm = Normalization.from_dict(meta["normalization"])
    split = json.loads((run / "split.json").read_text())
    paths = [p for p, _ in split.get("splits", split)["test"]]
    x = np.stack([load_image(p, (32, 32), 3) for p in paths])
    with torch.no_grad():
        exact = torch.softmax(model(norm.apply(torch.from_numpy(x).permute(0, 3, 1, 2))), 1).numpy()

    def probabilities(m):
        rows = _rows(Path(m["eval_dir"]) / "predictions.csv")
        return np.array([[float(r["p_hbar"]), float(r["p_vbar"])] for r in rows])

    fp32 = evaluate_run(run, "test", device="cpu", report=False)
    assert fp32["inference_precision"] == "fp32"
    np.testing.assert_allclose(probabilities(fp32), exact, atol=1e-5)
    bf16 = evaluate_run(run, "test", device="cpu", report=False, precision="bf16")
    assert bf16["inference_precision"] == "bf16"
    got = probabilities(bf16)
    assert not np.array_equal(got, exact)  # it did run in bf16 (8 bits of mantissa)...
    np.testing.assert_allclose(got, exact, atol=0.03)  # ...and rounds like it
    assert (got.argmax(1) == exact.argmax(1)).all()
    cfg = run / "config.yaml"
    cfg.write_text((cfg.read_text() if cfg.is_file() else "") + "\nprecision: bf16\nchannels_last: true\n")
    as_run = evaluate_run(run, "test", device="cpu", report=False, precision="run")
    assert as_run["inference_precision"] == "bf16+channels_last"
    np.testing.assert_allclose(probabilities(as_run), exact, atol=0.03)
    with pytest.raises(CnnlabError, match="precision must be one of fp32, bf16, fp16, got 'int8'"):
        evaluate_run(run, "test", device="cpu", report=False, precision="int8")
    # fp16 on the CPU: refused as training refuses it (it ran, and said "fp16", emulated and slow)
    with pytest.raises(CnnlabError, match="precision fp16 needs a GPU"):
        evaluate_run(run, "test", device="cpu", report=False, precision="fp16")
    # a run trained in fp32 + channels_last (the photo recipe on a CPU without bf16): its
    # layout too, and fp32's probabilities (NHWC convolutions sum in another order: 1e-5)
    cfg.write_text(cfg.read_text() + "\nprecision: fp32\n")
    as_fp32_run = evaluate_run(run, "test", device="cpu", report=False, precision="run")
    assert as_fp32_run["inference_precision"] == "fp32+channels_last"
    np.testing.assert_allclose(probabilities(as_fp32_run), exact, atol=1e-5)
    # a run trained in fp16 on a GPU, evaluated on the CPU "as it trained": exact fp32
    cfg.write_text(cfg.read_text() + "\nprecision: fp16\n")
    as_gpu_run = evaluate_run(run, "test", device="cpu", report=False, precision="run")
    assert as_gpu_run["inference_precision"] == "fp32"
    np.testing.assert_allclose(probabilities(as_gpu_run), exact, atol=1e-5)


def test_train_evaluates_its_test_split_in_the_precision_it_trained_in(split_folder, tmp_path):
    import cnnlab
    from tinymodels import TINY_BN

    opts = dict(model=TINY_BN, epochs=1, device="cpu", out=str(tmp_path / "runs"), verbose=False)
    for precision, cl, expected in (("bf16", None, "bf16+channels_last"), ("fp32", None, "fp32"),
                                    ("fp32", True, "fp32+channels_last")):
        run = cnnlab.train(split_folder, precision=precision, channels_last=cl, name=f"{precision}-{cl}", **opts)
        metrics = json.loads((run.path / "eval" / "test" / "metrics.json").read_text())
        assert metrics["inference_precision"] == expected


def test_predict_takes_the_precision_too(trained_run, tmp_path, capsys):
    """`cnnlab predict --precision bf16`: the same labels as fp32, confidences within bf16's
    rounding; `run` on an fp32 run is fp32 itself (bit-identical)."""
    from cnnlab.eval.predict import predict

    run = _copy(trained_run, tmp_path)
    folder = run.parent / "probe"
    make_image_folder(folder, ("hbar", "vbar"), n=4)
    exact = predict(run, folder, device="cpu")
    bf16 = predict(run, folder, device="cpu", precision="bf16")
    assert [r["label"] for r in bf16] == [r["label"] for r in exact]
    assert [r["confidence"] for r in bf16] == pytest.approx([r["confidence"] for r in exact], abs=0.03)
    assert [r["confidence"] for r in bf16] != [r["confidence"] for r in exact]
    cfg = run / "config.yaml"
    cfg.write_text((cfg.read_text() if cfg.is_file() else "") + "\nprecision: fp32\n")
    assert predict(run, folder, device="cpu", precision="run") == exact
    assert main(["predict", str(run), str(folder), "--precision", "bf16", "--out", str(tmp_path / "p.csv")]) == 0
