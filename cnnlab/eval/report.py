"""`write_report`: RUN/report.html, one self-contained page about a run.

Everything is inside the one file -- the pictures are PNGs embedded as base64 ``data:``
URIs and the style sheet is inline -- so the page opens offline, can be mailed, and never
loads anything from the network. Sections: the config, the data (images per class and
split, skipped files), the model (layers with their parameter formulas), the training
curves (also written to RUN/curves.png), and for every evaluation in RUN/eval/ the
metrics table, both confusion matrices and the top losses.

Whatever a run does not have yet (no evaluation, no history) is said in its section,
so the page can be written at any time.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import json
from html import escape
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.io.fs import atomic_write_text
from cnnlab.run import Run

SPLIT_ORDER = ("test", "val", "train")
MAX_SKIPPED_ROWS = 100

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
.child td:first-child { padding-left:28px; color:var(--muted); }
footer { color:var(--muted); font-size:12px; padding:8px 0 40px; }
"""


# ---------------------------------------------------------------------------- helpers


def _img(path: Path, alt: str, cls: str = "") -> str:
    """An <img> with the PNG embedded, or a note when the file is missing."""
    if not path.is_file():
        return f'<p class="empty">{escape(path.name)} is missing.</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), classes=None) -> str:
    """An HTML table; cells are already-escaped HTML; columns in ``numeric`` align right."""
    th = "".join(f'<th class="n">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(head))
    body = []
    for r, row in enumerate(rows):
        tr_cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        tds = "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{tr_cls}>{tds}</tr>")
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _value(v: Any) -> str:
    if v is None:
        return '<span class="muted">–</span>'
    if isinstance(v, (dict, list)):
        return f'<span class="mono">{escape(json.dumps(v))}</span>'
    return escape(str(v))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- sections


def _config_section(run: Run) -> str:
    config = run.config
    if not config:
        return '<p class="empty">No config.yaml in this run.</p>'
    items = "".join(f'<div><code>{escape(str(k))}</code> <span>{_value(v)}</span></div>' for k, v in config.items())
    return (f'<div class="kv">{items}</div><p class="note">From config.yaml; train again with the same '
            f"settings: <code>cnnlab train --config {escape(str(run.path / 'config.yaml'))}</code>.</p>")


def _data_section(run: Run, classes: list[str]) -> str:
    from cnnlab.eval.evaluate import run_splits

    parts = []
    raw = _read_json(run.path / "split.json") or {}  # DataIndex.to_json(): root, layout, ignored...
    splits = run_splits(run)
    if splits:
        names = list(splits)
        counts = {c: {s: 0 for s in names} for c in range(len(classes))}
        for s, items in splits.items():
            for _, y in items:
                counts.setdefault(y, {n: 0 for n in names})[s] += 1
        rows = [[escape(classes[c] if c < len(classes) else str(c))] + [str(counts[c][s]) for s in names]
                + [str(sum(counts[c].values()))] for c in sorted(counts)]
        rows.append(["total"] + [str(len(splits[s])) for s in names] + [str(sum(map(len, splits.values())))])
        parts.append(_table(["class"] + names + ["all"], rows, set(range(1, len(names) + 2)),
                            [""] * (len(rows) - 1) + ["avg"]))
        if raw.get("root"):
            where = f"From <code>{escape(str(raw['root']))}</code> ({escape(str(raw.get('layout', '')))} layout)"
            if raw.get("val_split"):
                where += f"; validation drawn from train: {raw['val_split']:.0%}, seed {raw.get('seed')}"
            parts.append(f'<p class="note">{where}.</p>')
        ignored = raw.get("ignored")
        if ignored:
            text = ", ".join(f"{v} {escape(k.replace('_', ' '))}" for k, v in ignored.items())
            parts.append(f'<p class="note">Files left out when indexing: {text}.</p>')
    else:
        parts.append('<p class="empty">No split.json in this run.</p>')
    parts.append("<h3>Skipped files</h3>")
    parts.append(_skipped(run.path / "skipped.csv"))
    return "".join(parts)


def _skipped(path: Path) -> str:
    if not path.is_file():
        return '<p class="empty">None recorded (no skipped.csv).</p>'
    with path.open(newline="", errors="replace") as f:  # a non-UTF-8 file name shows as �
        rows = list(csv.reader(f))
    if len(rows) <= 1:
        return '<p class="muted">No file was skipped.</p>'
    head, body = rows[0], rows[1:]
    table = _table([escape(h) for h in head], [[escape(c) for c in r] for r in body[:MAX_SKIPPED_ROWS]])
    more = f'<p class="note">… and {len(body) - MAX_SKIPPED_ROWS} more in skipped.csv.</p>' \
        if len(body) > MAX_SKIPPED_ROWS else ""
    return f'<p>{len(body)} file(s) could not be read and were left out.</p>{table}{more}'


def _model_section(run: Run, meta: dict[str, Any] | None) -> str:
    from cnnlab.model.summary import summary

    source = (meta or {}).get("spec") or (run.path / "model.yaml")
    try:
        s = summary(source).to_dict()
    except (CnnlabError, OSError) as e:
        return f'<p class="empty">No model summary: {escape(str(e))}</p>'
    rows, kinds = [], []

    def add(layer: dict[str, Any], child: bool = False) -> None:
        rf = layer["receptive_field"]
        rows.append([f"{escape(layer['name'])} <span class='muted'>({escape(layer['type'])})</span>",
                     "(None, " + ", ".join(map(str, layer["output_shape"])) + ")",
                     f"{layer['params']:,}", f"<code>{escape(layer['formula'])}</code>",
                     f"{layer['macs']:,}", "global" if rf is None else str(rf)])
        kinds.append("child" if child else "")
        for c in layer.get("children", []):
            add(c, True)

    for layer in s["layers"]:
        add(layer)
    rows.append(["total", "", f"{s['total_params']:,}",
                 f"trainable {s['trainable_params']:,} · non-trainable {s['non_trainable_params']:,}",
                 f"{s['total_macs']:,}", ""])
    kinds.append("avg")
    h, w, c = s["input_shape"]
    intro = (f"<p><b>{escape(s['name'])}</b>, input {h}×{w}×{c}. Parameters are counted as Keras counts "
             "them: Conv2D (K·K·C<sub>in</sub>+1)·filters, Dense (inputs+1)·units. MACs: multiply-adds "
             "for one image; RF: receptive field in input pixels.</p>")
    return intro + _table(["layer (type)", "output shape", "params", "formula", "MACs", "RF"], rows,
                          {2, 4, 5}, kinds)


def _curves_section(run: Run, meta: dict[str, Any] | None) -> str:
    from cnnlab.eval import plots
    from cnnlab.io.figures import save_figure

    history = run.history()
    if not history:
        return '<p class="empty">No history.csv in this run.</p>'
    best = (meta or {}).get("epoch")
    path = save_figure(plots.curves_figure(history, best_epoch=best), run.path / "curves.png")
    last = history[-1]
    facts = ", ".join(f"{k.replace('_', ' ')} {_num(v, 4)}" for k, v in last.items()
                      if k.endswith("loss") or "acc" in k)
    best_txt = ""
    if best is not None:
        metric = (meta or {}).get("metric") or {}
        scores = ", ".join(f"{escape(k)} {_num(v, 4)}" for k, v in metric.items()
                           if isinstance(v, (int, float)) and ("loss" in k or "acc" in k))
        best_txt = f"Best weights: epoch {best}" + (f" ({scores})" if scores else "") + ". "
    seconds = sum(row.get("seconds", 0.0) for row in history if row.get("seconds") == row.get("seconds"))
    took = f" in {seconds / 60:.1f} min" if seconds >= 60 else (f" in {seconds:.0f} s" if seconds else "")
    return (f'<p>{len(history)} epochs{took}. {best_txt}Last epoch: {escape(facts)}.</p>'
            + _img(path, "training curves", "wide"))


def _eval_dirs(run: Run) -> list[Path]:
    root = run.path / "eval"
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if (d / "metrics.json").is_file()]
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    return sorted(dirs, key=lambda d: (rank.get(d.name, len(rank)), d.name))


def _cards(cards: list[tuple[str, str]], outline: bool = False) -> str:
    cls = "card outline" if outline else "card"
    return '<div class="cards">' + "".join(
        f'<div class="{cls}"><div class="v">{v}</div><div class="k">{escape(k)}</div></div>' for k, v in cards) + "</div>"


def _headline(m: dict[str, Any]) -> str:
    """What was evaluated, and the main numbers as cards."""
    auc = m.get("roc_auc") or {}
    source = (f"the run's <b>{escape(m['split'])}</b> split" if not m.get("data")
              else f"<code>{escape(m['data'])}</code>")
    epoch = f" (epoch {m['epoch']})" if m.get("epoch") is not None else ""
    tta = " with test-time augmentation (mirror)" if m.get("tta") else ""
    cards = [("accuracy", _pct(m["accuracy"]))]
    cards += [(f"top-{k} accuracy", _pct(v)) for k, v in m.get("top_k_accuracy", {}).items()]
    cards += [("macro F1", _num(m["macro_avg"]["f1"])),
              (f"ROC-AUC ({auc.get('method', '')})", _num(auc.get("macro"))),
              ("loss (cross-entropy)", _num(m.get("loss")))]
    return (f"<p>{m['n_images']} images of {source}, {escape(str(m.get('weights')))} weights{epoch}{tta}.</p>"
            + _cards(cards, outline=True))


def _per_class(m: dict[str, Any]) -> str:
    """Precision, recall, F1 (with a bar), support and ROC-AUC per class, then the averages."""
    auc = m.get("roc_auc") or {}
    per_auc = auc.get("per_class", {})
    rows, kinds = [], []
    for name in m["classes"]:
        pc = m["per_class"][name]
        bars = [f'<span class="bar" style="--p:{100 * pc[k]:.0f}%">&nbsp;{pc[k]:.3f}&nbsp;</span>'
                for k in ("precision", "recall", "f1")]
        rows.append([escape(name), *bars, str(pc["support"]), _num(per_auc.get(name))])
        kinds.append("")
    for label, key, auc_key in (("macro avg", "macro_avg", "macro"), ("weighted avg", "weighted_avg", "weighted")):
        a = m[key]
        rows.append([label, _num(a["precision"]), _num(a["recall"]), _num(a["f1"]), str(a["support"]),
                     _num(auc.get(auc_key))])
        kinds.append("avg")
    return _table(["class", "precision", "recall", "F1", "support", "ROC-AUC"], rows, {1, 2, 3, 4, 5}, kinds)


def _confused(m: dict[str, Any]) -> str:
    pairs = m.get("most_confused") or []
    if not pairs:
        return '<p class="muted">None: every image was classified correctly.</p>'
    return _table(["true class", "taken for", "images", "share of the class"],
                  [[escape(p["true"]), escape(p["predicted"]), str(p["count"]), _pct(p["fraction_of_true"])]
                   for p in pairs], {2, 3})


def _metrics_html(m: dict[str, Any], out: Path) -> str:
    """One evaluation (RUN/eval/<name>/): numbers, tables, confusion matrices, top losses."""
    pair = " pair" if len(m["classes"]) <= 6 else ""  # side by side while the numbers stay legible
    parts = [
        _headline(m),
        "<h3>Per class</h3>", _per_class(m),
        "<h3>Most confused pairs</h3>", _confused(m),
        "<h3>Confusion matrices</h3>",
        '<p class="note">Rows: the true class; columns: the predicted class. The diagonal holds the correct '
        "predictions; in the normalised matrix each row sums to 1.</p>",
        f'<div class="figs{pair}">' + _img(out / "confusion_matrix.png", "confusion matrix (counts)")
        + _img(out / "confusion_matrix_normalized.png", "confusion matrix (normalised)") + "</div>",
        "<h3>Top losses</h3>",
        '<p class="note">The images with the highest loss -log p(true class), as the model saw them: its most '
        "confident mistakes (or, with none, its least confident right answers). Look for mislabelled images, "
        "ambiguous ones, and patterns.</p>",
        _img(out / "top_losses.png", "top losses", "wide"),
    ]
    bad = m.get("unreadable") or []
    if bad:
        parts += [f"<h3>Unreadable images ({len(bad)})</h3>",
                  _table(["file", "reason"], [[escape(b["path"]), escape(b["error"])] for b in bad[:MAX_SKIPPED_ROWS]])]
    unknown = m.get("unknown_classes") or {}
    if unknown:
        text = ", ".join(f"{escape(k)} ({v} images)" for k, v in unknown.items())
        parts.append(f'<p class="note">Left out, classes the model does not know: {text}.</p>')
    return "".join(parts)


# ---------------------------------------------------------------------------- page


def write_report(run_dir: str | Path | Run) -> Path:
    """Write RUN/report.html (and RUN/curves.png) from what the run holds; return the path."""
    from cnnlab import __version__
    from cnnlab.io.weights import read_metadata

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
    sections = [("config", "Config", _config_section(run)),
                ("data", "Data", _data_section(run, classes)),
                ("model", "Model", _model_section(run, meta)),
                ("training", "Training curves", _curves_section(run, meta))]
    if evals:
        for d, m in evals:
            sections.append((f"eval-{d.name}", f"Evaluation: {d.name}", _metrics_html(m, d)))
    else:
        sections.append(("evaluation", "Evaluation",
                         f'<p class="empty">Not evaluated yet: run <code>cnnlab evaluate {escape(str(run.path))}'
                         "</code>.</p>"))

    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = "".join(f'<a href="#{i}">{escape(t)}</a>' for i, t, _ in sections)
    body = "".join(f'<section id="{i}"><h2>{escape(t)}</h2>{html}</section>' for i, t, html in sections)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cnnlab report: {escape(run.name)}</title>
<style>{CSS}</style></head>
<body>
<header><div class="wrap"><h1>Run report: {escape(run.name)}</h1>
<div class="sub">{escape(str(run.path.resolve()))} · classes: {escape(", ".join(classes))} · written {now}</div>
{_cards(cards)}</div></header>
<nav><div class="wrap">{nav}</div></nav>
<main class="wrap">{body}</main>
<footer class="wrap">Written by cnnlab {escape(__version__)}. This page is self-contained: images are embedded,
nothing is loaded from the network.</footer>
</body></html>
"""
    out = run.path / "report.html"
    atomic_write_text(out, page)
    return out
