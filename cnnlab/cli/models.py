"""`cnnlab models` and `cnnlab layers`: what a model spec can be built from."""

from cnnlab.cli._common import add_subcommand, console, print_json


def register(sub) -> None:
    p = add_subcommand(sub, "models", "list the preset models",
                       "List the built-in model presets with their input size, parameter count "
                       "and MACs (for 10 classes). Use a name with --model or `cnnlab summary`.",
                       "examples:\n  cnnlab models\n  cnnlab summary resnet_small\n"
                       "  cnnlab train DATA --model vgg_bn")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    p.set_defaults(func=run)


def run(args) -> int:
    # rich: loaded when there is something to print, not for `cnnlab --help`
    from rich.table import Table

    # torch: imported when the command runs, not for `cnnlab --help`
    from cnnlab.model.spec import list_presets, load_spec
    from cnnlab.model.summary import summary

    rows = []
    for name in list_presets():
        spec = load_spec(name)
        s = summary(spec)
        rows.append({"name": name, "input": list(spec.input), "params": s.total_params,
                     "macs": s.total_macs, "description": spec.description})
    if args.format == "json":
        print_json(rows)
        return 0
    t = Table(title="Preset models (parameters for 10 classes)", title_justify="left")
    for col in ("name", "input", "params", "MACs", "description"):
        t.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for r in rows:
        t.add_row(r["name"], "x".join(map(str, r["input"])), f"{r['params']:,}",
                  f"{r['macs'] / 1e6:.1f} M", r["description"])
    console().print(t)
    return 0
