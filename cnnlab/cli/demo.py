"""`cnnlab demo`: train and evaluate a CNN on a built-in dataset, end to end."""

import sys

from cnnlab.cli._common import add_subcommand

EPILOG = """\
examples:
  cnnlab demo                      digits -> runs/demo (10-25 s on 2 CPU cores)
  cnnlab demo --epochs 5           quicker, a little less accurate
  cnnlab demo --model tinyvgg      CNN Explainer's Tiny VGG instead of the demo CNN

The data are scikit-learn's handwritten digits (1,797 images of 0-9, no download),
written as PNG files to OUT/datasets/digits/{train,test}/<digit>/ so you can open them,
and trained on exactly like your own folder would be. Then try:
  cnnlab evaluate runs/demo
  cnnlab predict runs/demo runs/datasets/digits/test/7
  cnnlab train runs/datasets/digits --model vgg_bn"""


def register(sub) -> None:
    p = add_subcommand(sub, "demo", "train + evaluate a CNN on a built-in dataset (~20 s)",
                       "Write scikit-learn's handwritten digits as an image folder, train a small CNN "
                       "on it (batch norm, dropout, augmentation, early stopping, checkpoints), "
                       "evaluate it on the test split and write the report: everything a run writes.",
                       EPILOG)
    p.add_argument("--out", default="runs", help="folder for the run (and the dataset, in OUT/datasets)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: 15)")
    p.add_argument("-m", "--model", help="a preset or model YAML instead of the demo CNN")
    p.add_argument("--device", help="auto, cpu, cuda, mps (default: auto)")
    p.add_argument("--name", help="run name (default: demo, demo-2, ...)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def run(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.train.demo import demo
    from cnnlab.train.interrupt import TrainingInterrupted

    try:
        run = demo(args.out, verbose=not args.quiet, epochs=args.epochs, model=args.model,
                   device=args.device, name=args.name)
    except TrainingInterrupted as e:
        print(f"cnnlab: {e}", file=sys.stderr)
        return e.exit_code
    if not args.quiet:
        data = f"{args.out}/datasets/digits"
        print(f"\nEverything is in {run.path}/ (config.yaml, history.csv, weights/, eval/test/, report.html).")
        print("Next:")
        print(f"  cnnlab evaluate {run.path}                      metrics, confusion matrix, top losses")
        print(f"  cnnlab predict {run.path} {data}/test/7        classify images")
        print(f"  cnnlab summary {run.path}/weights/best.safetensors   the model, layer by layer")
    return 0
