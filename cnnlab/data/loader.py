"""Batches of uint8 images and int64 labels, fast enough that the CPU trains instead of decoding.

``make_loader(items, size=...)`` decodes every file once (see :mod:`cnnlab.data.cache`) and
then serves batches by reading rows of the cached pixels, so epoch 2 onwards never touches
Pillow. Files that cannot be read are skipped, listed in ``loader.bad_files`` with the
reason, and reported on the console; they never end a run.

The batches are read from the cache file through the page cache
(:class:`cnnlab.data.rows.RowFile`), so the process holds its batches, never the data set.
When the cache is larger than the memory, a random order would read every image from the
disk, one small read at a time; ``shuffle="block"`` (chosen by ``"auto"`` when the cache
is larger than :data:`BLOCK_SHARE` of the memory available) keeps the reads local instead:

* the rows are cut into blocks of :data:`BLOCK_BYTES` of consecutive images (the cache
  stores its rows in a hashed order, so each block is a random sample of the files);
* each epoch shuffles the order of the blocks, groups them into windows of
  :data:`WINDOW_BLOCKS` consecutive blocks, and shuffles the images within each window;
* while a window is trained on, the kernel is asked to read the next one ahead
  (``posix_fadvise(WILLNEED)``): big contiguous reads, each block used up while it is in
  the page cache. This is the idea of FFCV's ``QUASI_RANDOM`` order.

The order stays a function of (seed, epoch) alone and holds every image once per epoch,
so resuming and torchrun's shards (rank r takes positions r, r+N, ...) work unchanged.

>>> loader = make_loader(index.splits["train"], size=(128, 128), batch_size=32, shuffle=True)
>>> for epoch in range(10):
...     loader.set_epoch(epoch)           # the order depends only on (seed, epoch)
...     for x, y in loader:               # x: uint8 (N, C, H, W), y: int64 (N,)
...         x = augment(x.float() / 255, generator)   # then normalise, then the model
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from cnnlab.data.cache import Decoded, decode_all
from cnnlab.data.decode import RESIZE_POLICIES
from cnnlab.data.rows import HAS_PREAD, RowFile, available_memory, size_text
from cnnlab.errors import DataError

MAX_LISTED = 10  # bad files printed on the console; all of them are in loader.bad_files

SHUFFLES = ("auto", "full", "block")  # make_loader's shuffle= names (and `cnnlab train --shuffle`)
BLOCK_SHARE = 0.5  # shuffle="auto" keeps reads local when the cache is larger than this share of the memory available
BLOCK_BYTES = 16 * 2**20  # a block: this many bytes of consecutive cache rows (at least one row)
WINDOW_BLOCKS = 8  # blocks whose images are shuffled together (the page cache holds about two windows)


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """128 -> (128, 128); (h, w) stays."""
    if isinstance(size, int):
        return (size, size)
    h, w = (int(v) for v in size)
    return (h, w)


SHUFFLE, TRAINING = 0, 1  # the random streams of an epoch: the loader's order; dropout and augmentation
SUBSET = 2  # the stream that draws a fixed validation subset (ImageLoader.subset)


def epoch_seed(seed: int, epoch: int, rank: int = 0, stream: int = SHUFFLE) -> int:
    """A 64-bit seed from (seed, epoch, process rank, stream) alone: the one formula for all of them.

    numpy's SeedSequence mixes the four numbers so that neighbouring epochs or ranks give
    unrelated streams. (Rank 0's shuffle is SeedSequence([seed, epoch]), as it always was.)
    """
    entropy = [int(seed), int(epoch), int(rank), int(stream)]
    while len(entropy) > 2 and entropy[-1] == 0:
        entropy.pop()
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def epoch_generator(seed: int, epoch: int, rank: int = 0, stream: int = SHUFFLE) -> torch.Generator:
    """A CPU torch generator seeded by :func:`epoch_seed`."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, rank, stream))


def block_rows(row_bytes: int) -> int:
    """Images in one block of :data:`BLOCK_BYTES`."""
    return max(1, BLOCK_BYTES // max(1, int(row_bytes)))


def choose_shuffle(requested: str, cache_bytes: int | None, available: int | None,
                   row_bytes: int = 1) -> tuple[str, str]:
    """("full" or "block", why) for ``requested`` in :data:`SHUFFLES`.

    "auto" is "block" when the cache file (``cache_bytes``; None when the pixels are in
    memory) is larger than :data:`BLOCK_SHARE` of the ``available`` memory, with the
    sentence that says so; else "full", and no sentence. A mode asked for is kept.
    """
    if requested not in SHUFFLES:
        raise DataError(f"shuffle must be one of {', '.join(SHUFFLES)}, got {requested!r}")
    if requested != "auto":
        return requested, ""
    if cache_bytes is None or available is None or cache_bytes <= BLOCK_SHARE * available:
        return "full", ""
    rows = block_rows(row_bytes)
    return "block", (f"the cache ({size_text(cache_bytes)}) is larger than {BLOCK_SHARE:.0%} of the memory "
                     f"available ({size_text(available)}): batches are drawn from windows of {WINDOW_BLOCKS} blocks of "
                     f"{rows:,} consecutive images ({rows * row_bytes * WINDOW_BLOCKS / 2**20:,.0f} MiB a window), "
                     "shuffled within the window, the blocks in a new order each epoch (--shuffle full: "
                     "a full shuffle, read from the disk image by image)")


class ImageLoader:
    """Iterate to get ``(x, y)``: x uint8 (N, C, H, W), y int64 (N,). One pass is one epoch.

    Attributes: ``num_samples`` (usable images), ``bad_files`` [(path, reason)], ``items``
    [(path, label)] of the usable images, ``labels`` (int64 array), ``images`` (the uint8
    array behind the batches: a read-only memory map of the cache file, or an array),
    ``rows`` (each item's row in it), ``cache_path`` (the .npy file, or None), ``cache_hit``,
    ``block_rows`` (images per block in the block order; 0: a full shuffle) and
    ``window_blocks``.
    """

    def __init__(self, items: list[tuple[str, int]], decoded: Decoded, *, batch_size: int,
                 shuffle: bool, seed: int, balanced: bool, drop_last: bool, blocks: bool = False):
        row_of = {p: i for i, p in enumerate(decoded.paths)}
        rows = [row_of[str(p)] for p, _ in items]
        bad = decoded.bad
        keep = [i for i, r in enumerate(rows) if r not in bad]
        self.items = [(str(items[i][0]), int(items[i][1])) for i in keep]
        self.bad_files = sorted({(decoded.paths[r], bad[r]) for r in rows if r in bad})
        self.rows = np.asarray([rows[i] for i in keep], dtype=np.int64)
        self.labels = np.asarray([y for _, y in self.items], dtype=np.int64)
        self.images = decoded.images
        self.reader = RowFile(decoded.path) if decoded.path is not None and HAS_PREAD else None
        self.cache_path = decoded.path
        self.cache_hit = decoded.hit
        self.decode_seconds = decoded.seconds
        self.num_samples = len(self.items)
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.balanced, self.drop_last = shuffle, int(seed), balanced, drop_last
        row_bytes = int(np.prod(self.images.shape[1:], dtype=np.int64))
        self.block_rows = block_rows(row_bytes) if blocks else 0
        self.window_blocks = WINDOW_BLOCKS
        self.shuffle_why = ""  # why make_loader(shuffle="auto") chose the block order
        self.epoch = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch's order next (iterating without calling this moves on one epoch each time)."""
        self.epoch = int(epoch)

    @property
    def shuffle_mode(self) -> str:
        """"block" (reads kept local, see the module's notes) or "full"."""
        return "block" if self.block_rows else "full"

    def order(self, epoch: int) -> np.ndarray:
        """Positions into ``items`` for one epoch: in order, shuffled, or class-balanced.

        The balanced sampler draws ``num_samples`` positions with replacement, each class
        equally likely, as torch's WeightedRandomSampler does. In the block order
        (``block_rows`` > 0) the same positions, or the same balanced draws, are put in an
        order that reads the cache block by block (:meth:`local_order`).
        """
        n = self.num_samples
        if not (self.shuffle or self.balanced) or n == 0:
            return np.arange(n)
        g = epoch_generator(self.seed, epoch)
        if self.balanced:
            counts = np.bincount(self.labels)
            weights = torch.from_numpy(1.0 / counts[self.labels])
            draws = torch.multinomial(weights, n, replacement=True, generator=g).numpy()
            return self.local_order(draws, g) if self.block_rows else draws
        if self.block_rows:
            return self.local_order(np.arange(n), g)
        return torch.randperm(n, generator=g).numpy()

    def local_order(self, positions: np.ndarray, g: torch.Generator) -> np.ndarray:
        """``positions`` reordered so that reads stay local: the blocks of ``block_rows``
        consecutive cache rows in a random order, grouped in windows of ``window_blocks``
        blocks, each window's positions in a random order."""
        blocks = self.rows[positions] // self.block_rows
        place = torch.randperm(int(self.rows.max()) // self.block_rows + 1, generator=g).numpy()
        window = place[blocks] // self.window_blocks
        key = torch.randperm(len(positions), generator=g).numpy()
        return positions[np.lexsort((key, window))]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 (len(rows), C, H, W): the pixels of these rows of the cache (``self.rows[positions]``).

        From the cache file through the page cache (one system call per run of consecutive
        rows), or out of the array when the pixels are in memory.
        """
        if self.reader is not None:
            return self.reader.read(rows)
        return np.ascontiguousarray(self.images[rows])

    def batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x, y) batch of these positions (no Pillow: a copy out of the cached pixels)."""
        x = torch.from_numpy(self.read(self.rows[positions]))
        y = torch.from_numpy(self.labels[positions])
        return x, y

    def batches(self, positions: np.ndarray, count: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``positions`` cut into ``count`` slices of ``batch_size``, from slice
        ``start`` on (a resumed epoch does not read the batches it skips).

        In the block order the kernel is asked to read blocks ahead: while one window is
        trained on, the next window's blocks (posix_fadvise WILLNEED, one call per block).
        """
        size = self.batch_size
        ahead = self._readahead(positions, start * size)
        for b in range(start, count):
            if ahead is not None:
                ahead((b + 1) * size)
            yield self.batch(positions[b * size:(b + 1) * size])

    def _readahead(self, positions: np.ndarray, start: int):
        """A function ``ahead(end)``: positions[:end] are being read; advise the blocks up to
        ``window_blocks`` past the last one they reached. None when there is nothing to advise."""
        if not self.block_rows or self.reader is None or len(positions) == 0:
            return None
        blocks = self.rows[positions] // self.block_rows
        unique, first = np.unique(blocks, return_index=True)
        by_first = np.argsort(first, kind="stable")
        sequence, firsts = unique[by_first], first[by_first]  # blocks in the order they are first read
        done = [max(0, int(np.searchsorted(firsts, start)) - self.window_blocks)]
        rows_total = len(self.reader)

        def ahead(end: int) -> None:
            reached = int(np.searchsorted(firsts, end))
            upto = min(len(sequence), reached + self.window_blocks)
            for block in sequence[done[0]:upto]:
                first_row = int(block) * self.block_rows
                self.reader.advise(first_row, min(self.block_rows, rows_total - first_row))
            done[0] = max(done[0], upto)

        return ahead

    def subset(self, n: int, seed: int = 0) -> "ImageLoader":
        """A loader over ``n`` of these images, drawn at random once (by ``seed``), in their order.

        The pixels are shared, not copied: validating on a fixed subset costs nothing to make.
        """
        if n >= self.num_samples:
            return self
        g = epoch_generator(seed, 0, stream=SUBSET)
        keep = np.sort(torch.randperm(self.num_samples, generator=g)[:n].numpy())
        sub = copy.copy(self)
        sub.items = [self.items[i] for i in keep]
        sub.rows, sub.labels = self.rows[keep], self.labels[keep]
        sub.num_samples = len(keep)
        return sub

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches from batch ``start`` on (iterating moves on one epoch)."""
        order = self.order(self.epoch)
        self.epoch += 1
        return self.batches(order, len(self), start)

    def __repr__(self) -> str:
        where = f"cache {self.cache_path}" if self.cache_path else "in memory"
        order = f", block order of {self.block_rows:,}-image blocks" if self.block_rows else ""
        return (f"ImageLoader({self.num_samples} images, {len(self)} batches of {self.batch_size}, "
                f"{len(self.bad_files)} bad files, {where}{order})")


def make_loader(
    items: Sequence[tuple[str | Path, int]],
    *,
    size: int | Sequence[int],
    channels: int = 3,
    resize: str = "stretch",
    batch_size: int = 32,
    shuffle: bool | str = False,
    seed: int = 0,
    workers: int = 0,
    cache_dir: str | Path | None | bool = None,
    balanced: bool = False,
    drop_last: bool = False,
    progress: bool | None = None,
    report_bad: bool = True,
) -> ImageLoader:
    """Decode ``items`` [(path, label)] once at ``size`` and return a loader over them.

    size: (height, width) or one int. channels: 3 (RGB) or 1 (grayscale). resize:
    "stretch", "crop" (centre crop) or "letterbox" (keep aspect ratio, pad). workers:
    processes for the first decode (0: this process). cache_dir: None for the default
    (``$CNNLAB_CACHE`` or ``~/.cache/cnnlab``), a folder, or False to keep pixels in memory
    only. balanced: sample classes equally often (with replacement). progress: show a bar
    (None: only on a terminal). report_bad: print the unreadable files on stderr.

    shuffle: False (file order), True or "full" (a new random order each epoch), "block"
    (random, but read block by block: for a cache larger than the memory) or "auto" ("block"
    when the cache file is larger than :data:`BLOCK_SHARE` of the memory available, else
    "full"; ``loader.shuffle_why`` then says why, and ``loader.shuffle_mode`` what it chose).
    """
    size = as_size(size)
    if resize not in RESIZE_POLICIES:
        raise DataError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, got {resize!r}")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if min(size) < 1 or batch_size < 1:
        raise DataError(f"image size and batch size must be positive, got size {size}, batch {batch_size}")
    mode = "full" if isinstance(shuffle, bool) else shuffle
    if mode not in SHUFFLES:
        raise DataError(f"shuffle must be True, False or one of {', '.join(SHUFFLES)}, got {shuffle!r}")
    items = [(str(Path(p).expanduser().absolute()), int(y)) for p, y in items]
    decoded = decode_all([p for p, _ in items], size, channels, resize, cache_dir, workers, progress)
    row_bytes = int(np.prod(decoded.images.shape[1:], dtype=np.int64))
    cache_bytes = decoded.images.nbytes if decoded.path is not None else None
    mode, why = choose_shuffle(mode, cache_bytes, available_memory() if mode == "auto" else None, row_bytes)
    shuffled = shuffle is not False
    loader = ImageLoader(items, decoded, batch_size=batch_size, shuffle=shuffled, seed=seed,
                         balanced=balanced, drop_last=drop_last, blocks=shuffled and mode == "block")
    loader.shuffle_why = why if shuffled else ""
    if report_bad and loader.bad_files:
        print_bad_files(loader.bad_files, len(items))
    return loader


def print_bad_files(bad: list[tuple[str, str]], total: int, file=None) -> None:
    """'skipped 3 of 500 files that cannot be read:' and the first few with their reasons."""
    out = file or sys.stderr
    print(f"cnnlab: skipped {len(bad)} of {total} files that cannot be read:", file=out)
    for path, reason in bad[:MAX_LISTED]:
        print(f"  {path}: {reason}", file=out)
    if len(bad) > MAX_LISTED:
        print(f"  ... and {len(bad) - MAX_LISTED} more", file=out)
