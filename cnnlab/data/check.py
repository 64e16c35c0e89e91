"""``cnnlab data check``: what is in a dataset, and what is wrong with it, before training.

Every file is opened and fully decoded once (so truncated files are found), hashed (so
byte-identical copies are found, also across train/val/test, where they inflate the
validation score), and its size, mode and format are tallied. The result is a
:class:`CheckReport`; ``to_json()`` has the keys ``classes`` (name -> count per split),
``bad_files`` ([{path, reason}]), ``duplicates`` ([[path, ...]]) and ``warnings``, plus
``sizes``, ``modes``, ``formats``, ``ignored`` and ``layout``.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.datasets import DataIndex, discover
from cnnlab.data.decode import BadImage, check_regular_file, load_image, open_image
from cnnlab.data.parallel import chunked_map, progress_bar

IMBALANCE_RATIO = 2.0  # warn when the largest class has this many times the smallest's images
FEW_IMAGES = 10  # warn when a class has fewer training images than this


@dataclass
class FileInfo:
    """What ``inspect_file`` learns about one file."""

    path: str
    digest: str = ""  # blake2b of the bytes
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    reason: str | None = None  # why it cannot be used, or None


def inspect_file(path: str) -> FileInfo:
    """Hash, identify and fully decode one file (the decode is the only sure test)."""
    info = FileInfo(path)
    try:
        check_regular_file(path)  # a pipe would block the hashing below forever
        with open(path, "rb") as f:
            info.digest = hashlib.file_digest(f, "blake2b").hexdigest()[:32]
        with open_image(path) as im:
            (info.width, info.height), info.mode, info.format = im.size, im.mode, im.format or "?"
        load_image(path, (32, 32))  # a JPEG is decoded at 1/8 scale: fast, and still reads every byte
    except BadImage as e:
        info.reason = e.reason
    except OSError as e:
        info.reason = f"cannot read: {e.strerror or e}"
    except Exception as e:  # a decoder bug on one file is reported, not fatal
        info.reason = f"cannot decode: {e.__class__.__name__}: {e}"
    return info


@dataclass
class CheckReport:
    index: DataIndex
    files: dict[str, FileInfo]
    split_of: dict[str, list[str]] = field(default_factory=dict)  # path -> splits it is in

    @property
    def bad_files(self) -> list[dict[str, str]]:
        return [{"path": p, "reason": f.reason} for p, f in sorted(self.files.items()) if f.reason]

    def counts(self) -> dict[str, dict[str, int]]:
        """{class: {split: usable images}} (bad files not counted)."""
        out = {c: {s: 0 for s in self.index.splits} for c in self.index.classes}
        for split, items in self.index.splits.items():
            for path, label in items:
                if not self.files[path].reason:
                    out[self.index.classes[label]][split] += 1
        return out

    def duplicates(self) -> list[list[str]]:
        """Groups of byte-identical files (two or more paths each), largest first."""
        groups = defaultdict(list)
        for p, f in self.files.items():
            if f.digest:
                groups[f.digest].append(p)
        return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g))

    def stats(self) -> dict[str, Any]:
        good = [f for f in self.files.values() if not f.reason]
        sizes = Counter(f"{f.width}x{f.height}" for f in good)
        w = np.array([f.width for f in good] or [0])
        h = np.array([f.height for f in good] or [0])
        return {
            "images": len(good),
            "width": {"min": int(w.min()), "median": int(np.median(w)), "max": int(w.max())},
            "height": {"min": int(h.min()), "median": int(np.median(h)), "max": int(h.max())},
            "most_common_sizes": [[s, n] for s, n in sizes.most_common(5)],
            "distinct_sizes": len(sizes),
            "modes": dict(Counter(f.mode for f in good).most_common()),
            "formats": dict(Counter(f.format for f in good).most_common()),
        }

    def warnings(self) -> list[str]:
        out = []
        counts = self.counts()
        train = {c: n["train"] for c, n in counts.items()}
        lo, hi = min(train, key=train.get), max(train, key=train.get)
        for folder in self.index.empty_class_folders:
            out.append(f"{folder}: a class folder with no images (training refuses it; add images or remove it)")
        if train[lo] == 0:
            out.append(f"class {lo!r} has no usable training images (training refuses it)")
        elif train[hi] / train[lo] >= IMBALANCE_RATIO:
            out.append(f"class imbalance: {hi!r} has {train[hi]} training images, {lo!r} only {train[lo]} "
                       f"({train[hi] / train[lo]:.1f}x); consider `cnnlab train --class-weights` or `--balanced`")
        few = [c for c, n in train.items() if 0 < n < FEW_IMAGES]
        if few:
            out.append(f"{len(few)} class(es) have fewer than {FEW_IMAGES} training images: {', '.join(few[:5])}")
        for split in [s for s in self.index.splits if s != "train"]:
            missing = [c for c, n in counts.items() if n[split] == 0]
            if missing:
                out.append(f"no {split} images for class(es): {', '.join(missing[:5])}")
        dups = self.duplicates()
        leaks = [g for g in dups if len({s for p in g for s in self.split_of[p]}) > 1]
        if leaks:
            out.append(f"{len(leaks)} group(s) of identical images appear in more than one split "
                       "(train/val/test leak): the validation score will be too optimistic")
        label_of = {p: y for items in self.index.splits.values() for p, y in items}
        conflicts = [g for g in dups if len({label_of[p] for p in g}) > 1]
        if conflicts:
            out.append(f"{len(conflicts)} group(s) of identical images carry different labels")
        if dups and not leaks:
            out.append(f"{sum(len(g) - 1 for g in dups)} exact duplicate image(s) within a split")
        if self.bad_files:
            out.append(f"{len(self.bad_files)} file(s) cannot be read and will be skipped in training")
        modes = self.stats()["modes"]
        gray = sum(n for m, n in modes.items() if m in ("L", "LA", "1", "I", "I;16", "F"))
        if 0 < gray < sum(modes.values()):
            out.append(f"{gray} grayscale image(s) among colour ones; they are converted to RGB")
        ignored = sum(self.index.ignored.values())
        if ignored:
            out.append(f"{ignored} file(s) ignored: " + ", ".join(f"{n} {k.replace('_', ' ')}"
                                                                  for k, n in self.index.ignored.items()))
        return out

    def to_json(self) -> dict[str, Any]:
        s = self.stats()
        return {
            "root": self.index.root,
            "layout": self.index.layout,
            "classes": self.counts(),
            "bad_files": self.bad_files,
            "duplicates": self.duplicates(),
            "warnings": self.warnings(),
            "images": s["images"],
            "sizes": {k: s[k] for k in ("width", "height", "most_common_sizes", "distinct_sizes")},
            "modes": s["modes"],
            "formats": s["formats"],
            "ignored": dict(self.index.ignored),
        }


def check_data(data: str | Path, *, val_split: float = 0.2, seed: int = 0, label_regex: str | None = None,
               workers: int = 0, progress: bool | None = None) -> CheckReport:
    """Inspect every file of the dataset at ``data``; see the module docstring."""
    index = discover(data, val_split=val_split, seed=seed, label_regex=label_regex)
    split_of: dict[str, list[str]] = defaultdict(list)
    for split, items in index.splits.items():
        for p, _ in items:
            split_of[p].append(split)
    paths = sorted(split_of)
    files: dict[str, FileInfo] = {}
    with progress_bar(len(paths), progress, "checking images") as advance:
        for _, infos in chunked_map(inspect_file, paths, workers, 32):
            files.update({f.path: f for f in infos})
            advance(len(infos))
    return CheckReport(index, files, dict(split_of))
