"""Find the labelled images in what the user points at, and split them.

``discover(DATA)`` recognises four layouts, in this order:

=================  ==========================================================================
``csv``            ``DATA`` is a ``.csv`` file of ``path,label`` rows (a header row is optional;
                   an optional third column ``split`` = train/val/test fixes the split).
                   Relative paths are resolved against the CSV's folder.
``split-folders``  ``DATA/train/<class>/*`` with ``val/`` (or ``valid/``, ``validation/``)
                   and/or ``test/`` beside it: the Keras and Kaggle layout.
``folders``        ``DATA/<class>/*``: one sub-folder per class (PlantVillage).
``regex``          ``DATA/*`` with the label in the file name, e.g. Kaggle's ``cat.123.jpg``;
                   used when ``label_regex`` is given, or when the folder has images but no
                   class sub-folders (the default pattern takes the leading letters).
=================  ==========================================================================

When no validation split is on disk, it is drawn from the training images: stratified
(each class keeps its proportion), seeded, and saved with the run as ``split.json`` (that
file *is* :meth:`DataIndex.to_json`), so the split can always be reproduced.

Class names are sorted, so label ``i`` is ``classes[i]`` on every machine. Hidden files and
folders (``.DS_Store``, ``.ipynb_checkpoints``) and files that are not images are skipped
and counted in ``DataIndex.ignored``.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.decode import IMAGE_EXTENSIONS
from cnnlab.errors import DataError

LAYOUTS = ("folders", "split-folders", "csv", "regex")
VAL_NAMES = ("val", "valid", "validation")
# Kaggle's "cat.123.jpg", "dog_7.png", "Tomato-healthy 3.jpg": the leading run of letters.
DEFAULT_LABEL_REGEX = r"^([^\W\d_]+)"
Item = tuple[str, int]


@dataclass
class DataIndex:
    """Every usable image file with its label, per split; this is a run's ``split.json``."""

    root: str
    layout: str  # "folders" | "split-folders" | "csv" | "regex"
    classes: list[str]  # sorted; label i is classes[i]
    splits: dict[str, list[Item]]  # "train", "val" and, when present, "test"
    ignored: dict[str, int] = field(default_factory=dict)  # e.g. {"hidden": 2, "not_image": 3}
    val_split: float | None = None  # the fraction drawn from train, or None when val is on disk
    seed: int | None = None
    # training class folders that hold no image: not classes (no label can be learned from
    # nothing); training refuses them, `cnnlab data check` warns. Not saved in split.json.
    empty_class_folders: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """{class name: {split: number of images}}."""
        out = {c: {s: 0 for s in self.splits} for c in self.classes}
        for split, items in self.splits.items():
            for _, label in items:
                out[self.classes[label]][split] += 1
        return out

    def with_val_split(self, fraction: float) -> "DataIndex":
        """The same files with "val" drawn from "train" again at ``fraction`` -- what
        :func:`discover` gives at that ``val_split`` (the draw depends only on the sorted files,
        their labels, the fraction and the seed). An index whose val is on disk stays as it is."""
        if self.val_split is None:
            return self
        pool = sorted(self.splits["train"] + list(self.splits.get("val") or []))
        tr, va = stratified_split([y for _, y in pool], fraction, self.seed)
        splits = {**self.splits, "train": [pool[i] for i in tr], "val": [pool[i] for i in va]}
        order = [s for s in ("train", "val", "test") if s in splits]
        return replace(self, splits={s: splits[s] for s in order}, val_split=fraction)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "layout": self.layout,
            "classes": list(self.classes),
            "splits": {s: [[p, int(y)] for p, y in items] for s, items in self.splits.items()},
            "ignored": dict(self.ignored),
            "val_split": self.val_split,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "DataIndex":
        """Read :meth:`to_json`'s dict (or a bare ``{split: [[path, label], ...]}``)."""
        if "splits" not in d:  # the bare form: only the splits
            splits = {s: [(str(p), int(y)) for p, y in items] for s, items in d.items()}
            n = 1 + max((y for items in splits.values() for _, y in items), default=-1)
            return cls("", "csv", [str(i) for i in range(n)], splits)
        return cls(
            root=d["root"],
            layout=d["layout"],
            classes=list(d["classes"]),
            splits={s: [(str(p), int(y)) for p, y in items] for s, items in d["splits"].items()},
            ignored=dict(d.get("ignored", {})),
            val_split=d.get("val_split"),
            seed=d.get("seed"),
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(v)}" for s, v in self.splits.items())
        return f"DataIndex({self.layout!r}, {len(self.classes)} classes, {sizes}, root={self.root!r})"


def discover(
    data: str | Path,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    label_regex: str | None = None,
    min_classes: int = 2,
) -> DataIndex:
    """Index the images of ``data`` (a folder or a ``.csv`` file); see the module docstring.

    ``val_split`` is the fraction of each class moved to "val" when no validation folder
    (or CSV split column) exists; ``seed`` makes that draw reproducible. ``label_regex``
    takes the class from a file name: its first group (or the group named ``label``).
    ``min_classes``: training needs two; evaluating a model on one class's images needs one.
    """
    path = Path(data).expanduser()
    if not 0.0 <= val_split < 1.0:
        raise DataError(f"--val-split must be at least 0 and below 1, got {val_split}")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path}: expected a folder of images or a .csv file of path,label rows")
        return _from_csv(path, val_split, seed, min_classes)
    train_dir = _child(path, ("train",))
    if train_dir is not None:
        return _from_split_folders(path, train_dir, label_regex, val_split, seed, min_classes)
    ignored: Counter = Counter()
    if label_regex is None and _class_dirs(path):
        empty: list[str] = []
        named = _scan_class_dirs(path, ignored, empty)
        return _finish(path, "folders", {"train": named}, ignored, val_split, seed, min_classes, empty)
    named = _scan_regex(path, label_regex, ignored)
    return _finish(path, "regex", {"train": named}, ignored, val_split, seed, min_classes)


# ---------------------------------------------------------------------------- folders


def _child(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first sub-folder of root whose name (any case) is in names."""
    lower = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    return next((lower[n] for n in names if n in lower), None)


def _class_dirs(root: Path) -> list[Path]:
    """Visible sub-folders of root, sorted by name."""
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _walk_images(folder: Path, ignored: Counter) -> list[Path]:
    """Image files under folder (recursively, sorted), counting what is skipped.

    Linked folders are followed, each real folder once: a link back to a folder that
    contains it (a symlink loop such as ``cat/again -> ..``) or to one already walked is
    skipped and counted as ``symlink_loop``.
    """
    found = []
    walked: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = Path(os.path.realpath(dirpath))
        walked.add(str(real))
        hidden_dirs = [d for d in dirnames if d.startswith(".") or d == "__MACOSX"]
        for d in hidden_dirs:
            ignored["hidden"] += sum(len(f) for _, _, f in os.walk(Path(dirpath, d)))
            dirnames.remove(d)
        for d in [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            target = os.path.realpath(os.path.join(dirpath, d))
            if target in walked or real.is_relative_to(target):
                ignored["symlink_loop"] += 1
                dirnames.remove(d)
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                ignored["hidden"] += 1
            elif Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                ignored["not_image"] += 1
            else:
                found.append(Path(dirpath, name))
    return found


def _resolver():
    """A function giving a file's absolute path with links resolved (a broken link stays as
    its target, a loop as it is, to be reported).

    One ``lstat`` per file and one ``realpath`` per folder, remembered for this scan; a link is
    followed with ``readlink`` from its folder's real path. ``Path.resolve`` on each file took
    a noticeable part of a short job's start-up, most of all for a folder of links such as the
    peers harness's subset, where it walks every component of every target (benchmarks/log/2026-12-02.md).
    """
    real_dirs: dict[str, str] = {}

    def real_dir(folder: str) -> str:
        if folder not in real_dirs:
            real_dirs[folder] = os.path.realpath(folder)
        return real_dirs[folder]

    def resolved(f: Path) -> str:
        path = str(f)
        for _ in range(40):  # the kernel's own limit on a chain of links
            if not os.path.islink(path):
                return os.path.join(real_dir(os.path.dirname(path)), os.path.basename(path))
            try:
                path = os.path.join(real_dir(os.path.dirname(path)), os.readlink(path))
            except OSError:
                break
        return str(f.absolute())  # a loop (or an unreadable link)

    return resolved


def _scan_class_dirs(root: Path, ignored: Counter, empty: list[str] | None = None) -> list[tuple[str, str]]:
    """[(path, class name)] for root/<class>/**; loose files in root itself are counted, and
    class folders without an image are added to ``empty``."""
    for p in root.iterdir():
        if p.is_file():
            ignored["hidden" if p.name.startswith(".") else "outside_class_folder"] += 1
    resolved = _resolver()
    named = []
    for d in _class_dirs(root):
        files = _walk_images(d, ignored)
        if not files and empty is not None:
            empty.append(str(d))
        named += [(resolved(f), d.name) for f in files]
    return named


def _scan(folder: Path, label_regex: str | None, ignored: Counter,
          empty: list[str] | None = None) -> list[tuple[str, str]]:
    """Class sub-folders, or labels from file names when there are none (or a regex is given)."""
    if label_regex is None and _class_dirs(folder):
        return _scan_class_dirs(folder, ignored, empty)
    return _scan_regex(folder, label_regex, ignored)


def _from_split_folders(root: Path, train_dir: Path, label_regex: str | None, val_split: float,
                        seed: int, min_classes: int = 2) -> DataIndex:
    ignored: Counter = Counter()
    empty: list[str] = []
    named = {"train": _scan(train_dir, label_regex, ignored, empty)}
    val_dir = _child(root, VAL_NAMES)
    test_dir = _child(root, ("test",))
    if val_dir is not None:
        named["val"] = _scan(val_dir, label_regex, ignored)
    if test_dir is not None:
        named["test"] = _scan(test_dir, label_regex, ignored)
    train_classes = {c for _, c in named["train"]}
    for split, folder in (("val", val_dir), ("test", test_dir)):
        extra = sorted({c for _, c in named.get(split, [])} - train_classes)
        if extra:
            raise DataError(f"{folder}: class {extra[0]!r} has no training images in {train_dir}")
    return _finish(root, "split-folders", named, ignored, val_split, seed, min_classes, empty)


# ---------------------------------------------------------------------------- regex


def _scan_regex(root: Path, label_regex: str | None, ignored: Counter) -> list[tuple[str, str]]:
    """[(path, label)] for the images under root whose file name matches the pattern."""
    pattern = label_regex or DEFAULT_LABEL_REGEX
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise DataError(f"--label-regex {pattern!r} is not a valid regular expression: {e}") from None
    if rx.groups < 1:
        raise DataError(f"--label-regex {pattern!r} needs a group around the label, e.g. '^([a-z]+)\\.'")
    named = []
    unmatched: list[str] = []
    resolved = _resolver()
    for f in _walk_images(root, ignored):
        m = rx.search(f.name)
        label = (m.groupdict().get("label") or m.group(1)) if m else None
        if label:
            named.append((resolved(f), label))
        else:
            ignored["no_label"] += 1
            unmatched.append(f.name)
    if label_regex is not None and unmatched and not named:
        raise DataError(f"--label-regex {pattern!r} matched none of the {len(unmatched)} image names in {root} "
                        f"(for example {min(unmatched)!r}): its first group must capture the label")
    if label_regex is None and named and len({c for _, c in named}) < 2:
        raise DataError(f"{root}: no class sub-folders, and file names give no labels; "
                        "put each class in its own folder or pass --label-regex")
    return named


# ---------------------------------------------------------------------------- csv


def _from_csv(path: Path, val_split: float, seed: int, min_classes: int = 2) -> DataIndex:
    base = path.parent.resolve()
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read the CSV file ({e})") from None
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image", "file_path"):
        rows = rows[1:]
    named: dict[str, list[tuple[str, str]]] = {}
    ignored: Counter = Counter()
    for line, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[1].strip():
            raise DataError(f"{path}: row {line} needs a path and a label, got {','.join(row)!r}")
        file = Path(row[0].strip()).expanduser()
        file = file if file.is_absolute() else base / file
        split = row[2].strip().lower() if len(row) > 2 and row[2].strip() else "train"
        split = "val" if split in VAL_NAMES else split
        if split not in ("train", "val", "test"):
            raise DataError(f"{path}: row {line} has split {row[2]!r}; use train, val or test")
        if file.name.startswith("."):
            ignored["hidden"] += 1
        elif file.suffix.lower() not in IMAGE_EXTENSIONS:
            ignored["not_image"] += 1
        elif not file.is_file():
            ignored["missing"] += 1
        else:
            named.setdefault(split, []).append((str(file.resolve()), row[1].strip()))
    if "train" not in named:
        raise DataError(f"{path}: no training images listed (or none of the listed files exist)")
    return _finish(path.resolve(), "csv", named, ignored, val_split, seed, min_classes)


# ---------------------------------------------------------------------------- split


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Positions for (train, val): each class gives round(fraction * n) of its items to val.

    A class with at least 2 items always keeps one on each side. The draw depends only on
    (labels, fraction, seed).
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    train, val = [], []
    for y in sorted(by_class):
        idx = by_class[y]
        k = int(round(fraction * len(idx)))
        if fraction > 0 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        chosen = set(rng.permutation(len(idx))[:k].tolist())
        for j, i in enumerate(idx):
            (val if j in chosen else train).append(i)
    return sorted(train), sorted(val)


# What the scan skipped, in words (the keys of DataIndex.ignored).
_IGNORED_WORDS = {"hidden": "hidden", "not_image": "non-image", "no_label": "unlabelled",
                  "outside_class_folder": "outside the class folders", "symlink_loop": "looping links",
                  "missing": "missing"}


def _finish(root: Path, layout: str, named: dict[str, list[tuple[str, str]]], ignored: Counter,
            val_split: float, seed: int, min_classes: int = 2, empty: list[str] | None = None) -> DataIndex:
    """Named items -> labelled splits; draws "val" from "train" when it is not on disk."""
    classes = sorted({c for items in named.values() for _, c in items})
    if not classes:
        if ignored.get("no_label"):  # images, but no class folders and no label in their names
            raise DataError(f"{root}: {ignored['no_label']} images but no class: they are not in class "
                            "sub-folders and their names carry no label; point at the folder that holds "
                            "one sub-folder per class (DATA/cat/, DATA/dog/), or give --label-regex")
        skipped = ", ".join(f"{v} {_IGNORED_WORDS.get(k, k.replace('_', ' '))}" for k, v in sorted(ignored.items()))
        raise DataError(f"{root}: no images found ({skipped or 'it is empty'})")
    if len(classes) < min_classes:
        if empty:  # the other class folders hold no images
            raise DataError(f"{root}: only one class ({classes[0]!r}) has images; {empty[0]} is an empty class "
                            f"folder: add images of {Path(empty[0]).name!r} (a classifier needs at least two classes)")
        csvs = sorted(root.glob("*.csv")) if root.is_dir() else []
        hint = f"; to take the labels from {csvs[0]}, give that file as DATA" if csvs else ""
        raise DataError(f"{root}: only one class ({classes[0]!r}) found; a classifier needs at least two{hint}")
    label_of = {c: i for i, c in enumerate(classes)}
    splits = {s: sorted((p, label_of[c]) for p, c in items) for s, items in named.items()}
    drawn = None
    if "val" not in splits:
        train = splits["train"]
        tr, va = stratified_split([y for _, y in train], val_split, seed)
        splits["train"], splits["val"] = [train[i] for i in tr], [train[i] for i in va]
        drawn = val_split
    order = [s for s in ("train", "val", "test") if s in splits]
    return DataIndex(str(root.resolve()), layout, classes, {s: splits[s] for s in order},
                     dict(sorted(ignored.items())), drawn, seed if drawn is not None else None,
                     list(empty or []))
