"""`write_report`: RUN/report.html, one self-contained page about a run.

Everything is inside the one file -- the pictures are PNGs embedded as base64 ``data:``
URIs and the style sheet is inline -- so the page opens offline, can be mailed, and never
loads anything from the network. Sections: the config, the data (images per class and
split, skipped files), the model (layers with their parameter formulas), the training
curves (also written to RUN/curves.png), and for every evaluation in RUN/eval/ the
metrics table, both confusion matrices and the top losses.

The page is ``templates/report.html.j2`` rendered by jinja2 with autoescaping, so every
name that comes from the user's files (class names, paths, config values) is escaped
once, in one place; this module only gathers the numbers. Whatever a run does not have
yet (no evaluation, no history) is said in its section, so the page can be written at
any time.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import functools
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from cnnlab import __version__
from cnnlab.display import auto_lines
from cnnlab.errors import CnnlabError
from cnnlab.io import plots
from cnnlab.io.figures import save_figure
from cnnlab.io.fs import atomic_write_text
from cnnlab.io.weights import read_metadata
from cnnlab.model.summary import summary
from cnnlab.run import Run

SPLIT_ORDER = ("test", "val", "train")
MAX_SKIPPED_ROWS = 100


# ---------------------------------------------------------------------------- formatting


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _value(v: Any) -> str | None:
    """A config value as text (None: no value); lists and dicts as JSON."""
    if v is None:
        return None
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


@functools.cache
def _template():
    env = Environment(loader=PackageLoader("cnnlab.eval", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, num=_num, value=_value)
    return env.get_template("report.html.j2")


def _png(path: Path) -> str | None:
    """A PNG as a data: URI, or None when the file is missing."""
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _image(path: Path, alt: str, cls: str = "") -> dict[str, Any]:
    return {"src": _png(path), "name": path.name, "alt": alt, "cls": cls}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- sections


def _config_section(run: Run) -> dict[str, Any]:
    """config.yaml's values; its ``auto`` block as the lines `cnnlab train` printed."""
    config = run.config
    auto = config.get("auto")
    shown = isinstance(auto, dict) and "facts" in auto
    return {"items": [(k, v) for k, v in config.items() if not (k == "auto" and shown)],
            "auto": auto_lines(auto) if shown else [], "path": str(run.path / "config.yaml")}


def _data_section(run: Run, classes: list[str]) -> dict[str, Any]:
    index = run.index()
    splits = index.splits if index is not None else {}
    names = list(splits)
    counts: dict[int, dict[str, int]] = {c: {s: 0 for s in names} for c in range(len(classes))}
    for s, items in splits.items():
        for _, y in items:
            counts.setdefault(y, {n: 0 for n in names})[s] += 1
    rows = [{"name": classes[c] if c < len(classes) else str(c), "counts": [counts[c][s] for s in names],
             "total": sum(counts[c].values())} for c in sorted(counts)]
    return {"splits": names, "rows": rows, "totals": [len(splits[s]) for s in names],
            "total": sum(map(len, splits.values())), "root": index.root if index else "",
            "layout": index.layout if index else "", "val_split": index.val_split if index else None,
            "seed": index.seed if index else None,
            "ignored": [(k.replace("_", " "), v) for k, v in (index.ignored if index else {}).items()],
            "skipped": _skipped(run.path / "skipped.csv")}


def _skipped(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with path.open(newline="", errors="replace") as f:  # a non-UTF-8 file name shows as �
        rows = list(csv.reader(f))
    head, body = (rows[0], rows[1:]) if rows else ([], [])
    return {"head": head, "rows": body[:MAX_SKIPPED_ROWS], "n": len(body),
            "more": max(0, len(body) - MAX_SKIPPED_ROWS)}


def _model_section(run: Run, meta: dict[str, Any] | None) -> dict[str, Any]:
    source = (meta or {}).get("spec") or (run.path / "model.yaml")
    try:
        s = summary(source).to_dict()
    except (CnnlabError, OSError) as e:
        return {"error": str(e)}
    rows = []

    def add(layer: dict[str, Any], child: bool = False) -> None:
        rows.append({**layer, "child": child,
                     "shape": "(None, " + ", ".join(map(str, layer["output_shape"])) + ")"})
        for c in layer.get("children", []):
            add(c, True)

    for layer in s["layers"]:
        add(layer)
    h, w, c = s["input_shape"]
    return {"error": None, "summary": s, "rows": rows, "input": f"{h}×{w}×{c}"}


def _curves_section(run: Run, meta: dict[str, Any] | None) -> dict[str, Any]:
    history = run.history()
    if not history:
        return {"epochs": 0}
    best = (meta or {}).get("epoch")
    path = save_figure(plots.curves_figure(history, best_epoch=best), run.path / "curves.png")
    last = history[-1]
    facts = ", ".join(f"{k.replace('_', ' ')} {_num(v, 4)}" for k, v in last.items()
                      if k.endswith("loss") or "acc" in k)
    metric = (meta or {}).get("metric") or {}
    scores = ", ".join(f"{k} {_num(v, 4)}" for k, v in metric.items()
                       if isinstance(v, (int, float)) and ("loss" in k or "acc" in k))
    seconds = sum(row.get("seconds", 0.0) for row in history if row.get("seconds") == row.get("seconds"))
    took = (f" in {seconds / 60:.1f} min" if seconds >= 60 else f" in {seconds:.0f} s" if seconds >= 10
            else f" in {seconds:.1f} s" if seconds else "")
    return {"epochs": len(history), "took": took, "best": best, "scores": scores, "facts": facts,
            "image": _image(path, "training curves", "wide")}


def _eval_dirs(run: Run) -> list[Path]:
    root = run.path / "eval"
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if (d / "metrics.json").is_file()]
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    return sorted(dirs, key=lambda d: (rank.get(d.name, len(rank)), d.name))


def _eval_section(m: dict[str, Any], out: Path) -> dict[str, Any]:
    """One evaluation (RUN/eval/<name>/): numbers, tables, confusion matrices, top losses."""
    auc = m.get("roc_auc") or {}
    cards = [("accuracy", _pct(m["accuracy"]))]
    cards += [(f"top-{k} accuracy", _pct(v)) for k, v in m.get("top_k_accuracy", {}).items()]
    cards += [("macro F1", _num(m["macro_avg"]["f1"])), (f"ROC-AUC ({auc.get('method', '')})", _num(auc.get("macro"))),
              ("loss (cross-entropy)", _num(m.get("loss")))]
    per_auc = auc.get("per_class", {})
    per_class = [{"name": name, **m["per_class"][name], "auc": per_auc.get(name)} for name in m["classes"]]
    averages = [{"name": label, **m[key], "auc": auc.get(auc_key)}
                for label, key, auc_key in (("macro avg", "macro_avg", "macro"),
                                            ("weighted avg", "weighted_avg", "weighted"))]
    return {"m": m, "cards": cards, "per_class": per_class, "averages": averages,
            "pair": len(m["classes"]) <= 6,  # side by side while the numbers stay legible
            "matrices": [_image(out / "confusion_matrix.png", "confusion matrix (counts)"),
                         _image(out / "confusion_matrix_normalized.png", "confusion matrix (normalised)")],
            "top_losses": _image(out / "top_losses.png", "top losses", "wide"),
            "unreadable": (m.get("unreadable") or [])[:MAX_SKIPPED_ROWS], "n_unreadable": len(m.get("unreadable") or []),
            "unknown": list((m.get("unknown_classes") or {}).items())}


# ---------------------------------------------------------------------------- page


def write_report(run_dir: str | Path | Run) -> Path:
    """Write RUN/report.html (and RUN/curves.png) from what the run holds; return the path."""
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    meta = None
    for which in ("best", "last"):
        try:
            meta = read_metadata(run.weights_path(which))
            break
        except CnnlabError:
            continue
    classes = list((meta or {}).get("classes") or run.classes)
    evals = [(d, _read_json(d / "metrics.json")) for d in _eval_dirs(run)]
    evals = [(d, m) for d, m in evals if m and "classes" in m]

    cards = [("classes", str(len(classes)))]
    if evals:
        d, m = evals[0]
        cards = [(f"{d.name} accuracy", _pct(m["accuracy"])), (f"{d.name} macro F1", _num(m["macro_avg"]["f1"]))] + cards
    if meta and meta.get("epoch") is not None:
        cards.append(("best epoch", str(meta["epoch"])))
    page = _template().render(
        css=CSS, run_name=run.name, run_path=str(run.path), run_abspath=str(run.path.resolve()),
        classes=classes, now=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), version=__version__, cards=cards,
        config=_config_section(run), data=_data_section(run, classes), model=_model_section(run, meta),
        curves=_curves_section(run, meta), evals=[(d.name, _eval_section(m, d)) for d, m in evals])
    out = run.path / "report.html"
    atomic_write_text(out, page)
    return out


CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --accent:#2f6fde; --bg:#f5f7fa; --good:#1e8449; --bad:#c0392b; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#1f2933; color:#fff; padding:28px 0 22px; }
header h1 { margin:0 0 4px; font-size:26px; font-weight:600; }
header .sub { color:#cbd2d9; font-size:13px; }
.wrap { max-width:1120px; margin:0 auto; padding:0 24px; }
nav { background:#fff; border-bottom:1px solid var(--line); position:sticky; top:0; z-index:1; }
nav a { display:inline-block; padding:10px 12px; color:var(--muted); text-decoration:none; font-size:14px; }
nav a:hover { color:var(--accent); }
section { background:#fff; border:1px solid var(--line); border-radius:8px; margin:22px 0; padding:8px 24px 20px; }
h2 { font-size:20px; margin:16px 0 10px; }
h3 { font-size:16px; margin:20px 0 8px; color:#323f4b; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:18px 0 0; }
.card { background:#fff; color:var(--ink); border-radius:8px; padding:10px 16px; min-width:130px; }
.card.outline { border:1px solid var(--line); }
.card .v { font-size:22px; font-weight:600; }
.card .k { font-size:12px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
table { border-collapse:collapse; margin:6px 0 10px; font-size:14px; }
th, td { padding:5px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { background:#f0f4f8; font-weight:600; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; }
tr.avg td { background:#f7f9fb; font-weight:600; }
code, .mono { font-family:SFMono-Regular, Menlo, Consolas, monospace; font-size:13px; }
.bar { display:block; background:linear-gradient(90deg, #dbe7fb var(--p), transparent var(--p)); }
.muted { color:var(--muted); }
.note { color:var(--muted); font-size:13px; }
.empty { color:var(--muted); font-style:italic; }
.figs { display:flex; flex-wrap:wrap; gap:16px; align-items:flex-start; }
.figs img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
.figs.pair img { max-width:calc(50% - 8px); }
img.wide { max-width:100%; height:auto; }
.scroll { overflow-x:auto; }
.kv { display:grid; grid-template-columns:repeat(auto-fill, minmax(240px, 1fr)); gap:0 18px; font-size:14px; }
.kv div { display:flex; justify-content:space-between; gap:10px; padding:4px 2px; border-bottom:1px solid var(--line); }
.kv span { text-align:right; overflow-wrap:anywhere; }
pre.auto { background:#f7f9fb; border:1px solid var(--line); border-radius:6px; padding:8px 12px; overflow-x:auto; }
.child td:first-child { padding-left:28px; color:var(--muted); }
footer { color:var(--muted); font-size:12px; padding:8px 0 40px; }
"""
