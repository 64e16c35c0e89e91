"""One place that opens a model file, whatever wrote it, for every command that takes a model.

* ``.safetensors`` -- written by cnnlab (spec, classes and preprocessing in its header),
* ``.keras`` / ``.h5`` -- written by Keras, read without Keras (see :mod:`cnnlab.io.keras`).

``summary``, ``evaluate``, ``predict``, ``viz`` and ``explain`` accept such a file where
they accept a run directory; ``open_model`` gives them a :class:`ModelFile` (model in eval
mode, its metadata), and they also accept a ModelFile already opened (that is how the
command line passes ``--classes`` and ``--rescale`` for a Keras file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")  # as cnnlab.io.keras.SUFFIXES, without importing torch

MODEL_SUFFIXES = (".safetensors",) + KERAS_SUFFIXES


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

    def preprocessor(self):
        from cnnlab.run import Preprocessor

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
        from cnnlab.errors import CnnlabError

        raise CnnlabError(f"--classes {value!r}: give the class names separated by commas, e.g. cat,dog")
    return names


def open_model(path: "str | Path | ModelFile", *, classes: str | list[str] | None = None,
               rescale: float | None = None, data_classes: list[str] | None = None,
               device="cpu", quiet: bool = False) -> ModelFile:
    """Open a .safetensors, .keras or .h5 model file (``classes``/``rescale``: Keras files only)."""
    if isinstance(path, ModelFile):
        return path.to(device)
    from cnnlab.errors import CnnlabError

    path = Path(path)
    if path.suffix.lower() in KERAS_SUFFIXES:
        from cnnlab.io.keras import load_keras

        if rescale is not None and not rescale > 0:
            raise CnnlabError(f"--rescale must be a positive number, got {rescale}")
        model, meta = load_keras(path, classes=parse_classes(classes), rescale=rescale,
                                 data_classes=data_classes, device=device, quiet=quiet)
        return ModelFile(path, model, meta)
    if path.suffix.lower() == ".safetensors":
        from cnnlab.io.weights import load_weights

        model, meta = load_weights(path, device=device)
        return ModelFile(path, model, meta)
    raise CnnlabError(f"{path}: not a model file cnnlab reads (.safetensors, .keras, .h5)")


def from_args(args, data_classes: list[str] | None = None, device="cpu"):
    """The RUN argument as given (a run directory), or a ModelFile opened with the options."""
    source = getattr(args, "run", None) or getattr(args, "model", None)
    if is_model_file(source):
        return open_model(source, classes=getattr(args, "keras_classes", None),
                          rescale=getattr(args, "rescale", None), data_classes=data_classes, device=device)
    return source


def init_weights(model, path, verbose: bool = True) -> tuple[list[str], list[str]]:
    """Copy into ``model`` every tensor of the model file ``path`` with the same name and shape.

    Returns (loaded, kept fresh). A new head (other classes) or another input size changes
    some shapes: those tensors keep the model's own initialisation, and are named.
    """
    import sys

    from cnnlab.errors import CnnlabError

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
