"""Device and precision choice.

* ``--device auto`` takes CUDA, then Apple's MPS, then the CPU.
* ``--precision auto`` takes bf16 autocast where the hardware computes bfloat16 natively:
  CUDA GPUs that support it (fp16 with a gradient scaler on older ones), and CPUs whose
  instruction set has AVX512-BF16 or AMX-BF16 (read from the CPU itself, see
  :func:`cpu_flags`; never guessed from the vendor or model name). Elsewhere fp32.
* Where bf16 is possible, :func:`measure_precision` times a few real training steps of the
  model itself in fp32 and in bf16 (each in NCHW and channels_last on the CPU) and keeps the
  fastest; bf16 must beat fp32 by a clear margin to be chosen, so a model that gains nothing
  from it stays exact.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from cnnlab.display import count
from cnnlab.errors import CnnlabError

DEVICES = ("auto", "cpu", "cuda", "mps")


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """The torch.device for --device NAME; a clear error when it is not there."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise CnnlabError(f"--device {name}: no CUDA GPU is visible to torch (see `cnnlab doctor`)")

        index, gpus = (int(name[5:]) if ":" in name else 0), torch.cuda.device_count()
        if index >= gpus:
            raise CnnlabError(f"--device {name}: torch sees {count(gpus, 'CUDA GPU')} "
                              f"(cuda:0{f' to cuda:{gpus - 1}' if gpus > 1 else ''})")
        return torch.device(name)
    if name == "mps":
        if not mps_available():
            raise CnnlabError("--device mps: Apple's MPS backend is not available on this machine")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise CnnlabError(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}")


# ---------------------------------------------------------------------------------------
# What the CPU can do
# ---------------------------------------------------------------------------------------

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute in bfloat16


def _proc_cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The 'flags' line of Linux's /proc/cpuinfo (what the kernel found in CPUID)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86 / ARM
                    return set(value.split())
    except OSError:
        pass
    return set()


def _torch_cpu_flags() -> set[str]:
    """The same features as torch's own cpuinfo reads them (any OS), where torch exposes it."""
    flags: set[str] = set()
    try:
        caps = torch._C._cpu._get_cpu_capability()  # {'avx512_bf16': True, 'amx_bf16': False, ...}
        flags |= {k for k, v in caps.items() if v is True}
    except Exception:  # older torch: private API absent
        for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_tile", "_is_amx_tile_supported")):
            fn = getattr(torch.cpu, probe, None)
            with contextlib.suppress(Exception):
                if fn is not None and fn():
                    flags.add(name)
    return flags


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Instruction-set features of this CPU: /proc/cpuinfo's flags and torch's cpuinfo view."""
    return frozenset(_proc_cpuinfo_flags() | _torch_cpu_flags())


def cpu_has_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def bf16_supported(device: torch.device) -> bool:
    """Native bfloat16 on this device: a CUDA GPU that has it, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        # Native from compute capability 8 (Ampere). torch's is_bf16_supported() also says yes
        # where bf16 is only emulated (a T4, a V100): there fp16 is the fast half precision.
        return bool(torch.cuda.is_bf16_supported()) and (torch.version.hip is not None
                                                         or torch.cuda.get_device_capability(device)[0] >= 8)
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def auto_precision(device: torch.device) -> str:
    """What ``--precision auto`` may use on ``device`` before timing: bf16, fp16 or fp32."""
    if device.type == "cuda":
        return "bf16" if bf16_supported(device) else "fp16"
    if device.type == "cpu" and bf16_supported(device):
        return "bf16"
    return "fp32"


# ---------------------------------------------------------------------------------------
# Timing the choices on the model itself
# ---------------------------------------------------------------------------------------

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class PrecisionChoice:
    """What ``--precision auto`` chose, and the timings it chose from (images/s)."""

    precision: str
    channels_last: bool
    reason: str
    timings: dict[str, float]  # "fp32", "fp32+cl", "bf16", "bf16+cl" -> images per second


def _proc_stat_busy() -> tuple[float, float] | None:
    """(busy, all) CPU seconds of the whole machine since boot, from Linux's /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / tick, total / tick


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class CpuContention:
    """``with CpuContention() as c: ...``; then ``c.share``: the part of the machine's CPU
    time that *other* processes used while the block ran (0.0 quiet, 0.5 = one of two
    cores busy elsewhere), or None where it cannot be read (not Linux).

    A timed probe of a few training steps (the precision and image-size choices) measures
    whatever the machine gives it; this says when another program took part of it, so the
    run can say its choices may be low. The machine's counters (/proc/stat) minus this
    process's own CPU time, over the wall time of the block times the cores.
    """

    def __init__(self, machine: Callable[[], tuple[float, float] | None] | None = None,
                 own: Callable[[], float] | None = None):
        self._machine = machine or (lambda: _proc_stat_busy())
        self._own = own or (lambda: _own_cpu_seconds())
        self.share: float | None = None

    def __enter__(self) -> "CpuContention":
        self._m0, self._o0 = self._machine(), self._own()
        return self

    def __exit__(self, *exc) -> None:
        m1, o1 = self._machine(), self._own()
        if self._m0 is None or m1 is None or m1[1] <= self._m0[1]:
            return
        busy, total = m1[0] - self._m0[0], m1[1] - self._m0[1]
        self.share = min(1.0, max(0.0, (busy - (o1 - self._o0)) / total))


def time_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, variants: list[tuple[str, bool]],
               steps: int = 3, warmup: int = 1, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Images/s of a training step (forward, loss, backward, AdamW) in each (precision, channels_last).

    Works on a copy of ``model`` (its weights and the global random state are left as
    they were). Variants alternate step by step, so that a shared machine's load weighs
    on all of them alike; the figure of each is its fastest step.
    """
    runs = []
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        for precision, cl in variants:
            m = copy.deepcopy(model).to(x.device)
            xb = x
            if cl:
                m = m.to(memory_format=torch.channels_last)
                xb = x.contiguous(memory_format=torch.channels_last)
            m.train()
            opt = make_fast_optimizer("adamw", m.parameters(), lr=1e-4, device=x.device)
            runs.append((f"{precision}{'+cl' if cl else ''}", m, xb, opt, AUTOCAST[precision]))
        best: dict[str, float] = {name: float("inf") for name, *_ in runs}
        for i in range(warmup + steps):
            for name, m, xb, opt, dtype in runs:
                _sync(x.device)
                t0 = clock()
                ctx = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
                with ctx:
                    out = m(xb)
                    loss = F.cross_entropy(out.float(), y) if out.shape[1] > 1 else out.float().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                _sync(x.device)
                if i >= warmup:
                    best[name] = min(best[name], clock() - t0)
    return {name: len(x) / max(t, 1e-9) for name, t in best.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from the host to a CUDA GPU through pinned (page-locked) memory.

    A copy from ordinary (pageable) host memory makes CUDA first wait for all the work queued
    before it on the stream (NVIDIA's "API synchronization behavior": "a stream sync is
    performed before the copy is initiated"), so each step's batch would stop the host until
    the GPU had finished the previous step, and the GPU would then idle while Python queued
    the next one. From pinned memory the copy is queued like a kernel and the host runs ahead.
    PyTorch's pinned-memory cache keeps the page-locked copy until the transfer is done.
    """
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device, non_blocking=True)


def measure_precision(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                      margin: float = 1.1, channels_last: bool | None = None,
                      timer: Callable[..., dict[str, float]] = time_steps) -> PrecisionChoice:
    """``--precision auto`` for this model: bf16 where native *and* faster by ``margin``, else fp32.

    ``x`` is a float batch as the model sees it (on ``device``), ``y`` its labels. On a GPU
    the layout is channels_last (cuDNN's fast path for convolutions) unless told otherwise;
    on the CPU both layouts are timed, since which is faster depends on the model.
    """
    candidate = auto_precision(device)
    if candidate == "fp32" and device.type != "cpu":
        return PrecisionChoice("fp32", bool(channels_last), f"{device.type}: no native bf16", {})
    if device.type == "cuda":  # tensor cores: bf16/fp16 is always the faster choice there
        return PrecisionChoice(candidate, True if channels_last is None else channels_last,
                               f"{torch.cuda.get_device_name(device)}: native {candidate}", {})
    layouts = [False, True] if channels_last is None else [channels_last]
    precisions = ["fp32", "bf16"] if candidate == "bf16" else ["fp32"]
    timings = timer(model, x, y, [(p, cl) for p in precisions for cl in layouts])

    def best(p: str) -> tuple[str, bool]:
        keys = [k for k in timings if k.split("+")[0] == p]
        k = max(keys, key=timings.get)
        return k, k.endswith("+cl")

    k32, cl32 = best("fp32")
    if candidate != "bf16":
        why = "the CPU has no AVX512-BF16/AMX, so fp32"
        return PrecisionChoice("fp32", cl32, why + (", channels_last faster" if cl32 else ""), timings)
    k16, cl16 = best("bf16")
    ratio = timings[k16] / timings[k32]
    if ratio >= margin:
        return PrecisionChoice("bf16", cl16, f"CPU has native bf16; bf16{' + channels_last' if cl16 else ''} "
                                             f"{ratio:.2f}x the fastest fp32 step", timings)
    return PrecisionChoice("fp32", cl32, f"CPU has native bf16 but it is only {ratio:.2f}x fp32 for this "
                                         "model, so fp32 (exact)", timings)


MIN_BF16_MACS = 5_000_000  # multiply-accumulates per image below which bf16 gains nothing on a CPU


def model_macs(model: torch.nn.Module) -> int:
    """Multiply-accumulates of one image through a cnnlab CNN (0 if unknown: another module)."""
    traced = getattr(model, "traced", None) or []
    return sum(t.layer.macs(t.input_shape, t.output_shape) for t in traced)


def choose_precision(requested: str, device: torch.device, model: torch.nn.Module | None = None,
                     channels_last: bool | None = None) -> tuple[str, bool, str]:
    """(precision, channels_last, why) for ``--precision`` and ``--channels-last`` (None: auto).

    auto: bf16 (fp16 on GPUs without bf16) on CUDA; on a CPU with native bf16, bf16 for models
    of at least :data:`MIN_BF16_MACS` per image (a smaller one is bound by memory and Python,
    and stays in fp32); otherwise fp32. channels_last (auto) goes with bf16/fp16 and CUDA: it is
    oneDNN's and cuDNN's fast layout for convolutions (benchmarks/bench_precision.py), and
    fp32 on the CPU keeps NCHW so that it computes exactly as before.
    """
    why = "as asked"
    if requested == "auto":
        macs = model_macs(model) if model is not None else MIN_BF16_MACS
        if device.type == "cuda":
            requested, why = auto_precision(device), "the GPU's native half precision"
        elif device.type == "cpu" and cpu_has_bf16():
            if macs >= MIN_BF16_MACS:
                requested, why = "bf16", "the CPU has native bf16 (AVX512-BF16/AMX)"
            else:
                requested = "fp32"
                why = f"a small model ({macs / 1e6:.1f}M MACs per image): bf16 would gain nothing"
        else:
            requested = "fp32"
            why = "no native bf16 on this CPU" if device.type == "cpu" else f"{device.type}: fp32"
    if requested == "fp16" and device.type == "cpu":
        raise CnnlabError("precision fp16 needs a GPU; on the CPU use fp32 (or bf16 on CPUs with AVX512-BF16/AMX)")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CnnlabError(f"precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                          "use --precision fp16 (or auto)")
    if channels_last is None:
        channels_last = device.type == "cuda" or requested in ("bf16", "fp16")
    return requested, channels_last, why


def fast_optimizer_kwargs(device: torch.device | None) -> dict[str, bool]:
    """``fused=True`` on CUDA and the CPU (torch >= 2.4 has fused Adam/AdamW/SGD on both), else foreach."""
    kind = device.type if device is not None else "cpu"
    return {"fused": True} if kind in ("cuda", "cpu") else {"foreach": True}


def make_fast_optimizer(name: str, params, lr: float, device: torch.device | None = None, **kw) -> torch.optim.Optimizer:
    """Adam/AdamW/SGD with torch's fastest implementation for the device.

    ``fused=True`` (one kernel for every parameter) on CUDA and on the CPU (torch >= 2.4);
    elsewhere ``foreach=True`` (one op per step for all parameters, not one per tensor).
    """
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    fast = fast_optimizer_kwargs(device)
    params = list(params)  # a generator would be used up by a failed first try
    try:
        return cls(params, lr=lr, **kw, **fast)
    except (RuntimeError, TypeError, ValueError):  # fused not available here
        return cls(params, lr=lr, **kw)
