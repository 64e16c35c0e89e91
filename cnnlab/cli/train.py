"""`cnnlab train`: train a CNN from scratch on a folder of labelled images."""

import argparse

from cnnlab.cli._common import add_subcommand

EPILOG = """\
examples:
  cnnlab train data/flowers                       good defaults: vgg_bn, AdamW, one-cycle,
                                                  augmentation, early stopping, best/last weights
  cnnlab train data/flowers --model resnet_small --epochs 50 --img-size 96
  cnnlab train data/dogs-vs-cats --model my_cnn.yaml --augment "flip,rotation=15,zoom=0.1"
  cnnlab train data/leaves --config run.yaml --lr 3e-4     flags override the file
  cnnlab train data/cifar10 --time-limit 10                fit the schedule into 10 minutes
  cnnlab train --resume runs/flowers-vgg_bn                continue after Ctrl-C or a crash
  cnnlab train --resume                                    the most recent unfinished run

DATA is a folder with one sub-folder per class (DATA/cat/*.jpg, DATA/dog/*.jpg), the Keras
layout DATA/{train,val,test}/<class>/, a CSV of path,label[,split] rows, or a folder of
files named by class (cat.1.jpg). Without a val/ folder, --val-split of each class is held
out. Everything is written to runs/NAME/: config.yaml (the resolved options; reuse it with
--config), model.yaml, classes.json, split.json, skipped.csv, history.csv,
weights/{best,last}.safetensors, resume.safetensors; with a test split also eval/test/ and
report.html. Ctrl-C stops after the current batch and saves; --resume continues exactly.

Multi-GPU: torchrun --nproc_per_node=4 -m cnnlab train DATA (PyTorch DDP)."""


def _default(field: str) -> str:
    from cnnlab.train.config import TrainConfig

    value = TrainConfig.model_fields[field].default
    return "auto" if value is None else str(value)


def register(sub) -> None:
    p = add_subcommand(
        sub, "train", "train a CNN on a folder of labelled images",
        "Train a CNN from scratch: data -> model -> training with early stopping, checkpoints and "
        "learning-rate schedules -> evaluation on the test split -> report. Every option can also "
        "be given in a YAML file (--config) under the same name with underscores (batch_size: 32).",
        EPILOG)
    S = argparse.SUPPRESS  # options not given are left to the config file / defaults

    def opt(group, *names, field, help, shown=None, **kw):
        shown = shown or _default(field)
        group.add_argument(*names, dest=field, default=S, help=f"{help} (default: {shown})", **kw)

    def flag(group, name, field, help, value=True):
        group.add_argument(name, dest=field, action="store_const", const=value, default=S, help=help)

    p.add_argument("data", metavar="DATA", nargs="?", default=S,
                   help="folder of class sub-folders, DATA/{train,val,test}/..., or a CSV file")
    p.add_argument("--config", metavar="YAML", default=S, help="a YAML file of options (flags override it)")
    g = p.add_argument_group("model and training")
    opt(g, "-m", "--model", field="model", metavar="MODEL", help="a preset (see `cnnlab models`) or a model YAML file")
    opt(g, "--epochs", field="epochs", type=int, metavar="N", help="maximum number of epochs")
    opt(g, "--batch-size", "-b", field="batch_size", type=int, metavar="N", help="images per step")
    opt(g, "--img-size", field="img_size", metavar="HxW",
        help="resize images to this (64 or 64x48); auto: the model's, or the images' own when smaller")
    opt(g, "--optimizer", field="optimizer", choices=["adam", "adamw", "sgd"], help="optimiser")
    opt(g, "--lr", field="lr", type=float, metavar="LR",
        help="peak learning rate; auto: 2e-3 adamw, 1e-3 adam, 0.05 sgd (see `cnnlab lr-find`)")
    opt(g, "--weight-decay", field="weight_decay", type=float, metavar="WD",
        help="weight decay; auto: 0.05 adamw, 0 adam, 5e-4 sgd")
    opt(g, "--label-smoothing", field="label_smoothing", type=float, metavar="EPS", help="label smoothing")
    opt(g, "--scheduler", field="scheduler", choices=["none", "cosine", "onecycle", "step", "plateau"],
        help="learning-rate schedule")
    opt(g, "--warmup", field="warmup", type=float, metavar="FRACTION",
        help="fraction of training warming up the learning rate; auto: 0.25 onecycle, 0.05 cosine")
    opt(g, "--augment", field="augment", metavar="SPEC",
        help="none, light, standard, strong, or options like 'flip,rotation=15,zoom=0.1'")
    opt(g, "--patience", field="patience", type=int, metavar="N",
        help="stop after N epochs without improvement (0: never); the best weights are restored")
    opt(g, "--monitor", field="monitor", metavar="METRIC", help="val_acc, val_loss, ...: picks the best weights")
    opt(g, "--time-limit", field="time_limit", type=float, metavar="MIN",
        help="train for this many minutes; the schedule is fitted to the time", shown="none")
    opt(g, "--seed", field="seed", type=int, metavar="N", help="random seed (same seed, same run on the CPU)")
    g = p.add_argument_group("data")
    opt(g, "--val-split", field="val_split", type=float, metavar="F", help="fraction held out for validation")
    opt(g, "--label-regex", field="label_regex", metavar="REGEX", help="take class names from file names", shown="none")
    opt(g, "--channels", field="channels", type=int, choices=[1, 3], help="1 grayscale, 3 RGB; auto: from the images")
    opt(g, "--resize", field="resize", choices=["stretch", "crop", "letterbox"], help="how images are resized")
    opt(g, "--normalize", field="normalize", choices=["measured", "rescale"],
        help="measured: the training images' mean/std; rescale: x/255 as in Keras")
    flag(g, "--balanced", "balanced", "sample every class equally often")
    flag(g, "--class-weights", "class_weights", "weigh the loss by inverse class frequency")
    opt(g, "--workers", field="workers", type=int, metavar="N", help="processes decoding the images (once); auto: all cores")
    opt(g, "--cache-dir", field="cache_dir", metavar="DIR", help="decoded-image cache; auto: ~/.cache/cnnlab")
    g = p.add_argument_group("device and output")
    opt(g, "--device", field="device", metavar="DEV", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    opt(g, "--precision", field="precision", choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: bf16 on GPUs that support it, else fp16 on GPUs, fp32 on the CPU")
    opt(g, "--out", field="out", metavar="DIR", help="folder of runs")
    opt(g, "--name", field="name", metavar="NAME", help="run name; auto: <data>-<model>, -2, -3... if taken")
    g.add_argument("--resume", nargs="?", const=True, default=S, metavar="RUN",
                   help="continue RUN (or --out/--name, or the most recent unfinished run) from its checkpoint")
    flag(g, "--tensorboard", "tensorboard", "also log to RUN/tensorboard (needs the tensorboard package)")
    flag(g, "--no-evaluate", "evaluate", "skip the test-split evaluation and the report at the end", False)
    g.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def latest_unfinished(out: str):
    """The run under ``out`` whose checkpoint was written last and is not finished."""
    from pathlib import Path

    from cnnlab.errors import CnnlabError
    from cnnlab.train.checkpoint import load_checkpoint

    candidates = sorted(Path(out).glob("*/resume.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        state = load_checkpoint(path)
        if not state["stopped"] and state["epoch"] < state["epochs"]:
            return path.parent
    raise CnnlabError(f"{out}: no unfinished run to resume (name one: --resume runs/NAME)")


def run(args) -> int:
    import sys
    from pathlib import Path

    from cnnlab.train.api import train
    from cnnlab.train.loop import TrainingInterrupted

    options = {k: v for k, v in vars(args).items() if k not in ("func", "quiet", "resume", "config", "data")}
    data = getattr(args, "data", None)
    config = getattr(args, "config", None)
    resume = getattr(args, "resume", None)
    if resume is True:
        name = options.get("name")
        out = options.get("out", "runs")
        resume = Path(out) / name if name else latest_unfinished(out)
        options.pop("name", None)
        options.pop("out", None)
    try:
        train(data, config=config, resume=resume, verbose=not args.quiet, **options)
    except TrainingInterrupted as e:
        print(f"cnnlab: {e}", file=sys.stderr)
        return e.exit_code
    return 0
