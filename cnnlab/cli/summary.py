"""`cnnlab summary`: shapes, parameter formulas, MACs and receptive fields of a model."""

from cnnlab.cli._common import add_subcommand, console, print_json
from cnnlab.errors import CnnlabError

EPILOG = """\
examples:
  cnnlab summary seed                       the lecture's model: 896 params in its conv
  cnnlab summary tinyvgg --format json      machine-readable, same numbers
  cnnlab summary my_model.yaml --input 128x128x3 --classes 2
  cnnlab summary runs/NAME/weights/best.safetensors
  cnnlab summary model.keras                 a Keras model file (.keras or .h5), read without Keras

Parameters are counted as Keras counts them: Conv2D (K*K*C_in+1)*filters, Dense
(inputs+1)*units, BatchNormalization 4*C of which 2*C (moving mean and variance) are
non-trainable. For a Keras file the totals are those of Keras' own model.summary()."""


def register(sub) -> None:
    p = add_subcommand(sub, "summary", "shapes, parameters (with formulas), MACs of a model",
                       "Print a Keras-style summary of a model: every layer's output shape, its "
                       "parameter count with the formula that gives it, trainable and "
                       "non-trainable parameters, MACs, activation memory and receptive field.",
                       EPILOG)
    p.add_argument("model", metavar="MODEL",
                   help="a preset name (see `cnnlab models`), a model YAML file, a "
                        ".safetensors file written by cnnlab, or a Keras .keras/.h5 model file")
    p.add_argument("--input", metavar="HxWxC", help="input size, e.g. 64x64x3 (default: the spec's)")
    p.add_argument("--classes", type=int, metavar="N", help="number of classes for `units: classes`")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    p.set_defaults(func=run)


def run(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.formats.open import (
        summary,  # torch: imported when the command runs, not for --help
    )

    source = args.model
    if str(source).lower().endswith((".keras", ".h5", ".hdf5")) and (args.input or args.classes):
        raise CnnlabError(f"{source}: a Keras model has its own input size and classes; drop --input/--classes")
    s = summary(source, input=args.input, classes=args.classes)
    if args.format == "json":
        print_json(s.to_dict())
        return 0
    out = console()
    out.print(s.table())
    out.print(s.totals_text(), highlight=False)
    return 0
