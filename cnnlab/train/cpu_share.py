"""Share the CPU: train on fewer threads while other programs use some of the cores.

PyTorch runs a CPU training step on one thread per core (OpenMP). When another program
takes a core, the step's threads keep waiting for the one that lost its core at every
barrier, spinning while they wait, and the step slows far more than the core it lost.
On 2 cores, two `cnnlab train` runs side by side each train far below their speed alone,
and so does one run beside a busy loop; on one thread each, where the other program leaves
one core free, they run much faster (benchmarks/bench_share_cpu.py measures the three cases).

:class:`ShareCpu` watches the machine: every ``interval`` seconds it reads how much CPU
time other processes used (Linux's /proc/stat minus this process's own time, as
:class:`cnnlab.device.CpuContention` does) and sets ``torch.set_num_threads`` to the cores
they leave free (at least 1). Twice the same answer in a row before it changes anything, so
a short burst (a compile, a page load) changes nothing; back to all threads when the
others stop. Two cnnlab runs on one machine thus settle on a core each.

The number of threads changes how a step's sums are split, so fp32 results depend on it
(bit for bit). A run whose precision was asked for as ``fp32`` (exact and repeatable)
keeps its threads; so does a process given a thread count (``OMP_NUM_THREADS``, or
``CNNLAB_SHARE_CPU=0``), a GPU run, and a process on one thread (torchrun's default).
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Callable

import torch

from cnnlab.device import _own_cpu_seconds, _proc_stat_busy
from cnnlab.train.callbacks import Callback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer

BACKGROUND = 0.35  # cores of other programs' use that leave the threads as they are


def _machine() -> tuple[float, float] | None:
    return _proc_stat_busy()


def _own() -> float:
    return _own_cpu_seconds()


def should_share(device: torch.device, precision_given: str | None) -> tuple[bool, str]:
    """(whether a run adapts its threads to the load, why not when it does not)."""
    if device.type != "cpu":
        return False, f"{device.type}: the CPU's threads only feed the device"
    if os.environ.get("CNNLAB_SHARE_CPU", "1") == "0":
        return False, "CNNLAB_SHARE_CPU=0"
    if os.environ.get("OMP_NUM_THREADS"):
        return False, "OMP_NUM_THREADS sets the threads"
    if precision_given == "fp32":
        return False, "--precision fp32: exact, so the same threads throughout"
    if torch.get_num_threads() < 2:
        return False, "one thread already"
    return True, ""


class ShareCpu(Callback):
    """Fewer threads while other programs use the CPU; all of them again when they stop."""

    def __init__(self, interval: float = 1.0, cores: int | None = None, verbose: bool = True,
                 start_share: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter,
                 machine: Callable[[], tuple[float, float] | None] = _machine,
                 own: Callable[[], float] = _own):
        self.interval, self.verbose = interval, verbose
        if cores is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.cores = cores
        self.clock, self.machine, self.own = clock, machine, own
        self.start_share = start_share  # others' share of the CPU while the run timed its choices
        self.full = 0  # the threads at the start (torch's choice: one per core)
        self.threads = 0
        self.others = 0.0  # cores the other programs used in the last window
        self._pending: int | None = None  # a change seen once, made when seen twice
        self._window: tuple[float, tuple[float, float] | None, float] | None = None
        self._changes: list[str] = []  # said at the end of the epoch

    def on_train_begin(self, trainer: "Trainer") -> None:
        self.full = self.threads = torch.get_num_threads()
        self.others = self.start_share * self.cores
        want = self._wanted()
        if want != self.threads:  # busy already while the choices were timed (seconds of steps)
            self._set(want)
        self._start_window()

    def _wanted(self) -> int:
        # A thread less for each core the others take, counting from a third of one: beside
        # our spinning threads a busy program gets only 0.6-0.8 of the core it wants.
        return max(1, min(self.full, self.cores - math.ceil(self.others - BACKGROUND)))

    def _start_window(self) -> None:
        self._window = (self.clock(), self.machine(), self.own())

    def on_batch_end(self, trainer: "Trainer") -> None:
        if self._window is None or self.clock() - self._window[0] < self.interval:
            return
        t0, m0, o0 = self._window
        m1, o1 = self.machine(), self.own()
        self._start_window()
        if m0 is None or m1 is None or m1[1] <= m0[1]:
            return  # not Linux, or no tick yet
        busy, total = m1[0] - m0[0], m1[1] - m0[1]
        self.others = max(0.0, (busy - (o1 - o0)) / total * self.cores)  # in cores
        want = self._wanted()
        if want == self.threads:
            self._pending = None
        elif want == self._pending:
            self._set(want)
        else:
            self._pending = want

    def _set(self, threads: int) -> None:
        torch.set_num_threads(threads)
        self.threads, self._pending = threads, None
        self._changes.append(
            f"other programs used {self.others:.1f} of {self.cores} cores: training on {threads} thread"
            + ("s" if threads > 1 else "") if threads < self.full else f"the CPU is free again: back to {threads} threads")

    def on_epoch_end(self, trainer: "Trainer") -> None:
        if self.verbose and trainer.is_main:
            for change in self._changes:
                print(f"        threads: {change}", flush=True)
        self._changes.clear()

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.full and self.threads != self.full:
            torch.set_num_threads(self.full)  # the process goes on (evaluation) with all its threads
            self.threads = self.full
