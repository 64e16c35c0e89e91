"""`cnnlab lr-find`: sweep the learning rate and suggest one (fastai's lr_find)."""

from pathlib import Path

from cnnlab.cli._common import add_subcommand
from cnnlab.cli.train import add_config_flags
from cnnlab.errors import CnnlabError

EPILOG = """\
examples:
  cnnlab lr-find data/flowers                         vgg_bn, AdamW, as `cnnlab train` would
  cnnlab lr-find data/flowers --model vgg_bn --optimizer sgd
  cnnlab lr-find data/flowers --steps 200 --end-lr 1

It trains a fresh model for --steps batches while the learning rate grows from --start-lr
to --end-lr, and writes OUT/lr-find-<data>-<model>/lr_find.png (loss against learning rate)
and lr_find.csv. Read the plot: pick a rate where the loss is still falling steeply, well
before the minimum. The suggestion (a tenth of the rate at the minimum) is a good peak for
`cnnlab train --lr`; the steepest-descent point is shown too."""


# The training options lr-find takes (as `cnnlab train` reads them; see cnnlab.cli.train.FLAGS).
CONFIG_FLAGS = [("model", ("-m", "--model"), "MODEL"), ("optimizer", (), None), ("weight_decay", (), "WD"),
                ("momentum", (), "M"), ("loss", (), None), ("batch_size", ("--batch-size", "-b"), "N"),
                ("img_size", (), "HxW"), ("augment", (), "SPEC"), ("device", (), "DEV"), ("seed", (), "N"),
                ("workers", (), "N"), ("cache_dir", (), "DIR")]


def register(sub) -> None:
    p = add_subcommand(sub, "lr-find", "sweep the learning rate and suggest a good one",
                       "The learning-rate range test: a short training run with an exponentially "
                       "growing learning rate, a plot of the loss, and a suggested rate for "
                       "`cnnlab train --lr`.", EPILOG)
    p.add_argument("data", metavar="DATA", help="the training data, as for `cnnlab train`")
    p.add_argument("--config", metavar="YAML", help="a training config file (model, optimizer, augment...)")
    add_config_flags(p, CONFIG_FLAGS)
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate")
    p.add_argument("--steps", type=int, default=100, help="batches in the sweep")
    p.add_argument("--out", default="runs", help="folder for the plot and the CSV")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the suggestion")
    p.set_defaults(func=run)


def run(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.io.fs import atomic_write_text, check_can_write
    from cnnlab.train import lr_find
    from cnnlab.train.lr_finder import MIN_FALL, plot

    check_can_write(args.out, "--out")  # before the sweep, not after it
    options = {field: getattr(args, field) for field, _, _ in CONFIG_FLAGS if hasattr(args, field)}
    result, setup = lr_find(args.data, config=args.config, start_lr=args.start_lr, end_lr=args.end_lr,
                            steps=args.steps, verbose=not args.quiet, **options)
    cfg = setup.cfg
    out = Path(args.out) / f"lr-find-{Path(args.data).stem or 'data'}-{setup.spec.name}"
    png = plot(result, out / "lr_find.png",
               f"Learning-rate range test: {setup.spec.name}, {cfg.optimizer}, batch {cfg.batch_size}")
    atomic_write_text(out / "lr_find.csv", result.to_csv())
    if result.suggested is None:
        steps = len(result.lrs)
        if result.lowest_loss is not None and result.lowest_loss < result.start_loss:
            fell = (f"the loss fell only {1 - result.lowest_loss / result.start_loss:.1%} in {steps} steps "
                    f"(smoothed {result.start_loss:.3f} at the start, {result.lowest_loss:.3f} at the lowest; "
                    f"a rate is suggested from a fall of {MIN_FALL:.0%})")
        else:
            fell = f"the loss never fell in {steps} steps" + (
                f" (smoothed {result.start_loss:.3f} at the start)" if result.start_loss is not None else "")
        wider = "a larger --end-lr or " if args.end_lr < 10 else ""
        raise CnnlabError(f"{fell}, so there is no rate to suggest; the model learns too slowly for so short "
                          f"a sweep: try {wider}--steps {max(3 * steps, 300)} (plot: {png})")
    if args.quiet:
        print(f"{result.suggested:.2g}")
        return 0
    steep = f"{result.steep:.1e}" if result.steep is not None else "none"
    print(f"steepest descent at {steep}, lowest loss at {result.minimum:.1e}")
    print(f"suggested learning rate: {result.suggested:.1e}   (plot: {png})")
    print(f"next: cnnlab train {args.data} --lr {result.suggested:.2g}"
          + (f" --model {options['model']}" if "model" in options else "")
          + (f" --optimizer {options['optimizer']}" if "optimizer" in options else ""))
    return 0
