"""Saving a matplotlib figure: the one helper every PNG (or SVG, PDF...) cnnlab writes goes through.

Figures are made with ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no
global state, nothing to close, no display needed, and a notebook shows a returned figure
once. :func:`save_figure` writes one atomically and never cuts text off: when a title, a
tick label or a legend reaches past the canvas (long class names such as
``Potato___Early_blight`` push a confusion matrix's axes sideways, and its centred title
with them), the canvas is enlarged until everything drawn fits, then saved at that size.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.io.fs import atomic_path

DPI = 110
MARGIN = 0.06  # inches of room kept between the outermost text and the canvas edge
GROW_TRIES = 6  # a layout engine re-centres things on a larger canvas: a few rounds settle it


def check_output(path: str | Path) -> str:
    """The figure format for `path` (from its extension, png if none); a clear error if unusable."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise CnnlabError(f"{path}: cannot save a figure as .{fmt}; use .png (or one of "
                          f"{', '.join('.' + f for f in sorted(supported))})")
    if path.is_dir():
        raise CnnlabError(f"{path}: is a folder; give a file name such as {path / 'figure.png'}")
    return fmt


def fit_canvas(fig, dpi: float = DPI) -> bool:
    """Enlarge `fig` until everything it draws (text above all) lies inside its canvas.

    The canvas only grows, by what sticks out on each side plus MARGIN; with a fixed layout
    the content is also moved back onto the canvas. A figure that already fits is left as it
    is. False if it still does not fit after GROW_TRIES rounds (a layout that moves the text
    along as the canvas grows).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)  # a renderer to measure text with (the figure keeps this canvas)
    fig.set_dpi(dpi)
    for _ in range(GROW_TRIES):
        fig.draw_without_rendering()  # layout and positions as they will be saved, no pixels
        box = _drawn_extent(fig)
        width, height = fig.get_size_inches()
        left, bottom = max(0.0, -box.x0), max(0.0, -box.y0)
        right, top = max(0.0, box.x1 - width), max(0.0, box.y1 - height)
        if max(left, bottom, right, top) <= 1e-3:
            return True
        grow_w = left + right + (2 * MARGIN if left or right else 0.0)
        grow_h = bottom + top + (2 * MARGIN if bottom or top else 0.0)
        fig.set_size_inches(width + grow_w, height + grow_h, forward=False)
        if fig.get_layout_engine() is None:  # fixed positions: shift the content back inside
            _shift_content(fig, (left + (MARGIN if left or right else 0)) / (width + grow_w),
                           (bottom + (MARGIN if bottom or top else 0)) / (height + grow_h),
                           width / (width + grow_w), height / (height + grow_h))
    return False


def _drawn_extent(fig):
    """The bounding box, in inches, of what `fig` drew: its artists and every text it shows.

    (Figure.get_tightbbox alone is not enough: it counts an axes title as one pixel wide.)
    """
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    to_inches = fig.dpi_scale_trans.inverted()
    return Bbox.union([fig.get_tightbbox(renderer)]
                      + [t.get_window_extent(renderer).transformed(to_inches) for t in _shown_texts(fig)])


def _shown_texts(fig) -> list:
    """The texts the last draw put on the canvas (tick labels only of the ticks drawn)."""
    texts = list(fig.texts) + [t for leg in fig.legends for t in leg.get_texts()]
    texts += [t for t in (getattr(fig, n, None) for n in ("_suptitle", "_supxlabel", "_supylabel")) if t is not None]
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            texts += [axis.label, axis.offsetText]
            for tick in axis._update_ticks():  # the ticks in view, as Axis.draw picks them
                texts += [tick.label1, tick.label2]
        if (legend := ax.get_legend()) is not None:
            texts += [*legend.get_texts(), legend.get_title()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _shift_content(fig, dx: float, dy: float, sx: float, sy: float) -> None:
    """Scale the axes' and figure texts' figure-fraction positions by (sx, sy), then move them by (dx, dy)."""
    for ax in fig.axes:
        box = ax.get_position()
        ax.set_position([dx + box.x0 * sx, dy + box.y0 * sy, box.width * sx, box.height * sy])
    for text in fig.texts + ([fig._suptitle] if getattr(fig, "_suptitle", None) is not None else []):
        if text.get_transform() == fig.transFigure:
            x, y = text.get_position()
            text.set_position((dx + x * sx, dy + y * sy))


def save_figure(fig, path: str | Path, dpi: int = DPI) -> Path:
    """Write `fig` atomically, with no text cut off; the format follows the extension (.png if none)."""
    path = Path(path)
    fmt = check_output(path)
    if not 20 <= dpi <= 1200:
        raise CnnlabError(f"dpi must be between 20 and 1200, got {dpi}")
    fits = fit_canvas(fig, dpi)
    # Should growing not settle, matplotlib's tight bounding box saves whatever was drawn.
    extra = {} if fits else {"bbox_inches": "tight", "pad_inches": MARGIN}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, facecolor="white", **extra)
    return path
