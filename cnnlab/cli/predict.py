"""`cnnlab predict`: classify new images with a trained run's model."""

import sys
from pathlib import Path

from cnnlab.cli._common import (
    add_keras_options,
    add_precision_option,
    add_subcommand,
    console,
    model_source,
)
from cnnlab.display import count
from cnnlab.errors import CnnlabError

EPILOG = """\
examples:
  cnnlab predict runs/cats photo.jpg                      one file
  cnnlab predict runs/cats ~/holiday/                     a folder, searched recursively
  cnnlab predict runs/cats 'shots/*.png' --top-k 2        a glob (quote it for ** patterns)
  cnnlab predict runs/cats ~/holiday --out preds.csv      or preds.json
  cnnlab predict runs/cats photo.jpg --tta --weights last
  cnnlab predict cats.safetensors photo.jpg               a weights file someone shared
  cnnlab predict model.h5 photos/ --classes cat,dog       a Keras model (.keras or .h5)
  cnnlab predict model.onnx photos/                       an exported ONNX file (onnxruntime)

Each file gets one row: path, label, confidence, the top-k labels with their
probabilities, and error. A file that cannot be read (corrupt, not an image) gets its
reason in `error` and no label; the other files are still predicted. Images are
prepared exactly as in training (same size, resize policy and normalisation, read from
the weights file, which is all predict needs). --tta averages each image with its
horizontal mirror image; --tta-mode flip+translate adds 1-pixel shifts (6 views)."""


def register(sub) -> None:
    p = add_subcommand(sub, "predict", "classify new images with a trained run",
                       "Predict the class of image files with a trained run's model, in batches: "
                       "the label, its confidence and the top-k classes with probabilities, as a "
                       "table or written to a CSV or JSON file.", EPILOG)
    p.add_argument("run", metavar="RUN", help="a run directory written by `cnnlab train` (runs/NAME), or "
                                              "a model file: a weights file of one (best.safetensors), a "
                                              "Keras .keras/.h5 file, or an ONNX file from `cnnlab export`")
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="how many of the most probable classes to list")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average each image with its horizontal flip")
    p.add_argument("--tta-mode", choices=["flip", "flip+translate"], default=None,
                   help="which TTA (implies --tta): flip+translate adds 1-pixel shifts, 6 views "
                        "(for small images such as CIFAR's)")
    p.add_argument("--out", metavar="FILE", help="write the rows to FILE.csv or FILE.json instead of a table")
    p.add_argument("--weights", default="best", metavar="best|last|FILE",
                   help="the run's best or last weights, or a .safetensors file")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add_precision_option(p)
    add_keras_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.eval.predict import predict, write_predictions

    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise CnnlabError(f"--out {args.out}: the file name must end in .csv or .json")
    if args.batch_size < 1:
        raise CnnlabError(f"--batch-size must be at least 1, got {args.batch_size}")

    if str(args.run).lower().endswith(".onnx"):
        # onnxruntime: the optional [onnx] extra
        from cnnlab.export.onnx import predict_onnx

        rows = predict_onnx(args.run, args.paths, top_k=args.top_k, tta=args.tta, batch_size=args.batch_size)
    else:
        rows = predict(model_source(args), args.paths, top_k=args.top_k, tta=args.tta_mode or args.tta,
                       weights=args.weights,
                       batch_size=args.batch_size, device=args.device, precision=args.precision)
    if args.out:
        write_predictions(rows, args.out)
        print(f"{count(len(rows), 'prediction')} written to {args.out}", file=sys.stderr)
    else:
        show(rows)
    failed = [r for r in rows if r["error"]]
    if failed and len(failed) == len(rows):
        if len(rows) == 1:
            raise CnnlabError(f"{failed[0]['path']} could not be read: {failed[0]['error']}")
        raise CnnlabError(f"none of the {len(rows)} files could be read (first: {failed[0]['path']}: "
                          f"{failed[0]['error']})")
    if failed:
        print(f"cnnlab: {len(failed)} of {count(len(rows), 'file')} could not be read (see the error column)",
              file=sys.stderr)
    return 0


def show(rows) -> None:
    # rich: loaded when there is something to print, not for `cnnlab --help`
    from rich.table import Table

    t = Table()
    t.add_column("path", overflow="fold")
    t.add_column("label")
    t.add_column("confidence", justify="right")
    t.add_column("top-k")
    t.add_column("error", style="red")
    for r in rows:
        conf = "" if r["confidence"] is None else f"{r['confidence']:.1%}"
        top = ", ".join(f"{k['label']} {k['probability']:.2f}" for k in r["top_k"])
        t.add_row(r["path"], r["label"], conf, top, r["error"])
    console().print(t)
