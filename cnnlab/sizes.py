"""Size strings, parsed in one place: "64", "64x48" (height x width), "64x64x3" (and channels).

Used by ``--img-size`` / ``img_size:`` (training), ``--size`` (data preview) and a model
spec's ``input:`` / ``summary --input``; each caller checks how many numbers it takes.
"""

from __future__ import annotations

import re

_SEPARATOR = re.compile(r"\s*[x×,*]\s*")


def parse_size(text: str) -> tuple[int, ...]:
    """'64' -> (64,), '64x48' -> (64, 48), '64x64x3' -> (64, 64, 3).

    The numbers may be separated by "x", "×", "," or "*" (spaces around them are fine).
    ValueError when the text is not whole numbers so separated.
    """
    parts = _SEPARATOR.split(str(text).strip().lower())
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"not a size like 64 or 64x48: {text!r}")
    return tuple(int(p) for p in parts)
