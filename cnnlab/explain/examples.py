"""Which images the explainer offers: the run's own test (or val) images, a few per class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.data.decode import BadImage
from cnnlab.errors import CnnlabError
from cnnlab.explain.payload import png_data_url

SPLITS = ("test", "val", "train")  # the first split the run has is used


def example_files(run, per_class: int = 3) -> list[dict[str, Any]]:
    """Up to ``per_class`` readable-looking files of each class, from the run's split.json.

    Returns [{"id", "path", "label", "split"}]; files that have since disappeared are skipped.
    """
    split = run.split()
    classes = run.classes
    for name in SPLITS:
        items = split.get(name) or []
        if not items:
            continue
        picked: list[dict[str, Any]] = []
        counts: dict[int, int] = {}
        for path, label in items:
            if counts.get(label, 0) >= per_class or not Path(path).is_file():
                continue
            counts[label] = counts.get(label, 0) + 1
            picked.append({"id": len(picked), "path": str(path), "split": name,
                           "label": classes[label] if 0 <= label < len(classes) else str(label)})
        if picked:
            return picked
    return []


def with_thumbnails(examples: list[dict[str, Any]], preprocessor) -> list[dict[str, Any]]:
    """The examples the page can show: each with a PNG thumbnail at the model's size.

    Files that cannot be decoded are left out (the page only offers what works).
    """
    out = []
    for ex in examples:
        try:
            thumb = png_data_url(preprocessor.load_uint8(ex["path"]))
        except BadImage:
            continue
        out.append({"id": ex["id"], "name": Path(ex["path"]).name, "label": ex["label"],
                    "split": ex["split"], "png": thumb})
    return out


def default_image(run) -> Path:
    """The image shown when the user names none: the first example of the run's split."""
    examples = example_files(run, per_class=1)
    if not examples and getattr(run, "is_file", False):
        raise CnnlabError(f"{run.path}: a model file has no images of its own; name one with --image")
    if not examples:
        raise CnnlabError(f"{run.path}: its split.json lists no image that still exists; "
                          "name one with --image")
    return Path(examples[0]["path"])
