"""The monitor base of EarlyStopping, ModelCheckpoint and ReduceLROnPlateau, on values worked by hand."""

import math
from types import SimpleNamespace

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.train.callbacks import EarlyStopping, MonitorCallback, ReduceLROnPlateau


def fake_trainer(lr: float = 1.0):
    return SimpleNamespace(epoch=0, logs={}, stop_training=False, stop_reason=None,
                           optimizer=SimpleNamespace(param_groups=[{"lr": lr}]))


def run(callback, monitor: str, values: list[float]):
    """Epochs 1, 2, ... logging ``values``; the trainer after each epoch's callback."""
    trainer, seen = fake_trainer(), []
    for epoch, value in enumerate(values, start=1):
        trainer.epoch, trainer.logs = epoch, {"epoch": epoch, monitor: value}
        callback.on_epoch_end(trainer)
        seen.append(SimpleNamespace(stop=trainer.stop_training, lr=trainer.optimizer.param_groups[0]["lr"]))
        if trainer.stop_training:
            break
    return seen


def updates(monitor: MonitorCallback, values: list[float], first: int = 1) -> tuple[list[int], list[int]]:
    """(the epochs that improved, ``wait`` after each epoch), the values being epochs first, first + 1, ..."""
    improved, waits = [], []
    for epoch, value in enumerate(values, start=first):
        if monitor.update(value, epoch):
            improved.append(epoch)
        waits.append(monitor.wait)
    return improved, waits


LOSSES = [1.0, 0.95, 0.8, 0.85, 0.75, 0.74, 0.6]


def test_min_mode_counts_an_improvement_only_beyond_min_delta():
    # best 1.0; 0.95 is not below 1.0 - 0.1; 0.8 is (best 0.8); 0.85, 0.75, 0.74 are not below
    # 0.7; 0.6 is.
    improved, waits = updates(MonitorCallback("val_loss", "min", min_delta=0.1), LOSSES)
    assert improved == [1, 3, 7] and waits == [0, 1, 0, 1, 2, 3, 0]
    # without min_delta every lower value improves
    improved, waits = updates(MonitorCallback("val_loss", "min"), LOSSES)
    assert improved == [1, 2, 3, 5, 6, 7] and waits == [0, 0, 0, 1, 0, 0, 0]


def test_max_mode_from_the_name_and_a_nan_never_improves():
    monitor = MonitorCallback("val_acc", "auto", min_delta=-0.02)  # the old name; the sign of min_delta is ignored
    assert (monitor.monitor, monitor.mode, monitor.best.value) == ("val_accuracy", "max", -math.inf)
    improved, waits = updates(monitor, [0.5, 0.6, 0.6, 0.65, 0.64, math.nan, 0.7])
    # 0.6 does not beat 0.6 + 0.02; 0.65 does; 0.64 and NaN do not beat 0.67; 0.7 does
    assert improved == [1, 2, 4, 7] and waits == [0, 0, 1, 0, 1, 2, 0]
    assert (monitor.best.value, monitor.best.epoch) == (0.7, 7)
    assert MonitorCallback("loss").mode == "min" and MonitorCallback("val_macro_f1").mode == "max"
    with pytest.raises(CnnlabError, match="mode must be 'min', 'max' or 'auto', got 'up'"):
        MonitorCallback("loss", "up")


def test_its_state_comes_back():
    monitor = MonitorCallback("val_loss", "min", 0.1)
    updates(monitor, LOSSES[:5])
    again = MonitorCallback("val_loss", "min", 0.1)
    again.load_state_dict(monitor.state_dict())
    assert (again.best, again.wait) == (monitor.best, 2)
    assert updates(again, LOSSES[5:], first=6) == updates(monitor, LOSSES[5:], first=6) == ([7], [3, 0])


@pytest.mark.parametrize("patience, stop_epoch", [(1, 2), (2, 5), (3, 6), (4, None)])
def test_early_stopping_stops_after_patience_epochs_without_improvement(patience, stop_epoch):
    stop = EarlyStopping("val_loss", min_delta=0.1, patience=patience)
    seen = run(stop, "val_loss", LOSSES)
    stopped = len(seen) if seen[-1].stop else None
    assert stopped == stop_epoch and stop.stopped_epoch == (stop_epoch or 0)
    assert stop.best.epoch == (1 if patience == 1 else 3 if stop_epoch else 7)


def test_reduce_lr_on_plateau_after_more_than_patience_epochs_then_a_cooldown():
    # patience 1: the second epoch without improvement halves the lr (epochs 3 and 6, and 9),
    # the epoch after a reduction is a cooldown (not counted); never below min_lr 0.2.
    values = [1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    plateau = ReduceLROnPlateau("val_loss", factor=0.5, patience=1, cooldown=1, min_lr=0.2, min_delta=0.0)
    lrs = [s.lr for s in run(plateau, "val_loss", values)]
    assert lrs == [1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2]
    # as torch's ReduceLROnPlateau, which computed this callback before
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1, min_lr=0.2,
                                                     threshold=0.0, threshold_mode="abs")
    torch_lrs = []
    for v in values:
        ref.step(v)
        torch_lrs.append(opt.param_groups[0]["lr"])
    assert lrs == torch_lrs


def test_reduce_lr_on_plateau_reads_a_state_saved_from_torchs_scheduler():
    plateau = ReduceLROnPlateau("val_loss", factor=0.5, patience=1, cooldown=1)
    plateau.load_state_dict({"best": 0.3, "num_bad_epochs": 1, "cooldown_counter": 0, "mode": "min"})
    assert (plateau.best.value, plateau.wait, plateau.cooldown_counter) == (0.3, 1, 0)
    assert [s.lr for s in run(plateau, "val_loss", [0.4])] == [0.5]
    with pytest.raises(CnnlabError, match="factor must be between 0 and 1, got 2"):
        ReduceLROnPlateau(factor=2)


def test_a_metric_the_run_does_not_log_is_named():
    with pytest.raises(CnnlabError, match="EarlyStopping monitors 'val_loss', which this run does not log "
                                          r"\(it logs: loss\)"):
        run(EarlyStopping("val_loss"), "loss", [1.0])
