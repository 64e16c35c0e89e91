"""Device choice: `auto` takes CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch

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
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CnnlabError("--device cuda: no CUDA GPU is visible to torch (see `cnnlab doctor`)")
        return torch.device(name)
    if name == "mps":
        if not mps_available():
            raise CnnlabError("--device mps: Apple's MPS backend is not available on this machine")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise CnnlabError(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}")


def doctor() -> dict[str, Any]:
    """What `cnnlab doctor` prints: versions, threads, accelerators, the auto choice."""
    from cnnlab import __version__

    info: dict[str, Any] = {
        "cnnlab": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "cuda_devices": [
            {
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
                "bf16": torch.cuda.is_bf16_supported() if i == 0 else None,
            }
            for i in range(torch.cuda.device_count())
        ] if torch.cuda.is_available() else [],
        "mps_available": mps_available(),
        "auto_device": str(pick_device("auto")),
    }
    return info
