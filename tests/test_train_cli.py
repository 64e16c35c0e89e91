"""`cnnlab train` end to end: the run folder, the config, resume after SIGKILL and Ctrl-C.

The runs use a 514-parameter CNN on 32x32 images the test draws (two classes), on one CPU
thread, without the final evaluation unless a test is about it, so each takes a second or
two. Only the runs that are killed (SIGKILL, Ctrl-C) are subprocesses; the resumes run
here, on one thread like the reference run, and must match it bit for bit.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import cnnlab
from cnnlab.cli import main
from cnnlab.io.weights import read_metadata
from cnnlab.run import Run
from imagegen import make_split_folder
from tinymodels import TINY_BN as TINY, history, same_weights as same_file_weights

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models train fastest on one thread


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """data/{train,val,test}/{hbar,vbar}, a model file, and a shared decode cache."""
    root = tmp_path_factory.mktemp("train_cli")
    make_split_folder(root / "data", n={"train": 40, "val": 10, "test": 6})
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return root


def args(ws: Path, name: str, *extra: str) -> list[str]:
    # --device cpu: the runs must match bit for bit, and `auto` would pick a GPU where there is one
    return ["train", str(ws / "data"), "--model", str(ws / "tiny.yaml"), "--epochs", "5", "--device", "cpu",
            "--batch-size", "4", "--seed", "3", "--workers", "0", "--cache-dir", str(ws / "cache"),
            "--out", str(ws / "runs"), "--name", name, "--no-evaluate", *extra]


@pytest.fixture(scope="module")
def reference(workspace):
    """An uninterrupted run, in this process; the others must reproduce it exactly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1)
    try:
        assert main(args(workspace, "reference", "--quiet")) == 0
    finally:
        torch.set_num_threads(before)
    return workspace / "runs" / "reference"


def test_a_run_folder_has_everything(workspace, tmp_path, capsys):
    data = make_split_folder(tmp_path / "data", n={"train": 24, "val": 6, "test": 6})
    (data / "train" / "hbar" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "runs"
    code = main(["train", str(data), "--model", str(workspace / "tiny.yaml"), "--epochs", "3",
                 "--device", "cpu", "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
                 "--no-evaluate"])  # the evaluation at the end is tested with the demo
    assert code == 0
    run = out / "data-tiny"  # <data folder>-<model name>
    printed = capsys.readouterr().out
    assert "epoch 3/3" in printed and "best    val_accuracy" in printed and str(run) in printed

    mask = os.umask(0o022)
    os.umask(mask)
    modes = {str(p.relative_to(run)): oct(p.stat().st_mode & 0o777) for p in run.rglob("*") if p.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes  # the weights were 0600, the rest 0644

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["epochs"] == 3 and cfg["img_size"] == 32 and cfg["channels"] == 3
    assert cfg["lr"] == 2e-3 and cfg["device"] == "cpu" and cfg["precision"] == "fp32"
    assert json.loads((run / "classes.json").read_text()) == ["hbar", "vbar"]
    assert yaml.safe_load((run / "model.yaml").read_text())["classes"] == 2
    assert set(json.loads((run / "split.json").read_text())["splits"]) == {"train", "val", "test"}
    skipped = list(csv.DictReader((run / "skipped.csv").open()))
    assert [Path(r["path"]).name for r in skipped] == ["broken.png"] and skipped[0]["split"] == "train"
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds",
                             "images_per_s"]
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]

    for which in ("best", "last"):
        meta = read_metadata(run / "weights" / f"{which}.safetensors")
        assert meta["classes"] == ["hbar", "vbar"] and meta["input"] == [32, 32, 3]
        assert set(meta["normalization"]) == {"mean", "std"} and meta["spec"]["name"] == "tiny"
        assert 1 <= meta["epoch"] <= 3 and "val_accuracy" in meta["metric"]
    assert read_metadata(run / "weights" / "last.safetensors")["epoch"] == 3
    model, meta = Run(run).load_model("best")  # from the weights file alone
    x, ok, _ = Run(run).preprocessor(meta).load_batch([data / "test" / "vbar" / "vbar_000.png"])
    assert model.predict_proba(x).shape == (1, 2) and ok == [0]

    # The same command again gets a new folder instead of overwriting this one.
    assert main(["train", str(data), "--model", str(workspace / "tiny.yaml"), "--epochs", "1",
                 "--device", "cpu", "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
                 "--no-evaluate"]) == 0
    assert (out / "data-tiny-2" / "weights" / "last.safetensors").is_file()
    model_line = re.search(r"^model   tiny .*, 1 epoch$", capsys.readouterr().out, re.M)  # not "1 epochs"
    # counted as Keras counts, by hand: conv (3*3*3+1)*4 = 112, BN 4*4 = 16 (8 of them the moving
    # mean and variance), dense (7*7*4+1)*2 = 394 (it said "514 parameters": the trainable ones)
    assert model_line and "tiny (522 parameters, 514 trainable)" in model_line.group(0)
    s = cnnlab.summary(out / "data-tiny-2" / "weights" / "best.safetensors")  # a weights file, as the CLI takes
    assert (s.total_params, s.trainable_params) == (522, 514)


def test_config_file_with_flags_on_top(workspace, tmp_path):
    conf = tmp_path / "run.yaml"
    conf.write_text("epochs: 4\nlr: 0.01\noptimizer: sgd\naugment: light\nscheduler: cosine\n")
    code = main(args(workspace, "configured", "--config", str(conf), "--epochs", "1", "-q"))
    assert code == 0
    saved = yaml.safe_load((workspace / "runs" / "configured" / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["lr"] == 0.01 and saved["optimizer"] == "sgd"
    assert saved["augment"] == "light" and saved["weight_decay"] == 5e-4 and saved["warmup"] == 0.05
    # The saved config repeats the run.
    assert main(["train", "--config", str(workspace / "runs" / "configured" / "config.yaml"),
                 "--name", "again", "-q"]) == 0
    assert history(workspace / "runs" / "again") == history(workspace / "runs" / "configured")


def test_a_saved_config_repeats_the_run_from_another_folder(workspace, tmp_path, monkeypatch):
    """DATA given as a relative path is saved as an absolute one: `--config RUN/config.yaml`
    failed with 'data: no such file or folder' anywhere but the folder the run started in."""
    monkeypatch.chdir(workspace)
    a = args(workspace, "relative", "--epochs", "1", "-q")
    a[1] = "data"
    assert main(a) == 0
    saved = yaml.safe_load((workspace / "runs" / "relative" / "config.yaml").read_text())
    assert saved["data"] == str(workspace / "data")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(workspace / "runs" / "relative" / "config.yaml"),
                 "--out", str(workspace / "runs"), "--name", "relative-again", "-q"]) == 0
    assert history(workspace / "runs" / "relative-again") == history(workspace / "runs" / "relative")


@pytest.mark.parametrize("text, message", [
    ("lr: -1\n", "run.yaml: lr: input should be greater than 0 (got -1)"),
    ("learning_rate: 0.1\n", "run.yaml: unknown option 'learning_rate'"),
    ("scheduler: linear\n", "run.yaml: scheduler: must be one of none, cosine, onecycle, step, plateau, triangle, got 'linear'"),
    ("epochs: [1\n", "run.yaml: not valid YAML"),
    # an augmentation option is checked with the rest, before the automatic choices print
    ("augment: {preset: light, rotation: abc}\n", "run.yaml: augment: augmentation rotation got 'abc', which is "
                                                  "not a number"),
])
def test_bad_config_names_the_field(workspace, tmp_path, capsys, text, message):
    (tmp_path / "run.yaml").write_text(text)
    assert main(args(workspace, "bad", "--config", str(tmp_path / "run.yaml"))) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (workspace / "runs" / "bad").exists()  # refused before a run folder was made


def test_same_seed_same_history_and_weights(workspace, reference):
    assert main(args(workspace, "twice", "--quiet")) == 0
    run = workspace / "runs" / "twice"
    assert history(run) == history(reference)
    assert same_file_weights(run / "weights" / "last.safetensors", reference / "weights" / "last.safetensors")
    assert main(args(workspace, "other-seed", "--quiet", "--seed", "4", "--epochs", "1")) == 0
    assert history(workspace / "runs" / "other-seed")[0] != history(reference)[0]


def _start(workspace: Path, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cnnlab", *args(workspace, name)]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(run: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until history.csv lists n epochs (then the run is in the middle of epoch n + 1)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run / "history.csv").is_file() and len(history(run)) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail("training did not get going")


def _resume(run: Path) -> int:
    """Resume in this process (on one thread, like the reference run)."""
    return main(["train", "--resume", str(run), "--quiet"])


def test_sigkill_mid_training_then_resume_gives_the_same_weights(workspace, reference, capsys):
    run = workspace / "runs" / "killed"
    proc = _start(workspace, "killed")
    _wait_for_epochs(run, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(history(run)) < 5  # it really was cut short

    assert _resume(run) == 0
    assert history(run) == history(reference)
    for which in ("best", "last"):
        assert same_file_weights(run / "weights" / f"{which}.safetensors",
                                 reference / "weights" / f"{which}.safetensors")
    assert json.loads((run / "split.json").read_text()) == json.loads((reference / "split.json").read_text())

    assert main(["train", "--resume", str(run)]) == 2  # a finished run has nothing left to do
    assert "has finished (5 epochs)" in capsys.readouterr().err


def test_ctrl_c_saves_and_resume_continues_exactly(workspace, reference):
    run = workspace / "runs" / "interrupted"
    proc = _start(workspace, "interrupted")
    _wait_for_epochs(run, 1, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err

    # --resume without a run: the most recent unfinished one under --out.
    assert main(["train", "--resume", "--out", str(workspace / "runs"), "--quiet"]) == 0
    assert history(run) == history(reference)
    assert same_file_weights(run / "weights" / "last.safetensors", reference / "weights" / "last.safetensors")


def test_resume_refuses_to_change_the_recipe(workspace, reference, capsys):
    assert main(["train", "--resume", str(reference), "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--lr was" in err and "not 0.1" in err
    # (resuming what is not a run: tests/test_robust_cli.py; divergence: tests/test_robust_faults.py)
