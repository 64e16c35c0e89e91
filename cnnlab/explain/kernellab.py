"""The kernel lab: edit a kernel's numbers and watch its feature map change.

Two faces over one computation, :func:`~cnnlab.viz.kernellab_math.lab_compute` (torch's
``conv2d`` on a grey photo, or on each of R, G, B alone; the lab's arithmetic lives in
cnnlab/viz/kernellab_math.py):

* a self-contained HTML page (``cnnlab viz kernels --interactive --out lab.html``, and the
  "Kernel lab" tab of ``cnnlab explain``), whose JavaScript (explain/static/kernellab.js)
  does the same sums in the browser: a photo (the sample, an upload, the explainer's image),
  an editable 3x3 or 5x5 kernel with presets, stride, padding, grey or per channel, and the
  patch x kernel arithmetic of any output pixel. :func:`lab_page` is its HTML,
  :func:`write_lab` writes it, :func:`show_lab` shows it in a notebook cell;
* :func:`kernel_lab` for Jupyter and Colab, with ipywidgets (``pip install 'cnnlab[notebook]'``)::

      from cnnlab.explain import kernel_lab      # or, as before: from cnnlab.viz import kernel_lab
      lab = kernel_lab()            # the sample photo; or kernel_lab("cat.jpg")
      lab                           # the last line of a cell shows the controls
      lab.output                    # the feature map(s) as numbers, (C, H, W)

The idea of "adjust the numbers and see the result" follows the lecture's ipywidgets demo
and Victor Powell's "Image Kernels explained visually" (setosa.io/ev/image-kernels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.explain.explainer import html_frame
from cnnlab.explain.page import build_kernel_lab_page, lab_config, write_page
from cnnlab.viz.kernellab_math import LAB_SIDE, explain_pixel, lab_compute, lab_image, parse_cell, presets
from cnnlab.viz.kernels import to_gray

# ---------------------------------------------------------------------------------------
# The page.
# ---------------------------------------------------------------------------------------


def lab_page(image=None, size: int = LAB_SIDE) -> str:
    """The complete, self-contained HTML of the kernel lab (no network, nothing to install)."""
    return build_kernel_lab_page(lab_config(image, size))


def show_lab(image=None, size: int = LAB_SIDE, height: int = 900):
    """The lab page inside a notebook cell, without ipywidgets (an iframe; works in Colab too)."""
    return html_frame(lab_page(image, size), height)


def write_lab(path: str | Path, image=None, size: int = LAB_SIDE) -> Path:
    """Write the lab page to ``path`` (atomically)."""
    return write_page(path, lab_page(image, size))


# ---------------------------------------------------------------------------------------
# Jupyter: ipywidgets.
# ---------------------------------------------------------------------------------------


class KernelLab:
    """The lab as ipywidgets: a kernel grid, presets, stride, padding, channels, a pixel to explain.

    Everything recomputes with :func:`lab_compute` when a control changes. ``output`` holds
    the feature map(s), ``explain()`` the arithmetic of the chosen pixel, ``widget`` the
    controls (a notebook shows them when this object is the cell's last line).
    """

    def __init__(self, image=None, kernel: str = "edge", size: int = LAB_SIDE):
        try:  # here, not at the top: ipywidgets is optional (cnnlab[notebook]); the page needs none
            import ipywidgets as W
        except ImportError:
            raise CnnlabError("kernel_lab needs ipywidgets: pip install 'cnnlab[notebook]' "
                              "(Colab and JupyterLab already have it)") from None
        self._W = W
        self.rgb = lab_image(image, size)
        self._presets = presets()
        names = list(dict.fromkeys(p["name"] for p in self._presets))
        if kernel not in names:
            raise CnnlabError(f"unknown preset {kernel!r}; choose one of {', '.join(names)}")
        self.output: np.ndarray | None = None
        self.error: str | None = None
        self._shown = False
        self._busy = False
        style = {"description_width": "initial"}
        self.preset = W.Dropdown(options=names, value=kernel, description="preset")
        self.size = W.ToggleButtons(options=[("3 × 3", 3), ("5 × 5", 5)], value=3, description="kernel")
        self.stride = W.BoundedIntText(value=1, min=1, max=16, description="stride", style=style,
                                       layout=W.Layout(width="130px"))
        self.padding = W.ToggleButtons(options=["valid", "same"], value="valid", description="padding")
        self.mode = W.ToggleButtons(options=[("grey", "grey"), ("per channel", "rgb")], value="grey",
                                    description="channels")
        self.scale = W.Text(value="1", description="× scale", style=style, layout=W.Layout(width="150px"))
        self.row = W.IntSlider(value=0, min=0, max=0, description="row")
        self.col = W.IntSlider(value=0, min=0, max=0, description="column")
        self.channel = W.Dropdown(options=[("grey", 0)], value=0, description="channel")
        self.message = W.HTML()
        self.arithmetic = W.HTML()
        self.figure = W.Output()
        self.cells: list[list[Any]] = []
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns="repeat(3, 64px)"))
        self._set_preset(kernel)
        self.preset.observe(lambda ch: self._set_preset(ch["new"]), names="value")
        self.size.observe(lambda ch: self._set_preset(self.preset.value), names="value")
        for w in (self.stride, self.padding, self.mode, self.scale):
            w.observe(lambda ch: self.update(), names="value")
        for w in (self.row, self.col, self.channel):
            w.observe(lambda ch: self._explain_view(), names="value")
        self.widget = W.VBox([
            W.HBox([self.preset, self.size]), W.HBox([self.stride, self.padding]), self.mode,
            W.HBox([self.grid, self.scale]), self.message, self.figure,
            W.HBox([self.channel, self.row, self.col]), self.arithmetic])
        self.update()

    # -- the kernel ---------------------------------------------------------------
    def _set_preset(self, name: str) -> None:
        k = self.size.value
        ps = [p for p in self._presets if p["name"] == name]
        p = next((q for q in ps if q["size"] == k), ps[0])
        numbers = np.zeros((k, k))
        off = (k - p["size"]) // 2
        numbers[off:off + p["size"], off:off + p["size"]] = p["numbers"]
        self.set_kernel(numbers, p["scale"])

    def set_kernel(self, numbers: Sequence[Sequence[Any]], scale: Any = "1") -> None:
        """Fill the grid (3x3 or 5x5; entries may be text such as '1/16') and recompute."""
        W = self._W
        k = len(numbers)
        if k not in (3, 5) or any(len(r) != k for r in numbers):
            raise CnnlabError("the kernel lab takes a 3x3 or 5x5 kernel")
        self._busy = True
        try:
            if self.size.value != k:
                self.size.value = k
            self.cells = [[W.Text(value=f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v),
                                  layout=W.Layout(width="60px")) for v in row] for row in numbers]
            for row in self.cells:
                for cell in row:
                    cell.observe(lambda ch: self.update(), names="value")
            self.grid.children = [c for row in self.cells for c in row]
            self.grid.layout.grid_template_columns = f"repeat({k}, 64px)"
            self.scale.value = str(scale)
        finally:
            self._busy = False
        self.update()

    def weights(self) -> tuple[np.ndarray | None, list[str]]:
        """(the kernel's weights, or None) and a list of the entries that are not numbers."""
        bad = []
        scale = parse_cell(self.scale.value)
        if scale is None:
            bad.append(f"scale {self.scale.value!r}")
        k = len(self.cells)
        w = np.zeros((k, k))
        for r, row in enumerate(self.cells):
            for c, cell in enumerate(row):
                v = parse_cell(cell.value)
                if v is None:
                    bad.append(f"row {r + 1}, column {c + 1}: {cell.value!r}")
                else:
                    w[r, c] = v
        return (None if bad else w * scale), bad

    # -- computing and showing ----------------------------------------------------
    def update(self) -> None:
        """Recompute the feature map; an invalid entry is reported and the last map stays."""
        if self._busy:
            return
        w, bad = self.weights()
        if bad:
            self.error = "not a number: " + "; ".join(bad)
            self.message.value = f"<span style='color:#b00020'>Fix the kernel: {_esc(self.error)}</span>"
            return
        try:
            self.output = lab_compute(self.rgb, w, self.stride.value, self.padding.value, self.mode.value)
        except CnnlabError as e:
            self.error = str(e)
            self.message.value = f"<span style='color:#b00020'>{_esc(self.error)}</span>"
            return
        self.error = None
        self._w = w
        C, H, Wd = self.output.shape
        self.message.value = (f"feature map {Wd}×{H}{' ×3' if C > 1 else ''}: min {self.output.min():.4f}, "
                              f"max {self.output.max():.4f} (torch conv2d, stride {self.stride.value}, "
                              f"padding {self.padding.value})")
        self._busy = True
        try:
            self.row.max, self.col.max = H - 1, Wd - 1
            self.channel.options = [("grey", 0)] if C == 1 else [("R", 0), ("G", 1), ("B", 2)]
        finally:
            self._busy = False
        self._explain_view()
        if self._shown:
            self._draw()

    def explain(self, c: int | None = None, y: int | None = None, x: int | None = None) -> dict[str, Any]:
        """The arithmetic of output pixel (c, y, x) (default: the sliders' pixel)."""
        c = self.channel.value if c is None else c
        y = self.row.value if y is None else y
        x = self.col.value if x is None else x
        return explain_pixel(self.rgb, self._w, self.stride.value, self.padding.value, self.mode.value, c, y, x)

    def _explain_view(self) -> None:
        if self._busy or self.output is None:
            return
        e = self.explain()
        cells = lambda a: "".join("<tr>" + "".join(f"<td>{v:.3f}</td>" for v in r) + "</tr>" for r in a)  # noqa: E731
        table = "<table style='display:inline-table;border-collapse:collapse;font-family:monospace;margin:0 6px'>{}</table>"
        value = self.output[self.channel.value, self.row.value, self.col.value]
        self.arithmetic.value = (
            f"<b>output (row {self.row.value}, column {self.col.value}) = {value:.5f}</b><br>"
            + table.format(cells(e["patch"])) + " × " + table.format(cells(e["kernel"])) + " → "
            + table.format(cells(e["products"])) + f" sum = <b>{e['sum']:.5f}</b>")
        if self._shown:
            self._draw()

    def _draw(self) -> None:  # only in a notebook: pyplot and IPython are loaded when a lab is shown
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        from IPython.display import display

        out = self.output
        C = out.shape[0]
        fig, axes = plt.subplots(1, 1 + C, figsize=(3.2 * (1 + C), 3.0))
        axes[0].imshow(self.rgb if self.mode.value == "rgb" else to_gray(self.rgb), cmap="gray", vmin=0, vmax=1)
        top, left = self.explain()["top_left"]
        k = len(self.cells)
        axes[0].add_patch(Rectangle((left - 0.5, top - 0.5), k, k, fill=False, ec="yellow", lw=2))
        axes[0].set_title("photo")
        m = float(np.abs(out).max()) or 1.0
        for i in range(C):
            axes[1 + i].imshow(out[i], cmap="RdBu_r", vmin=-m, vmax=m)
            axes[1 + i].plot(self.col.value, self.row.value, "s", mfc="none", mec="black", ms=8)
            axes[1 + i].set_title("feature map" if C == 1 else f"channel {'RGB'[i]}")
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        with self.figure:
            self.figure.clear_output(wait=True)
            display(fig)
        plt.close(fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        self._shown = True
        self._draw()
        display(self.widget)


def kernel_lab(image=None, kernel: str = "edge", size: int = LAB_SIDE) -> KernelLab:
    """The kernel lab in a notebook (ipywidgets): see :class:`KernelLab`."""
    return KernelLab(image, kernel, size)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
