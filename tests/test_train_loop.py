"""The training loop and its callbacks, on real (tiny) models and images the test draws.

Each test trains a ~500-parameter CNN on 32x32 'hbar' / 'vbar' images for a few epochs
(well under a second) and checks what a user relies on: early stopping restores the best
weights, best/last checkpoints hold the right epochs, NaN stops cleanly, the same seed
gives the same run, and an interrupted run resumes to exactly the same weights.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnlab.formats.weights import load_weights
from cnnlab.io.weights import read_metadata
from cnnlab.model.build import build_model
from cnnlab.train.callbacks import (
    Callback, CSVLogger, EarlyStopping, LRSchedule, ModelCheckpoint, ProgressBar, ReduceLROnPlateau,
    TerminateOnNaN, TimeLimit, TrainingDiverged, schedule_factor)
from cnnlab.io.checkpoint import load_checkpoint
from cnnlab.train.interrupt import TrainingInterrupted
from cnnlab.train.loop import Trainer
from cnnlab.train.tensor_loader import TensorLoader
from imagegen import draw

SPEC = {
    "input": [32, 32, 3],
    "layers": [
        {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
        {"BatchNormalization": {}},
        {"MaxPooling2D": {"pool_size": 4}},
        {"Dropout": {"rate": 0.2}},
        {"Flatten": {}},
        {"Dense": {"units": "classes", "activation": "softmax"}},
    ],
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models train fastest on one thread


@pytest.fixture(scope="module")
def images():
    """48 training and 16 validation images of two classes, uint8 NCHW."""
    rng = np.random.default_rng(0)
    x = np.stack([draw(c, (32, 32), rng) for c in ("hbar", "vbar") * 32])
    y = np.array([0, 1] * 32)
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    return x[:48], torch.from_numpy(y[:48]), x[48:], torch.from_numpy(y[48:])


def loaders(images, batch_size=8):
    xt, yt, xv, yv = images
    return TensorLoader(xt, yt, batch_size, seed=3), TensorLoader(xv, yv, 16, shuffle=False)


def make_trainer(callbacks=(), lr=3e-3, seed=0, channels_last=False):
    model = build_model(SPEC, classes=2, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return Trainer(model, opt, seed=seed, callbacks=list(callbacks), channels_last=channels_last)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Snapshots(Callback):
    """Keeps the weights after every epoch (a user-written callback)."""

    def __init__(self):
        self.by_epoch = {}

    def on_epoch_end(self, trainer):
        self.by_epoch[trainer.epoch] = weights(trainer.model)


class Scripted(Callback):
    """Writes a chosen 'score' into the logs, so early stopping's decisions are known in advance."""

    def __init__(self, scores):
        self.scores = scores

    def on_epoch_end(self, trainer):
        trainer.logs["score"] = self.scores[trainer.epoch - 1]


def test_model_learns_and_history_has_every_column(images):
    history = make_trainer(lr=1e-2).fit(*loaders(images), epochs=8)
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert set(history[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr",
                               "seconds", "images_per_s"}
    assert history[-1]["val_accuracy"] >= 0.9
    assert history[-1]["loss"] < history[0]["loss"]


def test_callback_hooks_run_in_order(images):
    calls = []

    class Recorder(Callback):
        def __getattribute__(self, name):
            if name.startswith("on_"):
                return lambda trainer: calls.append((name, trainer.epoch, trainer.batch))
            return object.__getattribute__(self, name)

    make_trainer([Recorder()]).fit(*loaders(images), epochs=2)
    per_epoch = 48 // 8
    assert calls[0] == ("on_train_begin", 0, 0)
    assert calls[1] == ("on_epoch_begin", 1, 0)
    assert calls[2:4] == [("on_batch_begin", 1, 0), ("on_batch_end", 1, 1)]
    assert calls[1 + 2 * per_epoch + 1] == ("on_epoch_end", 1, per_epoch)
    assert calls[-1] == ("on_train_end", 2, per_epoch)
    assert len(calls) == 2 + 2 * (2 + 2 * per_epoch)


def test_early_stopping_stops_and_restores_best_weights(images, tmp_path):
    snaps = Snapshots()
    stop = EarlyStopping("score", patience=2, mode="max", restore_best_weights=True)
    ckpt = ModelCheckpoint(tmp_path, monitor="score", mode="max", meta={"classes": ["hbar", "vbar"]})
    trainer = make_trainer([Scripted([0.5, 0.8, 0.7, 0.75, 0.9, 0.95]), snaps, stop, ckpt])
    history = trainer.fit(*loaders(images), epochs=6)

    assert len(history) == 4 and stop.stopped_epoch == 4  # no improvement in epochs 3 and 4
    assert stop.best.epoch == 2 and trainer.restored_epoch == 2
    assert same(weights(trainer.model), snaps.by_epoch[2])
    assert not same(snaps.by_epoch[2], snaps.by_epoch[4])
    # best.safetensors: epoch 2, rebuilt from the file alone; last.safetensors: epoch 4.
    best, meta = load_weights(tmp_path / "best.safetensors")
    assert meta["epoch"] == 2 and meta["metric"]["score"] == 0.8 and meta["classes"] == ["hbar", "vbar"]
    assert same(best.state_dict(), snaps.by_epoch[2])
    last, meta = load_weights(tmp_path / "last.safetensors")
    assert meta["epoch"] == 4 and same(last.state_dict(), snaps.by_epoch[4])


def test_restore_best_weights_also_when_training_runs_to_the_end(images):
    snaps = Snapshots()
    stop = EarlyStopping("score", patience=5, mode="max", restore_best_weights=True)
    trainer = make_trainer([Scripted([0.1, 0.9, 0.2, 0.3]), snaps, stop])
    trainer.fit(*loaders(images), epochs=4)
    assert stop.stopped_epoch == 0 and trainer.epoch == 4
    assert same(weights(trainer.model), snaps.by_epoch[2])


def test_early_stopping_on_a_real_metric(images):
    """val_accuracy reaches its best and stays there; patience 2 ends training two epochs later."""
    stop = EarlyStopping("val_accuracy", patience=2)
    history = make_trainer([stop], lr=1e-2).fit(*loaders(images), epochs=40)
    assert len(history) < 40
    assert len(history) == stop.best.epoch + 2
    assert max(h["val_accuracy"] for h in history) == stop.best.value >= 0.9


def test_nan_stops_cleanly_and_keeps_the_last_good_checkpoints(images, tmp_path):
    class Explode(Callback):  # a learning rate that blows the weights up in epoch 3
        def on_epoch_begin(self, trainer):
            if trainer.epoch == 3:
                for g in trainer.optimizer.param_groups:
                    g["lr"] = 1e30

    ckpt = ModelCheckpoint(tmp_path / "weights", monitor="val_loss")
    trainer = make_trainer([TerminateOnNaN(), Explode(), ckpt, CSVLogger(tmp_path / "history.csv")])
    with pytest.raises(TrainingDiverged, match=r"epoch 3, batch \d+ .*weights of epoch 2 are kept"):
        trainer.fit(*loaders(images), epochs=5, checkpoint=tmp_path / "resume.safetensors")
    assert read_metadata(tmp_path / "weights" / "last.safetensors")["epoch"] == 2
    model, _ = load_weights(tmp_path / "weights" / "last.safetensors")
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert len((tmp_path / "history.csv").read_text().strip().splitlines()) == 1 + 2
    assert load_checkpoint(tmp_path / "resume.safetensors")["epoch"] == 2


def test_the_nan_check_counts_steps_across_epochs(images):
    """On a GPU the loss is looked at every 50 steps; an epoch of fewer batches (airbench's
    has 48) must not hide it until the epoch's end. Here: checked every spe + 1 steps, a NaN
    at the first batch of epoch 2 is caught there."""
    spe = len(loaders(images)[0])

    class NanAt(Callback):
        def on_batch_end(self, trainer):
            if trainer.step == spe + 1:
                trainer._last_loss = torch.tensor(float("nan"))

    trainer = make_trainer([NanAt(), TerminateOnNaN(check_every=spe + 1)])
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, batch 1 "):
        trainer.fit(*loaders(images), epochs=3)


def test_same_seed_same_history_and_weights(images):
    runs = []
    for _ in range(2):
        trainer = make_trainer([LRSchedule("onecycle", 0.25)], seed=7)
        history = trainer.fit(*loaders(images), epochs=3)
        runs.append(([{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in history],
                     weights(trainer.model)))
    assert runs[0][0] == runs[1][0]
    assert same(runs[0][1], runs[1][1])
    other = make_trainer(seed=8)
    other.fit(*loaders(images), epochs=1)
    assert not same(weights(other.model), runs[0][1])


def _callbacks():
    return [TerminateOnNaN(), LRSchedule("cosine", 0.2),
            ReduceLROnPlateau("val_loss", patience=1, factor=0.5),
            EarlyStopping("val_loss", patience=10, restore_best_weights=True)]


@pytest.mark.parametrize("how", ["crash", "ctrl-c", "ctrl-c at the last batch", "crash, channels_last"])
def test_resume_gives_exactly_the_uninterrupted_weights(images, tmp_path, how):
    """A crash resumes from the last finished epoch; Ctrl-C from the very next batch (or,
    after an epoch's last batch, from its validation). In channels_last too: the optimiser's
    state came back NCHW, and the weights ended 1e-2 away (bf16 and fp32 alike)."""
    cl = "channels_last" in how
    how = how.split(",")[0]
    make = lambda *a, **k: make_trainer(*a, channels_last=cl, **k)  # noqa: E731
    reference = make(_callbacks())
    ref_history = reference.fit(*loaders(images), epochs=4)

    class Stop(Callback):
        def on_batch_end(self, trainer):
            at = trainer.steps_per_epoch if how == "ctrl-c at the last batch" else 2
            if trainer.epoch == 3 and trainer.batch == at:
                if how == "crash":
                    raise RuntimeError("power cut")
                trainer.interrupted = True  # what the Ctrl-C handler does

    ckpt = tmp_path / "resume.safetensors"
    first = make(_callbacks() + [Stop()])
    with pytest.raises(RuntimeError if how == "crash" else TrainingInterrupted) as stopped:
        first.fit(*loaders(images), epochs=4, checkpoint=ckpt)
    if how == "ctrl-c":  # two of the epoch's batches done: the third is next
        assert str(stopped.value).endswith(f"(it continues at batch 3 of {first.steps_per_epoch})")
    elif how == "ctrl-c at the last batch":  # it said "at batch N+1" of an N-batch epoch
        assert str(stopped.value).endswith("(it continues after the epoch's last batch)")
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2
    assert (state["partial"] is None) == (how == "crash")

    torch.manual_seed(1234)  # whatever the new process's random state is
    resumed = make(_callbacks() + [Callback()], seed=0)
    history = resumed.fit(*loaders(images), epochs=4, checkpoint=ckpt, resume=True)
    assert same(weights(resumed.model), weights(reference.model))
    layouts = lambda t: [[v.stride() for v in t.optimizer.state[p].values() if v.dim() > 1]  # noqa: E731
                         for p in t.model.parameters()]
    assert layouts(resumed) == layouts(reference)  # the moments in their parameter's layout, as never stopped
    strip = lambda hs: [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in hs]
    assert strip(history) == strip(ref_history)


def test_schedules_shape():
    assert schedule_factor("none", 0.5) == 1.0
    assert schedule_factor("cosine", 0.0, warmup=0.1) == 0.0
    assert schedule_factor("cosine", 0.1, warmup=0.1) == pytest.approx(1.0)
    assert schedule_factor("cosine", 0.55, warmup=0.1) == pytest.approx(0.5)
    assert schedule_factor("cosine", 1.0, warmup=0.1) == pytest.approx(0.0)
    assert schedule_factor("onecycle", 0.0, warmup=0.25) == pytest.approx(1 / 25)
    assert schedule_factor("onecycle", 0.25, warmup=0.25) == pytest.approx(1.0)
    assert schedule_factor("onecycle", 1.0, warmup=0.25) == pytest.approx(1 / 25 / 1e4)
    assert [schedule_factor("step", 0, epoch=e, step_size=2, gamma=0.1) for e in (1, 2, 3, 5)] == \
        pytest.approx([1, 1, 0.1, 0.01])


def test_lr_schedule_and_plateau_change_the_optimizer(images):
    trainer = make_trainer([LRSchedule("onecycle", 0.5)], lr=0.01)
    history = trainer.fit(*loaders(images), epochs=4)
    lrs = [h["lr"] for h in history]  # the last batch's: rising, rising, falling, nearly 0
    assert lrs[0] < lrs[1] < 0.01 and lrs[1] > lrs[2] > lrs[3] and lrs[3] < 0.01 * 0.05
    plateau = ReduceLROnPlateau("score", mode="max", patience=1, factor=0.5)
    trainer = make_trainer([Scripted([0.5, 0.5, 0.5, 0.5]), plateau], lr=0.01)
    trainer.fit(*loaders(images), epochs=4)
    # epoch 1 sets the best; epochs 2 and 3 do not improve: more than `patience`, so halve.
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


def test_time_limit_stops_when_the_time_is_up_even_mid_epoch(images):
    trainer = make_trainer([TimeLimit(minutes=1e-9)])  # no time at all: stop at the first plan
    history = trainer.fit(*loaders(images), epochs=50)
    assert len(history) == 1 and trainer.step == 5 and "time limit" in trainer.stop_reason
    trainer = make_trainer([TimeLimit(minutes=1e-9, first_plan=2), LRSchedule("cosine", 0.0)])
    history = trainer.fit(*loaders(images), epochs=50)
    assert trainer.step == 2 and trainer.total_steps == 2 and len(history) == 1  # a short epoch
    # validated all the same: the row holds the model's own numbers on the 16 validation images
    # (its last weights; the default normalisation is x / 255)
    _, _, xv, yv = images
    probs = trainer.model.predict_proba(xv.float() / 255).detach()
    assert history[0]["val_accuracy"] == pytest.approx((probs.argmax(1) == yv).float().mean().item())
    assert history[0]["val_loss"] == pytest.approx(-probs[torch.arange(16), yv].log().mean().item(), rel=1e-4)


def test_time_limit_fits_the_schedule_into_the_budget(images):
    """A budget of a few epochs: the plan lands on it and the schedule anneals to 0.

    A fake clock (one second per reading) keeps the test independent of the machine's load.
    """
    ticks = iter(range(1, 10**6))
    clock = lambda: float(next(ticks))  # noqa: E731
    trainer = make_trainer([TimeLimit(minutes=1.0, replan_every=3, clock=clock), LRSchedule("cosine", 0.0)])
    history = trainer.fit(*loaders(images), epochs=50)
    assert 1 <= len(history) < 50 and trainer.step == trainer.total_steps
    assert history[-1]["lr"] < 0.1 * 3e-3  # annealed: the last step is next to the schedule's end


def test_binary_sigmoid_model_trains(images):
    spec = dict(SPEC, layers=SPEC["layers"][:-1] + [{"Dense": {"units": 1, "activation": "sigmoid"}}])
    model = build_model(spec, seed=0)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), 3e-3))
    history = trainer.fit(*loaders(images), epochs=10)
    assert history[-1]["val_accuracy"] >= 0.9 and math.isfinite(history[-1]["val_loss"])


@pytest.mark.parametrize("interactive", [False, True])
def test_progress_bar_output(images, interactive):
    import io

    out = io.StringIO()
    make_trainer([ProgressBar(interactive=interactive, log_every=0, file=out)]).fit(*loaders(images), epochs=2)
    text = out.getvalue()
    assert "epoch 2/2  loss" in text and "val_accuracy" in text and "img/s" in text
    if not interactive:  # a log gets progress lines within the epoch too
        assert "epoch 1 batch 1/6  loss" in text and "epoch ends in" in text


def test_tensorboard_logs_every_epoch_metric(images, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cnnlab.train.callbacks import TensorBoard

    make_trainer([TensorBoard(tmp_path / "tb")]).fit(*loaders(images), epochs=2)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/loss", "loss/val_loss", "accuracy/accuracy", "accuracy/val_accuracy", "train/lr"} <= tags
    assert [e.step for e in events.Scalars("accuracy/val_accuracy")] == [1, 2]


@pytest.mark.parametrize("precision, channels_last", [("bf16", True), ("fp16", False)])
def test_mixed_precision_and_channels_last_paths(images, precision, channels_last):
    """The GPU recipe's code paths (autocast, fp16 gradient scaler, NHWC), run on the CPU."""
    model = build_model(SPEC, classes=2, seed=0)
    trainer = Trainer(model, torch.optim.AdamW(model.parameters(), 1e-2), precision=precision,
                      channels_last=channels_last)
    history = trainer.fit(*loaders(images), epochs=6)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["accuracy"] >= 0.9
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_checkpoints_are_written_while_the_next_epoch_trains(images, tmp_path, monkeypatch):
    """The resumable checkpoint of epoch 1 is written on the saver's thread. Here its write
    waits until epoch 2 has begun: on the training thread it would wait in vain (epoch 2
    cannot begin before the save returns). The file then holds epoch 1's weights, copied
    before epoch 2 changed them, and every file is complete when fit returns."""
    import json
    import shutil
    import threading

    from cnnlab.train import resume

    began, released = threading.Event(), []
    real = resume.write_safetensors

    def slow(path, tensors, header):
        epoch = json.loads(header["state"])["epoch"]
        if epoch == 1:
            released.append(began.wait(5))
        real(path, tensors, header)
        shutil.copy(path, tmp_path / f"epoch{epoch}.safetensors")

    class Begin(Callback):
        def on_epoch_begin(self, trainer):
            if trainer.epoch == 2:
                began.set()

    monkeypatch.setattr(resume, "write_safetensors", slow)
    snaps = Snapshots()
    trainer = make_trainer([snaps, Begin(), ModelCheckpoint(tmp_path / "weights", monitor="val_loss")])
    trainer.fit(*loaders(images), epochs=2, checkpoint=tmp_path / "resume.safetensors")
    assert released == [True]
    first = load_checkpoint(tmp_path / "epoch1.safetensors")
    assert first["epoch"] == 1 and same(first["model"], snaps.by_epoch[1])
    assert not same(snaps.by_epoch[1], snaps.by_epoch[2])  # epoch 2 did change them meanwhile
    assert load_checkpoint(tmp_path / "resume.safetensors")["epoch"] == 2
    model, _ = load_weights(tmp_path / "weights" / "last.safetensors")
    assert same(model.state_dict(), snaps.by_epoch[2])
    assert not [t for t in threading.enumerate() if t.name == "cnnlab-saver"]  # no idle thread left behind


def test_what_a_background_write_gets_is_a_copy():
    """The saver writes later than it is asked: the tensors it is handed must not change
    when training goes on (a CPU tensor's .to('cpu') is the tensor itself, not a copy)."""
    from cnnlab.io.weights import weights_file
    from cnnlab.io.checkpoint import prepare_checkpoint

    model = build_model(SPEC, classes=2, seed=0)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()
    handed = [weights_file(model)[0], prepare_checkpoint({"model": model.state_dict(), "opt": opt.state_dict()})[0]]
    before = [{k: v.clone() for k, v in t.items()} for t in handed]
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()  # the weights and Adam's moments change in place
    for t, b in zip(handed, before):
        assert same(t, b)


def test_a_failed_background_write_ends_fit_with_its_sentence(images, tmp_path):
    from cnnlab.errors import CnnlabError

    (tmp_path / "afile").write_text("not a folder")
    trainer = make_trainer()
    with pytest.raises(CnnlabError, match=r"^cannot write .*afile/resume\.safetensors: "):
        trainer.fit(*loaders(images), epochs=4, checkpoint=tmp_path / "afile" / "resume.safetensors")
    assert trainer.epoch <= 1  # said at the next save, not after all the epochs


def test_compile_trains_through_the_compiler_to_the_same_weights(images):
    """Trainer(compile=...) sends the training forward pass through torch.compile. With a
    backend that runs the captured graph as it is, the run must end with the uncompiled
    run's weights (fp32, one thread), and the weights keep their plain names."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    plain = make_trainer()
    plain.fit(*loaders(images), epochs=2)
    model = build_model(SPEC, classes=2, seed=0)
    compiled = Trainer(model, torch.optim.AdamW(model.parameters(), lr=3e-3), seed=0, compile=backend)
    compiled.fit(*loaders(images), epochs=2)
    assert graphs  # the compiler saw the model
    assert same(weights(compiled.model), weights(plain.model))
    assert list(compiled.model.state_dict()) == list(plain.model.state_dict())  # no "_orig_mod." prefix


def test_the_compile_option_reaches_the_trainer(tmp_path, monkeypatch):
    """--compile (TrainConfig.compile) is what train() hands the Trainer; torch.compile is
    replaced by a recorder here (inductor's first compile takes 20 s on this CPU)."""
    import cnnlab
    from imagegen import make_split_folder

    seen = []

    def recorder(module, **kwargs):
        seen.append((type(module).__name__, kwargs))
        return module

    monkeypatch.setattr(torch, "compile", recorder)
    data = make_split_folder(tmp_path / "data", n={"train": 16, "val": 4})
    common = dict(model="tinyvgg", epochs=1, augment="none", workers=0, cache_dir=str(tmp_path / "cache"),
                  out=str(tmp_path / "runs"), device="cpu", evaluate=False, verbose=False)
    cnnlab.train(data, name="plain", **common)
    assert seen == []
    run = cnnlab.train(data, name="compiled", compile=True, **common)
    assert seen == [("CNN", {})]
    assert "compile: true" in (run.path / "config.yaml").read_text()


def test_to_device_pins_only_on_the_way_to_a_gpu():
    """On the CPU the tensor comes back as it was, and nothing is pinned: a CPU-only torch
    has no pinned memory (pin_memory() raises), so a run that pinned for the CPU would fail."""
    from cnnlab.device import to_device

    t = torch.arange(12, dtype=torch.uint8).view(3, 4)
    out = to_device(t, torch.device("cpu"))
    assert torch.equal(out, t) and out.device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            t.pin_memory()
