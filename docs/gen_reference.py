"""The reference pages, generated from cnnlab's own code on every ``mkdocs build``.

An MkDocs hook (``hooks:`` in mkdocs.yml): it adds three pages to the site that are never
written into docs/, so they always describe the code being built:

    reference/config.md    every TrainConfig field: YAML key, flag, type, default, description
    reference/choices.md   the optimisers, schedules, losses, monitors and recipes
    reference/models.md    the preset models and every layer type with its arguments

Run it as a script to write the same pages into a folder (to read them without MkDocs):

    PYTHONPATH=. python docs/gen_reference.py /tmp/reference

Every name this file reads from cnnlab is imported in the block below, and each registry is
read by one small function under it: when a module moves, only that block changes.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the cnnlab of this checkout, not another one installed
    sys.path.insert(0, str(ROOT))

# --- every import from cnnlab: update here when a module moves --------------------------
import cnnlab  # noqa: E402  (cnnlab.summary, cnnlab.load_spec: the public API)
from cnnlab.cli.train import FLAGS as TRAIN_FLAGS  # noqa: E402  (field -> flag names)
from cnnlab.model.layers import LAYERS  # noqa: E402  (what `cnnlab layers` lists)
from cnnlab.model.spec import list_presets  # noqa: E402  (what `cnnlab models` lists)
from cnnlab.train.config import MONITORS, TrainConfig, registry  # noqa: E402
from cnnlab.train.recipes import RECIPES  # noqa: E402  (what `cnnlab recipes` lists)
# ------------------------------------------------------------------------------------------

PAGES = ("reference/config.md", "reference/choices.md", "reference/models.md")


# --- one small function per thing read -------------------------------------------------

def config_fields() -> list[tuple[str, typing.Any]]:
    """(name, pydantic FieldInfo) of every TrainConfig field, in the class's order."""
    return list(TrainConfig.model_fields.items())


def flag_names() -> dict[str, tuple[str, ...]]:
    """field -> the flags `cnnlab train` gives it (fields without a flag are absent)."""
    out = {}
    for fields in TRAIN_FLAGS.values():
        for field, names, _metavar in fields:
            out[field] = tuple(names) or ("--" + field.replace("_", "-"),)
    return out


def registry_entries(kind: str) -> list[typing.Any]:
    """The entries of the optimizer, scheduler or loss registry, in their order."""
    return list(registry(kind))


def monitors() -> tuple[str, ...]:
    return tuple(MONITORS)


def recipes() -> list[typing.Any]:
    return [entry.build() for entry in RECIPES]


def presets() -> list[dict[str, typing.Any]]:
    """What `cnnlab models` prints: name, input, parameters and MACs (10 classes), description."""
    rows = []
    for name in list_presets():
        spec = cnnlab.load_spec(name)
        s = cnnlab.summary(spec)
        rows.append({"name": name, "input": list(spec.input), "params": s.total_params,
                     "macs": s.total_macs, "description": spec.description})
    return rows


def layer_types() -> list[tuple[str, str, list[tuple[str, typing.Any, str]]]]:
    """What `cnnlab layers` prints: (name, one line, [(argument, default, help)])."""
    return [(name, LAYERS[name].build.doc, LAYERS[name].build.arguments()) for name in sorted(LAYERS.names())]


# --- formatting --------------------------------------------------------------------------

def _cell(text: typing.Any) -> str:
    """Text for a Markdown table cell: one line; outside `code`, pipes and < escaped."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = parts[i].replace("|", "\\|").replace("<", "&lt;")
    return "`".join(parts)


def _code(value: typing.Any) -> str:
    return f"`{value}`" if "`" not in str(value) else str(value)


def _type_name(annotation: typing.Any) -> str:
    """int | tuple[int, int] | None -> 'int, [int, int] or none'; a Literal -> its values."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " or ".join(_code(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [_type_name(a) for a in typing.get_args(annotation)]
        return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
    if annotation is type(None):
        return "none"
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in typing.get_args(annotation)) + "]"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info: typing.Any) -> str:
    """pydantic's ge/gt/le/lt constraints as '≥ 0, < 1'."""
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    out = []
    for m in info.metadata:
        for attr, sign in signs.items():
            value = getattr(m, attr, None)
            if value is not None:
                out.append(f"{sign} {value:g}" if isinstance(value, (int, float)) else f"{sign} {value}")
    return ", ".join(out)


def _default(info: typing.Any) -> str:
    d = info.default
    if d is None:
        return "auto" if "auto" in (info.description or "") else "none"
    if isinstance(d, bool):
        return _code(str(d).lower())
    return _code(d)


def missing_descriptions() -> list[str]:
    """TrainConfig fields without a description: gaps in the code, shown as such on the page."""
    return [name for name, info in config_fields() if not (info.description or "").strip()]


def config_page() -> str:
    flags = flag_names()
    lines = [
        "# Training options",
        "",
        "<!-- generated by docs/gen_reference.py from cnnlab.train.config.TrainConfig: edit the code, not this page -->",
        "",
        "Every option of `cnnlab train`, generated from the code (`TrainConfig`). The same names work",
        "in three places: as flags (`--batch-size 32`), in a YAML file given with `--config`",
        "(`batch_size: 32`; flags win over the file), and as keyword arguments of",
        "`cnnlab.train(DATA, batch_size=32)`. *auto* means the value is decided when the data is",
        "known; `RUN/config.yaml` holds what it resolved to. How the automatic choices are made:",
        "[Automatic choices](../auto.md).",
        "",
        "| key (YAML, Python) | flag | type | default | description |",
        "|---|---|---|---|---|",
    ]
    for name, info in config_fields():
        flag = ", ".join(_code(f) for f in flags.get(name, ())) or "(config file or Python only)"
        if name == "data":
            flag = "`DATA` (the first argument)"
        kind = _type_name(info.annotation)
        bounds = _bounds(info)
        if bounds:
            kind += f" ({bounds})"
        desc = info.description or "**no description in the code**"
        lines.append(f"| `{name}` | {_cell(flag)} | {_cell(kind)} | {_cell(_default(info))} | {_cell(desc)} |")
    gaps = missing_descriptions()
    if gaps:
        lines += ["", "!!! warning \"Options without a description\"",
                  "    " + ", ".join(f"`{g}`" for g in gaps)]
    lines += [
        "",
        "Two more flags are not options of the run: `--config YAML` (a file of the options above)",
        "and `--resume [RUN]` (continue an interrupted run; see [Training](../training.md#resume-an-interrupted-run)).",
        "",
    ]
    return "\n".join(lines)


def _defaults_text(defaults: dict[str, typing.Any]) -> str:
    shown = {k: v for k, v in defaults.items() if not callable(v)}
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()) or "-"


def choices_page() -> str:
    lines = [
        "# Optimisers, schedules, losses, recipes",
        "",
        "<!-- generated by docs/gen_reference.py from cnnlab's registries: edit the code, not this page -->",
        "",
        "The names `--optimizer`, `--scheduler`, `--loss`, `--monitor` and `--recipe` accept, read",
        "from the registries that `cnnlab train --help` and the config's validation read too. A",
        "default here is what *auto* resolves to when you leave `--lr`, `--weight-decay` or",
        "`--warmup` unset. To add your own, see [Training](../training.md#your-own-optimiser-schedule-or-loss).",
        "",
    ]
    titles = {"optimizer": "Optimisers (`--optimizer`)", "scheduler": "Schedules (`--scheduler`)",
              "loss": "Losses (`--loss`)"}
    for kind, title in titles.items():
        lines += [f"## {title}", "", "| name | what it is | defaults |", "|---|---|---|"]
        for e in registry_entries(kind):
            lines.append(f"| `{e.name}` | {_cell(e.help)} | {_cell(_defaults_text(e.defaults))} |")
        lines.append("")
    lines += ["## Metrics (`--monitor`)", "",
              "The metrics a run logs, in Keras' names: " + ", ".join(f"`{m}`" for m in monitors()) + ".",
              "Without validation data, `val_X` means `X`.", ""]
    lines += ["## Recipes (`--recipe`)", "",
              "A recipe is a named bundle of options; the options you give win over it. This is what",
              "`cnnlab recipes` prints.", ""]
    for r in recipes():
        lines += [f"### {r.name}", "", _cell(r.summary) + ".", "", f"For: {_cell(r.suits)}.", "",
                  "```", r.describe(), "```", ""]
    return "\n".join(lines)


def models_page() -> str:
    lines = [
        "# Preset models and layer types",
        "",
        "<!-- generated by docs/gen_reference.py from the presets and cnnlab.model.layers.LAYERS -->",
        "",
        "What `cnnlab models` and `cnnlab layers` print, generated from the code. How to write a",
        "model spec: [Architecture](../architecture.md).",
        "",
        "## Presets",
        "",
        "Parameters and multiply-adds (MACs) per image for 10 classes.",
        "",
        "| name | input | parameters | MACs | description |",
        "|---|---|---:|---:|---|",
    ]
    for p in presets():
        lines.append(f"| `{p['name']}` | {'x'.join(map(str, p['input']))} | {p['params']:,} | "
                     f"{p['macs'] / 1e6:.1f} M | {_cell(p['description'])} |")
    lines += ["", "## Layer types", "",
              "Keras' names and arguments; `name` (optional on every layer) is left out.", ""]
    for name, doc, args in layer_types():
        lines += [f"### {name}", "", _cell(doc) or "(no description)", ""]
        if not args:
            lines += ["No arguments.", ""]
            continue
        lines += ["| argument | default | meaning |", "|---|---|---|"]
        for arg, default, help in args:
            if isinstance(default, tuple):
                default = list(default)
            lines.append(f"| `{arg}` | {_cell(_code(default) if default != 'required' else 'required')} | "
                         f"{_cell(help) or '**no description in the code**'} |")
        lines.append("")
    return "\n".join(lines)


def pages() -> dict[str, str]:
    return {"reference/config.md": config_page(), "reference/choices.md": choices_page(),
            "reference/models.md": models_page()}


# --- the MkDocs hook -------------------------------------------------------------------

def on_files(files, config):
    """Add the generated pages to the site (nothing is written into docs/)."""
    from mkdocs.structure.files import File

    for path, text in pages().items():
        existing = files.get_file_from_path(path)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, path, content=text))
    return files


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "reference-pages")
    for path, text in pages().items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(target)
    gaps = missing_descriptions()
    print("TrainConfig fields without a description:", ", ".join(gaps) if gaps else "none")
