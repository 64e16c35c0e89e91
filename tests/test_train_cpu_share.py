"""ShareCpu: fewer training threads while other programs use the CPU, all again after.

The machine's counters are faked (a clock and /proc/stat-like totals), so each window's
"other programs' cores" is known by hand: (busy - own) / all CPU seconds x cores.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cnnlab.train.cpu_share import ShareCpu, should_share


class FakeMachine:
    """Two cores; each tick() is one second in which others use `others` cores and we `ours`."""

    def __init__(self, cores: int = 2):
        self.cores, self.t, self.busy, self.total, self.own_s = cores, 0.0, 0.0, 0.0, 0.0

    def tick(self, others: float, ours: float = 1.0) -> None:
        self.t += 1.0
        self.total += self.cores
        self.busy += others + ours
        self.own_s += ours


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def run(load: list[float]) -> tuple[list[int], ShareCpu]:
    """Threads after each one-second window of `load` (other programs' cores)."""
    m = FakeMachine()
    share = ShareCpu(interval=1.0, cores=2, verbose=False, clock=lambda: m.t,
                     machine=lambda: (m.busy, m.total), own=lambda: m.own_s)
    trainer = SimpleNamespace(is_main=True)
    share.on_train_begin(trainer)
    seen = []
    for others in load:
        m.tick(others)
        share.on_batch_end(trainer)
        seen.append(torch.get_num_threads())
    return seen, share


def test_another_program_on_a_core_takes_a_thread_until_it_stops(two_threads):
    # 1 core busy elsewhere: seen twice -> 1 thread; quiet: seen twice -> 2 again
    seen, share = run([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert seen == [2, 1, 1, 1, 2, 2]
    assert share.others == pytest.approx(0.0)


def test_a_busy_program_beside_spinning_threads_gets_less_than_its_core(two_threads):
    # beside our two threads a busy loop got 0.6 of a core (measured): still a thread less
    assert run([0.6, 0.6])[0] == [2, 1]


def test_background_and_bursts_change_nothing(two_threads):
    assert run([0.3] * 6)[0] == [2] * 6  # a third of a core of background
    assert run([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])[0] == [2] * 6  # one-second bursts


def test_the_end_of_training_gives_the_threads_back(two_threads):
    seen, share = run([1.0, 1.0])
    assert seen[-1] == 1
    share.on_train_end(SimpleNamespace(is_main=True))
    assert torch.get_num_threads() == 2


def test_no_counters_no_change(two_threads):
    share = ShareCpu(interval=1.0, cores=2, verbose=False, clock=iter(range(100)).__next__,
                     machine=lambda: None, own=lambda: 0.0)
    trainer = SimpleNamespace(is_main=True)
    share.on_train_begin(trainer)
    for _ in range(5):
        share.on_batch_end(trainer)
    assert torch.get_num_threads() == 2


def test_who_shares(two_threads, monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CNNLAB_SHARE_CPU", raising=False)
    assert should_share(cpu, None) == (True, "")
    assert should_share(cpu, "bf16")[0]
    assert not should_share(cpu, "fp32")[0]  # exact: the threads, hence the sums, stay
    assert not should_share(torch.device("cuda"), None)[0]
    monkeypatch.setenv("CNNLAB_SHARE_CPU", "0")
    assert not should_share(cpu, None)[0]
    monkeypatch.delenv("CNNLAB_SHARE_CPU")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not should_share(cpu, None)[0]
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    assert not should_share(cpu, None)[0]


def test_a_run_shares_unless_fp32_was_asked_for(two_threads, monkeypatch, tmp_path):
    from cnnlab.train.api import make_callbacks
    from cnnlab.train.config import make_config, resolved_defaults

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CNNLAB_SHARE_CPU", raising=False)

    def callbacks(**options):
        cfg = make_config(data=str(tmp_path), patience=0, monitor="val_accuracy", **options)
        setup = SimpleNamespace(cfg=cfg, hparams=resolved_defaults(cfg), device=torch.device("cpu"),
                                meta=lambda: {})
        return [type(c).__name__ for c in make_callbacks(setup, tmp_path, False, True)]

    assert "ShareCpu" in callbacks()
    assert "ShareCpu" in callbacks(precision="bf16")
    assert "ShareCpu" not in callbacks(precision="fp32")


def test_busy_while_the_choices_were_timed_starts_on_fewer_threads(two_threads):
    # the run's probes saw others take half the machine (one of two cores): 1 thread from the start
    m = FakeMachine()
    share = ShareCpu(interval=1.0, cores=2, verbose=False, start_share=0.5, clock=lambda: m.t,
                     machine=lambda: (m.busy, m.total), own=lambda: m.own_s)
    share.on_train_begin(SimpleNamespace(is_main=True))
    assert torch.get_num_threads() == 1
    for _ in range(2):  # and back to two once the others are gone
        m.tick(0.0)
        share.on_batch_end(SimpleNamespace(is_main=True))
    assert torch.get_num_threads() == 2
    quiet = ShareCpu(interval=1.0, cores=2, verbose=False, start_share=0.1)
    quiet.on_train_begin(SimpleNamespace(is_main=True))
    assert torch.get_num_threads() == 2
