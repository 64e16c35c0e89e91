"""`cnnlab train`: train a CNN from scratch on a folder of labelled images."""

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from cnnlab.cli._common import add_subcommand
from cnnlab.errors import is_main_process

EPILOG = """\
examples:
  cnnlab train data/flowers                       good defaults: vgg_bn, AdamW, one-cycle,
                                                  augmentation, best/last weights
  cnnlab train data/flowers --scheduler none --patience 5    early stopping
  cnnlab train data/flowers --model resnet_small --epochs 50 --img-size 96
  cnnlab train data/dogs-vs-cats --model my_cnn.yaml --augment "flip,rotation=15,zoom=0.1"
  cnnlab train data/cats --model model.keras --init-weights model.keras   fine-tune your Keras model
  cnnlab train data/leaves --config run.yaml --lr 3e-4     flags override the file
  cnnlab train data/cifar10 --time-limit 10                fit the schedule into 10 minutes
  cnnlab train data/cifar10 --recipe airbench              airbench94's recipe: 10 epochs (94 % on
                                                           lossless CIFAR-10; `cnnlab recipes`)
  cnnlab train --resume runs/flowers-vgg_bn                continue after Ctrl-C or a crash
  cnnlab train --resume                                    the most recent unfinished run

DATA is a folder with one sub-folder per class (DATA/cat/*.jpg, DATA/dog/*.jpg), the Keras
layout DATA/{train,val,test}/<class>/, a CSV of path,label[,split] rows, or a folder of
files named by class (cat.1.jpg). Without a val/ folder, --val-split of each class is held
out. Everything is written to runs/NAME/: config.yaml (the resolved options; reuse it with
--config), model.yaml, classes.json, split.json, skipped.csv, history.csv,
weights/{best,last}.safetensors, resume.safetensors, curves.png and report.html; with a test
split also eval/test/. Ctrl-C stops after the current batch and saves; --resume continues exactly.

Multi-GPU: torchrun --nproc_per_node=4 -m cnnlab train DATA (PyTorch DDP); several machines:
the same torchrun command on each, with --nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT
(docs/multinode.md). Under torchrun --max-restarts, a restarted group continues its run."""


# The flags of TrainConfig's fields, by --help group, in the order shown: (field, flags, metavar).
# Everything else -- help, default, type, choices -- comes from the field (its description) and
# from the registries of optimisers, schedules and losses. A new TrainConfig field is a flag
# once it is listed here.
FLAGS = {
    "model and training": [
        ("model", ("-m", "--model"), "MODEL"), ("init_weights", (), "FILE"), ("epochs", (), "N"), ("batch_size", ("--batch-size", "-b"), "N"),
        ("img_size", (), "HxW"), ("optimizer", (), None), ("lr", (), "LR"), ("weight_decay", (), "WD"),
        ("momentum", (), "M"), ("loss", (), None), ("label_smoothing", (), "EPS"), ("scheduler", (), None),
        ("warmup", (), "FRACTION"), ("step_size", (), "N"), ("gamma", (), "F"), ("augment", (), "SPEC"),
        ("patience", (), "N"), ("monitor", (), "METRIC"), ("time_limit", (), "MIN"), ("seed", (), "N"),
        ("recipe", (), "NAME"), ("bias_lr_scale", (), "S"), ("weight_averaging", (), None),
        ("progressive", (), "F"), ("train_scale", (), "F"), ("tta", (), None),
        ("sync_bn", (), None)],
    "data": [
        ("val_split", (), "F"), ("label_regex", (), "REGEX"), ("channels", (), None), ("resize", (), None),
        ("normalize", (), None), ("balanced", (), None), ("class_weights", (), None), ("workers", (), "N"),
        ("cache_dir", (), "DIR"), ("shuffle", (), None), ("val_max", (), "N")],
    "device and output": [
        ("device", (), "DEV"), ("precision", (), None), ("channels_last", (), None), ("compile", (), None),
        ("checkpoint_every", (), "N"), ("out", (), "DIR"),
        ("name", (), "NAME"), ("tensorboard", (), None), ("evaluate", ("--no-evaluate",), None)],
}


def _registry_help(field: str, description: str) -> tuple[str, tuple[str, ...] | None]:
    """Help and choices of a field a registry names, or of one whose auto value a registry decides."""
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.train.config import registry

    if field in ("optimizer", "scheduler", "loss"):
        reg = registry(field)
        return f"{description} ({'; '.join(f'{e.name}: {e.help}' for e in reg)})", reg.names()
    per = {"lr": ("optimizer", "lr"), "weight_decay": ("optimizer", "weight_decay"), "warmup": ("scheduler", "warmup")}
    if field in per:
        which, key = per[field]
        values = [f"{e.defaults[key]:g} {e.name}" for e in registry(which) if key in e.defaults]
        return description.replace(f"per {'optimiser' if which == 'optimizer' else 'schedule'}",
                                   ", ".join(values) + ("" if which == "optimizer" else ", 0 otherwise")), None
    return description, None


def add_config_flags(parser, fields: list[tuple[str, tuple[str, ...], str | None]], shown_defaults: bool = True) -> None:
    """argparse options for TrainConfig ``fields``: flags not given are left out of the namespace."""
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.train.config import TrainConfig

    S = argparse.SUPPRESS  # options not given are left to the config file / defaults
    for field, names, metavar in fields:
        info = TrainConfig.model_fields[field]
        help, choices = _registry_help(field, info.description or "")
        names = names or ("--" + field.replace("_", "-"),)
        ann = info.annotation
        args = [ann] if typing.get_origin(ann) is typing.Literal else \
            [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
        if bool in args:
            if info.default is None:  # on, off, or auto
                parser.add_argument(*names, dest=field, action=argparse.BooleanOptionalAction, default=S,
                                    help=f"{help} (default: auto)")
            elif info.default:  # --no-X
                parser.add_argument(*names, dest=field, action="store_const", const=False, default=S,
                                    help=f"do not {help[0].lower()}{help[1:]}")
            else:
                parser.add_argument(*names, dest=field, action="store_const", const=True, default=S, help=help)
            continue
        kw: dict[str, Any] = {}
        literal = next((a for a in args if typing.get_origin(a) is typing.Literal), None)
        if literal is not None:
            choices = typing.get_args(literal)
            kw["type"] = type(choices[0])
        elif len(args) == 1 and args[0] in (int, float):  # 64x48 and the like: the config parses them
            kw["type"] = args[0]
        if choices:
            kw["choices"] = list(choices)
        elif metavar:
            kw["metavar"] = metavar
        if shown_defaults:
            default = info.default
            shown = ("auto" if "auto" in help else "none") if default is None else default
            help = f"{help} (default: {shown})"
        parser.add_argument(*names, dest=field, default=S, help=help, **kw)


def register(sub) -> None:
    p = add_subcommand(
        sub, "train", "train a CNN on a folder of labelled images",
        "Train a CNN from scratch: data -> model -> training with early stopping, checkpoints and "
        "learning-rate schedules -> evaluation on the test split -> report. Every option can also "
        "be given in a YAML file (--config) under the same name with underscores (batch_size: 32).",
        EPILOG)
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.train.config import TrainConfig

    S = argparse.SUPPRESS
    p.add_argument("data", metavar="DATA", nargs="?", default=S, help=TrainConfig.model_fields["data"].description)
    p.add_argument("--config", metavar="YAML", default=S, help="a YAML file of options (flags override it)")
    for title, fields in FLAGS.items():
        g = p.add_argument_group(title)
        add_config_flags(g, fields)
        if title == "device and output":
            g.add_argument("--resume", nargs="?", const=True, default=S, metavar="RUN",
                           help="continue RUN (or --out/--name, or the most recent unfinished run) from its "
                                "checkpoint; options given with it must equal the run's")
            g.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors and warnings (skipped files)")
    p.set_defaults(func=run)


def run(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.train.api import train
    from cnnlab.train.interrupt import TrainingInterrupted
    from cnnlab.train.runfolder import latest_unfinished

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
        if is_main_process():  # under torchrun every process stops so: one says so
            print(f"cnnlab: {e}", file=sys.stderr)
        return e.exit_code
    return 0
