"""Pictures of convolutions: kernels on a photo, a trained network's filters, its feature
maps for an image, and Grad-CAM heat maps.

Every ``plot_*`` function returns a matplotlib Figure (a notebook shows it) and writes a
PNG when given ``path=``. Models can be a run directory, a ``.safetensors`` file or a CNN;
images a file (preprocessed exactly as in training) or a (C, H, W) tensor::

    from cnnlab import viz
    viz.plot_kernels(kernels="sobel-x,sharpen,gaussian")          # scikit-learn's sample photo
    viz.plot_filters("runs/cats")                                 # first conv layer, RGB patches
    viz.plot_featuremaps("runs/cats", "cat.jpg", path="maps.png")
    viz.plot_gradcam("runs/cats", ["cat.jpg", "dog.jpg"], cls="cat")
    viz.kernel_lab()                                              # edit a kernel live (ipywidgets)
    viz.show_lab()                                                # the lab's web page, in the notebook
    viz.write_lab("lab.html")                                     # ... or as a file

The numbers behind the pictures are functions too: ``cross_correlate`` and ``convolve``
(a kernel on a grey image), ``lab_compute`` (the kernel lab's), ``filter_weights``,
``feature_maps`` and ``gradcam``. The kernel lab itself (its page and its widgets) lives in
cnnlab.explain.kernellab, a layer above this package; the names above still reach it.
"""

import importlib

from cnnlab.viz.featuremaps import feature_maps, plot_featuremaps
from cnnlab.viz.filters import filter_weights, plot_filters
from cnnlab.viz.gradcam import GradCAM, gradcam, plot_gradcam
from cnnlab.viz.kernels import (DEFAULT_KERNELS, KERNELS, Kernel, convolve, cross_correlate, get_kernels,
                                load_kernel_file, sample_image)
from cnnlab.viz.kernellab_math import lab_compute
from cnnlab.viz.kernels_figure import plot_kernels

__all__ = ["plot_kernels", "plot_filters", "plot_featuremaps", "plot_gradcam", "cross_correlate", "convolve",
           "Kernel", "KERNELS", "DEFAULT_KERNELS", "get_kernels", "load_kernel_file", "sample_image",
           "filter_weights", "feature_maps", "gradcam", "GradCAM", "kernel_lab", "KernelLab", "lab_compute",
           "show_lab", "write_lab"]

from cnnlab.display import enable_inline as _enable_inline  # noqa: E402

_enable_inline()  # in a notebook, the figures above show inline as a cell's last line

# These moved to cnnlab.explain.kernellab (explain sits above viz, so viz may not import it
# at load time); they are kept here for notebooks (README, examples/cnn_lecture.ipynb).
# import-linter does not see this lookup: keep the list explicit and short.
_MOVED_TO_EXPLAIN = ("kernel_lab", "KernelLab", "show_lab", "write_lab")


def __getattr__(name: str):
    if name in _MOVED_TO_EXPLAIN:
        return getattr(importlib.import_module("cnnlab.explain.kernellab"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:  # so that a notebook's tab completion still offers them
    return sorted({*globals(), *_MOVED_TO_EXPLAIN})
