"""Batched inference over image files: the loop `evaluate` and `predict` share.

Files are decoded in batches (``Preprocessor.load_batch``, exactly the preprocessing of
training) by a background thread, so the next batch is being decoded while the model
runs on the current one. With the model on a GPU the CPU's cores are free, and that
thread's batch of large images is decoded by several threads side by side (``decoders``).
A file that cannot be read is reported, not raised: the other files still get their
probabilities.

Test-time augmentation (TTA, see :mod:`cnnlab.eval.tta`): ``flip`` averages the
probabilities of the image and of its horizontal mirror -- a cheap, often small gain for
photos, where left and right are interchangeable (a flipped cat is still a cat); it doubles
the model's work. ``flip+translate`` adds 1-pixel shifts (six views, as airbench).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cnnlab.device import AUTOCAST
from cnnlab.errors import CnnlabError
from cnnlab.eval.tta import tta_mode, tta_probabilities

BATCH_SIZE = 64

# The number formats inference can run in. fp32 is exact (the same probabilities on every
# run); bf16/fp16 run the model under autocast, as a run trained in them did, several times
# faster than fp32 on a CPU with native bf16, with a few predictions of 10,000 different
# (airbench, 6-view TTA over CIFAR-10's test images: benchmarks/log/2026-12-02.md, "The test
# evaluation after training"). The probabilities themselves are always fp32. The
# formats and their autocast dtypes are the training step's (cnnlab.device.AUTOCAST).


def resolve_precision(precision: str, run_config: dict, device: str | torch.device = "cpu") -> tuple[str, bool]:
    """(precision, channels_last) for ``precision``; ``run``: as the run trained, from its
    config.yaml values, its memory layout included (fp32 when it has none: a model file on its
    own, or when the run trained in fp16 on a GPU and now runs on the CPU, which has no fp16
    autocast worth it). The layout matters in fp32 too: the photo recipe trains fp32 +
    channels_last on CPUs without bf16, where its forward pass in NCHW takes twice as long
    (photonet at 128 px on an AVX2-only EPYC: MaxPooling2D alone 3x slower)."""
    if precision != "run":
        return precision, False
    trained = run_config.get("precision")
    if trained == "fp16" and torch.device(device).type == "cpu":
        return "fp32", False
    return (trained if trained in ("bf16", "fp16") else "fp32"), bool(run_config.get("channels_last"))


@torch.inference_mode()
def batch_probabilities(model, x: torch.Tensor, tta: bool | str = False) -> torch.Tensor:
    """Class probabilities for a batch (N, C, H, W); ``tta``: a mode of :mod:`cnnlab.eval.tta`
    (True is ``flip``: averaged with the mirror image)."""
    if tta_mode(tta) == "none":
        return model.probabilities(model(x).float())
    return tta_probabilities(model, x, tta)


SIDE_BY_SIDE_PIXELS = 160 * 160  # model inputs from this size up decode faster on several threads


def default_decoders(device: torch.device, size: tuple[int, int]) -> int:
    """Threads to decode each batch: one with the model on the CPU (its forward pass uses
    every core), and one per core (up to 8) beside a GPU for inputs of 160x160 px and more.
    Smaller images are decoded faster by one thread: their Python work, which holds the
    interpreter's lock, outweighs Pillow's decoding, which lets go of it. Measured on 2 cores:
    benchmarks/bench_predict.py prints one thread against two for its files."""
    if device.type == "cpu" or size[0] * size[1] < SIDE_BY_SIDE_PIXELS:
        return 1
    return min(8, os.cpu_count() or 1)


def predict_files(
    model,
    preprocessor,
    paths: Sequence[str | Path],
    *,
    tta: bool | str = False,
    batch_size: int = BATCH_SIZE,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    decoders: int | None = None,
) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Probabilities for every readable file.

    Returns ``(probs, ok, errors)``: ``probs[j]`` (float64, one column per class) belongs
    to ``paths[ok[j]]``; ``errors`` maps the index of each unreadable file to the reason.
    ``precision`` (fp32, bf16, fp16: see :data:`cnnlab.device.AUTOCAST`) and ``channels_last`` say how the
    model runs; channels_last converts ``model`` in place (its outputs stay the same).
    ``decoders``: threads decoding each batch (default: :func:`default_decoders`).
    """
    if precision not in AUTOCAST:
        raise CnnlabError(f"precision must be one of {', '.join(AUTOCAST)}, got {precision!r}")
    model.eval()
    device = torch.device(device)
    if precision == "fp16" and device.type == "cpu":  # as training says: fp16 on the CPU is emulated, slow
        raise CnnlabError("precision fp16 needs a GPU; on the CPU use fp32 (or bf16 on CPUs with AVX512-BF16/AMX)")
    dtype = AUTOCAST[precision]
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return batch_probabilities(model, x, tta)

    if decoders is None:
        decoders = default_decoders(device, preprocessor.size)
    starts = range(0, len(paths), batch_size)
    chunks, ok, errors = [], [], {}
    side_by_side = ThreadPoolExecutor(max_workers=decoders) if decoders > 1 else contextlib.nullcontext()
    with ThreadPoolExecutor(max_workers=1) as pool, side_by_side as decode:
        load = lambda s: preprocessor.load_batch(list(paths[s:s + batch_size]), decode)  # noqa: E731
        pending = pool.submit(load, 0) if len(paths) else None
        for s in starts:
            x, batch_ok, batch_errors = pending.result()
            pending = pool.submit(load, s + batch_size) if s + batch_size < len(paths) else None
            ok += [s + i for i in batch_ok]
            errors.update({s + i: reason for i, reason in batch_errors.items()})
            if len(batch_ok):
                chunks.append(run(x).float().cpu().numpy())
    probs = np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, 0))
    return probs, ok, errors
