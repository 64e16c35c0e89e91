"""`cnnlab evaluate`: accuracy, per-class metrics, confusion matrix, ROC-AUC, top losses."""

from cnnlab.cli._common import (
    add_keras_options,
    add_precision_option,
    add_subcommand,
    console,
    model_source,
    print_json,
)
from cnnlab.display import count
from cnnlab.errors import CnnlabError

EPILOG = """\
examples:
  cnnlab evaluate runs/cats                 the test split saved with the run, best weights
  cnnlab evaluate runs/cats --split val     the validation split
  cnnlab evaluate runs/cats --weights last --tta
  cnnlab evaluate runs/cats --data ~/new_photos     any labelled folder (class sub-folders)
  cnnlab evaluate runs/cats --format json | jq .accuracy
  cnnlab evaluate model.h5 --data data/test      a Keras model file (.keras, .h5) or a .safetensors
  cnnlab evaluate model.keras --data photos --rescale 1 --classes cat,dog

Written to RUN/eval/<split>/ (with --data DIR: RUN/eval/<DIR's name>/, or <DIR's name>-<split>
when DIR has train/val/test sub-folders, or <parent>-<DIR's name> when DIR is itself one, as
data/test -> data-test; for a model file MODEL: MODEL-eval/<DIR's name>/ beside it):
  metrics.json                     accuracy, top-k accuracy, per_class {precision, recall, f1,
                                   support}, macro_avg, weighted_avg, confusion_matrix (rows =
                                   true class, in `classes` order), roc_auc, most_confused
  predictions.csv                  one row per image: true, predicted, confidence, loss, p_<class>
  confusion_matrix.png, confusion_matrix_normalized.png, top_losses.png
and RUN/report.html is refreshed.

--tta (test-time augmentation) averages the probabilities of each image and of its
horizontal mirror image: often a little more accurate, twice the compute;
--tta-mode flip+translate also shifts by one pixel (6 views, 6x the compute). With --data,
the folder's class names are matched to the model's; images of other classes are left
out and named."""


def register(sub) -> None:
    p = add_subcommand(sub, "evaluate", "metrics, confusion matrix and top losses of a trained run",
                       "Evaluate a trained run's model on labelled images: accuracy, top-k accuracy, "
                       "per-class precision / recall / F1 / support, macro and weighted averages, "
                       "the confusion matrix (counts and normalised), ROC-AUC (binary, or "
                       "one-vs-rest per class), the most confused class pairs and the top losses.",
                       EPILOG)
    p.add_argument("run", metavar="RUN_OR_MODEL",
                   help="a run directory written by `cnnlab train` (runs/NAME), or a model file: "
                        ".safetensors, or Keras .keras / .h5 (then --data is needed)")
    p.add_argument("--data", metavar="DIR",
                   help="evaluate on this labelled folder (or CSV) instead of the run's own split")
    p.add_argument("--split", choices=["test", "val", "train"], default="test",
                   help="which split of the run (or of a --data folder with train/val/test sub-folders)")
    p.add_argument("--weights", default="best", metavar="best|last|FILE",
                   help="the run's best or last weights, or a .safetensors file")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average each image with its horizontal flip")
    p.add_argument("--tta-mode", choices=["flip", "flip+translate"], default=None,
                   help="which TTA (implies --tta): flip+translate adds 1-pixel shifts, 6 views "
                        "(for small images such as CIFAR's)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add_precision_option(p)
    p.add_argument("--out", metavar="DIR", help="folder for the files (default: RUN/eval/SPLIT, or "
                                                "MODEL-eval/ beside a model file); RUN/report.html is then left as it is")
    p.add_argument("--no-report", action="store_true", help="do not refresh RUN/report.html")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    add_keras_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.eval.evaluate import evaluate_run

    if args.batch_size < 1:
        raise CnnlabError(f"--batch-size must be at least 1, got {args.batch_size}")
    # torch: imported when the command runs, not for `cnnlab --help`
    from cnnlab.eval.evaluate import data_classes

    run = model_source(args, data_classes=data_classes(args.data) if args.data else None)
    m = evaluate_run(run, args.split, args.weights, args.data, args.tta_mode or args.tta,
                     batch_size=args.batch_size,
                     device=args.device, report=not args.no_report, precision=args.precision, out=args.out)
    if args.format == "json":
        print_json(m)
        return 0
    show(m, args)
    return 0


def show(m: dict, args) -> None:
    """The metrics as a person reads them: headline, per-class table, confusions, files."""
    # rich: loaded when there is something to print, not for `cnnlab --help`
    from rich.table import Table

    out = console()
    auc = m["roc_auc"]
    source = f"{m['split']} split" if not m["data"] else f"{m['data']}, {m['split']} images"
    head = [f"accuracy {m['accuracy']:.2%}"]
    head += [f"top-{k} {v:.2%}" for k, v in m["top_k_accuracy"].items()]
    head += [f"macro F1 {m['macro_avg']['f1']:.3f}"]
    if auc["macro"] is not None:
        head += [f"ROC-AUC {auc['macro']:.3f} ({auc['method']})"]
    head += [f"loss {m['loss']:.4f}"]
    out.print(f"[bold]{count(m['n_images'], 'image')}[/] ({source}, {m['weights']} weights"
              f"{', TTA ' + m['tta_mode'] if m['tta'] else ''}, {m['inference_precision']}): " + " · ".join(head),
              highlight=False)

    t = Table(title_justify="left")
    for col, just in [("class", "left"), ("precision", "right"), ("recall", "right"), ("f1", "right"),
                      ("support", "right"), ("ROC-AUC", "right")]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for c in m["classes"]:
        pc = m["per_class"][c]
        t.add_row(c, fmt(pc["precision"]), fmt(pc["recall"]), fmt(pc["f1"]), str(pc["support"]),
                  fmt(auc["per_class"].get(c)))
    for label, key, auc_key in (("macro avg", "macro_avg", "macro"), ("weighted avg", "weighted_avg", "weighted")):
        a = m[key]
        t.add_row(label, fmt(a["precision"]), fmt(a["recall"]), fmt(a["f1"]), str(a["support"]), fmt(auc[auc_key]),
                  style="bold")
    out.print(t)
    if m["most_confused"]:
        pairs = ", ".join(f"{p['true']} -> {p['predicted']} ({p['count']})" for p in m["most_confused"][:5])
        out.print(f"most confused (true -> predicted): {pairs}", highlight=False)
    if m["unreadable"]:
        out.print(f"[yellow]{len(m['unreadable'])} image(s) could not be read and were left out "
                  f"(listed in metrics.json); first: {m['unreadable'][0]['path']}: {m['unreadable'][0]['error']}[/]",
                  highlight=False)
    if m["unknown_classes"]:
        names = ", ".join(f"{k} ({v} images)" for k, v in m["unknown_classes"].items())
        out.print(f"[yellow]left out, classes the model does not know: {names}[/]", highlight=False)
    out.print(f"written: {m['eval_dir']}/ (metrics.json, predictions.csv, confusion matrices, top_losses.png)"
              + (f"; report: {m['report']}" if m.get("report") else ""), highlight=False)
