"""How cnnlab's results look in Jupyter and Colab: HTML tables (``_repr_html_``).

The results stay what they were -- a metrics dict, a list of prediction rows, a list of
history rows -- so code that indexes them keeps working; these subclasses only add a
``_repr_html_`` (what a notebook shows when the object is a cell's last line) and, where
it helps, a readable ``__str__`` and a ``plot()`` that returns a matplotlib Figure::

    m = cnnlab.evaluate("runs/digits")     # a Metrics: m["accuracy"], and a table in a notebook
    m.plot_confusion_matrix()              # a Figure (shown inline)
    cnnlab.predict("runs/digits", "img/")  # a Predictions table: file, label, confidence, top-k

Everything a notebook shows is escaped text in plain tables: no script, no styles from outside.
"""

from __future__ import annotations

import html
import math
import sys
from typing import Any, Iterable, Sequence

TABLE = "border-collapse:collapse;font-size:13px;margin:4px 0"
CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:{align}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "epoch")`` is "1 epoch", ``count(2, "epoch")`` "2 epochs", ``count(1200, "image")`` "1,200 images"."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"


def auto_lines(auto: dict[str, Any]) -> list[str]:
    """The automatic choices as `cnnlab train` prints them, from what RUN/config.yaml keeps under
    ``auto`` ({"facts": ..., "chosen": {key: {"value": ..., "why": ...}}}): a line of facts on
    the data and budget, then one line per choice with its reason."""
    lines = [f"auto    {auto.get('facts', '')}"]
    for key, choice in (auto.get("chosen") or {}).items():
        value = choice.get("value")
        shown = "x".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        lines.append(f"        {key} {shown}: {choice.get('why', '')}")
    return lines


def kernel_shell():
    """The IPython shell of a Jupyter/Colab kernel, or None (a script, a terminal IPython)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def enable_inline() -> None:
    """In a notebook, let a bare matplotlib Figure show as an image when it ends a cell.

    cnnlab draws on ``matplotlib.figure.Figure`` without pyplot (no global state, no GUI);
    a kernel registers its PNG display for Figures only once pyplot's inline backend is set
    up, so that is done here when no display for Figures is registered yet (a user's own
    ``%matplotlib widget`` choice is kept).
    """
    shell = kernel_shell()
    if shell is None:
        return
    from matplotlib.figure import Figure

    try:
        shell.display_formatter.formatters["image/png"].lookup_by_type(Figure)
    except KeyError:
        shell.enable_matplotlib("inline")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(v: Any, digits: int = 4) -> str:
    """4 decimals for floats (3 significant digits below 0.01, so that a learning rate of
    1.5e-05 is not "0.0000"), thousands separators for ints, '' for None and NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.3g}" if v != 0 and abs(v) < 10 ** (2 - digits) else f"{v:.{digits}f}"
    return str(v)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "",
          align: Sequence[str] | None = None, digits: int = 4) -> str:
    """A plain HTML table; numbers right-aligned, everything escaped."""
    rows = [list(r) for r in rows]
    if align is None:
        align = ["right" if rows and isinstance(rows[0][i], (int, float)) and not isinstance(rows[0][i], bool)
                 else "left" for i in range(len(header))]
    head = "".join(f"<th style='{CELL.format(align=a)}'>{esc(h)}</th>" for h, a in zip(header, align))
    body = "".join("<tr>" + "".join(f"<td style='{CELL.format(align=a)}'>{esc(number(v, digits))}</td>"
                                    for v, a in zip(r, align)) + "</tr>" for r in rows)
    cap = f"<caption style='text-align:left;font-weight:600;padding:4px 0'>{esc(caption)}</caption>" if caption else ""
    return f"<table style='{TABLE}'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(items: Iterable[tuple[str, Any]], caption: str = "") -> str:
    """Two columns: name, value."""
    return table(["", ""], [(k, v) for k, v in items], caption, align=["left", "left"])


class Metrics(dict):
    """metrics.json's dict (see cnnlab.eval.metrics), shown as tables in a notebook."""

    def _repr_html_(self) -> str:
        top = [("images", self.get("n_images")), ("accuracy", self.get("accuracy")), ("loss", self.get("loss"))]
        top += [(f"top-{k} accuracy", v) for k, v in (self.get("top_k_accuracy") or {}).items()]
        auc = self.get("roc_auc") or {}
        if auc.get("macro") is not None:
            top.append(("ROC AUC (macro)", auc["macro"]))
        where = f"{self.get('split', '')} split" + (f", {self.get('weights')} weights" if self.get("weights") else "")
        parts = [kv_table([(k, number(v)) for k, v in top if v is not None], f"Evaluation: {where}")]
        per = self.get("per_class") or {}
        rows = [(c, d["precision"], d["recall"], d["f1"], d["support"]) for c, d in per.items()]
        for avg in ("macro_avg", "weighted_avg"):
            if avg in self:
                d = self[avg]
                rows.append((avg.replace("_", " "), d["precision"], d["recall"], d["f1"], d["support"]))
        if rows:
            parts.append(table(["class", "precision", "recall", "f1", "support"], rows, "Per class"))
        classes, cm = self.get("classes") or [], self.get("confusion_matrix")
        if cm and len(classes) <= 20:
            parts.append(table(["true \\ predicted", *classes], [(c, *r) for c, r in zip(classes, cm)],
                               "Confusion matrix (rows: true class)"))
        if self.get("eval_dir"):
            parts.append(f"<div style='color:#666;font-size:12px'>files: {esc(self['eval_dir'])}</div>")
        return "".join(parts)

    def plot_confusion_matrix(self, normalized: bool = False):
        """The confusion matrix as a matplotlib Figure (counts, or rows summing to 1)."""
        from cnnlab.io.plots import confusion_matrix_figure  # matplotlib: only when a figure is drawn

        enable_inline()
        key = "confusion_matrix_normalized" if normalized else "confusion_matrix"
        return confusion_matrix_figure(self[key], self["classes"], normalized=normalized)

    def __str__(self) -> str:
        lines = [f"accuracy {self.get('accuracy', float('nan')):.4f}  loss {self.get('loss') or float('nan'):.4f}  "
                 f"({count(self.get('n_images', 0), 'image')})"]
        for c, d in (self.get("per_class") or {}).items():
            lines.append(f"  {c:>12}  precision {d['precision']:.3f}  recall {d['recall']:.3f}  f1 {d['f1']:.3f}  "
                         f"support {d['support']}")
        return "\n".join(lines)


class Predictions(list):
    """Rows of cnnlab.predict (path, label, confidence, top_k, error), shown as a table."""

    def _repr_html_(self) -> str:
        k = max((len(r.get("top_k") or []) for r in self), default=0)
        rows = []
        for r in self:
            tops = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r.get("top_k") or [])
            rows.append((r["path"], r.get("label", ""), r.get("confidence"), tops, r.get("error", "")))
        return table(["file", "label", "confidence", f"top {k}" if k else "top", "error"], rows,
                     count(len(self), "prediction"),
                     align=["left", "left", "right", "left", "left"])

    def __str__(self) -> str:
        return "\n".join(f"{r['path']}  {r.get('label') or '-'}  "
                         f"{'' if r.get('confidence') is None else format(r['confidence'], '.3f')}"
                         f"{'  ' + r['error'] if r.get('error') else ''}" for r in self)


class History(list):
    """One dict per epoch (history.csv), shown as a table; ``plot()`` draws the curves."""

    def __init__(self, rows=(), best_epoch: int | None = None):
        super().__init__(rows)
        self.best_epoch = best_epoch

    def column(self, key: str) -> list[float]:
        """One metric over the epochs: ``history.column("val_loss")``."""
        return [row.get(key, float("nan")) for row in self]

    @property
    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for row in self for k in row))

    def plot(self):
        """Loss and accuracy curves (train and validation) as a matplotlib Figure."""
        from cnnlab.io.plots import curves_figure  # matplotlib: only when a figure is drawn

        enable_inline()
        return curves_figure(list(self), self.best_epoch)

    def _repr_html_(self) -> str:
        keys = [k for k in self.keys if k != "epoch"]
        rows = [[int(r.get("epoch", i + 1)), *(r.get(k) for k in keys)] for i, r in enumerate(self)]
        return table(["epoch", *keys], rows, f"History: {count(len(self), 'epoch')}",
                     align=["right"] * (1 + len(keys)))


class EpochBar:
    """One epoch's progress as a notebook shows it: a bar, batches done, and the metrics."""

    def __init__(self, epoch: int, epochs: int, batch: int, steps: int, text: str = "", eta: str = "",
                 done: bool = False):
        self.epoch, self.epochs, self.batch, self.steps = epoch, epochs, batch, max(steps, 1)
        self.text, self.eta, self.done = text, eta, done

    def __repr__(self) -> str:  # what a log of the notebook (text/plain) keeps
        if self.done:
            return self.text
        return f"epoch {self.epoch}/{self.epochs}  {self.batch}/{self.steps}  {self.text}  {self.eta}".rstrip()

    def _repr_html_(self) -> str:
        pct = 100.0 * min(self.batch, self.steps) / self.steps
        colour = "#2da44e" if self.done else "#0969da"
        label = "" if self.done else f"epoch {self.epoch}/{self.epochs} &nbsp;{self.batch}/{self.steps}"
        return ("<div style='font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;margin:1px 0;"
                "display:flex;align-items:center;gap:10px'>"
                f"<div style='flex:none;width:180px;height:10px;background:#eaeef2;border-radius:5px;overflow:hidden'>"
                f"<div style='width:{pct:.1f}%;height:100%;background:{colour}'></div></div>"
                f"<span>{label} {esc(self.text)} {esc(self.eta)}</span></div>")
