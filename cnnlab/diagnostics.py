"""What `cnnlab doctor` and ``cnnlab.doctor()`` tell: versions, threads, accelerators, the
device and precision ``auto`` picks, and what to do without a GPU (on Colab: how to switch
one on). The module is not named ``doctor``: ``cnnlab.doctor`` is the function."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch

from cnnlab import __version__
from cnnlab.alloc import allocator_state
from cnnlab.device import (
    BF16_FLAGS,
    MIN_BF16_MACS,
    auto_precision,
    bf16_supported,
    cpu_flags,
    cpu_has_bf16,
    mps_available,
    pick_device,
)
from cnnlab.display import esc, kv_table


class Doctor(dict):
    """cnnlab.doctor()'s dict; ``str()`` is exactly what ``cnnlab doctor`` prints."""

    def __str__(self) -> str:
        return doctor_text(self)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        rows = []
        for key, value in self.items():
            if key == "cuda_devices":
                rows += [(f"cuda:{d['index']}", f"{d['name']} ({d['memory_gb']} GB)") for d in value]
            else:
                rows.append((key, value))
        advice = "".join(f"<p style='margin:4px 0'><b>{esc(a)}</b></p>" for a in doctor_advice(self))
        return kv_table(rows, "cnnlab doctor") + advice


def _auto_precision_line(device: torch.device) -> str:
    p = auto_precision(device)
    if device.type == "cpu" and p == "bf16":
        return f"bf16 + channels_last for models of >= {MIN_BF16_MACS / 1e6:g}M multiply-adds per image, else fp32"
    return p


def on_colab() -> bool:
    """True inside Google Colab (its runtime sets COLAB_RELEASE_TAG and ships google.colab)."""
    return bool(os.environ.get("COLAB_RELEASE_TAG") or os.environ.get("COLAB_GPU") is not None
                or "google.colab" in sys.modules)


def doctor():
    """What `cnnlab doctor` prints: versions, threads, accelerators, the auto choice.

    A dict (a :class:`Doctor`): ``str()`` of it is the command's text, with
    advice at the end (on Colab without a GPU: how to switch one on); a notebook shows a table.
    """
    return Doctor(_doctor_info())


def doctor_advice(info: dict[str, Any]) -> list[str]:
    """What to do about what doctor found: one sentence each."""
    if info.get("cuda_available") or info.get("mps_available"):
        return []
    if info.get("colab"):
        return ["No GPU in this Colab session: Runtime > Change runtime type > Hardware accelerator: "
                "GPU (T4), Save; then run the notebook again from the top (the runtime restarts)."]
    return ["No GPU visible to torch: training runs on the CPU (fine for the digits demo and small "
            "images; a GPU is 10-50x faster on photos). A CUDA build of torch and an NVIDIA driver are needed."]


def doctor_text(info: dict[str, Any]) -> str:
    """The lines `cnnlab doctor` prints for ``info``."""
    lines = []
    for key, value in info.items():
        if key == "cuda_devices":
            lines += [f"{'cuda:' + str(d['index']):>16}  {d['name']} ({d['memory_gb']} GB)" for d in value]
            continue
        lines.append(f"{key:>16}  {value}")
    lines += [f"{'advice':>16}  {a}" for a in doctor_advice(info)]
    return "\n".join(lines)


def _doctor_info() -> dict[str, Any]:
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
                "bf16": bf16_supported(torch.device("cuda", i)),  # native: Ampere and newer
            }
            for i in range(torch.cuda.device_count())
        ] if torch.cuda.is_available() else [],
        "mps_available": mps_available(),
        "cpu_bf16": cpu_has_bf16(),  # AVX512-BF16 or AMX-BF16 in the CPU's own flags
        "cpu_features": " ".join(sorted(f for f in cpu_flags() if f in (*BF16_FLAGS, "amx_tile",
                                                                         "avx512f", "avx2"))) or "-",
        "auto_device": str(pick_device("auto")),
        "allocator": allocator_state(),
        "auto_precision": _auto_precision_line(pick_device("auto")),
        "colab": on_colab(),
    }
    return info
