"""Data larger than the memory: batches read from the cache file (not held by the process),
a cache built by writing images as they come, a batch order that keeps reads local
(``shuffle="block"``), chosen by itself when the cache is larger than half the memory."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import cache as cache_mod
from cnnlab.data import loader as loader_mod
from cnnlab.data import rows as rows_mod
from cnnlab.data.cache import Decoded, decode_all, row_order
from cnnlab.data.loader import ImageLoader, choose_shuffle, make_loader
from cnnlab.data.normalize import compute_mean_std
from cnnlab.data.rows import RowFile, available_memory
from cnnlab.errors import CnnlabError
from cnnlab.model.build import build_model
from cnnlab.train import train
from cnnlab.train.api import _resume_setup, describe
from cnnlab.train.callbacks import Callback
from cnnlab.train.config import make_config
from cnnlab.train.distributed import ShardedLoader
from cnnlab.train.interrupt import TrainingInterrupted
from cnnlab.train.loop import Trainer
from cnnlab.train.setup import build
from imagegen import make_image_folder


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


def test_row_file_without_positioned_reads_seeks_instead(tmp_path, monkeypatch):
    monkeypatch.setattr(rows_mod, "HAS_PREAD", False)  # as on Windows
    path = tmp_path / "a.npy"
    np.save(path, np.arange(8 * 4, dtype=np.uint8).reshape(8, 1, 2, 2))
    expected = np.load(path)
    w = RowFile(path, write=True)
    w.write(6, np.full((1, 1, 2, 2), 99, np.uint8))
    expected[6] = 99
    assert np.array_equal(RowFile(path).read([7, 6, 0, 1, 2]), expected[[7, 6, 0, 1, 2]])


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


def test_an_older_entry_cut_short_is_passed_over_and_the_cache_rebuilt_on_disk(tmp_path, capsys):
    items = solid_items(tmp_path / "d", n=5)
    first = make_loader(items, size=8, cache_dir=tmp_path / "c", progress=False)
    first.cache_path.write_bytes(first.cache_path.read_bytes()[:200])  # a copy cut short
    with pytest.raises(ValueError, match="shorter than"):
        RowFile(first.cache_path)
    again = make_loader(items, size=8, cache_dir=tmp_path / "c", progress=False)
    assert not again.cache_hit and again.cache_path == first.cache_path  # decoded again, to the disk
    assert "cannot write the decode cache" not in capsys.readouterr().err
    x, _ = again.batch(np.arange(5))
    assert sorted(x[:, 0, 0, 0].tolist()) == [1, 2, 3, 4, 5]

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
    assert "4 images of 8x8x3 need 768 bytes of memory, more than the 700 bytes available" in msg
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


# -- batches through the page cache: the process holds its batches, not the data set ---------


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status") or not rows_mod.HAS_PREAD, reason="Linux only")
def test_reading_every_batch_of_a_cache_file_leaves_the_memory_flat(tmp_path):
    """A 64 MiB cache read batch by batch: the process's resident memory grows by its batches
    only. Read through the memory map instead (the control), every row read stays resident."""
    n, shape = 21_846, (3, 32, 32)  # 21,846 x 3,072 bytes = 64 MiB
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, *shape))
    big[:, 0, 0, 0] = np.arange(n) % 251
    big.flush()
    del big
    paths = [f"/d/{i:05d}.png" for i in range(n)]
    loader = ImageLoader([(p, 0) for p in paths], Decoded(paths, np.load(path, mmap_mode="r"), path=path),
                         batch_size=512, shuffle=True, seed=0, balanced=False, drop_last=False)
    assert loader.reader is not None
    before, seen = rss_bytes(), []
    for x, _ in loader:
        seen += x[:, 0, 0, 0].tolist()  # not a view: it would keep the whole batch alive
    grown = rss_bytes() - before
    assert sorted(seen) == sorted((np.arange(n) % 251).tolist())
    assert grown < 16 * 2**20, f"resident memory grew by {grown / 2**20:.0f} MiB reading a 64 MiB cache"

    loader.reader = None  # the control: batches indexed out of the memory map
    before = rss_bytes()
    for _ in loader:
        pass
    assert rss_bytes() - before > 48 * 2**20  # the measurement sees a map's pages


def test_mean_and_std_read_through_the_cache_file(tmp_path):
    items = solid_items(tmp_path / "d", n=6)
    loader = make_loader(items, size=4, cache_dir=tmp_path / "c")

    class NoIndexing:  # the memory map must not be indexed: rows come from loader.read
        shape = loader.images.shape

        def __getitem__(self, key):
            raise AssertionError("indexed the memory map")

    loader.images = NoIndexing()
    norm = compute_mean_std(loader)
    assert norm.mean == pytest.approx((3.5 / 255,) * 3, abs=1e-6)  # values 1..6
    x, _ = loader.batch(np.arange(6))
    assert sorted(x[:, 0, 0, 0].tolist()) == [1, 2, 3, 4, 5, 6] and x.dtype == torch.uint8


# -- the block order ---------------------------------------------------------------------------


def fake_loader(n=1000, batch_size=32, blocks=True, balanced=False, seed=0, labels=None, block_rows=50,
                window_blocks=4):
    """A loader over n in-memory rows whose first pixel names the row (mod 256); items in an order
    unlike the rows', so that positions and rows differ."""
    paths = [f"/d/{i:05d}.png" for i in range(n)]
    images = np.zeros((n, 1, 2, 2), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    decoded = Decoded(paths, images)
    rng = np.random.default_rng(7)
    positions_to_rows = rng.permutation(n)
    labels = labels if labels is not None else [i % 3 for i in range(n)]
    items = [(paths[r], labels[r]) for r in positions_to_rows]
    loader = ImageLoader(items, decoded, batch_size=batch_size, shuffle=True, seed=seed, balanced=balanced,
                         drop_last=False, blocks=blocks)
    if blocks:
        loader.block_rows, loader.window_blocks = block_rows, window_blocks
    return loader


def test_block_order_has_every_image_once_and_depends_only_on_seed_and_epoch():
    a, b = fake_loader(), fake_loader()
    for epoch in range(4):
        order = a.order(epoch)
        assert sorted(order.tolist()) == list(range(1000))  # every position, once
        assert np.array_equal(order, b.order(epoch))  # the same (seed, epoch): the same order
    assert not np.array_equal(a.order(0), a.order(1))  # a new order each epoch
    assert not np.array_equal(a.order(0), fake_loader(seed=1).order(0))
    # the blocks come in another order each epoch, not only the images inside them
    first_block = [int(a.rows[a.order(e)[0]]) // 50 for e in range(6)]
    assert len(set(first_block)) > 1


def test_block_order_keeps_reads_within_a_few_blocks():
    """1000 rows in blocks of 50 are 20 blocks; windows of 4 blocks are 200 images each. Three
    consecutive batches of 32 (96 positions) lie within at most 2 windows, so they read at most
    8 distinct blocks; a full shuffle reads from nearly all 20."""
    loader = fake_loader()
    full = fake_loader(blocks=False)
    for epoch in range(3):
        order, shuffled = loader.order(epoch), full.order(epoch)
        blocks, blocks_full = loader.rows[order] // 50, full.rows[shuffled] // 50
        for start in range(0, 1000 - 96 + 1, 32):  # every run of 3 batches
            assert len(set(blocks[start:start + 96].tolist())) <= 8
        assert min(len(set(blocks_full[s:s + 96].tolist())) for s in range(0, 905, 32)) > 8
        for w in range(5):  # each window is 4 whole blocks, used up before the next window
            window = blocks[200 * w:200 * (w + 1)]
            assert len(set(window.tolist())) == 4 and np.bincount(window).max() == 50


def test_balanced_sampling_in_block_order_draws_what_the_full_order_draws():
    labels = [0 if i < 900 else 1 for i in range(1000)]  # 9:1
    local = fake_loader(balanced=True, labels=labels)
    full = fake_loader(balanced=True, labels=labels, blocks=False)
    for epoch in range(3):
        a, b = local.order(epoch), full.order(epoch)
        assert sorted(a.tolist()) == sorted(b.tolist())  # the same draws, another order
        assert not np.array_equal(a, b)
    share = np.mean(local.labels[local.order(5)])
    assert 0.4 < share < 0.6  # the small class drawn half of the time, as before


def test_block_order_asks_the_kernel_to_read_the_next_window_ahead(tmp_path):
    """Each block is advised (posix_fadvise WILLNEED) once per epoch, before its first read,
    and never more than one window (4 blocks) beyond the blocks already being read."""
    n = 1000
    path = tmp_path / "c.npy"
    np.save(path, np.zeros((n, 1, 2, 2), np.uint8))
    paths = [f"/d/{i:05d}.png" for i in range(n)]
    loader = ImageLoader([(p, 0) for p in paths], Decoded(paths, np.load(path, mmap_mode="r"), path=path),
                         batch_size=20, shuffle=True, seed=0, balanced=False, drop_last=False, blocks=True)
    loader.block_rows, loader.window_blocks = 50, 4
    events = []
    reader = loader.reader
    real_read = reader.read
    reader.advise = lambda first, count, advice=None: events.append(("advise", first // 50, count))
    reader.read = lambda rows: events.append(("read", sorted({int(r) // 50 for r in rows}))) or real_read(rows)
    for epoch in range(2):
        events.clear()
        loader.set_epoch(epoch)
        for _ in loader:
            pass
        advised = [b for kind, b, *_ in events if kind == "advise"]
        assert sorted(advised) == list(range(20))  # each block once, all 50 rows of it
        assert all(count == 50 for kind, _, *rest in events if kind == "advise" for count in rest)
        done, started, reads_since = set(), set(), {}
        for kind, what, *_ in events:
            if kind == "advise":
                done.add(what)
                reads_since[what] = 0
            else:
                assert set(what) <= done  # advised before it is read
                fresh = set(what) - started
                if started:  # after the first batch: advised at least one batch ahead, not just in time
                    assert all(reads_since[b] >= 1 for b in fresh)
                started |= set(what)
                assert len(done) <= len(started) + 4  # at most one window beyond the blocks begun
                reads_since = {b: k + 1 for b, k in reads_since.items()}


def test_shards_and_resumed_epochs_in_block_order():
    loader = fake_loader(n=1000, batch_size=10)
    loader.set_epoch(3)
    whole = np.concatenate([x[:, 0, 0, 0].numpy() for x, _ in loader])
    order = loader.order(3)
    assert np.array_equal(whole, loader.rows[order] % 256)
    ranks = [ShardedLoader(loader, r, 2, train=True) for r in range(2)]
    for r in ranks:
        r.set_epoch(3)
    got = [np.concatenate([x[:, 0, 0, 0].numpy() for x, _ in r]) for r in ranks]
    assert np.array_equal(got[0], loader.rows[order[0::2]] % 256)  # rank r: positions r, r+2, ...
    assert np.array_equal(got[1], loader.rows[order[1::2]] % 256)
    # a resumed epoch starts at its batch without reading the ones before it
    reads = []
    real = loader.batch
    loader.batch = lambda p: reads.append(len(p)) or real(p)
    loader.set_epoch(3)
    rest = np.concatenate([x[:, 0, 0, 0].numpy() for x, _ in loader.iter_from(97)])
    assert np.array_equal(rest, whole[970:]) and len(reads) == 3
    ranks[1].set_epoch(3)
    tail = np.concatenate([x[:, 0, 0, 0].numpy() for x, _ in ranks[1].iter_from(48)])
    assert np.array_equal(tail, got[1][480:])


def test_a_resumed_epoch_does_not_read_the_batches_it_skips(tmp_path, one_thread):
    """Ctrl-C after batch 5 of epoch 2 (of 8 batches), then --resume: the same weights as a run
    never stopped, and the resumed epoch reads only its 3 remaining batches."""
    spec = {"input": [2, 2, 1], "layers": [{"Flatten": {}}, {"Dense": {"units": "classes", "activation": "softmax"}}]}

    def run(callbacks=(), resume=False):
        loader = fake_loader(n=256, batch_size=32, labels=[i % 2 for i in range(256)])
        reads = []
        real = loader.batch
        loader.batch = lambda p: reads.append(len(p)) or real(p)
        model = build_model(spec, classes=2, seed=0)
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=0, callbacks=list(callbacks))
        try:
            trainer.fit(loader, None, epochs=2, checkpoint=tmp_path / "resume.safetensors", resume=resume)
        except TrainingInterrupted:
            pass
        return [p.detach().clone() for p in model.parameters()], reads

    class Stop(Callback):
        def on_batch_end(self, trainer):
            if trainer.epoch == 2 and trainer.batch == 5:
                trainer.interrupted = True

    reference, _ = run()
    run([Stop()])
    resumed, reads = run([Callback()], resume=True)
    assert all(torch.equal(a, b) for a, b in zip(resumed, reference))
    assert len(reads) == 3  # batches 6-8 of epoch 2; not 1-5 again


# -- the automatic choice ----------------------------------------------------------------------


def test_auto_shuffle_flips_to_blocks_when_the_cache_is_larger_than_half_the_memory(tmp_path, monkeypatch):
    items = solid_items(tmp_path / "d")
    cache_bytes = 12 * 3 * 8 * 8  # 12 rows of 8x8x3
    memory = {"bytes": 2 * cache_bytes}
    monkeypatch.setattr(loader_mod, "available_memory", lambda: memory["bytes"])
    at = make_loader(items, size=8, shuffle="auto", cache_dir=tmp_path / "c")
    assert at.shuffle_mode == "full" and at.shuffle_why == ""  # exactly half: still a full shuffle
    memory["bytes"] = 2 * cache_bytes - 1
    over = make_loader(items, size=8, shuffle="auto", cache_dir=tmp_path / "c")
    assert over.shuffle_mode == "block" and over.block_rows == loader_mod.BLOCK_BYTES // 192
    assert "larger than 50% of the memory available" in over.shuffle_why
    assert sorted(over.order(0).tolist()) == list(range(12))
    # asked for, a mode is kept whatever the memory; pixels in memory are never "too large"
    assert make_loader(items, size=8, shuffle="full", cache_dir=tmp_path / "c").shuffle_mode == "full"
    assert make_loader(items, size=8, shuffle="auto", cache_dir=False).shuffle_mode == "full"
    memory["bytes"] = 10**12
    assert make_loader(items, size=8, shuffle="block", cache_dir=tmp_path / "c").shuffle_mode == "block"
    with pytest.raises(CnnlabError, match="shuffle must be"):
        make_loader(items, size=8, shuffle="random", cache_dir=False)


def test_choose_shuffle_says_why_in_one_sentence():
    mode, why = choose_shuffle("auto", 31 * 2**30, 24 * 2**30, row_bytes=3 * 32 * 32)
    assert mode == "block"
    assert why.startswith("the cache (31.0 GiB) is larger than 50% of the memory available (24.0 GiB)")
    assert choose_shuffle("auto", 600 * 2**20, 1000 * 2**20)[1].startswith("the cache (600 MiB) is larger")
    assert "windows of 8 blocks of 5,461 consecutive images" in why  # 16 MiB // 3,072 bytes
    assert "\n" not in why and why.count(". ") == 0
    assert choose_shuffle("auto", 12 * 2**30, 24 * 2**30) == ("full", "")
    assert choose_shuffle("auto", 12 * 2**30, None) == ("full", "")


def test_train_setup_resolves_auto_once_and_says_it(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "d", n=8, size=(16, 16))
    monkeypatch.setattr(loader_mod, "available_memory", lambda: 1000)  # 12-13 training images of 768 bytes: > 500
    cfg = make_config(data=str(data), model="seed", img_size=16, epochs=1, precision="fp32", workers=0,
                      cache_dir=str(tmp_path / "c"), val_split=0.2)
    setup = build(cfg, verbose=False)
    assert setup.cfg.shuffle == "block" and setup.resolved_config().shuffle == "block"
    assert setup.train_loader.shuffle_mode == "block"
    line = [s for s in describe(setup).splitlines() if "order:" in s]
    assert len(line) == 1 and "is larger than 50% of the memory available" in line[0]
    monkeypatch.setattr(loader_mod, "available_memory", lambda: 10**12)
    again = build(cfg.model_copy(update={"shuffle": "block"}), verbose=False)  # what config.yaml says
    assert again.train_loader.shuffle_mode == "block" and again.shuffle_why == ""


def test_a_run_resumes_in_the_order_its_config_says(tmp_path, monkeypatch):
    """config.yaml keeps the order auto chose, and a resumed run uses it whatever the memory
    says then; a run from before --shuffle (no such key) goes on with a full shuffle."""
    data = make_image_folder(tmp_path / "d", n=8, size=(16, 16))

    class CtrlC(Callback):
        def on_batch_end(self, trainer):
            if trainer.epoch == 1 and trainer.batch == 1:
                trainer.interrupted = True

    monkeypatch.setattr(loader_mod, "available_memory", lambda: 1000)
    with pytest.raises(TrainingInterrupted):
        train(str(data), model="seed", img_size=16, epochs=2, batch_size=4, precision="fp32", workers=0,
              cache_dir=str(tmp_path / "c"), out=str(tmp_path / "runs"), evaluate=False, verbose=False,
              callbacks=[CtrlC()])
    (run,) = (tmp_path / "runs").iterdir()
    config = run / "config.yaml"
    assert "shuffle: block" in config.read_text()
    monkeypatch.setattr(loader_mod, "available_memory", lambda: 10**12)
    setup = _resume_setup(run, None, None, {}, False)
    assert setup.cfg.shuffle == "block" and setup.train_loader.shuffle_mode == "block"
    config.write_text(config.read_text().replace("shuffle: block\n", ""))  # as an older cnnlab wrote it
    monkeypatch.setattr(loader_mod, "available_memory", lambda: 1000)
    setup = _resume_setup(run, None, None, {}, False)
    assert setup.cfg.shuffle == "full" and setup.train_loader.shuffle_mode == "full"
