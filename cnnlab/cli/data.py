"""`cnnlab data check` and `cnnlab data preview`: look at a dataset before training on it."""

import os
import time

from cnnlab.cli._common import add_subcommand, console, print_json
from cnnlab.display import count
from cnnlab.errors import CnnlabError, DataError
from cnnlab.sizes import parse_size as numbers

EPILOG = """\
examples:
  cnnlab data check data/dogs-vs-cats             classes, sizes, bad files, duplicates
  cnnlab data check data/leaves --format json     the same for a program
  cnnlab data preview data/leaves --augment standard --out grid.png
  cnnlab data preview data/leaves --augment "flip,rotation=30,fill=reflect" --size 96

DATA is a folder of class sub-folders (DATA/cat, DATA/dog), a folder with train/ and val/
(or valid/, validation/) and/or test/ holding class sub-folders, a CSV file of path,label
rows, or a folder of files named like cat.123.jpg (labels from file names)."""

CHECK_EPILOG = """\
examples:
  cnnlab data check data/leaves
  cnnlab data check data/leaves --format json > check.json
  cnnlab data check data/kaggle-train --label-regex '^(cat|dog)\\.'
  cnnlab data check data/leaves --strict          exit code 1 when something is wrong (CI)

Every file is fully decoded, so truncated files are found; identical files are found by
hashing their bytes. JSON keys: classes (name -> count per split), bad_files
([{path, reason}]), duplicates ([[path, ...]]), warnings, sizes, modes, formats."""

PREVIEW_EPILOG = """\
examples:
  cnnlab data preview data/leaves --out grid.png
  cnnlab data preview data/leaves --augment strong --samples 8 --copies 7
  cnnlab data preview data/leaves --augment "flip,rotation=15,zoom=0.1,fill=constant" --out g.png
  cnnlab data preview data/leaves --augment none --resize letterbox --size 160x120

--augment takes a preset (none, light, standard, strong) and/or comma-separated options
with Keras ImageDataGenerator names or short ones: flip (horizontal_flip), vflip,
rotation, shift, width_shift, height_shift, shear (degrees), zoom, brightness
(0.8:1.2), fill (nearest, constant, reflect, wrap), cval, crop (random resized crop,
area 0.5:1), erasing (probability)."""

CACHE_EPILOG = """\
examples:
  cnnlab data cache                         entries, sizes, last use
  cnnlab data cache --clear --older-than 30 free what was not used for a month
  CNNLAB_CACHE=/scratch/cache cnnlab train DATA     put the cache on a bigger disk

Deleting the cache is always safe: the next run decodes the images again."""


def _dataset_args(p) -> None:
    p.add_argument("data", metavar="DATA", help="dataset folder or CSV file (see `cnnlab data --help`)")
    p.add_argument("--val-split", type=float, default=0.2, metavar="F",
                   help="fraction of each class held out for validation when there is no val/ folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split (and of the preview)")
    p.add_argument("--label-regex", metavar="RE",
                   help="take labels from file names: the regex's first group, e.g. '^([a-z]+)\\.'")


def register(sub) -> None:
    p = add_subcommand(sub, "data", "check a dataset, preview augmentation",
                       "Look at a dataset before training on it: `check` counts images per class "
                       "and split and finds unreadable files, duplicates and imbalance; `preview` "
                       "draws a grid of augmented samples.", EPILOG)
    inner = p.add_subparsers(title="data commands", metavar="ACTION")
    p.set_defaults(func=lambda args: p.print_help() or 0)

    c = add_subcommand(inner, "check", "images per class/split, bad files, duplicates, imbalance",
                       "Inspect every image of DATA: images per class and split, image sizes, modes "
                       "and formats, every unreadable file with the reason, exact duplicates (also "
                       "across train/val/test, which leaks), and warnings such as class imbalance.",
                       CHECK_EPILOG)
    _dataset_args(c)
    c.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    c.add_argument("--workers", type=int, default=0, metavar="N", help="processes that decode in parallel; 0 decodes in this process")
    c.add_argument("--strict", action="store_true", help="exit with code 1 when there are bad files or warnings")
    c.set_defaults(func=run_check)

    v = add_subcommand(inner, "preview", "a grid of augmented training samples",
                       "Draw a grid: each row one training image, first as the network gets it "
                       "without augmentation, then several random augmentations of it.",
                       PREVIEW_EPILOG)
    _dataset_args(v)
    v.add_argument("--augment", default="standard", metavar="SPEC", help="augmentation preset and/or options")
    v.add_argument("--out", default="preview.png", metavar="FILE", help="image file to write (.png, .jpg, .svg, .pdf)")
    v.add_argument("--size", default="128", metavar="HxW", help="image size the network sees, e.g. 128 or 160x120")
    v.add_argument("--resize", choices=["stretch", "crop", "letterbox"], default="stretch", help="resize policy")
    v.add_argument("--channels", type=int, choices=[1, 3], default=3, help="3 for RGB, 1 for grayscale")
    v.add_argument("--samples", type=int, default=6, metavar="N", help="rows: images to show")
    v.add_argument("--copies", type=int, default=5, metavar="N", help="augmented versions of each image")
    v.add_argument("--split", default="train", choices=["train", "val", "test"], help="split to draw from")
    v.set_defaults(func=run_preview)

    k = add_subcommand(inner, "cache", "where the decoded-image cache is, how big; --clear",
                       "Show the decode-once cache (every dataset decoded at a training size, kept "
                       "to make later epochs and runs fast) and free its disk space.", CACHE_EPILOG)
    k.add_argument("--dir", metavar="DIR", help="cache folder (default: $CNNLAB_CACHE or ~/.cache/cnnlab)")
    k.add_argument("--clear", action="store_true", help="delete the cache entries")
    k.add_argument("--older-than", type=float, metavar="DAYS", help="with --clear: only entries unused this long")
    k.set_defaults(func=run_cache)


def parse_size(text: str) -> tuple[int, int]:
    """'128' -> (128, 128); '160x120' -> (160, 120) as height x width."""
    try:
        parts = numbers(text)
    except ValueError:
        parts = ()
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise CnnlabError(f"--size must be N or HxW with positive numbers, e.g. 128 or 160x120, got {text!r}")
    return (parts[0], parts[-1])


def run_check(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.data.check import check_data

    report = check_data(args.data, val_split=args.val_split, seed=args.seed,
                        label_regex=args.label_regex, workers=args.workers)
    data = report.to_json()
    if args.format == "json":
        print_json(data)
    else:
        _print_check(data)
    return 1 if args.strict and (data["bad_files"] or data["warnings"]) else 0


def _print_check(data: dict) -> None:
    # rich: loaded when there is something to print, not for `cnnlab --help`
    from rich.table import Table

    out = console()

    def short(path: str) -> str:  # paths relative to DATA read better in a table
        rel = os.path.relpath(path, data["root"] if os.path.isdir(data["root"]) else os.path.dirname(data["root"]))
        return path if rel.startswith("..") else rel

    splits = list(next(iter(data["classes"].values())).keys()) if data["classes"] else []
    out.print(f"[b]{data['root']}[/b]  layout: {data['layout']}, {data['images']:,} readable images",
              highlight=False)
    t = Table()
    t.add_column("class")
    for s in splits:
        t.add_column(s, justify="right")
    t.add_column("total", justify="right")
    for name, counts in data["classes"].items():
        t.add_row(name, *(f"{counts[s]:,}" for s in splits), f"{sum(counts.values()):,}")
    totals = [sum(c[s] for c in data["classes"].values()) for s in splits]
    t.add_row("[b]all[/b]", *(f"[b]{n:,}[/b]" for n in totals), f"[b]{sum(totals):,}[/b]")
    out.print(t)
    sz = data["sizes"]
    out.print(f"sizes: width {sz['width']['min']}..{sz['width']['max']} (median {sz['width']['median']}), "
              f"height {sz['height']['min']}..{sz['height']['max']} (median {sz['height']['median']}); "
              f"{sz['distinct_sizes']} distinct, most common "
              + ", ".join(f"{s} ({n})" for s, n in sz["most_common_sizes"][:3]), highlight=False)
    out.print("modes: " + ", ".join(f"{m} {n:,}" for m, n in data["modes"].items())
              + "   formats: " + ", ".join(f"{f} {n:,}" for f, n in data["formats"].items()), highlight=False)
    if data["bad_files"]:
        out.print(f"[b]{len(data['bad_files'])} unreadable file(s)[/b], skipped in training:")
        b = Table()
        b.add_column("file", overflow="fold")
        b.add_column("reason", overflow="fold")
        for row in data["bad_files"][:50]:
            b.add_row(short(row["path"]), row["reason"])
        out.print(b)
        if len(data["bad_files"]) > 50:
            out.print(f"... and {len(data['bad_files']) - 50} more (see --format json)")
    if data["duplicates"]:
        out.print(f"[b]{len(data['duplicates'])} group(s) of identical files[/b]:")
        for group in data["duplicates"][:10]:
            out.print("  " + "  =  ".join(short(p) for p in group), highlight=False)
        if len(data["duplicates"]) > 10:
            out.print(f"  ... and {len(data['duplicates']) - 10} more (see --format json)")
    for w in data["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    if not data["warnings"] and not data["bad_files"]:
        out.print("[green]no problems found[/green]")


def run_preview(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.data.datasets import discover
    from cnnlab.data.preview import preview_grid

    index = discover(args.data, val_split=args.val_split, seed=args.seed, label_regex=args.label_regex)
    if args.split not in index.splits:
        raise DataError(f"{args.data}: there is no {args.split} split (found {', '.join(index.splits)})")
    out = preview_grid(index, args.out, augment=args.augment, size=parse_size(args.size),
                       channels=args.channels, resize=args.resize, samples=args.samples,
                       copies=args.copies, split=args.split, seed=args.seed)
    print(f"wrote {out}")
    return 0


def run_cache(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.data.cache import cache_entries, clear_cache, default_cache_dir

    root = args.dir or default_cache_dir()
    if args.older_than is not None and not args.clear:
        raise CnnlabError("--older-than only chooses what --clear deletes: add --clear, or leave it out to list the cache")
    if args.clear:
        n, freed = clear_cache(root, args.older_than)
        print(f"deleted {count(n, 'cache entry', 'cache entries')} from {root}, {freed / 2**20:,.1f} MiB freed")
        return 0
    entries = cache_entries(root)
    out = console()
    if not entries:
        out.print(f"{root}: the cache is empty", highlight=False)
        return 0
    # rich: loaded when there is something to print
    from rich.table import Table

    t = Table(title=f"{root}", title_justify="left")
    for col, justify in (("size HxWxC-resize", "left"), ("images", "right"), ("MiB", "right"),
                         ("last used", "right"), ("file", "left")):
        t.add_column(col, justify=justify)
    for e in sorted(entries, key=lambda e: -e["last_used"]):
        days = (time.time() - e["last_used"]) / 86400
        t.add_row(e["folder"], f"{e['images']:,}", f"{e['bytes'] / 2**20:,.1f}",
                  "today" if days < 1 else f"{days:.0f} days ago", e["file"].rsplit("/", 1)[-1])
    out.print(t)
    out.print(f"total {sum(e['bytes'] for e in entries) / 2**20:,.1f} MiB in {len(entries)} entries; "
              "`cnnlab data cache --clear` deletes them", highlight=False)
    return 0
