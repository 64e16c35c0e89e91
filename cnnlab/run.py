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

:func:`open_any` is the one door every command that takes a model goes through: a run
folder or a model file (``.safetensors``, ``.keras``, ``.h5``) in, an :class:`Opened` model
out. :func:`create_model` is the door of the Python API: a model by preset name, spec file,
model file or run folder. How a run folder is made and resumed: :mod:`cnnlab.train.runfolder`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from cnnlab.data.datasets import DataIndex
from cnnlab.data.preprocess import Preprocessor
from cnnlab.display import History, count, kv_table, number
from cnnlab.errors import CnnlabError
from cnnlab.formats.open import ModelFile, build_model, is_model_file, open_model, open_spec
from cnnlab.formats.weights import load_weights
from cnnlab.io.history import read_history
from cnnlab.io.weights import read_metadata
from cnnlab.model.build import CNN
from cnnlab.model.spec import head_as_classes

WEIGHT_NAMES = ("best", "last")
RESUME_FILE = "resume.safetensors"


def read_split(run_dir: str | Path):
    """RUN/split.json as a DataIndex, or None when there is none: the one reader of that file.

    It holds ``DataIndex.to_json()`` (or, from older runs, a bare ``{split: [[path, label]]}``).
    """
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
        p = self.path / "config.yaml"
        return yaml.safe_load(p.read_text()) if p.is_file() else {}

    @property
    def classes(self) -> list[str]:
        p = self.path / "classes.json"
        if p.is_file():
            return list(json.loads(p.read_text()))
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
        rows = read_history(self.path / "history.csv")
        return History(rows, self.best_epoch() if rows else None)

    def best_epoch(self) -> int | None:
        """The epoch whose weights are weights/best.safetensors (None before the first)."""
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


# -- the one door: a run folder or a model file ------------------------------------------------


@dataclass
class Opened:
    """A model ready to use, from a run folder or a model file: what every command needs of it."""

    path: Path  # the run folder or the model file
    name: str
    model: CNN  # eval mode
    meta: dict[str, Any]  # the weights file's metadata (classes, input, normalisation...)
    run: Run | None = None  # None for a model file on its own
    config: dict[str, Any] = field(default_factory=dict)  # the run's config.yaml ({} for a file)

    @property
    def is_file(self) -> bool:
        return self.run is None

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def preprocessor(self) -> Preprocessor:
        return Preprocessor.from_meta(self.meta)

    def split(self) -> dict[str, list[tuple[str, int]]]:
        """The run's images per split ({} for a model file: it has no images of its own)."""
        return self.run.split() if self.run is not None else {}


def is_run_dir(source: Any) -> bool:
    """A folder (or a :class:`Run`) rather than a model file."""
    return isinstance(source, Run) or (isinstance(source, (str, Path)) and not is_model_file(source))


def open_any(source: "str | Path | Run | ModelFile | Opened", weights: str = "best", *, device="cpu",
             classes: str | list[str] | None = None, rescale: float | None = None,
             data_classes: list[str] | None = None) -> Opened:
    """Run folder or model file? The one answer. ``weights`` (best, last or a path) picks a
    run's weights file; ``classes``/``rescale``/``data_classes`` name a Keras file's outputs
    and scale its pixels (see :func:`cnnlab.formats.open.open_model`)."""
    if isinstance(source, Opened):
        source.model.to(device)
        return source
    if is_model_file(source):  # .safetensors, .keras, .h5 on its own (or a ModelFile)
        f = open_model(source, classes=classes, rescale=rescale, data_classes=data_classes, device=device)
        return Opened(f.path, f.name, f.model, f.meta)
    run = source if isinstance(source, Run) else Run(source)
    model, meta = run.load_model(weights, device=device)
    return Opened(run.path, run.name, model, meta, run, run.config)


def create_model(name_or_path: "str | Path | dict", *, classes: int | None = None, input: Any = None,
                 weights: str | None = "best", seed: int | None = None) -> CNN:
    """A model by name, as timm's ``create_model``: a preset (``"vgg_bn"``), a model YAML, a spec
    dict, a Keras ``.keras``/``.h5`` or cnnlab ``.safetensors`` file, or a run folder.

    A model file or a run folder comes with its trained weights (``weights``: best, last or a
    path, for a run; ``None`` for the architecture only, freshly initialised); a preset or a
    YAML file is always freshly initialised. ``classes`` and ``input`` override the spec's own
    (which then leaves the weights out: the shapes change); ``seed`` fixes a fresh model's
    initial weights.
    """
    run = name_or_path if isinstance(name_or_path, Run) else (
        Run(name_or_path) if isinstance(name_or_path, (str, Path)) and Path(name_or_path).is_dir() else None)
    trained = run is not None or is_model_file(name_or_path)
    if trained and weights is not None and classes is None and input is None:
        return open_any(run or name_or_path, weights).model
    spec = open_spec(run.path / "model.yaml" if run is not None else name_or_path)
    if trained and classes is not None:  # a trained head has its classes written in: make it replaceable
        spec = head_as_classes(spec)
    return build_model(spec, input=input, classes=classes, seed=seed)
