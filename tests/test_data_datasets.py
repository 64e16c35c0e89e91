"""Dataset layouts: class folders, train/val/test folders, CSV, labels from file names."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.datasets import DataIndex, discover, stratified_split
from cnnlab.errors import DataError
from imagegen import make_image_folder, make_split_folder


def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def test_class_folders_split_stratified_seeded_and_ignores_junk(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("vbar", "hbar", "cross"), n=10, size=(8, 8))
    (root / "hbar" / ".DS_Store").write_bytes(b"x")
    (root / "hbar" / "readme.txt").write_text("notes")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "vbar" / "._vbar_000.png").write_bytes(b"mac resource fork")

    idx = discover(root, val_split=0.3, seed=1)
    assert idx.layout == "folders"
    assert idx.classes == ["cross", "hbar", "vbar"]  # sorted, whatever the disk order
    assert idx.ignored == {"hidden": 2, "not_image": 1}
    assert idx.counts() == {c: {"train": 7, "val": 3} for c in idx.classes}
    for path, label in idx.splits["train"] + idx.splits["val"]:
        assert os.path.basename(os.path.dirname(path)) == idx.classes[label]
    train = {p for p, _ in idx.splits["train"]}
    assert not train & {p for p, _ in idx.splits["val"]}
    # Same seed -> same split; another seed -> another split.
    assert discover(root, val_split=0.3, seed=1).splits == idx.splits
    assert discover(root, val_split=0.3, seed=2).splits["val"] != idx.splits["val"]


def test_split_folders_with_each_val_name_and_test(tmp_path):
    for name in ("val", "valid", "validation"):
        root = make_split_folder(tmp_path / name, n={"train": 4, name: 2, "test": 3}, size=(8, 8))
        idx = discover(root)
        assert idx.layout == "split-folders"
        assert list(idx.splits) == ["train", "val", "test"]
        assert idx.counts() == {"hbar": {"train": 4, "val": 2, "test": 3}, "vbar": {"train": 4, "val": 2, "test": 3}}
        assert idx.val_split is None  # nothing was drawn


def test_split_folders_without_val_draws_it_from_train(tmp_path):
    root = make_split_folder(tmp_path / "d", n={"train": 10, "test": 2}, size=(8, 8))
    idx = discover(root, val_split=0.2)
    assert idx.counts()["hbar"] == {"train": 8, "val": 2, "test": 2}
    assert all("/train/" in p for p, _ in idx.splits["val"])
    assert idx.val_split == 0.2


def test_val_class_without_training_images_is_an_error(tmp_path):
    root = make_split_folder(tmp_path / "d", n={"train": 2, "val": 1}, size=(8, 8))
    _png(root / "val" / "zebra" / "z.png")
    with pytest.raises(DataError, match="zebra"):
        discover(root)


def test_csv_relative_paths_header_and_split_column(tmp_path):
    for i in range(4):
        _png(tmp_path / "imgs" / f"a{i}.png", 10)
        _png(tmp_path / "imgs" / f"b{i}.png", 200)
    rows = ["path,label,split"] + [f"imgs/a{i}.png,apple,{'val' if i == 3 else 'train'}" for i in range(4)]
    rows += [f"{tmp_path}/imgs/b{i}.png,banana,{'valid' if i == 3 else 'train'}" for i in range(4)]
    rows += ["imgs/missing.png,apple,train", "imgs/notes.txt,apple,train"]
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("\n".join(rows) + "\n")

    idx = discover(csv_file)
    assert idx.layout == "csv" and idx.classes == ["apple", "banana"]
    assert idx.counts() == {"apple": {"train": 3, "val": 1}, "banana": {"train": 3, "val": 1}}
    assert idx.ignored == {"missing": 1, "not_image": 1}
    assert idx.splits["val"][0][0] == str(tmp_path / "imgs" / "a3.png")


def test_csv_without_header_or_split_is_split_by_fraction(tmp_path):
    lines = [f"{c}{i}.png,{c}" for c in "xy" for i in range(5)]
    for line in lines:
        _png(tmp_path / line.split(",")[0])
    (tmp_path / "l.csv").write_text("\n".join(lines))
    idx = discover(tmp_path / "l.csv", val_split=0.2)
    assert idx.counts() == {"x": {"train": 4, "val": 1}, "y": {"train": 4, "val": 1}}


def test_csv_errors_name_file_and_row(tmp_path):
    (tmp_path / "bad.csv").write_text("path,label\nonly-a-path.png\n")
    with pytest.raises(DataError, match=r"bad\.csv: row 1"):
        discover(tmp_path / "bad.csv")


def test_labels_from_kaggle_file_names(tmp_path):
    root = tmp_path / "train"
    for i in range(5):
        _png(root / f"cat.{i}.jpg".replace(".jpg", ".png"))
        _png(root / f"dog.{i}.png")
    _png(root / "1234.png")  # no label in the name
    idx = discover(root)  # no class folders: the default pattern takes the leading letters
    assert idx.layout == "regex" and idx.classes == ["cat", "dog"]
    assert idx.ignored == {"no_label": 1}
    idx2 = discover(root, label_regex=r"^(?P<label>cat|dog)\.\d+")
    assert idx2.splits == idx.splits


def test_kaggle_root_with_flat_train_folder(tmp_path):
    for i in range(4):
        _png(tmp_path / "train" / f"cat.{i}.png")
        _png(tmp_path / "train" / f"dog.{i}.png")
        _png(tmp_path / "test1" / f"{i}.png")  # Kaggle's unlabelled test set: not a class
    idx = discover(tmp_path, val_split=0.25)
    assert idx.layout == "split-folders" and idx.classes == ["cat", "dog"]
    assert idx.counts() == {"cat": {"train": 3, "val": 1}, "dog": {"train": 3, "val": 1}}


def test_bad_inputs_are_one_sentence_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        discover(tmp_path / "nope")
    make_image_folder(tmp_path / "one", classes=("hbar",), n=3, size=(8, 8))
    with pytest.raises(DataError, match="only one class"):
        discover(tmp_path / "one")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        discover(tmp_path / "empty")
    with pytest.raises(DataError, match="group"):
        discover(tmp_path / "empty", label_regex="cat")
    with pytest.raises(DataError, match="val-split"):
        discover(tmp_path / "empty", val_split=1.5)


def test_to_json_round_trip_is_the_run_split_file(tmp_path, image_folder):
    from cnnlab.run import Run

    idx = discover(image_folder)
    (tmp_path / "run" / "weights").mkdir(parents=True)
    (tmp_path / "run" / "split.json").write_text(json.dumps(idx.to_json()))
    back = DataIndex.from_json(json.loads((tmp_path / "run" / "split.json").read_text()))
    assert back == idx
    assert Run(tmp_path / "run").split()["val"] == idx.splits["val"]  # read through the same DataIndex.from_json
    assert Run(tmp_path / "run").index() == idx
    # an older run's bare {split: [[path, label]]} form reads the same
    (tmp_path / "run" / "split.json").write_text(json.dumps(idx.to_json()["splits"]))
    assert Run(tmp_path / "run").split() == idx.splits


def test_stratified_split_keeps_one_of_each_side():
    labels = [0] * 2 + [1] * 50 + [2]
    train, val = stratified_split(labels, 0.1, seed=0)
    assert sorted(train + val) == list(range(len(labels)))
    val_labels = [labels[i] for i in val]
    assert val_labels.count(0) == 1 and val_labels.count(1) == 5 and val_labels.count(2) == 0


def test_a_damaged_split_file_is_named(tmp_path):
    from cnnlab.errors import CnnlabError
    from cnnlab.run import Run

    (tmp_path / "run" / "weights").mkdir(parents=True)
    (tmp_path / "run" / "split.json").write_text('{"splits": {"test": [["a.png"')  # cut short
    with pytest.raises(CnnlabError, match=r"split.json: not a readable split.json"):
        Run(tmp_path / "run").split()
    (tmp_path / "run" / "split.json").unlink()
    assert Run(tmp_path / "run").split() == {} and Run(tmp_path / "run").index() is None


def test_linked_images_are_listed_by_their_real_path(tmp_path):
    """A class folder of links (as a subset made with ``ln -s``): each image is named by the
    file it points to, as ``os.path.realpath`` resolves it, through chains of links, relative
    targets with ``..`` and linked folders; a loop keeps its own name (it is reported later)."""
    store = tmp_path / "store"
    real = [_png(store / f"{i}.png", value=i) for i in range(3)]
    (tmp_path / "alias").symlink_to("store", target_is_directory=True)
    cat, dog = tmp_path / "d" / "cat", tmp_path / "d" / "dog"
    cat.mkdir(parents=True)
    dog.mkdir()
    (cat / "a.png").symlink_to(real[0])                      # absolute target
    (cat / "b.png").symlink_to("../../alias/1.png")          # relative, through a linked folder
    (cat / "c.png").symlink_to("b.png")                      # a chain of two links
    (dog / "d.png").symlink_to(tmp_path / "alias" / "2.png")
    _png(dog / "e.png", value=9)                             # a plain file
    (dog / "loop.png").symlink_to("loop.png")

    idx = discover(tmp_path / "d", val_split=0.0)
    got = sorted(idx.splits["train"])
    expected = sorted([(os.path.realpath(cat / n), 0) for n in ("a.png", "b.png", "c.png")]
                      + [(os.path.realpath(dog / "d.png"), 1), (os.path.realpath(dog / "e.png"), 1),
                         (str(dog / "loop.png"), 1)])
    assert got == expected
    assert [p for p, _ in got if p.startswith(str(store))] == [str(real[0]), str(real[1]), str(real[1]), str(real[2])]


def test_redrawing_val_gives_what_discover_gives_at_that_split(tmp_path):
    """A recipe that changes --val-split redraws val from the same files: the same index as a
    fresh discover at the new split (checked against discover itself, at three splits)."""
    from PIL import Image

    from cnnlab.data.datasets import discover

    for c, n in (("cat", 7), ("dog", 12), ("owl", 3)):
        (tmp_path / c).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / c / f"{c}{i}.png")
    first = discover(tmp_path, val_split=0.2, seed=3)
    assert len(first.splits["val"]) == 1 + 2 + 1  # round(0.2 n), at least 1 per class of 2 or more
    for fraction in (0.0, 0.5, 0.2):
        again = first.with_val_split(fraction)
        fresh = discover(tmp_path, val_split=fraction, seed=3)
        assert again.splits == fresh.splits and again.val_split == fresh.val_split == fraction
    assert len(first.with_val_split(0.0).splits["val"]) == 0
