"""What the resumable checkpoint holds, and how a :class:`~cnnlab.train.loop.Trainer` gets it back.

After every epoch (and on Ctrl-C) the trainer saves :func:`state_dict`: model, optimiser,
gradient scaler, every callback's state, the counters, the plan and the random generators.
:func:`restore` puts it back, so a resumed run goes on with exactly the numbers an
uninterrupted one would have had (bit for bit on the CPU).

An epoch cut short by Ctrl-C, and the checkpoints of ``--checkpoint-every N`` steps, are saved
*partial*: the last finished epoch, plus what the unfinished one had done so far (batches, the
augmentation generator, the running sums); :func:`restore_partial` continues that epoch at its
next batch. Under torchrun each process has its own generators and sums: a partial checkpoint
holds every rank's (``partial["ranks"]``), gathered when it is saved, and continues only with
as many processes. The file format (safetensors + JSON, no pickle) is
:mod:`cnnlab.io.checkpoint`'s.

Under torchrun only rank 0 reads and writes the file (the others get its contents from rank
0), so only rank 0's node needs the run folder.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cnnlab.display import count
from cnnlab.errors import CnnlabError
from cnnlab.io.checkpoint import load_checkpoint, prepare_checkpoint, read_state_header, save_checkpoint
from cnnlab.io.weights import write_safetensors
from cnnlab.train import distributed as dist

if TYPE_CHECKING:
    from cnnlab.train.callbacks import Callback
    from cnnlab.train.loop import Trainer


def state_dict(trainer: "Trainer", partial: bool = False) -> dict[str, Any]:
    """Everything needed to continue: model, optimiser, callbacks, counters, RNG."""
    state: dict[str, Any] = {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "callbacks": {key: cb.state_dict() for key, cb in keyed_callbacks(trainer) if cb.state_dict()},
        "epoch": trainer.epoch - 1 if partial else trainer.epoch,  # the last finished epoch
        "step": trainer.step,
        "epochs": trainer.epochs,
        "max_steps": trainer.max_steps,
        "history": trainer.history,
        "rng": rng_state(),
        "stopped": trainer.stop_training and not partial,  # finished: nothing to resume
        "stop_reason": trainer.stop_reason,
        "partial": None,
    }
    if partial:
        state["partial"] = {"batch": trainer.batch, "step": trainer.step, **rank_part(trainer)}
        if trainer.world > 1:  # every process's own generators and sums (a collective: all ranks call it)
            state["partial"]["ranks"] = dist.all_gather(rank_part(trainer, rng=True), "while saving a checkpoint")
        state["step"] = trainer.step - trainer.batch
    return state


def rank_part(trainer: "Trainer", rng: bool = False) -> dict[str, Any]:
    """What one process's unfinished epoch has of its own: its augmentation generator, its
    running sums (and with ``rng``, its random generators, as :func:`rng_state`)."""
    part = {"generator": trainer.generator.get_state(), "loss_sum": trainer._loss_sum.detach().cpu(),
            "correct_sum": trainer._correct_sum.detach().cpu(), "seen": trainer._seen,
            "train_seconds": trainer._train_seconds}
    if rng:
        part["rng"] = rng_state()
    return part


def keyed_callbacks(trainer: "Trainer") -> list[tuple[str, "Callback"]]:
    """('EarlyStopping', cb), ('LRSchedule', cb), ('Mine#2', cb)...: how states are saved.

    Callbacks without state (a progress bar) may differ between a run and its resume.
    """
    seen: dict[str, int] = {}
    out = []
    for cb in trainer.callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", cb))
    return out


def save(trainer: "Trainer", path: str | Path, partial: bool = False, wait: bool | None = None) -> None:
    """Write the checkpoint (the main process only, under torchrun): on the trainer's
    background saver, or at once with ``wait`` (default: for a partial one, Ctrl-C's: the
    process ends). A partial checkpoint under torchrun gathers every rank's part first, so
    every rank calls this."""
    state = state_dict(trainer, partial) if partial or trainer.is_main else None
    if not trainer.is_main:
        return
    if partial if wait is None else wait:
        trainer.saver.wait()  # the files still being written land first
        save_checkpoint(path, state)
    else:
        trainer.saver.submit(write_safetensors, path, *prepare_checkpoint(state))


def restore(trainer: "Trainer", path: str | Path) -> dict[str, Any] | None:
    """Load the checkpoint into ``trainer``; returns the unfinished epoch's state, if any.

    Under torchrun rank 0 reads the file and sends its contents to the others."""
    state = None
    with dist.together(f"while rank 0 read {path}"):
        if trainer.is_main:
            state = load_checkpoint(path)
    state = trainer.broadcast(state, f"while rank 0 sent the checkpoint {path}")
    with dist.together(f"while restoring {path}"):
        return _restore(trainer, path, state)


def _restore(trainer: "Trainer", path: str | Path, state: dict[str, Any]) -> dict[str, Any] | None:
    partial = state["partial"]
    if partial is not None:
        ranks = partial.pop("ranks", None)
        saved_by = len(ranks) if ranks else 1
        if saved_by != trainer.world:
            raise CnnlabError(f"{path}: saved in the middle of epoch {state['epoch'] + 1} by "
                              f"{count(saved_by, 'process', 'processes')}; continue it with as many (now "
                              f"{trainer.world}), or from its last finished epoch by deleting the file")
        if ranks:
            partial.update(ranks[trainer.rank])  # this rank's own generators and sums
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    match_param_layouts(trainer.optimizer)
    if trainer.scaler.is_enabled() and state["scaler"]:
        trainer.scaler.load_state_dict(state["scaler"])
    saved = dict(state["callbacks"])
    for key, cb in keyed_callbacks(trainer):
        if key in saved:
            cb.load_state_dict(saved.pop(key))
        elif cb.state_dict():
            raise CnnlabError(f"{path}: has no state for the {key} callback; resume with the same callbacks")
    if saved:
        raise CnnlabError(f"{path}: was saved with a {next(iter(saved))} callback that is missing now; "
                          "resume with the same callbacks")
    trainer.epoch, trainer.step, trainer.history = state["epoch"], state["step"], state["history"]
    trainer.stop_training, trainer.stop_reason = state["stopped"], state["stop_reason"]
    trainer.epochs = state["epochs"]  # the plan continues as it was (TimeLimit may have changed it)
    trainer.max_steps = state["max_steps"]
    set_rng_state(state["rng"])
    if partial is not None:
        partial.setdefault("rng", state["rng"])  # a rank's own (under torchrun), else the file's
    return partial


def position(path: str | Path) -> tuple[int, int] | None:
    """(epoch, batch) where a run continues from its checkpoint: the next batch to train,
    1-based (batch 1: the epoch starts afresh); None without a checkpoint. Reads the file's
    header only."""
    if not Path(path).is_file():
        return None
    state = read_state_header(path)
    partial = state.get("partial")
    return (state["epoch"] + 1, partial["batch"] + 1 if partial else 1)


def match_param_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Optimiser state comes back from the file contiguous (NCHW); in the run that was never
    stopped it has its parameter's layout (channels_last). Elementwise kernels round
    differently on mixed layouts (a vectorised fused multiply-add against a plain loop), so
    without this a channels_last run resumed to weights 1e-2 away from the uninterrupted one."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def restore_partial(trainer: "Trainer", partial: dict[str, Any]) -> int:
    """Continue an epoch cut short (Ctrl-C, or a crash after a step checkpoint); returns the
    batches it had done."""
    trainer.generator = torch.Generator()
    trainer.generator.set_state(partial["generator"].cpu())
    set_rng_state(partial["rng"])
    trainer._loss_sum = partial["loss_sum"].to(trainer.device)
    trainer._correct_sum = partial["correct_sum"].to(trainer.device)
    trainer._seen, trainer._train_seconds = partial["seen"], partial["train_seconds"]
    trainer._last_loss = torch.zeros((), device=trainer.device)
    trainer.batch, trainer.step = partial["batch"], partial["step"]
    return trainer.batch


def rng_state() -> dict[str, Any]:
    """Every random generator training touches, as tensors and JSON-able values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():  # as many as both machines have
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)
