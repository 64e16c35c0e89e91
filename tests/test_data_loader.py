"""The loader and its decode-once cache: right pixels with the right labels, bad files
skipped, order set by (seed, epoch), and a cache that is reused, invalidated and shared safely."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest
import torch
from PIL import Image

import badimages as bi
from cnnlab.data import cache as cache_mod
from cnnlab.data.cache import decode_all
from cnnlab.data.datasets import discover
from cnnlab.data.loader import make_loader
from cnnlab.errors import DataError


def solid_folder(root, counts=(6, 6), size=(10, 14)):
    """root/c<k>/<i>.png, each a solid grey of value 20*k + i + 1, so pixels name their file."""
    for k, n in enumerate(counts):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((*size, 3), 20 * k + i + 1, np.uint8)).save(root / f"c{k}" / f"{i}.png")
    return root


def items_of(root):
    return [(str(p), int(p.parent.name[1:])) for p in sorted(root.rglob("*.png"))]


def value_of(path):
    return 20 * int(os.path.basename(os.path.dirname(path))[1:]) + int(os.path.basename(path)[:-4]) + 1


def test_batches_hold_the_right_pixels_and_labels(tmp_path):
    items = items_of(solid_folder(tmp_path / "d", (5, 4)))
    loader = make_loader(items, size=(8, 6), batch_size=4, cache_dir=tmp_path / "c")
    assert loader.num_samples == 9 and len(loader) == 3 and loader.bad_files == []
    seen = []
    for x, y in loader:
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 8, 6) and y.dtype == torch.int64
        seen += [(int(v), int(lbl)) for v, lbl in zip(x[:, 0, 0, 0], y)]
    assert seen == [(value_of(p), y) for p, y in items]  # unshuffled: file order
    assert [x.shape[0] for x, _ in loader] == [4, 4, 1]


def test_grayscale_and_resize_policy_reach_the_batch(tmp_path):
    items = items_of(solid_folder(tmp_path / "d", (2, 2)))
    x, _ = next(iter(make_loader(items, size=12, channels=1, resize="letterbox", cache_dir=False)))
    assert x.shape == (4, 1, 12, 12)
    assert x[0, 0, 0, 0] == 0 and x[0, 0, 6, 6] == 1  # 10x14 letterboxed: black bars, picture inside
    with pytest.raises(DataError, match="resize policy"):
        make_loader(items, size=12, resize="squash", cache_dir=False)


def test_bad_files_are_skipped_listed_and_printed(tmp_path, capsys):
    root = solid_folder(tmp_path / "d", (3, 3))
    bad = bi.write_bad(tmp_path / "d" / "c1")
    items = [(str(p), 1 if "/c1/" in str(p) else 0) for p in sorted(root.rglob("*.*"))]
    loader = make_loader(items, size=8, batch_size=4, cache_dir=tmp_path / "c", workers=2)
    assert loader.num_samples == 6
    assert {p for p, _ in loader.bad_files} == {str(p) for p in bad.values()}
    reasons = dict(loader.bad_files)
    for name, path in bad.items():
        assert bi.BAD_REASONS[name] in reasons[str(path)]
    assert sum(x.shape[0] for x, _ in loader) == 6
    err = capsys.readouterr().err
    assert f"skipped {len(bad)} of {len(bad) + 6} files" in err and "bomb.png: decompression bomb" in err
    # The cache remembers bad files, so a later run reports them without decoding again.
    again = make_loader(items, size=8, cache_dir=tmp_path / "c", report_bad=False)
    assert again.cache_hit and again.bad_files == loader.bad_files


def test_order_depends_only_on_seed_and_epoch(tmp_path):
    items = items_of(solid_folder(tmp_path / "d", (8, 8)))
    a = make_loader(items, size=4, batch_size=5, shuffle=True, seed=3, cache_dir=False)
    b = make_loader(items, size=4, batch_size=5, shuffle=True, seed=3, cache_dir=False)

    def labels_and_pixels(loader, epoch):
        loader.set_epoch(epoch)
        return [(x[:, 0, 0, 0].tolist(), y.tolist()) for x, y in loader]

    assert labels_and_pixels(a, 4) == labels_and_pixels(b, 4)
    assert labels_and_pixels(a, 4) != labels_and_pixels(a, 5)
    first = [x[:, 0, 0, 0].tolist() for x, _ in a]  # iterating again moves on by one epoch
    assert first != [x[:, 0, 0, 0].tolist() for x, _ in a]
    c = make_loader(items, size=4, batch_size=5, shuffle=True, seed=4, cache_dir=False)
    assert labels_and_pixels(c, 4) != labels_and_pixels(a, 4)
    everything = sorted(v for xs, _ in labels_and_pixels(a, 9) for v in xs)
    assert everything == sorted(value_of(p) for p, _ in items)  # a permutation, nothing lost


def test_balanced_sampler_and_drop_last(tmp_path):
    items = items_of(solid_folder(tmp_path / "d", (18, 2)))
    plain = make_loader(items, size=4, batch_size=8, shuffle=True, cache_dir=False)
    loader = make_loader(items, size=4, batch_size=8, balanced=True, drop_last=True, seed=1, cache_dir=False)
    assert len(loader) == 2 and len(plain) == 3
    labels = []
    for epoch in range(40):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert [x.shape[0] for x, _ in batches] == [8, 8]
        labels += [int(v) for _, y in batches for v in y]
    share = np.mean(labels)
    assert 0.4 < share < 0.6  # 2 of 20 images are class 1, yet it is drawn half of the time
    loader.set_epoch(7)
    first = [y.tolist() for _, y in loader]
    loader.set_epoch(7)
    assert [y.tolist() for _, y in loader] == first


def test_cache_is_reused_without_decoding(tmp_path, monkeypatch):
    items = items_of(solid_folder(tmp_path / "d", (4, 4)))
    first = make_loader(items, size=8, cache_dir=tmp_path / "c")
    assert not first.cache_hit and first.cache_path.is_file()

    def no_decoding(*a, **k):
        raise AssertionError("decoded although the cache holds this file")

    monkeypatch.setattr(cache_mod, "load_image", no_decoding)
    second = make_loader(items, size=8, cache_dir=tmp_path / "c", shuffle=True)
    assert second.cache_hit and second.cache_path == first.cache_path
    assert isinstance(second.images, np.memmap)
    assert sorted(int(v) for x, _ in second for v in x[:, 0, 0, 0]) == sorted(value_of(p) for p, _ in items)
    # A subset of the same files (another split) is built from the rows already decoded.
    subset = make_loader(items[:3], size=8, cache_dir=tmp_path / "c")
    assert not subset.cache_hit and [int(x[0, 0, 0]) for x in subset.images[subset.rows]] == \
        [value_of(p) for p, _ in items[:3]]


def test_cache_is_invalidated_by_file_size_and_policy_changes(tmp_path, monkeypatch):
    root = solid_folder(tmp_path / "d", (3, 3))
    items = items_of(root)
    make_loader(items, size=8, cache_dir=tmp_path / "c")
    decoded = []
    real = cache_mod.load_image
    monkeypatch.setattr(cache_mod, "load_image", lambda p, *a, **k: decoded.append(p) or real(p, *a, **k))

    changed = root / "c0" / "1.png"
    Image.fromarray(np.full((10, 14, 3), 250, np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    loader = make_loader(items, size=8, cache_dir=tmp_path / "c")
    assert not loader.cache_hit and decoded == [str(changed)]  # only the changed file
    assert loader.images[loader.rows[1], 0, 0, 0] == 250

    decoded.clear()
    make_loader(items, size=10, cache_dir=tmp_path / "c")
    assert len(decoded) == len(items)  # another size: everything again
    decoded.clear()
    make_loader(items, size=8, resize="crop", cache_dir=tmp_path / "c")
    assert len(decoded) == len(items)  # another resize policy
    decoded.clear()
    make_loader(items, size=8, channels=1, cache_dir=tmp_path / "c")
    assert len(decoded) == len(items)  # grayscale
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["10x10x3-stretch-v1", "8x8x1-stretch-v1", "8x8x3-crop-v1", "8x8x3-stretch-v1"]
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_default_cache_dir_follows_cnnlab_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "env-cache"))
    loader = make_loader(items_of(solid_folder(tmp_path / "d", (2, 2))), size=4)
    assert str(loader.cache_path).startswith(str(tmp_path / "env-cache"))


def test_unwritable_cache_falls_back_to_memory(tmp_path, capsys):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    loader = make_loader(items_of(solid_folder(tmp_path / "d", (2, 2))), size=4, cache_dir=blocker)
    assert loader.cache_path is None and loader.num_samples == 4
    assert "keeping images in memory" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["free-space check", "fallocate"])
def test_a_full_disk_falls_back_to_memory(tmp_path, capsys, monkeypatch, where):
    """ENOSPC while the cache entry is made (README: the decode cache falls back to memory).

    Either the free-space check sees too little room, or the disk claims room that is not
    there and fallocate fails; both leave no file behind and the batches hold the pixels.
    """
    import errno
    import shutil
    from collections import namedtuple

    if where == "free-space check":
        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100, 100))
    else:
        def full(fd, offset, length):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    items = items_of(solid_folder(tmp_path / "d", (3, 2)))
    loader = make_loader(items, size=4, cache_dir=tmp_path / "cache", progress=False)
    err = capsys.readouterr().err
    assert "cannot write the decode cache" in err and "keeping images in memory" in err
    assert ("not enough free disk space" if where == "free-space check" else "No space left on device") in err
    assert loader.cache_path is None and loader.num_samples == 5
    x, y = loader.batch(np.arange(5))
    assert [int(v) for v in x[:, 0, 0, 0]] == [value_of(p) for p, _ in items]
    assert [f for f in (tmp_path / "cache").rglob("*") if f.is_file()] == []  # no entry, no temporary


def _build(args):
    paths, cache_dir, barrier = args
    barrier.wait()
    d = decode_all(paths, (16, 16), cache_dir=cache_dir)
    return str(d.path), d.images[:, 0, 0, 0].tolist()


def test_two_processes_building_one_cache_at_once(tmp_path):
    from imagegen import make_image_folder

    root = make_image_folder(tmp_path / "d", n=40, size=(48, 48), fmt="jpg")
    paths = [str(p) for p in sorted(root.rglob("*.jpg"))]
    ctx = mp.get_context("fork")
    barrier = ctx.Manager().Barrier(2)
    with ctx.Pool(2) as pool:
        (p1, v1), (p2, v2) = pool.map(_build, [(paths, str(tmp_path / "c"), barrier)] * 2)
    assert p1 == p2
    expected = decode_all(paths, (16, 16), cache_dir=False).images
    final = decode_all(paths, (16, 16), cache_dir=tmp_path / "c")
    assert final.hit and np.array_equal(np.asarray(final.images), expected)
    assert v1 == v2 == expected[:, 0, 0, 0].tolist()
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_workers_give_the_same_pixels_as_one_process(tmp_path, split_folder):
    items = discover(split_folder).splits["train"]
    one = make_loader(items, size=20, cache_dir=False)
    two = make_loader(items, size=20, cache_dir=False, workers=2)
    assert np.array_equal(one.images, two.images)
