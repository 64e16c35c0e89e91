"""cnnlab.alloc: glibc keeps freed training buffers for reuse instead of mapping them afresh.

The oracle is the kernel's own count of minor page faults (getrusage): a 32 MB block freed
and allocated again 20 times faults in all its 8,192 pages each time with glibc's defaults
(it is mmap'ed and munmap'ed), and not at all after tune_allocator(), once the heap has grown to it.
"""
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's (the CI machine is Linux with glibc)")

PROGRAM = r"""
import resource, sys
import torch
from cnnlab.alloc import tune_allocator, allocator_state
if sys.argv[1] == "tuned":
    print(tune_allocator())
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # the heap grows to its working size first, either way
    x = torch.empty(8 << 20); x.fill_(1.0); del x
before = faults()
for _ in range(20):
    x = torch.empty(8 << 20)   # 32 MB
    x.fill_(1.0)
    del x
print(faults() - before)
print(allocator_state())
"""


def run(mode: str, **env) -> list[str]:
    e = {k: v for k, v in os.environ.items() if not (k.startswith("MALLOC_") or k == "CNNLAB_MALLOC")}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, env=e,
                         check=True, timeout=120)
    return out.stdout.strip().splitlines()


def test_tuned_allocator_reuses_freed_blocks_instead_of_faulting_them_in_again():
    plain = int(run("plain")[-2])
    tuned_lines = run("tuned")
    tuned = int(tuned_lines[-2])
    pages = 20 * (32 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert plain >= 0.9 * pages  # glibc's default: every iteration maps and faults the block again
    assert tuned < 0.1 * pages, (plain, tuned)
    assert "keeps freed blocks up to 256 MB" in tuned_lines[0]
    assert tuned_lines[-1] == tuned_lines[0]


@pytest.mark.parametrize("env, says", [({"CNNLAB_MALLOC": "0"}, "CNNLAB_MALLOC=0"),
                                       ({"MALLOC_ARENA_MAX": "2"}, None),  # not glibc's MALLOC_*_ form
                                       ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "MALLOC_*_ environment"),
                                       ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "libjemalloc.so.2 preloaded")])
def test_left_alone_when_the_user_chose(env, says, monkeypatch):
    from cnnlab import alloc

    for k in list(os.environ):
        if k.startswith("MALLOC_") or k in ("CNNLAB_MALLOC", "LD_PRELOAD"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reason = alloc._skip_reason()
    assert reason is None if says is None else says in reason


def test_the_cnnlab_command_and_doctor_report_it(capsys, monkeypatch):
    from cnnlab import alloc
    from cnnlab.cli import main

    for k in list(os.environ):
        if k.startswith("MALLOC_") or k == "CNNLAB_MALLOC":
            monkeypatch.delenv(k)
    monkeypatch.setattr(alloc, "_state", None)
    assert main(["doctor"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("allocator"))
    assert "keeps freed blocks up to 256 MB for reuse" in line
