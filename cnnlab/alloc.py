"""Keep the C allocator from giving memory back to the system between training steps.

A training step of a CNN allocates and frees the same large buffers every step: the
activations of each layer, their gradients, the optimizer's temporaries (the lecture's
``seed`` model at batch 32 has 16 MB of them per layer). glibc's ``malloc`` serves a
block that large with ``mmap`` and hands it back with ``munmap`` when it is freed, so
the next step maps it afresh and the kernel zeroes every page again on first touch:
millions of page faults a minute. Measured on a 2-core AMD EPYC, the bare torch step of
``seed`` at 64 px, batch 32, runs markedly faster with the settings below, with a fraction
of the minor page faults: ``benchmarks/bench_precision.py --models seed --sizes 64 --batch 32
--steps 30``, with and without them (benchmarks/log/2026-12-02.md, "The allocator").

PyTorch's CPU performance guides suggest the same cure by another road: preload
jemalloc or tcmalloc (Intel, "PyTorch CPU performance tuning guide"). cnnlab needs no
extra library: it asks glibc, through ``mallopt(3)``, to serve blocks up to
:data:`MMAP_THRESHOLD` from its heap and to keep up to :data:`TRIM_THRESHOLD` of freed
memory for reuse instead of returning it. The cost is that a process keeps its peak
memory until it ends, which is what a training run does anyway.

:func:`tune_allocator` does nothing (and says why, in :func:`allocator_state`) when the C
library is not glibc (macOS, musl, Windows), when the user already tuned malloc through
its environment variables (``MALLOC_MMAP_THRESHOLD_`` ...), when jemalloc or tcmalloc is
preloaded, or when ``CNNLAB_MALLOC=0``. It is called by the ``cnnlab`` command and by
:func:`cnnlab.train` / :meth:`cnnlab.Trainer.fit`; calling it again is harmless.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 256 << 20  # blocks up to this come from the heap (and are reused)
TRIM_THRESHOLD = 1 << 30  # free memory kept at the heap's top before it is returned
TOP_PAD = 64 << 20  # extra grown at once when the heap grows

_state: str | None = None  # what the last call did, for `cnnlab doctor`


def _skip_reason() -> str | None:
    if os.environ.get("CNNLAB_MALLOC", "1") == "0":
        return "left as it is (CNNLAB_MALLOC=0)"
    if platform.system() != "Linux":
        return f"left as it is ({platform.system()}: not glibc)"
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return "left as it is (tuned by MALLOC_*_ environment variables)"
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload or "tcmalloc" in preload:
        return f"left as it is ({os.path.basename(preload.split()[0])} preloaded)"
    libc_name, _version = platform.libc_ver()
    if libc_name != "glibc":
        return f"left as it is (C library {libc_name or 'unknown'}, not glibc)"
    return None


def tune_allocator() -> str:
    """Ask glibc to keep and reuse freed memory (see the module's docstring); returns what it did."""
    global _state
    if _state is not None:
        return _state
    reason = _skip_reason()
    if reason is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = all(libc.mallopt(param, value) == 1 for param, value in (
                (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
        except (OSError, AttributeError):
            ok = False
        reason = (f"glibc malloc keeps freed blocks up to {MMAP_THRESHOLD >> 20} MB for reuse" if ok
                  else "left as it is (mallopt refused)")
    _state = reason
    return reason


def allocator_state() -> str:
    """One line on the C allocator, for `cnnlab doctor`."""
    return _state or "not tuned in this process (the cnnlab command and cnnlab.train tune it)"
