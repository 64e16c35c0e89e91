"""A run directory, `runs/<name>/`, and how to use the model it holds.

What a training run writes (the contract every command relies on):

    runs/<name>/
      config.yaml               the resolved training config (data path, sizes, optimiser...)
      model.yaml                the model spec, classes filled in
      classes.json              class names, in label order
      split.json                the files of each split, so the split is reproducible
      history.csv               one row per epoch
      skipped.csv               files that could not be read, with the reason
      weights/best.safetensors  best weights + JSON metadata (spec, classes, input, ...)
      weights/last.safetensors  weights after the last completed epoch
      eval/<split>/             written by `cnnlab evaluate`
      report.html, curves.png   the report
      resume.safetensors        the full training state for --resume (safetensors + JSON)

``Run(path).load_model()`` rebuilds the model from a weights file alone (no pickle), and
``Run.preprocessor()`` turns image files into the exact tensors the model was trained on.

The folder's life, from ``cnnlab train`` to ``--resume`` (the functions at the end): a new
run gets a free name (:func:`new_run_dir`) and its files before epoch 1
(:func:`start_run_folder`); a folder killed before it wrote them is *abandoned* and may be
reused; one killed before its first epoch has *never started* and starts again from its
config; any other is resumed from ``resume.safetensors`` (:func:`check_resumable`,
:func:`latest_unfinished`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.display import count
from cnnlab.data.decode import BadImage, load_image
from cnnlab.data.normalize import Normalization
from cnnlab.errors import CnnlabError

WEIGHT_NAMES = ("best", "last")
RESUME_FILE = "resume.safetensors"


@dataclass(frozen=True)
class Preprocessor:
    """Image file -> normalised float tensor (C, H, W), exactly as in training."""

    size: tuple[int, int]  # (height, width)
    channels: int
    resize: str
    normalization: Normalization

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "Preprocessor":
        h, w, c = meta["input"]
        return cls((h, w), c, meta.get("resize", "stretch"),
                   Normalization.from_dict(meta.get("normalization"), c))

    def load_uint8(self, path: str | Path) -> np.ndarray:
        """(H, W, C) uint8; raises BadImage."""
        return load_image(path, self.size, self.channels, self.resize)

    def to_tensor(self, arr: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        return self.normalization.apply(x)

    def load(self, path: str | Path) -> torch.Tensor:
        return self.to_tensor(self.load_uint8(path))

    def _try_load(self, path: str | Path) -> tuple[torch.Tensor | None, str]:
        try:
            return self.load(path), ""
        except BadImage as e:
            return None, e.reason

    def load_batch(self, paths: list[str | Path], pool=None) -> tuple[torch.Tensor, list[int], dict[int, str]]:
        """Stack the readable files: (tensor, indices of those files, {index: error}).

        ``pool``: a ``concurrent.futures`` executor decoding the files side by side (Pillow
        lets go of Python's lock while it decodes and resizes), in the files' order."""
        tensors, ok, errors = [], [], {}
        for i, (x, reason) in enumerate((pool.map if pool else map)(self._try_load, paths)):
            if x is None:
                errors[i] = reason
            else:
                tensors.append(x)
                ok.append(i)
        if not tensors:
            c, (h, w) = self.channels, self.size
            return torch.empty(0, c, h, w), ok, errors
        return torch.stack(tensors), ok, errors


def read_split(run_dir: str | Path):
    """RUN/split.json as a DataIndex, or None when there is none: the one reader of that file.

    It holds ``DataIndex.to_json()`` (or, from older runs, a bare ``{split: [[path, label]]}``).
    """
    from cnnlab.data.datasets import DataIndex

    p = Path(run_dir) / "split.json"
    if not p.is_file():
        return None
    try:
        return DataIndex.from_json(json.loads(p.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CnnlabError(f"{p}: not a readable split.json ({e.__class__.__name__}: {e}); "
                          "it lists the run's images per split, as training wrote it") from None


class Run:
    """A training run's directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CnnlabError(f"{self.path}: no such run directory")
        if not (self.path / "weights").is_dir() and self.path.suffix != ".safetensors":
            raise CnnlabError(f"{self.path}: not a cnnlab run (it has no weights/ folder)")

    @property
    def name(self) -> str:
        return self.path.name

    def weights_path(self, which: str = "best") -> Path:
        """best, last, or a path to a .safetensors file."""
        if which in WEIGHT_NAMES:
            p = self.path / "weights" / f"{which}.safetensors"
        else:
            p = Path(which)
        if not p.is_file():
            raise CnnlabError(f"{p}: no such weights file (has this run finished an epoch?)")
        return p

    def load_model(self, which: str = "best", device: str | torch.device = "cpu"):
        """(model in eval mode, metadata) from the weights file alone."""
        from cnnlab.io.weights import load_weights

        path = self.weights_path(which)
        model, meta = load_weights(path, device=device)
        own = self.path / "classes.json"
        if "classes" in meta and own.is_file() and list(meta["classes"]) != self.classes:
            raise CnnlabError(f"{path}: a model of classes {', '.join(map(str, meta['classes']))}, but run "
                              f"{self.path} has classes {', '.join(self.classes)}; use the weights of this run")
        return model, meta

    def preprocessor(self, meta: dict[str, Any]) -> Preprocessor:
        return Preprocessor.from_meta(meta)

    @property
    def config(self) -> dict[str, Any]:
        import yaml

        p = self.path / "config.yaml"
        return yaml.safe_load(p.read_text()) if p.is_file() else {}

    @property
    def classes(self) -> list[str]:
        p = self.path / "classes.json"
        if p.is_file():
            return list(json.loads(p.read_text()))
        from cnnlab.io.weights import read_metadata

        return list(read_metadata(self.weights_path("best"))["classes"])

    def index(self):
        """split.json as a DataIndex (None when the run has none); see read_split."""
        return read_split(self.path)

    def split(self) -> dict[str, list[tuple[str, int]]]:
        """{split: [(path, label index), ...]} as saved at training ({} without split.json)."""
        index = self.index()
        return index.splits if index is not None else {}

    def history(self):
        """One dict per epoch, in Keras' names (a run of an older cnnlab's train_acc is read as accuracy).

        A :class:`cnnlab.display.History`: a list, with ``plot()`` and a table in a notebook.
        """
        from cnnlab.display import History
        from cnnlab.train.config import LOG_ALIASES

        p = self.path / "history.csv"
        if not p.is_file():
            return History([], None)
        with p.open(newline="") as f:
            rows = [{LOG_ALIASES.get(k, k): float(v) if v not in ("", None) else float("nan")
                     for k, v in row.items()} for row in csv.DictReader(f)]
        return History(rows, self.best_epoch())

    def best_epoch(self) -> int | None:
        """The epoch whose weights are weights/best.safetensors (None before the first)."""
        from cnnlab.io.weights import read_metadata

        p = self.path / "weights" / "best.safetensors"
        try:
            epoch = read_metadata(p).get("epoch") if p.is_file() else None
        except CnnlabError:
            return None
        return int(epoch) if isinstance(epoch, (int, float)) else None

    def plot(self):
        """The training curves (loss, accuracy, learning rate per epoch) as a matplotlib Figure."""
        return self.history().plot()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def _repr_html_(self) -> str:
        """In a notebook: where the run is, its best epoch, its test metrics, and its history."""
        from cnnlab.display import kv_table, number

        rows = [("folder", str(self.path))]
        if (self.path / "classes.json").is_file():
            rows.append(("classes", ", ".join(self.classes)))
        best = self.best_epoch()
        if best is not None:
            rows.append(("best weights", f"epoch {best}: {self.path / 'weights' / 'best.safetensors'}"))
        m = self.eval_dir("test") / "metrics.json"
        if m.is_file():
            data = json.loads(m.read_text())
            rows.append(("test", f"accuracy {number(data.get('accuracy'))}, loss {number(data.get('loss'))} "
                                 f"({count(data.get('n_images') or 0, 'image')})"))
        if (self.path / "report.html").is_file():
            rows.append(("report", str(self.path / "report.html")))
        hist = self.history()
        return (kv_table(rows, f"Run {self.name}") + (hist._repr_html_() if hist else "")
                + "<div style='color:#666;font-size:12px'>run.plot() draws the curves; "
                  "run.history() gives the numbers</div>")

    def eval_dir(self, split: str) -> Path:
        return self.path / "eval" / split


# -- the run folder's life -------------------------------------------------------------------


def new_run_dir(out: str | Path, name: str | None, base: str) -> Path:
    """out/name (which must be new), or out/base, out/base-2, out/base-3... (the first free)."""
    out = Path(out)
    if name:
        path = out / name
        if path.exists() and not is_abandoned(path):
            raise CnnlabError(f"{path} already exists; continue it with --resume {path}, or pick another --name")
        return path
    path, i = out / base, 1
    while path.exists():
        i += 1
        path = out / f"{base}-{i}"
    return path


def is_abandoned(path: Path) -> bool:
    """A run folder killed before it wrote config.yaml: an empty weights/ and temporary files."""
    if not (path / "weights").is_dir():
        return False
    for p in path.iterdir():
        empty_weights = p.name == "weights" and p.is_dir() and not any(p.iterdir())
        if not (empty_weights or (p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"))):
            return False
    return True


def never_started(run_dir: Path) -> bool:
    """A run killed before its first checkpoint: its files are written, no epoch ever began."""
    return (not (run_dir / RESUME_FILE).exists() and not (run_dir / "history.csv").exists()
            and not any((run_dir / "weights").glob("*.safetensors")))


def write_run_files(run_dir: Path, setup) -> None:
    """config.yaml, model.yaml, classes.json, split.json, skipped.csv: all before epoch 1."""
    import io

    from cnnlab.io.fs import atomic_write_text

    try:
        (run_dir / "weights").mkdir(parents=True, exist_ok=True)
    except OSError as e:  # --out is a file, a read-only folder...
        raise CnnlabError(f"cannot create the run folder {run_dir}: {e.strerror or e}") from None
    atomic_write_text(run_dir / "config.yaml", setup.resolved_config().to_yaml())
    atomic_write_text(run_dir / "model.yaml", setup.spec.to_yaml())
    atomic_write_text(run_dir / "classes.json", json.dumps(list(setup.index.classes), indent=1) + "\n")
    atomic_write_text(run_dir / "split.json", json.dumps(setup.index.to_json()) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["split", "path", "reason"])
    w.writerows(setup.bad_files)
    atomic_write_text(run_dir / "skipped.csv", buf.getvalue())


def start_run_folder(run_dir: Path, setup) -> None:
    """write_run_files into a new folder; if that fails (a full disk...), no half-made run is left."""
    import shutil

    existed = run_dir.exists()
    if existed:  # abandoned (see new_run_dir): clear its temporary files
        remove_stale_temporaries(run_dir)
    try:
        write_run_files(run_dir, setup)
    except BaseException:
        if not existed:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of writes that a crash cut short (``.name.XXXX.tmp``): never the real files.

    This also checks, before any training, that the run folder can still be written to.
    """
    import os
    import tempfile

    try:
        for folder in (run_dir, run_dir / "weights"):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise CnnlabError(f"cannot write in {run_dir} ({e.strerror or e}); copy the run to a folder "
                          "you can write to and resume it there") from None


def check_resumable(run_dir: Path) -> bool:
    """Raise unless ``run_dir`` is a run to resume; True if it never started (it starts afresh)."""
    if not (run_dir / "config.yaml").is_file():
        raise CnnlabError(f"{run_dir}: not a cnnlab training run (no config.yaml), nothing to resume")
    fresh = never_started(run_dir)  # killed while setting up: it starts again from its config
    if not fresh and not (run_dir / RESUME_FILE).is_file():
        raise CnnlabError(f"{run_dir}: has no {RESUME_FILE} to resume from (was it trained by an older cnnlab?)")
    return fresh


def check_unfinished(run_dir: Path) -> None:
    """Raise if the run's checkpoint says it has finished (stopped early, or all its epochs)."""
    from cnnlab.train.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / RESUME_FILE)
    if state["stopped"] or state["epoch"] >= state["epochs"]:
        raise CnnlabError(f"{run_dir} has finished ({count(state['epoch'], 'epoch')}); nothing to resume")


def latest_unfinished(out: str | Path) -> Path:
    """The run under ``out`` whose checkpoint was written last and is not finished."""
    from cnnlab.train.checkpoint import load_checkpoint

    candidates = sorted(Path(out).glob(f"*/{RESUME_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        state = load_checkpoint(path)
        if not state["stopped"] and state["epoch"] < state["epochs"]:
            return path.parent
    raise CnnlabError(f"{out}: no unfinished run to resume (name one: --resume runs/NAME)")
