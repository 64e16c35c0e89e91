"""`cnnlab explain`: CNN Explainer for your own model, as one HTML file or a local server."""

from pathlib import Path

from cnnlab.cli._common import add_keras_options, add_subcommand, model_source
from cnnlab.errors import CnnlabError

EPILOG = """\
examples:
  cnnlab explain runs/NAME                       page for the run's first test image
  cnnlab explain runs/NAME --image cat.jpg --out cat.html
  cnnlab explain runs/NAME --serve               http://127.0.0.1:8000: upload images, pick examples
  cnnlab explain runs/NAME --serve --port 8080 --max-upload-mb 5
  cnnlab explain model.h5 --image cat.jpg --classes cat,dog     a Keras model (.keras, .h5)
  cnnlab explain model.keras --serve --image cat.jpg

The page shows every layer's output for the image, channel by channel, and the class
probabilities. Click a pixel of any heat map to see the arithmetic of that neuron: the
input patch, the kernel, the products, their sum plus the bias and the activation, checked
against the model's own value. It also works for max-pooling windows, Dense units and the
softmax, and has a playground for output sizes. The file needs no network: open it
anywhere, send it to anyone."""


SERVER_DEFAULTS = {"host": "127.0.0.1", "port": 8000, "max_upload_mb": 10}  # of --serve's options


def register(sub) -> None:
    p = add_subcommand(sub, "explain", "interactive page: see your CNN compute, neuron by neuron",
                       "Write an interactive, self-contained HTML page that shows a trained run's "
                       "model at work on one image (CNN Explainer style, for your own model), or "
                       "serve it locally so that you can upload other images.",
                       EPILOG)
    p.add_argument("run", metavar="RUN", help="a run directory written by `cnnlab train`, or a model file "
                                              "(.safetensors, Keras .keras/.h5; then --image is needed)")
    p.add_argument("--image", metavar="IMG",
                   help="the image to explain (default: the first image of the run's test split)")
    p.add_argument("--weights", default="best", metavar="best|last|PATH",
                   help="which weights of the run")
    p.add_argument("--out", metavar="HTML", help="where to write the page (default: RUN/explainer.html; "
                                                 "for a model file MODEL: MODEL-explainer.html beside it)")
    p.add_argument("--serve", action="store_true",
                   help="serve the page on a local web server instead of writing a file")
    # default None, so that one given without --serve is noticed; SERVER_DEFAULTS fill them in
    p.add_argument("--host", default=None, help="address to bind with --serve; 0.0.0.0 opens it to your "
                                                f"network (default: {SERVER_DEFAULTS['host']})")
    p.add_argument("--port", type=int, default=None,
                   help=f"port for --serve; 0 picks a free one (default: {SERVER_DEFAULTS['port']})")
    p.add_argument("--max-upload-mb", type=float, default=None, metavar="MB",
                   help=f"largest image upload --serve accepts (default: {SERVER_DEFAULTS['max_upload_mb']})")
    add_keras_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.explain import Explainer

    if args.image is not None and not Path(args.image).is_file():
        raise CnnlabError(f"{args.image}: no such image file")
    server_options = [f"--{name.replace('_', '-')}" for name in SERVER_DEFAULTS if getattr(args, name) is not None]
    if server_options and not args.serve:
        one = len(server_options) == 1
        raise CnnlabError(f"{' and '.join(server_options)} only appl{'ies' if one else 'y'} to the local server: "
                          f"add --serve, or leave {'it' if one else 'them'} out to write an HTML file")
    if args.serve and args.out:
        raise CnnlabError("--out writes a file and --serve serves the page: choose one")
    if args.out and Path(args.out).suffix.lower() not in (".html", ".htm"):
        raise CnnlabError(f"--out {args.out}: the explainer is an HTML page: give a file name ending in .html")
    for name, default in SERVER_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not 0 < args.max_upload_mb <= 1024:
        raise CnnlabError(f"--max-upload-mb must be between 0 and 1024, got {args.max_upload_mb:g}")

    explainer = Explainer(model_source(args), args.weights)
    if args.serve:
        try:
            import fastapi  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            raise CnnlabError("--serve needs fastapi and uvicorn: pip install 'cnnlab[serve]'") from None
        # fastapi and uvicorn: the optional [serve] extra
        from cnnlab.explain.server import serve

        serve(explainer, host=args.host, port=args.port, image=args.image,
              max_upload_mb=args.max_upload_mb)
        return 0
    source = explainer.run.path
    default = (source.with_name(f"{source.stem}-explainer.html") if getattr(explainer.run, "is_file", False)
               else source / "explainer.html")
    out = Path(args.out) if args.out else default
    path = explainer.export(out, image=args.image)
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB): open it in any browser, no network needed")
    return 0
