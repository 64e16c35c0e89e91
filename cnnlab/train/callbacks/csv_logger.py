"""CSVLogger: ``history.csv``, one row per epoch."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.io.fs import atomic_write_text
from cnnlab.train.callbacks.base import Callback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds", "images_per_s"]


class CSVLogger(Callback):
    """Write ``history.csv``, one row per epoch, rewritten whole (and atomically) each epoch.

    Rewriting from ``trainer.history`` keeps the file consistent with the run after a
    ``--resume``: epochs that were lost to a crash are not listed twice.
    """

    def __init__(self, path: str | Path, columns: list[str] | None = None):
        self.path = Path(path)
        self.columns = columns or HISTORY_COLUMNS

    def on_epoch_end(self, trainer: "Trainer") -> None:
        if not trainer.is_main:
            return
        rows = trainer.history + [trainer.logs]
        extra = [k for row in rows for k in row if k not in self.columns]
        columns = self.columns + list(dict.fromkeys(extra))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in columns})
        atomic_write_text(self.path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v
