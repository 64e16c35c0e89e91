"""Model specs: a YAML file (or the same structure as a Python dict) in Keras terms.

    input: [64, 64, 3]            # height, width, channels
    classes: 10                   # used where a layer says `units: classes`
    layers:
      - Conv2D: {filters: 32, kernel_size: 3, activation: relu}
      - MaxPooling2D: {pool_size: 2}
      - Flatten: {}
      - Dense: {units: 128, activation: relu}
      - Dense: {units: classes, activation: softmax}

`load_spec` accepts a preset name (an entry of `PRESETS`: one per YAML file in presets/), a
YAML path, a dict or a ModelSpec, and `trace` walks the layers, computing every shape and
naming the layer in any error.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import SpecError
from cnnlab.model.layers import LAYERS, Dense, Layer, Shape
from cnnlab.registry import Registry
from cnnlab.sizes import parse_size

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS: Registry = Registry("preset")  # name -> a function giving its ModelSpec; filled from PRESET_DIR
DEFAULT_CLASSES = 10


def _snake(name: str) -> str:
    """Keras' automatic layer names: Conv2D -> conv2d, MaxPooling2D -> max_pooling2d."""
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name)
    return s.lower()


@dataclass
class ModelSpec:
    input: tuple[int, int, int]
    layers: list[tuple[str, Layer]]
    classes: int | None = None  # None: not known yet (taken from the data at training)
    name: str = "model"
    description: str = ""
    source: str = "<dict>"  # where it came from, for error messages

    @property
    def num_classes(self) -> int:
        return self.classes if self.classes is not None else DEFAULT_CLASSES

    def with_(self, *, input: tuple[int, int, int] | None = None, classes: int | None = None) -> "ModelSpec":
        return dataclasses.replace(
            self,
            input=input if input is not None else self.input,
            classes=classes if classes is not None else self.classes,
        )

    def resolved_layers(self) -> list[tuple[str, Layer]]:
        """The layers with `units: classes` replaced by the number of classes."""
        out = []
        for name, layer in self.layers:
            if isinstance(layer, Dense) and layer.units == "classes":
                layer = dataclasses.replace(layer, units=self.num_classes)
            out.append((name, layer))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The spec as YAML would write it, with names and classes filled in."""
        layers = []
        for name, layer in self.resolved_layers():
            args = layer.to_args()
            args["name"] = name
            layers.append({type(layer).__name__: args})
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update({"input": list(self.input), "classes": self.num_classes, "layers": layers})
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def parse_input(value: Any, where: str = "input") -> tuple[int, int, int]:
    """[64, 64, 3], (64, 64, 3) or '64x64x3' -> (64, 64, 3). 'HxW' means 3 channels."""
    if isinstance(value, str):
        try:
            value = list(parse_size(value))
        except ValueError:
            raise SpecError(f"{where} must look like 64x64x3 (height x width x channels), got {value!r}") from None
        if len(value) == 2:
            value = value + [3]
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise SpecError(f"{where} must be [height, width, channels] of positive integers, got {value!r}")
    return (value[0], value[1], value[2])


def spec_from_dict(data: Any, source: str = "<dict>") -> ModelSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a model spec must be a mapping with 'input' and 'layers'")
    unknown = set(data) - {"input", "layers", "classes", "name", "description"}
    if unknown:
        raise SpecError(
            f"{source}: unknown top-level key {sorted(unknown)[0]!r} "
            "(allowed: input, layers, classes, name, description)"
        )
    if "input" not in data:
        raise SpecError(f"{source}: missing 'input', e.g. input: [64, 64, 3]")
    shape = parse_input(data["input"], f"{source}: input")
    raw_layers = data.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise SpecError(f"{source}: 'layers' must be a non-empty list")
    classes = data.get("classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise SpecError(f"{source}: classes must be a positive integer, got {classes!r}")

    layers: list[tuple[str, Layer]] = []
    counts: dict[str, int] = {}
    for i, entry in enumerate(raw_layers, start=1):
        if isinstance(entry, str):  # "- Flatten" is allowed as shorthand for "- Flatten: {}"
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise SpecError(f"{source}: layer {i} must be written as '- LayerName: {{arguments}}', got {entry!r}")
        (kind, args), = entry.items()
        if kind not in LAYERS:
            raise SpecError(f"{source}: layer {i}: {LAYERS.unknown(kind)}")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise SpecError(f"{source}: layer {i} ({kind}): arguments must be a mapping, got {args!r}")
        try:
            layer = LAYERS[kind].build.from_args(args)
        except (ValueError, TypeError) as e:
            raise SpecError(f"{source}: layer {i} ({kind}): {e}") from None
        base = _snake(kind)
        name = layer.name or (base if base not in counts else f"{base}_{counts[base]}")
        counts[base] = counts.get(base, 0) + 1
        if any(name == n for n, _ in layers):
            raise SpecError(f"{source}: layer {i} ({kind}): the name {name!r} is used twice")
        layers.append((name, layer))

    return ModelSpec(
        input=shape,
        layers=layers,
        classes=classes,
        name=str(data.get("name") or (Path(source).stem if source != "<dict>" else "model")),
        description=str(data.get("description", "")),
        source=source,
    )


def _add_presets(folder: Path) -> None:
    """One PRESETS entry per YAML file of ``folder``: NAME.yaml, built by load_spec(that file)."""
    for path in sorted(folder.glob("*.yaml")):
        PRESETS.add(path.stem, f"the model of {folder.name}/{path.name}", lambda path=path: load_spec(path))


_add_presets(PRESET_DIR)


def list_presets() -> list[str]:
    return sorted(PRESETS.names())


def load_spec(
    source: "str | Path | dict | ModelSpec",
    *,
    input: Any = None,
    classes: int | None = None,
) -> ModelSpec:
    """A ModelSpec from a preset name, a YAML file, a dict or a ModelSpec (model files, Keras
    or cnnlab's own: :func:`cnnlab.formats.open.open_spec`).

    ``input`` ('64x64x3' or [64, 64, 3]) and ``classes`` override the spec's own.
    """
    if isinstance(source, ModelSpec):
        spec = source
    elif isinstance(source, dict):
        spec = spec_from_dict(source)
    else:
        text_source = str(source)
        path = Path(text_source)
        if text_source in PRESETS and not path.exists():
            return override(PRESETS[text_source].build(), input, classes)
        elif not path.exists():
            presets = ", ".join(list_presets())
            raise SpecError(f"{text_source}: no such model file or preset (presets: {presets})")
        elif path.is_dir():
            run_hint = (f"; for a run's model give {path / 'model.yaml'} (or its weights, "
                        f"{path / 'weights' / 'best.safetensors'})" if (path / "model.yaml").is_file() else "")
            raise SpecError(f"{text_source}: is a folder, not a model YAML file{run_hint}")
        if path.suffix.lower() in (".keras", ".h5", ".hdf5", ".safetensors"):
            raise SpecError(f"{text_source}: a model file, not a model YAML file: open it with "
                            "cnnlab.formats.open.open_spec (or cnnlab.load_spec)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(f"{path}: cannot be read ({e.__class__.__name__}: {e})") from None
        spec = spec_from_dict(data, source=str(path))
        if path.parent == PRESET_DIR:
            spec.name = path.stem
    return override(spec, input, classes)


def head_as_classes(spec: ModelSpec) -> ModelSpec:
    """The spec with its last Dense (when it has more than one unit) written ``units: classes``,
    its units becoming the spec's ``classes``: a trained model's head, made replaceable, so that
    another number of classes (``classes=``, training on other data) gets a head of its size."""
    dense = [i for i, (_, layer) in enumerate(spec.layers) if isinstance(layer, Dense)]
    if not dense or not isinstance(spec.layers[dense[-1]][1].units, int) or spec.layers[dense[-1]][1].units < 2:
        return spec
    i = dense[-1]
    name, layer = spec.layers[i]
    layers = list(spec.layers)
    layers[i] = (name, dataclasses.replace(layer, units="classes"))
    return dataclasses.replace(spec, layers=layers, classes=layer.units)


def override(spec: ModelSpec, input: Any, classes: int | None) -> ModelSpec:
    if input is not None:
        spec = spec.with_(input=parse_input(input, "--input"))
    if classes is not None:
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise SpecError(f"classes must be a positive integer, got {classes!r}")
        spec = spec.with_(classes=classes)
    return spec


@dataclass
class TracedLayer:
    index: int  # 1-based, as a person counts
    name: str
    layer: Layer
    input_shape: Shape
    output_shape: Shape
    children: list["TracedLayer"] = field(default_factory=list)

    @property
    def type(self) -> str:
        return type(self.layer).__name__


def _describe(shape: Shape) -> str:
    """Keras' way of writing a shape, batch axis first: (None, 30, 30, 32)."""
    return "(None, " + ", ".join(str(s) for s in shape) + ")"


def trace(spec: ModelSpec) -> list[TracedLayer]:
    """Walk the layers computing every shape; errors name the layer and the shapes."""
    shape: Shape = spec.input
    out: list[TracedLayer] = []
    for i, (name, layer) in enumerate(spec.resolved_layers(), start=1):
        where = f"{spec.source}: layer {i} ({type(layer).__name__} '{name}')"
        if layer.needs == "image" and len(shape) != 3:
            raise SpecError(
                f"{where} needs an image-shaped input (height, width, channels) but gets "
                f"{_describe(shape)}; move it before Flatten/GlobalAveragePooling2D"
            )
        if layer.needs == "flat" and len(shape) != 1:
            raise SpecError(
                f"{where} needs a flat input but gets {_describe(shape)}; put Flatten or "
                "GlobalAveragePooling2D before it"
            )
        try:
            new_shape = layer.output_shape(shape)
            children = [
                TracedLayer(i, f"{name}/{cname}", child, cshape, child.output_shape(cshape))
                for cname, child, cshape in layer.children(shape)
            ]
        except SpecError as e:
            raise SpecError(f"{where}: {e} (input {_describe(shape)})") from None
        if any(s < 1 for s in new_shape):
            raise SpecError(f"{where}: its strides leave no output from input {_describe(shape)}")
        out.append(TracedLayer(i, name, layer, shape, new_shape, children))
        shape = new_shape
    if len(shape) != 1:
        raise SpecError(
            f"{spec.source}: the model ends with shape {_describe(shape)}; a classifier must end "
            "flat, e.g. with Flatten (or GlobalAveragePooling2D) and Dense"
        )
    return out


def size_free(spec: ModelSpec) -> tuple[int, str]:
    """(total stride, "") when the model runs at other input sizes with the same weights, else
    (0, why not). It must reach its flat layers through global pooling (a Flatten ties the
    Dense weights to one size); the stride is the product of its layers' strides before that:
    inputs whose sides are multiples of it are padded as the built size is, at every layer."""
    stride = 1
    for i, t in enumerate(trace(spec), start=1):
        if len(t.input_shape) != 3:
            break
        if len(t.output_shape) == 1:
            if t.type in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
                return stride, ""
            return 0, (f"layer {i} ({t.type} '{t.name}') ties the model to its {t.input_shape[0]}x"
                       f"{t.input_shape[1]} input; a model that ends in GlobalAveragePooling2D runs at any size")
        stride *= t.layer.rf()[1]
    return 0, "the model has no global pooling layer"
