"""--precision auto: bf16 only where the CPU (or GPU) computes it natively, and only when faster.

Oracles: hand-written /proc/cpuinfo text and flag sets (the CPU's features both ways),
a fake timer whose figures are chosen by hand, hand-written /proc/stat readings (no clock,
no load on the machine), and torch itself (weights and random state compared bit for bit
before and after timing; its for-loop optimisers).
"""

from __future__ import annotations

import io
import os
import re
from types import SimpleNamespace

import pytest
import torch

import cnnlab.device as dev
from cnnlab.device import (PrecisionChoice, auto_precision, cpu_has_bf16, make_fast_optimizer,
                           measure_precision, time_steps)
from cnnlab.model.build import build_model

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw {extra} arch_capabilities

processor\t: 1
"""


def test_cpuinfo_flags_are_read_from_the_flags_line(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra="avx512_bf16 amx_tile"))
    flags = dev._proc_cpuinfo_flags(str(path))
    assert {"avx512f", "avx512_bf16", "amx_tile"} <= flags
    assert "GenuineIntel" not in flags  # the vendor line is not a flag
    assert cpu_has_bf16(flags)
    path.write_text(CPUINFO.format(extra=""))
    assert not cpu_has_bf16(dev._proc_cpuinfo_flags(str(path)))
    assert dev._proc_cpuinfo_flags(str(tmp_path / "missing")) == set()


def test_bf16_needs_avx512_bf16_or_amx_bf16():
    assert cpu_has_bf16({"avx512_bf16"})
    assert cpu_has_bf16({"amx_bf16", "amx_tile"})
    assert not cpu_has_bf16({"avx512f", "avx512bw", "avx2", "avx512_fp16"})  # AVX-512 alone is not enough
    assert not cpu_has_bf16(set())


def test_auto_precision_on_the_cpu_follows_the_flags(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert auto_precision(cpu) == "bf16"
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"avx512f", "avx2"}))
    assert auto_precision(cpu) == "fp32"
    assert auto_precision(torch.device("meta")) == "fp32"  # neither CPU nor CUDA: exact


def _choose(monkeypatch, flags, timings):
    """measure_precision with the CPU's flags and the timings given; returns (choice, variants asked)."""
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset(flags))
    asked = []

    def timer(model, x, y, variants):
        asked.extend(variants)
        return {f"{p}{'+cl' if cl else ''}": timings[f"{p}{'+cl' if cl else ''}"] for p, cl in variants}

    x, y = torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    return measure_precision(torch.nn.Identity(), x, y, torch.device("cpu"), timer=timer), asked


def test_without_native_bf16_bf16_is_never_timed_nor_chosen(monkeypatch):
    choice, asked = _choose(monkeypatch, {"avx512f"}, {"fp32": 100, "fp32+cl": 150, "bf16": 900, "bf16+cl": 900})
    assert {p for p, _ in asked} == {"fp32"}
    assert (choice.precision, choice.channels_last) == ("fp32", True)  # the faster layout


def test_bf16_is_chosen_only_when_clearly_faster(monkeypatch):
    flags = {"avx512f", "avx512_bf16"}
    choice, _ = _choose(monkeypatch, flags, {"fp32": 100, "fp32+cl": 120, "bf16": 130, "bf16+cl": 200})
    assert isinstance(choice, PrecisionChoice)
    assert (choice.precision, choice.channels_last) == ("bf16", True)
    assert "1.67x" in choice.reason  # 200 / 120
    # 5 % faster is within noise: keep the exact fp32
    choice, _ = _choose(monkeypatch, flags, {"fp32": 100, "fp32+cl": 120, "bf16": 90, "bf16+cl": 126})
    assert (choice.precision, choice.channels_last) == ("fp32", True)
    # bf16 slower (a tiny model): fp32, and the layout that is faster for fp32
    choice, _ = _choose(monkeypatch, flags, {"fp32": 300, "fp32+cl": 200, "bf16": 150, "bf16+cl": 100})
    assert (choice.precision, choice.channels_last) == ("fp32", False)


def test_timing_leaves_the_model_and_the_random_state_untouched():
    model = build_model({"input": [16, 16, 3], "layers": [
        {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
        {"MaxPooling2D": {}}, {"Dropout": {"rate": 0.5}}, {"Flatten": {}},
        {"Dense": {"units": 3, "activation": "softmax"}}]}, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    variants = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    rates = time_steps(model, x, y, variants, steps=1)
    assert set(rates) == {"fp32", "fp32+cl", "bf16", "bf16+cl"}
    assert all(0 < r < float("inf") for r in rates.values())
    assert torch.equal(torch.rand(3), expected_next)  # dropout in the timed steps used a forked RNG
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert next(model.parameters()).is_contiguous()  # still NCHW: the copies were converted


TORCH = tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2])


@pytest.mark.skipif(TORCH < (2, 4), reason="fused AdamW/SGD on the CPU came with torch 2.4")
def test_fast_optimizer_takes_the_fused_step_on_the_cpu(monkeypatch):
    """make_fast_optimizer promises fused=True on the CPU: torch's fused kernel must run (a spy
    on torch._fused_adamw_ / torch._fused_sgd_ counts its calls), taking the same steps as
    torch's for-loop implementation. A silent fallback to the plain optimiser fails here."""
    calls = {"_fused_adamw_": 0, "_fused_sgd_": 0}
    for op in calls:
        def spy(*args, _op=op, _real=getattr(torch, op), **kwargs):
            calls[_op] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch, op, spy)
    for name, kw, op in (("adamw", {"weight_decay": 0.05}, "_fused_adamw_"),
                         ("sgd", {"momentum": 0.9, "nesterov": True}, "_fused_sgd_")):
        torch.manual_seed(0)
        a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
        b.load_state_dict(a.state_dict())
        fast = make_fast_optimizer(name, a.parameters(), 0.01, torch.device("cpu"), **kw)
        ref_cls = torch.optim.AdamW if name == "adamw" else torch.optim.SGD
        ref = ref_cls(b.parameters(), lr=0.01, foreach=False, **kw)
        assert fast.defaults["fused"] is True
        for _ in range(5):
            x = torch.randn(8, 5)
            for m, opt in ((a, fast), (b, ref)):
                opt.zero_grad()
                m(x).square().mean().backward()
                opt.step()
        assert calls[op] == 5, (name, calls)  # one fused call per step; the reference made none
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(TORCH < (2, 4), reason="fused AdamW/SGD on the CPU came with torch 2.4")
def test_training_optimisers_are_fused_on_the_cpu_and_foreach_elsewhere():
    """What `cnnlab train --optimizer` builds (cnnlab.train.optimizers): fused on the CPU and
    CUDA, foreach on other devices (MPS), as cnnlab.device.fast_optimizer_kwargs says."""
    from cnnlab.train.config import make_config
    from cnnlab.train.optimizers import make_optimizer

    model = build_model({"input": [8, 8, 3], "layers": [{"Conv2D": {"filters": 2, "kernel_size": 3}},
                                                        "Flatten", {"Dense": {"units": 2}}]}, seed=0)
    for name in ("adam", "adamw", "sgd"):
        opt = make_optimizer(model, name, 0.01, 0.0, make_config(optimizer=name), device=torch.device("cpu"))
        assert opt.defaults["fused"] is True, name
    assert dev.fast_optimizer_kwargs(torch.device("cuda")) == {"fused": True}
    assert dev.fast_optimizer_kwargs(torch.device("mps")) == {"foreach": True}


def test_the_run_says_why_auto_chose_its_precision(monkeypatch):
    """choose_device times at the run's batch and hands on measure_precision's reason, only for auto."""
    from cnnlab.train import setup as st
    from cnnlab.train.config import make_config

    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "amx_tile"}))
    batches = []

    def timer(model, x, y, variants):
        batches.append(len(x))
        rates = {"fp32": 100, "fp32+cl": 125, "bf16": 200, "bf16+cl": 375}
        return {f"{p}{'+cl' if cl else ''}": rates[f"{p}{'+cl' if cl else ''}"] for p, cl in variants}

    monkeypatch.setattr(st, "time_steps_quick", timer)
    model = build_model("seed", input=(64, 64, 3), classes=2)  # 7.3M MACs: above the bf16 floor
    device, precision, cl, why = st.choose_device(make_config(data="x", device="cpu", batch_size=64), model,
                                                  sample=(64, 64, 3))
    assert (device.type, precision, cl) == ("cpu", "bf16", True)
    assert "3.00x the fastest fp32" in why  # 375 / 125
    st.choose_device(make_config(data="x", device="cpu", batch_size=16), model, sample=(64, 64, 3))
    assert batches == [32, 16]  # timed at the run's batch, at most 32 (which is faster depends on it)
    *_, why = st.choose_device(make_config(data="x", device="cpu", precision="fp32"), model, sample=(64, 64, 3))
    assert why == ""  # asked for: nothing to explain


def test_contention_counts_only_what_other_programs_used():
    """share = (machine busy - own CPU) / machine total over the block; None when unreadable."""
    readings = iter([(50.0, 200.0), (51.5, 202.0)])  # 1.5 of 2.0 CPU-seconds busy
    own = iter([3.0, 3.5])  # of which this process used 0.5
    with dev.CpuContention(machine=lambda: next(readings), own=lambda: next(own)) as c:
        pass
    assert c.share == pytest.approx(0.5)
    with dev.CpuContention(machine=lambda: None, own=lambda: 0.0) as c:
        pass
    assert c.share is None


def stat_line(user=0, nice=0, system=0, idle=0, iowait=0, irq=0, softirq=0, steal=0, guest=0, guest_nice=0):
    """The first line of Linux's /proc/stat: the whole machine's CPU time in clock ticks."""
    return f"cpu  {user} {nice} {system} {idle} {iowait} {irq} {softirq} {steal} {guest} {guest_nice}\n"


BOOT = dict(user=5000, nice=10, system=2000, idle=90000, iowait=300, irq=0, softirq=40, steal=0, guest=0)


def after(**more):
    return stat_line(**{k: BOOT.get(k, 0) + more.get(k, 0) for k in (*BOOT, "guest_nice")})


@pytest.mark.parametrize("machine, own_seconds, share", [
    # 2 cores, 100 ticks a second, the block lasts 1 s: 200 ticks of the machine in all.
    (dict(user=150, system=50), 0.0, 1.0),  # both cores busy elsewhere, this process idle
    (dict(user=80, system=20, idle=100), 1.0, 0.0),  # one core busy: this process's own loop
    (dict(user=180, system=20), 1.0, 0.5),  # ours on one core, another program's on the other
    (dict(user=30, idle=50, iowait=120), 0.0, 0.15),  # waiting for the disk is idle time
    (dict(user=100, guest=100, idle=100), 0.0, 0.5),  # guest time is inside user: counted once
    (dict(user=40, softirq=10, steal=10, idle=140), 0.0, 0.3),  # interrupts and steal are busy
], ids=["neighbours", "itself", "half", "iowait", "guest", "irq-steal"])
def test_contention_reads_proc_stat_and_leaves_out_its_own_time(monkeypatch, machine, own_seconds, share):
    """CpuContention on its own readers (/proc/stat, os.times), fed readings written by hand:
    share = (machine busy - own CPU) / machine total over the block, no clock involved."""
    readings = iter([stat_line(**BOOT), after(**machine)])
    own = iter([(3.0, 1.0), (3.0 + 0.75 * own_seconds, 1.0 + 0.25 * own_seconds)])  # (user, system) s

    def fake_open(path, *args, **kwargs):
        assert path == "/proc/stat"
        return io.StringIO(next(readings))

    real_sysconf = os.sysconf
    monkeypatch.setattr(dev, "open", fake_open, raising=False)  # the module's open, not the builtin
    monkeypatch.setattr(os, "sysconf", lambda name: 100 if name == "SC_CLK_TCK" else real_sysconf(name))
    monkeypatch.setattr(os, "times", lambda: SimpleNamespace(user=(t := next(own))[0], system=t[1]))
    with dev.CpuContention() as c:
        pass
    assert c.share == pytest.approx(share)


def test_contention_is_none_without_proc_stat(monkeypatch):
    def missing(path, *args, **kwargs):
        raise FileNotFoundError(path)

    monkeypatch.setattr(dev, "open", missing, raising=False)
    with dev.CpuContention() as c:
        pass
    assert c.share is None


@pytest.mark.parametrize("gpus, name, message", [
    (1, "cuda:7", "--device cuda:7: torch sees 1 CUDA GPU (cuda:0)"),
    (4, "cuda:4", "--device cuda:4: torch sees 4 CUDA GPUs (cuda:0 to cuda:3)"),
    (0, "cuda:1", "--device cuda:1: no CUDA GPU is visible to torch"),
])
def test_a_gpu_that_is_not_there_is_named(monkeypatch, gpus, name, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(dev.CnnlabError, match=re.escape(message)):
        dev.pick_device(name)


def test_a_gpu_that_is_there_is_picked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert dev.pick_device("CUDA:1") == torch.device("cuda", 1)
    assert dev.pick_device("cuda") == torch.device("cuda")
