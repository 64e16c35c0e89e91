"""`cnnlab viz kernels|filters|featuremaps|gradcam|augment`: pictures of convolutions."""

import argparse
from pathlib import Path

from cnnlab.cli import main
from cnnlab.cli._common import add_keras_options, add_subcommand, model_source
from cnnlab.errors import CnnlabError

EPILOG = """\
examples:
  cnnlab viz kernels                                  edge, Sobel, blur... on a sample photo
  cnnlab viz filters runs/NAME                        the first layer's filters as RGB patches
  cnnlab viz featuremaps runs/NAME photo.jpg          every conv/pool layer's output
  cnnlab viz gradcam runs/NAME photo.jpg              where the evidence for the class is
  cnnlab viz gradcam model.h5 photo.jpg               a Keras model file works wherever a run does
  cnnlab viz augment data/leaves                      augmented training samples

Each command writes one figure (PNG by default; .svg and .pdf work too) and prints its path."""

KERNELS_EPILOG = """\
examples:
  cnnlab viz kernels                                  the 8 classic kernels on a sample photo
  cnnlab viz kernels cat.jpg --kernels sobel-x,sobel-y --out sobel.png
  cnnlab viz kernels --stride 2 --padding same        smaller maps: ceil(n / 2) pixels
  cnnlab viz kernels --kernels sharpen,my_kernels.yaml
  cnnlab viz kernels --list                           the built-in kernels and their numbers
  cnnlab viz kernels --interactive --out lab.html     the kernel lab: edit a kernel, see the map live

Each feature map is exactly torch.nn.functional.conv2d(grey image, kernel): the kernel
slides over the image and the products under it are summed. That is cross-correlation,
which PyTorch, Keras and TensorFlow call convolution; mathematical convolution first
rotates the kernel by 180°. The figure's last row shows the difference for the first
asymmetric kernel (for sobel-x the sign flips).

--interactive writes the kernel lab instead of a figure: one self-contained HTML page
(no network) with the photo, an editable 3x3 or 5x5 kernel, presets, stride, padding,
grey or per channel, where hovering an output pixel shows its patch x kernel arithmetic.
In a notebook, cnnlab.viz.kernel_lab() gives the same with ipywidgets.

A kernel file (YAML or JSON) holds a matrix, or names mapped to matrices:
  my-edge: [[1, 0, -1], [1, 0, -1], [1, 0, -1]]
  blur-5: {matrix: [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]], scale: 1/25}"""

FILTERS_EPILOG = """\
examples:
  cnnlab viz filters runs/NAME                        first conv layer: one RGB patch per filter
  cnnlab viz filters runs/NAME --layer conv2d_1       a deeper layer: filters x input channels
  cnnlab viz filters runs/NAME --layer residual_block/conv1 --max-filters 16
  cnnlab viz filters runs/NAME --layer nope           the error lists the conv layers

RGB patches: grey is 0 and each filter is scaled to its own largest weight, so a patch
that is red on one side and cyan on the other answers to red-to-cyan edges. The grid view
shares one red (+) / blue (-) scale over the layer, with a colour bar."""

FEATUREMAPS_EPILOG = """\
examples:
  cnnlab viz featuremaps runs/NAME photo.jpg
  cnnlab viz featuremaps runs/NAME photo.jpg --layers conv2d conv2d_1 --out maps.png
  cnnlab viz featuremaps runs/NAME photo.jpg --max-channels 64

The image is read exactly as in training (size, resize policy, normalisation from the
weights file). Each layer is one block: its name, its output shape as `cnnlab summary`
prints it, and one tile per channel on one colour scale (so channels compare)."""

GRADCAM_EPILOG = """\
examples:
  cnnlab viz gradcam runs/NAME photo.jpg                    the predicted class
  cnnlab viz gradcam runs/NAME cat1.jpg cat2.jpg --class cat   one row per image
  cnnlab viz gradcam runs/NAME photo.jpg --layer conv2d_1 --out cam.png

Grad-CAM (Selvaraju et al. 2017): the gradient of the class score (its logit) with respect
to the feature maps of a late conv layer, averaged over positions, weights each map; the
weighted sum, through ReLU, is upsampled to the image. Default layer: the output of the
last convolution block (after its batch norm and activation), before pooling."""

AUGMENT_EPILOG = """\
examples:
  cnnlab viz augment data/leaves
  cnnlab viz augment data/leaves --augment strong --samples 8 --out aug.png

Every option of `cnnlab data preview` works here (see `cnnlab data preview --help`)."""


def register(sub) -> None:
    p = add_subcommand(sub, "viz", "pictures: kernels, filters, feature maps, Grad-CAM",
                       "Draw what convolutions do: classic kernels on a photo, a trained model's "
                       "filters, its feature maps for an image, and Grad-CAM heat maps.", EPILOG)
    inner = p.add_subparsers(title="viz commands", metavar="WHAT")
    p.set_defaults(func=lambda args: p.print_help() or 0)

    k = add_subcommand(inner, "kernels", "classic kernels and the feature maps they give",
                       "Apply image kernels (edge, Sobel, sharpen, blur, emboss, or your own) to a "
                       "photo and draw the photo, each kernel with its numbers, and the resulting "
                       "feature map with a colour bar.", KERNELS_EPILOG)
    k.add_argument("image", metavar="IMAGE", nargs="?",
                   help="a photo (default: scikit-learn's sample photo of a temple)")
    k.add_argument("--kernels", default="edge,sobel-x,sobel-y,sharpen,box-blur,gaussian,emboss,outline",
                   metavar="LIST", help="comma-separated built-in names and/or .yaml/.json kernel files")
    k.add_argument("--stride", type=int, default=1, metavar="N", help="step between kernel positions")
    k.add_argument("--padding", default="valid", metavar="P",
                   help="valid (none), same (Keras: ceil(n / stride) outputs) or a number of zero pixels")
    k.add_argument("--size", type=int, default=256, metavar="PX",
                   help="resize the photo's longest side to PX pixels first (0: keep its size)")
    k.add_argument("--list", action="store_true", help="print the built-in kernels and exit")
    k.add_argument("--interactive", action="store_true",
                   help="write the interactive kernel lab (an HTML page) instead of a figure")
    k.add_argument("--out", default=None, metavar="FILE",
                   help="figure to write (default kernels.png), or with --interactive the page (default kernel-lab.html)")
    k.add_argument("--dpi", type=int, default=110, help="resolution of the figure (pixels per inch)")
    k.set_defaults(func=run_kernels)

    f = add_subcommand(inner, "filters", "a trained layer's filters",
                       "Draw the filters of one convolution layer of a trained model: the first "
                       "layer's as small RGB patches, deeper layers' as a grid of k x k kernels "
                       "(rows: filters, columns: input channels).", FILTERS_EPILOG)
    _model_args(f)
    f.add_argument("--layer", metavar="NAME", help="conv layer (default: the first), as `cnnlab summary` names it")
    f.add_argument("--view", choices=["auto", "rgb", "channels"], default="auto",
                   help="RGB patches (3 input channels only) or one grid per input channel")
    f.add_argument("--max-filters", type=int, default=32, metavar="N", help="filters to draw at most")
    f.add_argument("--max-channels", type=int, default=16, metavar="N", help="input channels to draw at most")
    f.add_argument("--out", default="filters.png", metavar="FILE", help="figure to write")
    f.add_argument("--dpi", type=int, default=110, help="resolution of the figure (pixels per inch)")
    f.set_defaults(func=run_filters)

    m = add_subcommand(inner, "featuremaps", "each conv/pool layer's output for one image",
                       "Run one image through a trained model and draw the output of each conv and "
                       "pool layer: one tile per channel, titled with the layer name and shape.",
                       FEATUREMAPS_EPILOG)
    _model_args(m)
    m.add_argument("image", metavar="IMAGE", help="the image file")
    m.add_argument("--layers", nargs="+", metavar="NAME",
                   help="layers to draw (names or comma lists; default: every conv and pool layer)")
    m.add_argument("--max-channels", type=int, default=32, metavar="N", help="tiles per layer at most")
    m.add_argument("--out", default="featuremaps.png", metavar="FILE", help="figure to write")
    m.add_argument("--dpi", type=int, default=110, help="resolution of the figure (pixels per inch)")
    m.set_defaults(func=run_featuremaps)

    g = add_subcommand(inner, "gradcam", "Grad-CAM heat map: where the class evidence is",
                       "Draw Grad-CAM heat maps over images: for the predicted class (or --class), "
                       "which regions of the image raised its score, with the class probabilities.",
                       GRADCAM_EPILOG)
    _model_args(g)
    g.add_argument("images", metavar="IMAGE", nargs="+", help="image file(s), one row each")
    g.add_argument("--class", dest="cls", metavar="NAME", help="class to explain (default: the predicted one)")
    g.add_argument("--layer", metavar="NAME", help="layer with a spatial output (default: last conv block)")
    g.add_argument("--alpha", type=float, default=0.45, help="opacity of the heat map over the image")
    g.add_argument("--out", default="gradcam.png", metavar="FILE", help="figure to write")
    g.add_argument("--dpi", type=int, default=110, help="resolution of the figure (pixels per inch)")
    g.set_defaults(func=run_gradcam)

    a = add_subcommand(inner, "augment", "augmented training samples (= cnnlab data preview)",
                       "Draw a grid of training images and random augmentations of them; the "
                       "same as `cnnlab data preview`, whose options all apply.", AUGMENT_EPILOG)
    a.add_argument("data", metavar="DATA", help="dataset folder or CSV file")
    a.add_argument("options", nargs=argparse.REMAINDER, help="options of `cnnlab data preview`")
    a.set_defaults(func=run_augment)


def _model_args(p) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory (runs/NAME), a .safetensors weights file, "
                                              "or a Keras model file (.keras, .h5)")
    p.add_argument("--weights", default="best", metavar="W",
                   help="best, last, or a path to a .safetensors file of the run")
    add_keras_options(p)


def _model(args):
    """RUN as given, or a Keras/safetensors model file opened with --classes/--rescale."""
    return model_source(args)


def _save(fig, args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.io.figures import save_figure

    save_figure(fig, args.out, args.dpi)
    print(f"wrote {args.out}")
    return 0


def _check_out(args) -> None:
    """Refuse an unusable --out before the work, not after."""
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.io.figures import check_output

    check_output(args.out)
    if not 20 <= args.dpi <= 1200:
        raise CnnlabError(f"--dpi must be between 20 and 1200, got {args.dpi}")


def run_kernels(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.viz.kernels import KERNELS
    from cnnlab.viz.kernels_figure import plot_kernels

    if args.list:
        for k in KERNELS.values():
            scale = f" × {k.scale_text()}" if k.scale_text() else ""
            print(f"{k.name:10} {[list(r) for r in k.numbers]}{scale}\n{'':10} {k.about}")
        return 0
    if args.interactive:
        return _write_lab(args)
    args.out = args.out or "kernels.png"
    _check_out(args)
    fig = plot_kernels(args.image, args.kernels, stride=args.stride, padding=args.padding,
                       size=args.size or None)
    return _save(fig, args)


def _write_lab(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.explain.kernellab import write_lab
    from cnnlab.viz.kernellab_math import LAB_SIDE

    out = Path(args.out or "kernel-lab.html")
    if out.suffix.lower() not in (".html", ".htm"):
        raise CnnlabError(f"--out {out}: the kernel lab is a web page; name it .html")
    if out.is_dir():
        raise CnnlabError(f"--out {out}: is a folder; give a file name such as {out / 'kernel-lab.html'}")
    if not out.parent.is_dir():
        raise CnnlabError(f"--out {out}: the folder {out.parent} does not exist")
    if args.image is not None and not Path(args.image).is_file():
        raise CnnlabError(f"{args.image}: no such image file")
    path = write_lab(out, args.image, args.size if args.size and args.size < LAB_SIDE else LAB_SIDE)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB): open it in any browser, no network needed")
    return 0


def run_filters(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.viz.filters import plot_filters

    _check_out(args)
    fig = plot_filters(_model(args), args.layer, view=args.view, max_filters=args.max_filters,
                       max_channels=args.max_channels, weights=args.weights)
    return _save(fig, args)


def run_featuremaps(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.viz.featuremaps import plot_featuremaps

    layers = [n for item in args.layers or [] for n in item.split(",") if n] or None
    _check_out(args)
    fig = plot_featuremaps(_model(args), args.image, layers, max_channels=args.max_channels, weights=args.weights)
    return _save(fig, args)


def run_gradcam(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.viz.gradcam import plot_gradcam

    _check_out(args)
    fig = plot_gradcam(_model(args), args.images, args.cls, args.layer, weights=args.weights, alpha=args.alpha)
    return _save(fig, args)


def run_augment(args) -> int:
    return main(["data", "preview", args.data, *args.options])
