"""`model.summary()` for cnnlab: shapes, parameters *with their formulas*, MACs, memory.

Parameter counts follow Keras: a Conv2D has (K*K*C_in + 1) * C_out weights, a Dense
(N_in + 1) * units, and BatchNormalization 4*C -- 2*C trainable (gamma, beta) and 2*C
non-trainable (moving mean and variance). MACs are multiply-accumulates for one image
(FLOPs are about twice that). Receptive field: how many input pixels (along one axis)
can influence one output value, r_out = r_in + (k - 1) * jump_in, jump_out = jump_in * s.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from cnnlab.display import esc, table
from cnnlab.model.spec import ModelSpec, TracedLayer, load_spec, trace

BYTES_PER_VALUE = 4  # float32


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    trainable: int
    non_trainable: int
    formula: str
    macs: int
    activation_bytes: int
    receptive_field: int | None  # None once a global pooling sees the whole image
    children: list["LayerRow"] = field(default_factory=list)


@dataclass
class Summary:
    name: str
    input_shape: tuple[int, int, int]
    layers: list[LayerRow]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def trainable_params(self) -> int:
        return sum(r.trainable for r in self.layers)

    @property
    def non_trainable_params(self) -> int:
        return sum(r.non_trainable for r in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def activation_bytes(self) -> int:
        return sum(r.activation_bytes for r in self.layers)

    def to_dict(self) -> dict[str, Any]:
        def row(r: LayerRow) -> dict[str, Any]:
            d = asdict(r)
            d["output_shape"] = list(r.output_shape)
            d["children"] = [row(c) for c in r.children]
            if not d["children"]:
                del d["children"]
            return d

        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "layers": [row(r) for r in self.layers],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_macs": self.total_macs,
            "total_flops": 2 * self.total_macs,
            "params_bytes": self.total_params * BYTES_PER_VALUE,
            "activation_bytes": self.activation_bytes,
        }

    def table(self):
        """A rich Table, Keras style, with the formula column."""
        t = Table(title=f"Model: {self.name}  (input {_shape(self.input_shape)})", title_justify="left")
        for col, just in [("Layer (type)", "left"), ("Output shape", "left"), ("Param #", "right"),
                          ("Formula", "left"), ("Trainable", "right"), ("Non-train.", "right"),
                          ("MACs", "right"), ("Act. mem", "right"), ("RF", "right")]:
            t.add_column(col, justify=just)  # type: ignore[arg-type]

        def add(r: LayerRow, indent: str = "") -> None:
            rf = "global" if r.receptive_field is None else f"{r.receptive_field}"
            t.add_row(f"{indent}{r.name} ({r.type})", _shape(r.output_shape), f"{r.params:,}",
                      r.formula, f"{r.trainable:,}", f"{r.non_trainable:,}", _si(r.macs),
                      _bytes(r.activation_bytes), rf)
            for c in r.children:
                add(c, indent + "  ")

        for r in self.layers:
            add(r)
        return t

    def totals_text(self) -> str:
        p = self.total_params
        return "\n".join([
            f"Total params: {p:,} ({_bytes(p * BYTES_PER_VALUE)})",
            f"Trainable params: {self.trainable_params:,} ({_bytes(self.trainable_params * BYTES_PER_VALUE)})",
            f"Non-trainable params: {self.non_trainable_params:,} "
            f"({_bytes(self.non_trainable_params * BYTES_PER_VALUE)})",
            f"MACs per image: {self.total_macs:,} (~{_si(2 * self.total_macs)}FLOPs)",
            f"Activation memory per image (forward, float32): {_bytes(self.activation_bytes)}",
        ])

    def _repr_html_(self) -> str:
        """The same table in a notebook (Jupyter, Colab), with the totals below it."""
        rows = []

        def add(r: LayerRow, indent: str = "") -> None:
            rf = "global" if r.receptive_field is None else r.receptive_field
            rows.append((f"{indent}{r.name} ({r.type})", _shape(r.output_shape), r.params, r.formula,
                         r.trainable, r.non_trainable, _si(r.macs), _bytes(r.activation_bytes), rf))
            for c in r.children:
                add(c, indent + "\u2003")

        for r in self.layers:
            add(r)
        head = ["Layer (type)", "Output shape", "Param #", "Formula", "Trainable", "Non-train.", "MACs",
                "Act. mem", "RF"]
        align = ["left", "left", "right", "left", "right", "right", "right", "right", "right"]
        totals = "<br>".join(esc(line) for line in self.totals_text().splitlines())
        return (table(head, rows, f"Model: {self.name}  (input {_shape(self.input_shape)})", align)
                + f"<div style='font-size:13px'>{totals}</div>")

    def __str__(self) -> str:
        console = Console(width=160, record=True, file=io.StringIO(), color_system=None)
        console.print(self.table())
        return console.export_text() + self.totals_text()


def _shape(shape) -> str:
    """Keras writes the batch axis as None: (None, 62, 62, 32)."""
    return "(None, " + ", ".join(str(s) for s in shape) + ")"


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} "


def _bytes(n: float) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _row(t: TracedLayer, rf: int | None, jump: int) -> tuple[LayerRow, int | None, int]:
    """One row, and the receptive field and jump after this layer."""
    groups = t.layer.params(t.input_shape)
    total = sum(g.count for g in groups)
    trainable = sum(g.count for g in groups if g.trainable)
    children = []
    if t.children:
        c_rf, c_jump = rf, jump
        for c in t.children:
            row, c_rf, c_jump = _row(c, c_rf, c_jump)
            children.append(row)
        formula = " + ".join(f"{c.params:,}" for c in children if c.params) + f" = {total:,}"
    elif not groups:
        formula = "0 (no weights)"
    elif len(groups) == 1:
        formula = f"{groups[0].formula} = {total:,}"
    else:
        formula = " + ".join(f"{g.formula} {g.what}" for g in groups) + f" = {total:,}"
    k, s = t.layer.rf()
    if k == 0 or rf is None:
        new_rf = None  # global pooling: every output sees the whole image
    else:
        new_rf = rf + (k - 1) * jump
    row = LayerRow(
        name=t.name,
        type=t.type,
        output_shape=t.output_shape,
        params=total,
        trainable=trainable,
        non_trainable=total - trainable,
        formula=formula,
        macs=t.layer.macs(t.input_shape, t.output_shape),
        activation_bytes=math.prod(t.output_shape) * BYTES_PER_VALUE,
        receptive_field=new_rf,
        children=children,
    )
    return row, new_rf, jump * s


def summary(model_or_spec: Any, *, input: Any = None, classes: int | None = None) -> Summary:
    """Summarise a CNN, a ModelSpec, a preset name, a spec dict or a model YAML file (model
    files of any kind: :func:`cnnlab.formats.open.summary`, which ``cnnlab.summary`` is)."""
    spec: ModelSpec = getattr(model_or_spec, "spec", None) or load_spec(model_or_spec)
    return summarize(load_spec(spec, input=input, classes=classes))


def summarize(spec: ModelSpec) -> Summary:
    """The summary of one spec: a row per layer with shapes, parameters, formula, MACs."""
    rows, rf, jump = [], 1, 1
    for t in trace(spec):
        row, rf, jump = _row(t, rf, jump)
        rows.append(row)
    return Summary(name=spec.name, input_shape=spec.input, layers=rows)
