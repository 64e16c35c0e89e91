"""`cnnlab recipes`: the named bundles of training options that `--recipe` takes."""

from dataclasses import asdict

from cnnlab.cli._common import add_subcommand, print_json


def register(sub) -> None:
    p = add_subcommand(sub, "recipes", "list the training recipes (--recipe)",
                       "List the training recipes: each one's options (yours win over them), what "
                       "changes under --time-limit, and where each idea comes from.",
                       "examples:\n  cnnlab recipes\n  cnnlab train data/cifar10 --recipe airbench\n"
                       "  cnnlab train data/cifar10 --recipe airbench --epochs 20 --lr 1.0   yours win")
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    p.set_defaults(func=run)


def run(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.train.recipes import RECIPES

    recipes = [entry.build() for entry in RECIPES]
    if args.format == "json":
        print_json([asdict(r) for r in recipes])
        return 0
    print("\n\n".join(r.describe() for r in recipes))
    return 0
