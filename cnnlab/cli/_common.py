"""Small helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys
from typing import Any

from cnnlab.cli import HelpFormatter


def add_subcommand(sub, name: str, help: str, description: str, epilog: str = ""):
    """A subparser with cnnlab's help formatting (examples keep their line breaks)."""
    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=HelpFormatter)
    return p


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def console():
    # rich: loaded when there is something to print, not for `cnnlab --help`
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def add_keras_options(p) -> None:
    """The command-line options for a Keras model file (shared by the commands that take one)."""
    p.add_argument("--classes", metavar="A,B,...", dest="keras_classes",
                   help="Keras .keras/.h5 model: the class names, in output order (default: the names "
                        "`cnnlab export` wrote into the file, else classes.json beside it, else (evaluate) the "
                        "--data folder's classes, else class_0, class_1, ...)")
    p.add_argument("--rescale", type=float, metavar="F",
                   help="Keras model without a Rescaling/Normalization layer: pixels are multiplied by F "
                        "(default 1/255, as ImageDataGenerator(rescale=1./255))")


def add_precision_option(p) -> None:
    """--precision for the commands that run a trained model (evaluate, predict)."""
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "run"], default="fp32",
                   help="fp32: exact; bf16/fp16: autocast, ~3x faster where the hardware has it; "
                        "run: as the run trained (what `cnnlab train` evaluates with)")


def model_source(args, data_classes: list[str] | None = None, device="cpu"):
    """The RUN (or MODEL) argument: a run folder as given (the command opens it), or a model
    file opened now with --classes/--rescale (:func:`cnnlab.run.open_any`)."""
    from cnnlab.run import (  # torch: imported when a command runs, not for --help
        is_run_dir,
        open_any,
    )

    source = getattr(args, "run", None) or getattr(args, "model", None)
    if is_run_dir(source):
        return source
    return open_any(source, classes=getattr(args, "keras_classes", None), rescale=getattr(args, "rescale", None),
                    data_classes=data_classes, device=device)
