"""What the README promises of `cnnlab train`, through the command line: early stopping and its
restored best weights, the time limit, and --resume with the same or a changed command.

Each run is a 514-parameter CNN on 32x32 images the test draws, on one CPU thread: a second or two.
The oracles are independent of the code under test: history.csv read back and judged by
Keras' rule for patience, the best weights file re-evaluated with plain torch, a fake clock
whose seconds are the optimiser steps.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from cnnlab.cli import main
from cnnlab.run import Run
from cnnlab.io.checkpoint import load_checkpoint
from imagegen import make_split_folder
from tinymodels import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """noise/: two classes of random pixels (nothing to learn: validation loss soon rises);
    bars/: horizontal vs vertical bars (learnable); a model file; a decode cache."""
    root = tmp_path_factory.mktemp("train_behaviour")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 12)):
        for cls in ("a", "b"):
            folder = root / "noise" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    make_split_folder(root / "bars", n={"train": 24, "val": 8})
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return root


def train_args(ws: Path, data: str, name: str, *extra: str) -> list[str]:
    return ["train", str(ws / data), "--model", str(ws / "tiny.yaml"), "--batch-size", "8", "--device", "cpu",
            "--workers", "0", "--cache-dir", str(ws / "cache"), "--out", str(ws / "runs"), "--name", name,
            "--no-evaluate", "--quiet", *extra]


def read_history(run: Path) -> list[dict[str, float]]:
    with (run / "history.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def keras_stop_epoch(values: list[float], patience: int, mode: str) -> int | None:
    """The epoch at which Keras' EarlyStopping (min_delta 0) stops, or None if it never does."""
    best, wait = None, 0
    for epoch, v in enumerate(values, start=1):
        if best is None or (v < best if mode == "min" else v > best):
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


def best_epoch(values: list[float], mode: str) -> int:
    """1-based epoch of the first best value (a later equal one is no improvement)."""
    arr = np.array(values)
    return int(np.argmin(arr) if mode == "min" else np.argmax(arr)) + 1


def val_loss_of_weights(run: Path, which: str, label_smoothing: float) -> float:
    """The validation loss of a weights file, recomputed with plain torch from the image files."""
    r = Run(run)
    model, meta = r.load_model(which)
    paths, labels = zip(*r.split()["val"])
    x, ok, errors = r.preprocessor(meta).load_batch(list(paths))
    assert not errors and len(ok) == len(paths)
    with torch.no_grad():
        logits = model(x)
    return float(F.cross_entropy(logits, torch.tensor(labels), label_smoothing=label_smoothing))


# -- early stopping ---------------------------------------------------------------------------


def test_monitor_val_loss_stops_after_patience_and_keeps_the_best_epochs_weights(ws):
    run = ws / "runs" / "val-loss"
    assert main(train_args(ws, "noise", "val-loss", "--epochs", "40", "--patience", "3", "--monitor", "val_loss",
                           "--lr", "0.02", "--scheduler", "none", "--label-smoothing", "0",
                           "--augment", "none")) == 0
    rows = read_history(run)
    losses = [r["val_loss"] for r in rows]
    stop = keras_stop_epoch(losses, 3, "min")
    assert stop is not None and stop < 40, losses  # the noise is not learnable: the loss rises
    assert len(rows) == stop
    best = best_epoch(losses, "min")
    assert best == stop - 3

    # best.safetensors holds the best epoch's weights: its metadata says so, and its own
    # validation loss, recomputed from the files, is the one history.csv shows for that epoch.
    model, meta = Run(run).load_model("best")
    assert meta["epoch"] == best and meta["monitor"] == "val_loss"
    assert val_loss_of_weights(run, "best", 0.0) == pytest.approx(losses[best - 1], rel=1e-4)
    assert val_loss_of_weights(run, "last", 0.0) == pytest.approx(losses[-1], rel=1e-4)
    assert losses[-1] > losses[best - 1]  # so the two files differ: it is not the last epoch's


def test_default_patience_is_ten_epochs_of_val_accuracy(ws):
    run = ws / "runs" / "default"
    assert main(train_args(ws, "noise", "default", "--epochs", "60", "--lr", "0.02", "--scheduler", "none",
                           "--augment", "none")) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["patience"] == 10 and cfg["monitor"] == "val_accuracy"
    rows = read_history(run)
    accuracy = [r["val_accuracy"] for r in rows]
    stop = keras_stop_epoch(accuracy, 10, "max")
    assert stop is not None and len(rows) == stop < 60, accuracy
    assert Run(run).load_model("best")[1]["epoch"] == best_epoch(accuracy, "max") == stop - 10


def test_patience_0_never_stops_early(ws):
    run = ws / "runs" / "no-stop"
    assert main(train_args(ws, "noise", "no-stop", "--epochs", "12", "--patience", "0", "--monitor", "val_loss",
                           "--lr", "0.02", "--scheduler", "none", "--augment", "none")) == 0
    losses = [r["val_loss"] for r in read_history(run)]
    assert len(losses) == 12
    stop = keras_stop_epoch(losses, 1, "min")
    assert stop is not None and stop < 12  # patience 1 would have stopped: 0 really is "off"


def test_the_old_metric_names_are_accepted_by_monitor(ws):
    run = ws / "runs" / "old-name"
    assert main(train_args(ws, "bars", "old-name", "--epochs", "2", "--monitor", "val_acc")) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["monitor"] == "val_accuracy"
    assert list(read_history(run)[0])[:5] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert Run(run).load_model("best")[1]["monitor"] == "val_accuracy"


# -- the time limit ---------------------------------------------------------------------------


def test_time_limit_ends_the_run_on_time(ws, monkeypatch, capsys):
    """A fake clock on which every optimiser step takes one second (and nothing else any time):
    with one minute, the run must take at most 60 steps, and use most of them."""
    from cnnlab.train import callbacks, loop

    now = [0.0]
    real_step = loop.Trainer.train_step

    def step_of_one_second(self, images, labels):
        now[0] += 1.0
        return real_step(self, images, labels)

    limits, real_limit = [], callbacks.TimeLimit

    def time_limit(minutes, **whole_command):  # only the training steps' fake seconds count here
        limits.append(real_limit(minutes, clock=lambda: now[0]))
        return limits[-1]

    monkeypatch.setattr(loop.Trainer, "train_step", step_of_one_second)
    monkeypatch.setattr(callbacks, "TimeLimit", time_limit)
    args = train_args(ws, "bars", "timed", "--epochs", "1000", "--time-limit", "1", "--patience", "0")
    args.remove("--quiet")
    assert main(args) == 0
    assert len(limits) == 1
    out = capsys.readouterr().out
    run = ws / "runs" / "timed"
    steps = load_checkpoint(run / "resume.safetensors")["step"]
    assert 50 <= steps <= 60 and now[0] == steps, (steps, now[0])
    used = re.search(r"time limit: (\d+\.\d) of 1 minutes used", out)
    assert used and 0.8 <= float(used.group(1)) <= 1.0, out
    spe = 48 // 8  # 48 training images, batches of 8
    assert len(read_history(run)) == -(-steps // spe) < 1000  # the last epoch may be a short one


# -- resume with the same command -------------------------------------------------------------


@pytest.fixture
def unfinished(ws, tmp_path):
    """A run stopped by Ctrl-C in epoch 2 of 4 (through the Python API, as a user's callback would)."""
    import cnnlab
    from cnnlab.train import Callback, TrainingInterrupted

    class CtrlC(Callback):  # stateless: a resume may leave it out
        def on_batch_end(self, trainer):
            if trainer.epoch == 2 and trainer.batch == 2:
                trainer.interrupted = True

    out = tmp_path / "runs"
    options = dict(model=str(ws / "tiny.yaml"), epochs=4, batch_size=8, device="cpu", workers=0,
                   cache_dir=str(ws / "cache"), out=str(out), img_size=32, evaluate=False)
    with pytest.raises(TrainingInterrupted):
        cnnlab.train(str(ws / "bars"), callbacks=[CtrlC()], verbose=False, **options)
    (run,) = out.iterdir()
    return run


def test_resume_accepts_the_same_command(ws, unfinished, capsys):
    out = unfinished.parent
    same = ["train", str(ws / "bars"), "--model", str(ws / "tiny.yaml"), "--epochs", "4", "-b", "8",
            "--img-size", "32", "--monitor", "val_acc", "--augment", "standard", "--no-evaluate",
            "--out", str(out), "--device", "cpu", "--quiet"]
    assert main(same + ["--resume"]) == 0, capsys.readouterr().err  # --resume: the latest unfinished run
    assert [r["epoch"] for r in read_history(unfinished)] == [1, 2, 3, 4]


@pytest.mark.parametrize("flag, value, old", [("--epochs", "5", "4"), ("--augment", "none", "standard"),
                                               ("--img-size", "48", "32"), ("--optimizer", "sgd", "adamw")])
def test_resume_refuses_a_changed_option_naming_old_and_new(ws, unfinished, capsys, flag, value, old):
    before = (unfinished / "resume.safetensors").read_bytes()
    code = main(["train", str(ws / "bars"), "--model", str(ws / "tiny.yaml"), "--epochs", "4", flag, value,
                 "--resume", str(unfinished), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{flag} was {old} there, not {value}" in err, err
    assert (unfinished / "resume.safetensors").read_bytes() == before  # nothing touched


def test_resume_says_a_changed_switch_was_off_or_on(ws, unfinished, capsys):
    code = main(["train", str(ws / "bars"), "--model", str(ws / "tiny.yaml"), "--epochs", "4", "--compile",
                 "--resume", str(unfinished), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--compile was off there, not on (" in err, err  # not Python's False / True


def test_a_history_file_of_an_older_cnnlab_is_read_in_the_new_names(tmp_path):
    run = tmp_path / "old-run"
    (run / "weights").mkdir(parents=True)
    (run / "history.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,images_per_s\n"
                                     "1,0.9,0.5,1.0,0.25,0.001,1.5,100\n2,0.5,0.75,0.8,0.5,0.002,1.5,100\n")
    rows = Run(run).history()
    assert [list(r)[:5] for r in rows] == [["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]] * 2
    assert [r["val_accuracy"] for r in rows] == [0.25, 0.5] and rows[1]["loss"] == 0.5
