"""Resumable checkpoints without pickle: tensors in safetensors, everything else in JSON.

A training run's full state is a nested structure of dicts, lists, numbers, strings and
tensors: the model's ``state_dict()``, the optimiser's (whose per-parameter state is keyed
by integers), the callbacks' states, the random generators, the epoch counter... ``torch.save``
would pickle it, and loading a pickle can run arbitrary code. Instead
:func:`save_checkpoint` walks the structure, moves every tensor into a safetensors file under
a dotted key (``optimizer.state.3.exp_avg``) and writes the rest as JSON in the same file's
header, with a ``{"$tensor": key}`` marker where each tensor was. :func:`load_checkpoint`
puts the structure back together. Python floats survive JSON exactly (``repr`` round-trips),
so a resumed run continues bit for bit.

The file is written atomically (temporary file + rename): a run killed while saving keeps
its previous checkpoint.

:class:`BackgroundSaver` does the writing on a second thread while training goes on (the
idea of PyTorch Lightning's ``AsyncCheckpointIO``): the training thread only copies the
tensors (milliseconds), the thread serialises, writes, fsyncs and renames (tens to hundreds
of milliseconds an epoch, a real share of a short GPU epoch).
"""

from __future__ import annotations

import json
import math
import queue
import threading
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file

from cnnlab.errors import CnnlabError
from cnnlab.io.weights import read_header, write_safetensors

FORMAT = "cnnlab-checkpoint/1"


def encode(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """A JSON-able copy of ``obj``; its tensors are moved into ``tensors`` under dotted keys."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
        return {"$tensor": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: encode(v, tensors, f"{path}.{k}" if path else k) for k, v in obj.items()}
        # Integer keys (the optimiser's parameter ids) would turn into strings in JSON.
        return {"$items": [[k, encode(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"$tuple": [encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"$float": repr(obj)}  # inf / nan, which strict JSON lacks
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # a numpy scalar
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} at {path or 'top level'} in a checkpoint")


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(obj, dict):
        if set(obj) == {"$tensor"}:
            return tensors[obj["$tensor"]]
        if set(obj) == {"$items"}:
            return {k: decode(v, tensors) for k, v in obj["$items"]}
        if set(obj) == {"$tuple"}:
            return tuple(decode(v, tensors) for v in obj["$tuple"])
        if set(obj) == {"$float"}:
            return float(obj["$float"])
        return {k: decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (nested dicts/lists/tensors/numbers) to ``path`` atomically."""
    write_safetensors(path, *prepare_checkpoint(state))


def prepare_checkpoint(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header) of ``state``: copies, so training may go on changing the originals."""
    tensors: dict[str, torch.Tensor] = {}
    tree = encode(state, tensors)
    return tensors, {"format": FORMAT, "state": json.dumps(tree, allow_nan=False)}


class BackgroundSaver:
    """Write files on a second thread, in the order they were asked for.

    ``submit(write, *args)`` queues ``write(*args)`` and returns at once (it waits only
    when a few writes are still queued: a disk slower than the epochs holds training back
    rather than filling memory); ``args`` must be copies (``prepare_checkpoint``,
    ``weights_file``), not tensors training goes on changing. ``wait()`` returns once every
    queued file is on disk and raises the first error, if a write failed: a full disk says so
    at the next save or at the end of ``fit``, in one sentence, and ends the thread (the next
    ``submit`` starts another). ``Trainer.fit`` waits before it returns or raises; code that
    submits writes itself calls ``wait()`` (the thread is a daemon, and an unfinished write
    leaves the previous file as it was).
    """

    def __init__(self, queued: int = 4) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=queued)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[..., None], *args: Any) -> None:
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="cnnlab-saver", daemon=True)
            self._thread.start()
        self._queue.put((write, args))

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:  # None: wait() ends the thread
            write, args = job
            try:
                if self._error is None:  # after a failure the rest are dropped: wait() says why
                    write(*args)
            except BaseException as e:  # noqa: BLE001  (given to the training thread by wait())
                self._error = e

    def wait(self) -> None:
        if self._thread is not None:  # the queue's writes, then the thread itself (no idle thread left)
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def read_state_header(path: str | Path) -> dict[str, Any]:
    """The checkpoint's structure without its tensors (each left as its ``{"$tensor": key}``
    marker): the counters, for a message, without reading megabytes of weights."""
    try:
        return json.loads(read_header(path)["state"])
    except Exception:
        raise CnnlabError(f"{path}: not a readable checkpoint (truncated or corrupt?)") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; tensors land on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path}: no such checkpoint (the run saved none yet)")
    try:
        header = read_header(path)
        tensors = load_file(str(path), device=str(device))
    except Exception:
        raise CnnlabError(f"{path}: not a readable checkpoint (truncated or corrupt?)") from None
    if header.get("format") != FORMAT or "state" not in header:
        raise CnnlabError(f"{path}: not a cnnlab training checkpoint")
    return decode(json.loads(header["state"]), tensors)
