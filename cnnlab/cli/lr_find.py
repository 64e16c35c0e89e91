"""`cnnlab lr-find`: sweep the learning rate and suggest one (fastai's lr_find)."""

from cnnlab.cli._common import add_subcommand

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


def register(sub) -> None:
    p = add_subcommand(sub, "lr-find", "sweep the learning rate and suggest a good one",
                       "The learning-rate range test: a short training run with an exponentially "
                       "growing learning rate, a plot of the loss, and a suggested rate for "
                       "`cnnlab train --lr`.", EPILOG)
    p.add_argument("data", metavar="DATA", help="the training data, as for `cnnlab train`")
    p.add_argument("--config", metavar="YAML", help="a training config file (model, optimizer, augment...)")
    p.add_argument("-m", "--model", help="a preset or a model YAML file (default: as cnnlab train)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="(default: adamw)")
    p.add_argument("--weight-decay", type=float, metavar="WD", help="(default: per optimiser)")
    p.add_argument("--batch-size", "-b", type=int, metavar="N", help="(default: 64)")
    p.add_argument("--img-size", metavar="HxW", help="(default: the model's or the images')")
    p.add_argument("--augment", metavar="SPEC", help="(default: standard)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate")
    p.add_argument("--steps", type=int, default=100, help="batches in the sweep")
    p.add_argument("--device", help="auto, cpu, cuda, mps (default: auto)")
    p.add_argument("--seed", type=int, help="(default: 0)")
    p.add_argument("--workers", type=int, metavar="N", help="processes decoding images (default: all cores)")
    p.add_argument("--cache-dir", metavar="DIR", help="decoded-image cache (default: ~/.cache/cnnlab)")
    p.add_argument("--out", default="runs", help="folder for the plot and the CSV")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the suggestion")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from cnnlab.errors import CnnlabError
    from cnnlab.io.fs import atomic_write_text
    from cnnlab.train.config import make_config
    from cnnlab.train.lr_find import lr_find, plot
    from cnnlab.train.loop import Trainer
    from cnnlab.train.setup import build, loss_for, make_optimizer

    if not 0 < args.start_lr < args.end_lr:
        raise CnnlabError(f"--start-lr must be positive and below --end-lr, got {args.start_lr} and {args.end_lr}")
    cfg = make_config(args.config, data=args.data, model=args.model, optimizer=args.optimizer,
                      weight_decay=args.weight_decay, batch_size=args.batch_size, img_size=args.img_size,
                      augment=args.augment, device=args.device, seed=args.seed, workers=args.workers,
                      cache_dir=args.cache_dir)
    setup = build(cfg, verbose=not args.quiet)
    optimizer = make_optimizer(setup.model, cfg.optimizer, args.start_lr, setup.hparams["weight_decay"],
                               cfg.momentum, setup.device)
    trainer = Trainer(setup.model, optimizer, loss_fn=loss_for(setup), device=setup.device,
                      precision=setup.precision, channels_last=setup.channels_last,
                      normalization=setup.normalization, augment=setup.augmenter, seed=cfg.seed)
    if not args.quiet:
        print(f"sweeping the learning rate from {args.start_lr:g} to {args.end_lr:g} over {args.steps} "
              f"batches of {cfg.batch_size} ({setup.spec.name}, {cfg.optimizer}, {setup.device})", flush=True)
    result = lr_find(trainer, setup.train_loader, args.start_lr, args.end_lr, args.steps)
    out = Path(args.out) / f"lr-find-{Path(args.data).stem or 'data'}-{setup.spec.name}"
    png = plot(result, out / "lr_find.png",
               f"Learning-rate range test: {setup.spec.name}, {cfg.optimizer}, batch {cfg.batch_size}")
    atomic_write_text(out / "lr_find.csv", result.to_csv())
    if result.suggested is None:
        raise CnnlabError(f"the loss never fell in {len(result.lrs)} steps; try a larger --end-lr or more --steps "
                          f"(plot: {png})")
    if args.quiet:
        print(f"{result.suggested:.2g}")
        return 0
    steep = f"{result.steep:.1e}" if result.steep is not None else "none"
    print(f"steepest descent at {steep}, lowest loss at {result.minimum:.1e}")
    print(f"suggested learning rate: {result.suggested:.1e}   (plot: {png})")
    print(f"next: cnnlab train {args.data} --lr {result.suggested:.2g}"
          + (f" --model {args.model}" if args.model else "")
          + (f" --optimizer {args.optimizer}" if args.optimizer else ""))
    return 0
