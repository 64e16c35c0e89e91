"""One place that opens a model file, whatever wrote it.

* ``.safetensors`` -- written by cnnlab (spec, classes and preprocessing in its header),
* ``.keras`` / ``.h5`` -- written by Keras, read without Keras (see :mod:`cnnlab.formats.keras`).

:func:`open_model` gives a :class:`ModelFile` (the model in eval mode, its metadata);
:func:`open_spec` the architecture alone (also of a preset or a YAML file), which
:func:`build_model` and :func:`summary` use. Commands that take a run folder *or* a model
file go through :func:`cnnlab.run.open_any`, the floor above.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.data.preprocess import Preprocessor
from cnnlab.errors import CnnlabError, SpecError
from cnnlab.formats import KERAS_SUFFIXES, MODEL_SUFFIXES
from cnnlab.formats.keras import load_keras, read_keras_file, spec_from_keras
from cnnlab.formats.weights import load_weights
from cnnlab.io.weights import read_metadata
from cnnlab.model.build import CNN
from cnnlab.model.build import build_model as build_spec_model
from cnnlab.model.spec import ModelSpec, load_spec, override, spec_from_dict
from cnnlab.model.summary import Summary, summarize


def is_model_file(path: Any) -> bool:
    """A path to a model file (by its suffix), as opposed to a run directory."""
    if isinstance(path, ModelFile):
        return True
    if not isinstance(path, (str, Path)):
        return False
    p = Path(path)
    return p.suffix.lower() in MODEL_SUFFIXES and not p.is_dir()


@dataclass
class ModelFile:
    """A model opened from a file on its own: the CNN (eval mode), its metadata, the file."""

    path: Path
    model: Any  # cnnlab.model.build.CNN
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def is_keras(self) -> bool:
        return self.meta.get("source", {}).get("format") == "keras"

    def preprocessor(self) -> Preprocessor:
        return Preprocessor.from_meta(self.meta)

    def to(self, device) -> "ModelFile":
        self.model.to(device)
        return self


def parse_classes(value: str | list[str] | None) -> list[str] | None:
    """'cat,dog' -> ['cat', 'dog'] (the --classes option)."""
    if value is None or isinstance(value, list):
        return value
    names = [c.strip() for c in str(value).split(",")]
    if not all(names):
        raise CnnlabError(f"--classes {value!r}: give the class names separated by commas, e.g. cat,dog")
    return names


def open_model(path: "str | Path | ModelFile", *, classes: str | list[str] | None = None,
               rescale: float | None = None, data_classes: list[str] | None = None,
               device="cpu", quiet: bool = False) -> ModelFile:
    """Open a .safetensors, .keras or .h5 model file (``classes``/``rescale``: Keras files only)."""
    if isinstance(path, ModelFile):
        return path.to(device)
    path = Path(path)
    if path.suffix.lower() in KERAS_SUFFIXES:
        if rescale is not None and not rescale > 0:
            raise CnnlabError(f"--rescale must be a positive number, got {rescale}")
        model, meta = load_keras(path, classes=parse_classes(classes), rescale=rescale,
                                 data_classes=data_classes, device=device, quiet=quiet)
        return ModelFile(path, model, meta)
    if path.suffix.lower() == ".safetensors":
        model, meta = load_weights(path, device=device)
        return ModelFile(path, model, meta)
    raise CnnlabError(f"{path}: not a model file cnnlab reads (.safetensors, .keras, .h5)")


def init_weights(model, path, verbose: bool = True) -> tuple[list[str], list[str]]:
    """Copy into ``model`` every tensor of the model file ``path`` with the same name and shape.

    Returns (loaded, kept fresh). A new head (other classes) or another input size changes
    some shapes: those tensors keep the model's own initialisation, and are named.
    """
    src = open_model(path, quiet=True).model.state_dict()
    own = model.state_dict()
    loaded = [k for k, v in src.items() if k in own and own[k].shape == v.shape]
    fresh = [k for k in own if k not in loaded and not k.endswith("num_batches_tracked")]
    if not [k for k in loaded if not k.endswith("num_batches_tracked")]:
        raise CnnlabError(f"--init-weights {path}: none of its tensors fits this model (different layer names "
                          "or shapes); use the file's own architecture with --model")
    model.load_state_dict({**own, **{k: src[k] for k in loaded}})
    if verbose:
        layers = sorted({k.split(".")[1] for k in fresh if k.startswith("layers.")})
        kept = f"; kept fresh (other shape): {', '.join(layers)}" if layers else ""
        print(f"cnnlab: initial weights from {path}: {len(loaded)} of {len(own)} tensors{kept}", file=sys.stderr)
    return loaded, fresh


def open_spec(source: "str | Path | dict | ModelSpec", *, input: Any = None, classes: int | None = None) -> ModelSpec:
    """A ModelSpec from anything that describes a model: a preset name, a YAML file, a dict,
    a ModelSpec (:func:`cnnlab.model.spec.load_spec`), or a model file -- a Keras
    ``.keras``/``.h5`` (its architecture) or a cnnlab ``.safetensors`` (the spec in its
    metadata). ``input`` ('64x64x3' or [64, 64, 3]) and ``classes`` override the spec's own.
    """
    if isinstance(source, (str, Path)) and not Path(source).is_dir():
        suffix = Path(source).suffix.lower()
        if suffix in KERAS_SUFFIXES:
            return override(spec_from_keras(read_keras_file(source)), input, classes)
        if suffix == ".safetensors":
            meta = read_metadata(source)
            if "spec" not in meta:
                raise SpecError(f"{source}: its metadata has no model spec")
            return override(spec_from_dict(meta["spec"], source=f"{source} (spec)"), input, classes)
    return load_spec(source, input=input, classes=classes)


def build_model(source: "str | Path | dict | ModelSpec", *, input: Any = None, classes: int | None = None,
                seed: int | None = None) -> CNN:
    """A freshly initialised CNN (``seed``: its initial weights) from anything :func:`open_spec`
    reads, model files included (their architecture only: :func:`cnnlab.run.create_model` loads
    the weights too)."""
    return build_spec_model(open_spec(source, input=input, classes=classes), seed=seed)


def summary(model_or_spec: Any, *, input: Any = None, classes: int | None = None) -> Summary:
    """Keras-style summary of a CNN, a ModelSpec, a preset, a spec dict or a file (YAML,
    ``.safetensors``, ``.keras``/``.h5``): :func:`cnnlab.model.summary.summarize` of its spec."""
    if isinstance(model_or_spec, (str, Path)) and Path(model_or_spec).suffix.lower() in KERAS_SUFFIXES:
        model_or_spec = open_model(model_or_spec, quiet=True).model  # its weights must fit its config too
    spec = getattr(model_or_spec, "spec", None)
    spec = load_spec(spec, input=input, classes=classes) if spec is not None else open_spec(
        model_or_spec, input=input, classes=classes)
    return summarize(spec)
