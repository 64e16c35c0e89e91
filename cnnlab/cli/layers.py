"""`cnnlab layers`: the layer types a model spec can use, with their arguments."""


from cnnlab.cli._common import add_subcommand, console
from cnnlab.errors import CnnlabError


def register(sub) -> None:
    p = add_subcommand(sub, "layers", "list the layer types a model spec can use",
                       "List every layer type (Keras names) with its arguments and defaults.",
                       "example spec (YAML):\n"
                       "  input: [64, 64, 3]\n"
                       "  layers:\n"
                       "    - Conv2D: {filters: 32, kernel_size: 3, activation: relu}\n"
                       "    - MaxPooling2D: {pool_size: 2}\n"
                       "    - Flatten: {}\n"
                       "    - Dense: {units: classes, activation: softmax}")
    p.add_argument("layer", nargs="?", help="show only this layer type")
    p.set_defaults(func=run)


def run(args) -> int:
    # rich: loaded when there is something to print, not for `cnnlab --help`
    from rich.table import Table

    # torch: imported when the command runs, not for `cnnlab --help`
    from cnnlab.model.layers import LAYERS

    names = sorted(LAYERS.names())
    if args.layer:
        by_lower = {n.lower(): n for n in names}
        name = args.layer if args.layer in LAYERS else by_lower.get(args.layer.lower())  # conv2d -> Conv2D
        if name is None:
            close = LAYERS.closest(args.layer)
            hint = f" (did you mean {close!r}?)" if close else ""
            raise CnnlabError(f"unknown layer type {args.layer!r}{hint}; known: {', '.join(names)}")
        names = [name]
    out = console()
    for name in names:
        cls = LAYERS[name].build
        t = Table(title=f"{name}: {cls.doc}", title_justify="left", show_header=True)
        t.add_column("argument")
        t.add_column("default")
        t.add_column("meaning")
        for arg, default, help in cls.arguments():
            if isinstance(default, tuple):
                default = list(default)
            t.add_row(arg, str(default), help)
        out.print(t)
    return 0
