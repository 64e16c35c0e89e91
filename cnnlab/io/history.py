"""A run's ``history.csv``: one row per epoch, in Keras' names.

Earlier versions of cnnlab called the logs ``train_loss``/``train_acc``/``val_acc``; those
names are read as Keras' (and ``--monitor`` still accepts them): :data:`LOG_ALIASES`.
"""

from __future__ import annotations

import csv
from pathlib import Path

LOG_ALIASES = {"train_loss": "loss", "train_acc": "accuracy", "val_acc": "val_accuracy"}


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The rows of a history.csv as floats (an empty cell is NaN), in Keras' names; [] without the file."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{LOG_ALIASES.get(k, k): float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                for row in csv.DictReader(f)]
