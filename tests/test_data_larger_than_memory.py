"""Data larger than the memory: a cache built by writing images as they come, read back row
by row, and pixels kept in memory only when they fit there."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import cache as cache_mod
from cnnlab.data.cache import decode_all, row_order
from cnnlab.data.rows import RowFile, available_memory
from cnnlab.errors import CnnlabError


# -- the cache file: written image by image, read row by row -------------------------------


def solid_items(root, n=12, size=(6, 6)):
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        Image.fromarray(np.full((*size, 3), i + 1, np.uint8)).save(root / f"{i}.png")
        items.append((str(root / f"{i}.png"), i % 2))
    return items


def test_row_file_reads_rows_in_any_order_with_repeats(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(10 * 6, dtype=np.uint8).reshape(10, 1, 2, 3))
    expected = np.load(path)
    f = RowFile(path)
    for rows in ([3], [9, 0, 4], [2, 3, 4, 5], [7, 7, 1, 7], []):
        assert np.array_equal(f.read(rows), expected[rows])
    with pytest.raises(IndexError):
        f.read([10])
    w = RowFile(path, write=True)
    w.write(8, np.full((2, 1, 2, 3), 200, np.uint8))
    assert np.array_equal(np.load(path)[8:], np.full((2, 1, 2, 3), 200, np.uint8))
    assert np.array_equal(np.load(path)[:8], expected[:8])


def test_the_cache_is_written_image_by_image_and_rows_follow_a_hash(tmp_path, monkeypatch):
    items = solid_items(tmp_path / "d", n=10)
    writes = []
    real = RowFile.write
    monkeypatch.setattr(RowFile, "write", lambda self, row, px: writes.append((row, px.shape)) or real(self, row, px))
    d = decode_all([p for p, _ in items], (8, 8), cache_dir=tmp_path / "c")
    assert len(writes) == 10 and all(shape == (3, 8, 8) for _, shape in writes)  # one image at a time
    assert d.paths == row_order(p for p, _ in items)
    value = {p: i + 1 for i, (p, _) in enumerate(items)}
    assert [int(v) for v in d.images[:, 0, 0, 0]] == [value[p] for p in d.paths]
    # a new entry copies the unchanged rows from the old one, in blocks, into the new order
    writes.clear()
    more = items + solid_items(tmp_path / "e", n=3)
    value.update({p: i + 1 for i, (p, _) in enumerate(more[10:])})
    d2 = decode_all([p for p, _ in more], (8, 8), cache_dir=tmp_path / "c")
    assert d2.decoded == 3 and [int(v) for v in d2.images[:, 0, 0, 0]] == [value[p] for p in d2.paths]


def test_rows_follow_a_hash_of_the_path_so_any_block_mixes_the_classes():
    paths = [f"/data/train/{c}/{i:04d}.jpg" for c in ("cat", "dog") for i in range(100)]
    rows = row_order(paths)
    assert sorted(rows) == sorted(paths) and row_order(reversed(paths)) == rows
    cats = ["/cat/" in p for p in rows]
    for start in (0, 50, 100):  # in path order each of these would be 100 cats or 0
        assert 30 <= sum(cats[start:start + 100]) <= 70


def test_pixels_that_must_stay_in_memory_are_refused_when_larger_than_it(tmp_path, monkeypatch):
    items = solid_items(tmp_path / "d", n=4)
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 700)  # 4 x 8x8x3 = 768 bytes
    with pytest.raises(CnnlabError) as e:
        decode_all([p for p, _ in items], (8, 8), cache_dir=False)
    msg = str(e.value)
    assert re.search(r"4 images of 8x8x3 need 0\.0 GiB of memory, more than the 0\.0 GiB available", msg)
    assert "\n" not in msg
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    with pytest.raises(CnnlabError, match="the decode cache cannot be written in .*, and 4 images"):
        decode_all([p for p, _ in items], (8, 8), cache_dir=blocker)
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 768)  # exactly enough
    assert decode_all([p for p, _ in items], (8, 8), cache_dir=False).images.shape == (4, 3, 8, 8)


def test_available_memory_reads_meminfo_and_a_containers_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  4000 kB\nMemFree:  1000 kB\nMemAvailable:   3000 kB\n")
    none = tmp_path / "no-cgroup"
    assert available_memory(meminfo, none) == 3000 * 1024
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("2000000\n")
    (v2 / "memory.current").write_text("1500000\n")
    (v2 / "memory.stat").write_text("anon 1000000\nfile 400000\n")
    assert available_memory(meminfo, v2) == 2_000_000 - 1_500_000 + 400_000  # below MemAvailable
    (v2 / "memory.max").write_text("max\n")
    assert available_memory(meminfo, v2) == 3000 * 1024
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("1000000\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("900000\n")
    (v1 / "memory" / "memory.stat").write_text("cache 50000\ntotal_cache 300000\n")
    assert available_memory(meminfo, v1) == 1_000_000 - 900_000 + 300_000
