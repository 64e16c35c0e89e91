"""Every figure cnnlab saves keeps all of its text on the canvas (cnnlab.io.figures.save_figure).

The check is matplotlib's own: after saving, each visible text's extent from the Agg
renderer (at the saved dpi) must lie inside the canvas, and the PNG must have the canvas's
size. Long class names (PlantVillage's ``Potato___Early_blight``) used to push the
normalised confusion matrix's title past the right edge of the PNG.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from cnnlab.io import plots
from cnnlab.io.figures import DPI, save_figure

LONG = ["Potato___Early_blight", "Potato___Late_blight", "Potato___healthy"]


def drawn_texts(fig: Figure, dpi: float) -> tuple[list[tuple[str, np.ndarray]], tuple[int, int], bytes]:
    """Render `fig` as PNG and record every string the Agg renderer draws, with its corners.

    Returns ([(text, 4x2 corners in pixels, origin bottom left)], (width, height), png bytes).
    """
    import io
    import math

    from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg

    drawn = []
    real = RendererAgg.draw_text

    def spy(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if s.strip():
            w, h, d = self.get_text_width_height_descent(s, prop, ismath)
            a = math.radians(angle)
            box = np.array([[0, -d], [w, -d], [w, h - d], [0, h - d]])  # around the baseline start, y up
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            corners = box @ rot.T
            if self.flipy():  # Agg is handed y from the top: turn it round to y from the bottom
                corners = corners + [x, self.height - y]
            else:
                corners = corners + [x, y]
            drawn.append((s, corners))
        return real(self, gc, x, y, s, prop, angle, ismath, mtext)

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    RendererAgg.draw_text = spy
    try:
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    finally:
        RendererAgg.draw_text = real
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        size = im.size
    return drawn, size, buf.getvalue()


def texts_outside(fig: Figure, dpi: float) -> list[tuple[str, tuple]]:
    """(text, extent) of every string drawn (partly) outside the canvas."""
    drawn, (width, height), _ = drawn_texts(fig, dpi)
    return [(s, tuple(np.round(c.min(0)).tolist() + np.round(c.max(0)).tolist())) for s, c in drawn
            if c[:, 0].min() < -0.5 or c[:, 1].min() < -0.5 or c[:, 0].max() > width + 0.5
            or c[:, 1].max() > height + 0.5]


def assert_saved_whole(fig: Figure, path, dpi: int = DPI) -> None:
    """save_figure's file shows every text whole: redrawn the same way, no string leaves the canvas."""
    save_figure(fig, path, dpi=dpi)
    drawn, size, _ = drawn_texts(fig, dpi)
    assert len(drawn) >= 3  # the spy saw the drawing
    with Image.open(path) as saved:
        assert saved.size == size  # the file is the canvas that was measured
    assert texts_outside(fig, dpi) == []


def confusion(n: int = 3) -> np.ndarray:
    cm = np.full((n, n), 0.1 / (n - 1))
    np.fill_diagonal(cm, 0.9)
    return cm


def test_the_normalised_confusion_matrix_with_long_class_names_keeps_its_title(tmp_path):
    title = "Confusion matrix, test split (each row sums to 1)"
    fig = plots.confusion_matrix_figure(confusion(), LONG, normalized=True, title=title)
    assert_saved_whole(fig, tmp_path / "cm.png")
    counts = plots.confusion_matrix_figure(confusion() * 20, LONG, title="Confusion matrix, test split (counts)")
    assert_saved_whole(counts, tmp_path / "counts.png")


@pytest.mark.parametrize("n", [2, 12])
def test_confusion_matrices_of_many_sizes(tmp_path, n):
    names = [f"{LONG[i % 3]}_{i}" for i in range(n)]
    assert_saved_whole(plots.confusion_matrix_figure(confusion(n), names, normalized=True,
                                                     title="Confusion matrix, a_rather_long_folder_name-val"),
                       tmp_path / "cm.png")


def test_top_losses_and_curves(tmp_path):
    items = [{"true": LONG[i % 3], "predicted": LONG[(i + 1) % 3], "confidence": 0.9, "loss": 2.5}
             for i in range(5)]
    images = [np.zeros((16, 16, 3), np.uint8)] * 5
    assert_saved_whole(plots.top_losses_figure(items, images, title="Top losses: the most confidently wrong "
                                               "predictions (Potato___Early_blight-photos, test)"),
                       tmp_path / "top.png")
    history = [{"epoch": e, "loss": 1 / e, "accuracy": 0.5 + e / 20, "val_loss": 1.2 / e,
                "val_accuracy": 0.45 + e / 20, "lr": 1e-3} for e in range(1, 6)]
    assert_saved_whole(plots.curves_figure(history, best_epoch=4), tmp_path / "curves.png")


def test_a_title_wider_than_the_canvas_grows_the_canvas(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(2.5, 2), layout="constrained")
    fig.subplots().imshow(np.eye(3))
    title = fig.suptitle("Confusion matrix, Potato___Early_blight-photos, test (each row sums to 1)")
    FigureCanvasAgg(fig)
    assert [t for t, _ in texts_outside(fig, DPI)] == [title.get_text()]  # as drawn: cut at both sides
    assert_saved_whole(fig, tmp_path / "wide.png")  # as saved: all on the canvas
    assert fig.get_size_inches()[0] > 2.5 and fig.get_size_inches()[1] == 2


def test_text_past_a_fixed_layout_is_brought_back(tmp_path):
    """No layout engine: text placed off the canvas on the left and at the top still ends up inside."""
    fig = Figure(figsize=(3, 2))
    ax = fig.add_axes([0.02, 0.15, 0.9, 0.7])
    ax.set_ylabel("loss", fontsize=16)  # left of the axes, so off the canvas
    ax.set_xlabel("epoch")
    fig.text(0.5, 1.02, "a title above the top edge", ha="center")
    assert_saved_whole(fig, tmp_path / "fixed.png")


def test_a_figure_that_fits_keeps_its_size(tmp_path):
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_title("fits")
    save_figure(fig, tmp_path / "f.png")
    assert tuple(fig.get_size_inches()) == (4, 3)
    with Image.open(tmp_path / "f.png") as im:
        assert im.size == (440, 330)  # 4 x 3 inches at 110 dpi
