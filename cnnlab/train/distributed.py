"""Several GPUs (or CPU processes), on one machine or several, with PyTorch's
DistributedDataParallel, via torchrun.

    torchrun --nproc_per_node=4 -m cnnlab train DATA --batch-size 64
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m cnnlab train DATA

torchrun starts one process per device and tells each its ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``. Each process then:

* joins the process group (NCCL between CUDA devices, gloo on the CPU) under a part of
  torchrun's key-value store that is new for every group (:func:`init`, below),
* trains a replica of the model wrapped in ``DistributedDataParallel``, which averages the
  gradients of all replicas after every backward pass, so the replicas stay identical,
* reads its own shard of every epoch's shuffled order (``ShardedLoader``): the same order
  on every rank (it depends on seed and epoch only), rank r taking positions r, r+N, ...
  so together the ranks see each image once per epoch; ``--batch-size`` is per process.

Metrics are summed over the ranks; every decision (early stopping, the time limit's
plan) is made identically everywhere; only rank 0 writes files and prints.

**A group that torchrun restarts** (``--max-restarts``) meets in the same store as the group
before it, whose keys are still there: with torch 2.13 a restarted group's gloo processes
dialled the dead processes' addresses (connection refused under the static rendezvous, a hang
in ``init_process_group`` under c10d; pytorch/pytorch#135712 is the same for NCCL). So each
group joins under a prefix of its own: rank 0 draws a token and hands it to every rank that
says hello with a nonce of its own (:func:`_fresh_prefix`); no rank can read a key of an
older group.

**Errors on any rank** reach every rank: a step that each rank runs on its own (reading its
data, building its loaders) is wrapped in :func:`together`, which gathers every rank's
outcome; the lowest rank that failed says why (naming its rank and node when it is not rank
0), the others stop with the same exit code and say nothing.

**No silent hang**: every wait for other processes gives up after :func:`timeout` seconds
(``CNNLAB_DIST_TIMEOUT``, default 600: NCCL's own default, far above a training step, a
validation or a checkpoint, and room for rank 0 to decode a dataset that fits in memory while
the others wait), and a collective that times out or loses a process ends with one sentence
saying which rank stopped waiting for what (:class:`GroupError`). On NCCL, cnnlab's own
messages go through a gloo group beside it, so they time out the same way; NCCL's gradient
all-reduce is watched by NCCL's own watchdog, with the same limit.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError, SaidByAnotherProcess, is_main_process

TIMEOUT_ENV = "CNNLAB_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  # seconds; see the module's docstring
POLL = 0.02  # seconds between rank 0's looks at the store while the group forms


class GroupError(CnnlabError):
    """A collective operation timed out or lost a process; the message names this rank."""


class RankError(CnnlabError):
    """A problem one rank found; its message already names the rank and its node."""


@dataclass
class Peer:
    """What every rank knows about every other, gathered once when the group forms."""

    host: str  # socket.gethostname()
    restart: int  # TORCHELASTIC_RESTART_COUNT: restarts its own torchrun has made


@dataclass
class _Group:
    backend: str = ""
    store: Any = None  # torchrun's store (unprefixed): it outlives a restarted group
    control: Any = None  # the gloo group of cnnlab's own messages under NCCL (None: the default group)
    peers: list[Peer] = field(default_factory=list)


_group = _Group()


def world_size() -> int:
    """Processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if is_initialized() else 0


def timeout() -> float:
    """Seconds any process waits for the others before it gives up (``CNNLAB_DIST_TIMEOUT``)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not (seconds > 0 and math.isfinite(seconds)):
        error = CnnlabError if is_main_process() else SaidByAnotherProcess  # each process reads it
        raise error(f"{TIMEOUT_ENV}={raw!r}: must be a number of seconds above 0 (default {DEFAULT_TIMEOUT:g})")
    return seconds


def host() -> str:
    return socket.gethostname()


def who(r: int | None = None) -> str:
    """'rank 1 (node host-b)': how messages name a process."""
    r = rank() if r is None else r
    name = _group.peers[r].host if r < len(_group.peers) else (host() if r == rank() else "?")
    return f"rank {r} (node {name})"


def restart_number() -> int:
    """How many times torchrun restarted this group: the most any node's torchrun counted.

    (A torchrun whose own workers did not fail restarts them without counting, when another
    node's group failed, so the nodes' counts can differ.)"""
    return max((p.restart for p in _group.peers), default=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))


def init(device_name: str = "auto") -> torch.device | None:
    """Join torchrun's process group; returns this process's device (None without torchrun).

    Called again with a device that needs the other backend (a CPU run resumed on a GPU
    machine), it leaves the group and joins a new one."""
    if world_size() <= 1:
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    if is_initialized() and _group.backend and _group.backend != backend:
        shutdown()
    if not is_initialized():
        _join(backend)
    return device


def _join(backend: str) -> None:
    """init_process_group under a store prefix no earlier group used (see the module's docstring)."""
    seconds = timeout()
    limit = timedelta(seconds=seconds)
    store, r, world = next(torch.distributed.rendezvous("env://", timeout=limit))
    store.set_timeout(limit)
    token = _fresh_prefix(store, r, world, seconds)
    torch.distributed.init_process_group(backend, store=torch.distributed.PrefixStore(f"cnnlab/{token}/", store),
                                         rank=r, world_size=world, timeout=limit)
    _group.backend, _group.store = backend, store
    if backend != "gloo":  # cnnlab's messages (objects, errors) on a gloo group: its timeouts can be caught
        _group.control = torch.distributed.new_group(backend="gloo", timeout=limit)
    me = Peer(host(), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
    _group.peers = all_gather(me, "while the group formed")


def _fresh_prefix(store, r: int, world: int, seconds: float) -> str:
    """A token every process of this group agrees on, and no earlier group used.

    The store may hold keys of an earlier group (torchrun restarted it), so no key that
    another process writes can be trusted to be new, except under a name this process chose:
    each rank writes a random nonce under ``hello/RANK`` and waits for ``welcome/NONCE``; rank
    0 answers every nonce it sees (old ones too, harmlessly) with its own random token, until
    each rank has confirmed under ``joined/TOKEN/RANK``."""
    if r != 0:
        nonce = uuid.uuid4().hex
        store.set(f"cnnlab/hello/{r}", nonce)
        try:
            token = store.get(f"cnnlab/welcome/{nonce}").decode()
        except RuntimeError:  # torch's DistStoreError: the wait timed out
            raise GroupError(f"rank {r} (node {host()}) stopped waiting after {seconds:g} s for rank 0 to let it "
                             f"into the group ({TIMEOUT_ENV} sets the limit)") from None
        store.set(f"cnnlab/joined/{token}/{r}", "1")
        return token
    token = uuid.uuid4().hex
    answered: set[str] = set()
    waiting = set(range(1, world))
    deadline = time.monotonic() + seconds
    while waiting:
        for other in sorted(waiting):
            if store.check([f"cnnlab/joined/{token}/{other}"]):
                waiting.discard(other)
            elif store.check([f"cnnlab/hello/{other}"]):
                nonce = store.get(f"cnnlab/hello/{other}").decode()
                if nonce not in answered:
                    store.set(f"cnnlab/welcome/{nonce}", token)
                    answered.add(nonce)
        if waiting and time.monotonic() > deadline:
            raise GroupError(f"rank 0 (node {host()}) stopped waiting after {seconds:g} s for rank {min(waiting)} to "
                             f"join the group ({TIMEOUT_ENV} sets the limit)")
        if waiting:
            time.sleep(POLL)
    return token


def shutdown() -> None:
    """Leave the process group, and free it now rather than at interpreter exit.

    ``destroy_process_group`` only forgets the group; objects that still hold it (a DDP
    wrapper in a reference cycle) keep it alive until the interpreter's teardown, where a gloo
    group's threads can abort the process (SIGABRT, "terminate called without an active
    exception"; seen under load, about 1 run in 5). Collecting here frees it while Python is
    whole. Callers drop their own references first (``Trainer.release``).
    """
    if is_initialized():
        torch.distributed.destroy_process_group()  # every group, the control group too
        _group.control = _group.store = None
        _group.backend = ""
        gc.collect()


# -- cnnlab's own messages between the processes: each a no-op without torchrun ----------------


def _failure(error: RuntimeError, what: str) -> GroupError | None:
    """The sentence for a collective that timed out or lost a process (None: another error)."""
    text = str(error)
    if "imed out" in text or "imeout" in text:
        return GroupError(f"{who()} stopped waiting after {timeout():g} s for the other processes {what} "
                          f"({TIMEOUT_ENV} sets the limit)")
    if any(s in text for s in ("Connection closed", "Connection reset", "Broken pipe", "Connection refused")):
        return GroupError(f"{who()} lost another process {what}: it ended, or its node went away "
                          "(torchrun's report names it)")
    return None


@contextlib.contextmanager
def watch(what: str | Callable[[], str]) -> Iterator[None]:
    """Turn a collective that times out or loses a process inside the block into one sentence
    (:class:`GroupError`) instead of gloo's traceback; ``what``: "while training", or a
    function that says it when it happens."""
    try:
        yield
    except RuntimeError as e:
        if not is_initialized():
            raise
        failure = _failure(e, what() if callable(what) else what)
        if failure is None:
            raise
        raise failure from None


def _control() -> Any:
    return _group.control


def barrier(what: str = "at a barrier") -> None:
    if is_initialized():
        with watch(what):
            torch.distributed.barrier(group=_control())


def broadcast(obj: Any, what: str = "while following rank 0") -> Any:
    """Rank 0's value of ``obj``, on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    with watch(what):
        torch.distributed.broadcast_object_list(box, src=0, group=_control())
    return box[0]


def all_gather(obj: Any, what: str = "while gathering") -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    with watch(what):
        torch.distributed.all_gather_object(out, obj, group=_control())
    return out


@contextlib.contextmanager
def together(what: str) -> Iterator[None]:
    """Run the block on every rank; an error on any rank ends it on every rank.

    Each rank runs the block on its own (it must hold no collective that a failing rank
    could skip); then every rank's outcome is gathered. If any failed, the lowest rank with
    an error of its own says it (naming its rank and node unless it is rank 0, whose errors
    read as they do without torchrun) and the others raise :class:`SaidByAnotherProcess`
    with its exit code. A rank's own bug (not a :class:`CnnlabError`) keeps its traceback
    there. ``what`` ("while reading the data") names the step if the gathering times out.
    """
    if not is_initialized():
        yield
        return
    error: BaseException | None = None
    try:
        yield
    except BaseException as e:  # noqa: BLE001  (every rank hears of it, then it is raised again)
        error = e
    code = 130 if isinstance(error, KeyboardInterrupt) else getattr(error, "exit_code", 1)  # 130: as the CLI's Ctrl-C
    mine = None if error is None else (isinstance(error, SaidByAnotherProcess), code)
    outcomes = all_gather(mine, what)
    if not any(outcomes):
        return
    speaker = next((r for r, o in enumerate(outcomes) if o is not None and not o[0]), None)
    if speaker == rank() and error is not None:
        if isinstance(error, CnnlabError) and not isinstance(error, (RankError, GroupError)) and speaker != 0:
            error.args = (f"{who()}: {error}",)  # rank 0's errors read as they do in one process
        raise error
    code = outcomes[speaker][1] if speaker is not None else next(o[1] for o in outcomes if o is not None)
    raise SaidByAnotherProcess(exit_code=code) from None


def same_everywhere(value: Any, differ: Callable[[Any, Any], str | None], what: str) -> None:
    """Gather ``value`` from every rank; the lowest rank whose value ``differ`` finds
    different from rank 0's raises :class:`RankError` ("rank 1 (node b) " + what differ says),
    the others :class:`SaidByAnotherProcess`."""
    if not is_initialized():
        return
    values = all_gather(value, what)
    for r in range(1, len(values)):
        why = differ(values[r], values[0]) if values[r] != values[0] else None
        if why:
            if r == rank():
                raise RankError(f"{who(r)} {why}")
            raise SaidByAnotherProcess()


def all_reduce_sum(*values: torch.Tensor) -> None:
    """Sum tensors over the ranks, in place (on the training device: NCCL or gloo)."""
    if is_initialized():
        for v in values:
            torch.distributed.all_reduce(v)


# -- the job's run, for a restarted group (torchrun's store outlives the processes) ------------


def _job_key() -> str:
    return f"cnnlab/job/{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}/run"


def job_record() -> dict[str, Any] | None:
    """What rank 0 of an earlier group of this torchrun job recorded (:func:`record_job`), or None."""
    store = _group.store
    if store is None or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None  # no store that outlives the processes: each group starts afresh
    key = _job_key()
    return json.loads(store.get(key).decode()) if store.check([key]) else None


def record_job(record: dict[str, Any]) -> bool:
    """Note in torchrun's store which run this job started, for a restarted group to find;
    False where no store outlives the processes (nothing noted)."""
    if _group.store is None or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return False
    _group.store.set(_job_key(), json.dumps(record))
    return True


SYNC_BN_CPU = ("--sync-bn: torch's SyncBatchNorm runs on GPUs only (it refuses CPU tensors), so on the CPU "
               "each process keeps its own batch statistics; leave --sync-bn out")


def check_sync_bn(device: torch.device) -> None:
    """Refuse --sync-bn where torch's SyncBatchNorm does not run (its forward raises on CPU tensors)."""
    if device.type != "cuda":
        raise CnnlabError(SYNC_BN_CPU)


def sync_batch_norm(model: nn.Module) -> int:
    """Replace every BatchNorm of ``model`` (in place) by a ``torch.nn.SyncBatchNorm`` with its
    parameters and statistics; returns how many. A constant γ (``scale: false``: a buffer, not a
    parameter) stays a buffer, which torch's own ``convert_sync_batchnorm`` cannot copy."""
    count = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            sync = nn.SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            sync.train(child.training)
            with torch.no_grad():
                if isinstance(child.weight, nn.Parameter):
                    sync.weight = child.weight
                else:  # the constant γ of ones
                    del sync.weight
                    sync.register_buffer("weight", child.weight, persistent=False)
                sync.bias = child.bias
                sync.running_mean, sync.running_var = child.running_mean, child.running_var
                sync.num_batches_tracked = child.num_batches_tracked
            setattr(model, name, sync)
            count += 1
        else:
            count += sync_batch_norm(child)
    return count


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
