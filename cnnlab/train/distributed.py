"""Several GPUs (or CPU processes) with PyTorch's DistributedDataParallel, via torchrun.

    torchrun --nproc_per_node=4 -m cnnlab train DATA --batch-size 64

torchrun starts one process per device and tells each its ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``. Each process then:

* joins the process group (NCCL between CUDA devices, gloo on the CPU),
* trains a replica of the model wrapped in ``DistributedDataParallel``, which averages the
  gradients of all replicas after every backward pass, so the replicas stay identical,
* reads its own shard of every epoch's shuffled order (``ShardedLoader``): the same order
  on every rank (it depends on seed and epoch only), rank r taking positions r, r+N, ...
  so together the ranks see each image once per epoch; ``--batch-size`` is per process.

Metrics are summed over the ranks; every decision (early stopping, the time limit's
plan) is made identically everywhere; only rank 0 writes files and prints.
"""

from __future__ import annotations

import gc
import math
import os
from typing import Any, Iterator

import numpy as np
import torch


def world_size() -> int:
    """Processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if is_initialized() else 0


def init(device_name: str = "auto") -> torch.device | None:
    """Join torchrun's process group; returns this process's device (None without torchrun)."""
    if world_size() <= 1:
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return device


def shutdown() -> None:
    """Leave the process group, and free it now rather than at interpreter exit.

    ``destroy_process_group`` only forgets the group; objects that still hold it (a DDP
    wrapper in a reference cycle) keep it alive until the interpreter's teardown, where a gloo
    group's threads can abort the process (SIGABRT, "terminate called without an active
    exception"; seen under load, about 1 run in 5). Collecting here frees it while Python is
    whole. Callers drop their own references first (``Trainer.release``).
    """
    if is_initialized():
        torch.distributed.destroy_process_group()
        gc.collect()


def barrier() -> None:
    if is_initialized():
        torch.distributed.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's value of ``obj``, on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(*values: torch.Tensor) -> None:
    """Sum tensors over the ranks, in place."""
    if is_initialized():
        for v in values:
            torch.distributed.all_reduce(v)


class ShardedLoader:
    """One rank's share of an :class:`~cnnlab.data.loader.ImageLoader`'s epochs.

    ``train=True``: every rank gets the same number of batches (a few images at the end of
    the shuffled order are left out, as DistributedSampler's ``drop_last`` does), since DDP
    needs every rank to step together. ``train=False`` (validation): all images, unevenly.
    """

    def __init__(self, loader, rank: int, world: int, train: bool):
        self.loader, self.rank, self.world, self.train = loader, rank, world, train
        self.batch_size = loader.batch_size
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return self.loader.num_samples

    @property
    def bad_files(self):
        return self.loader.bad_files

    @property
    def labels(self):
        return self.loader.labels

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _positions(self) -> np.ndarray:
        order = self.loader.order(self.epoch) if self.train else np.arange(self.loader.num_samples)
        if self.train:
            per_rank = len(order) // self.world
            return order[self.rank::self.world][:per_rank]
        return order[self.rank::self.world]

    def __len__(self) -> int:
        n = self.loader.num_samples // self.world if self.train else len(self._positions())
        if self.train and self.loader.drop_last and n > self.batch_size:  # as make_loader's rule, per rank
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of the epoch from batch ``start`` on (the loader reads ahead in
        its block order; the ranks read the same blocks at the same time)."""
        return self.loader.batches(self._positions(), len(self), start)


# -- the reductions the training loop needs (each a no-op without torchrun) ------------------


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any process."""
    if not is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def sum_metrics(seen: int, *sums: torch.Tensor) -> int:
    """Add every process's running ``sums`` (in place) and images ``seen``; returns the total seen."""
    if not is_initialized():
        return seen
    total = torch.tensor(float(seen), device=sums[0].device)
    all_reduce_sum(*sums, total)
    return int(total.item())


def sync_buffers(model: torch.nn.Module) -> None:
    """Batch-norm statistics (and every other buffer) of the main process, everywhere."""
    if is_initialized():
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
