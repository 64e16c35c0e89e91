"""The decode-once cache: every image decoded and resized once, then read as raw pixels.

On a CPU, decoding a 500x375 JPEG costs more than a small CNN's training step on it. So
the first time a set of files is used at a given size, every file is decoded (in parallel
when ``workers > 0``) into one uint8 array of shape (N, C, H, W) stored on disk as a
``.npy`` file; every later epoch, and every later run on the same files, size, channels and
resize policy, *memory-maps* that file and slices batches out of it without Pillow.

Layout on disk (default ``~/.cache/cnnlab``, or ``$CNNLAB_CACHE``)::

    <cache_dir>/<H>x<W>x<C>-<policy>-v<version>/
        <key>.npy    uint8 (N, C, H, W): row i is the i-th file in sorted path order
        <key>.json   the files (path, byte size, mtime) behind the rows, and the bad ones

``key`` is a hash of every file's (path, size, modification time), so changing, adding or
removing a file gives a new key (the cache is *invalidated*); rows of files that did not
change are copied from the older arrays instead of being decoded again. Both files are
written to a temporary name and renamed into place (the ``.json`` last, as the "complete"
mark), so two runs building the same cache at once never see a half-written file; the
loser's rename just replaces identical bytes. Deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.data.decode import BadImage, load_image
from cnnlab.errors import CnnlabError
from cnnlab.io.fs import atomic_path, atomic_write_text

CACHE_VERSION = 1  # bump when decoding or resizing changes what a row holds
CHUNK = 32  # files per decode task handed to a worker


def default_cache_dir() -> Path:
    """``$CNNLAB_CACHE`` if set, else ``~/.cache/cnnlab``."""
    return Path(os.environ.get("CNNLAB_CACHE") or Path.home() / ".cache" / "cnnlab").expanduser()


def file_key(path: str) -> str:
    """'path<TAB>bytes<TAB>mtime_ns' (a missing file gets a key that never matches a real one)."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\t-1\t-1"
    return f"{path}\t{st.st_size}\t{st.st_mtime_ns}"


@dataclass
class Decoded:
    """Decoded pixels of a set of files, one row per unique path (sorted)."""

    paths: list[str]
    images: np.ndarray  # uint8 (N, C, H, W); a read-only memmap when it came from disk
    bad: dict[int, str] = field(default_factory=dict)  # row -> reason
    path: Path | None = None  # the .npy file, or None when kept in memory
    hit: bool = False  # True when nothing had to be decoded
    decoded: int = 0  # files decoded by this call (the rest came from the cache)
    seconds: float = 0.0


def decode_all(
    paths: list[str],
    size: tuple[int, int],
    channels: int = 3,
    policy: str = "stretch",
    cache_dir: str | Path | None | bool = None,
    workers: int = 0,
    progress: bool | None = None,
) -> Decoded:
    """Decode every path at (height, width), through the on-disk cache unless cache_dir is False.

    ``paths`` are de-duplicated and sorted; the returned rows follow that order. Files that
    cannot be decoded keep an all-zero row and are listed in ``bad`` with the reason.
    """
    t0 = time.perf_counter()
    paths = sorted(set(map(str, paths)))
    h, w = size
    shape = (len(paths), channels, h, w)
    if cache_dir is False:
        images = np.zeros(shape, np.uint8)
        bad = _decode_into(images, paths, range(len(paths)), size, channels, policy, workers, progress)
        return Decoded(paths, images, bad, None, False, len(paths), time.perf_counter() - t0)

    keys = [file_key(p) for p in paths]
    folder = Path(cache_dir or default_cache_dir()) / f"{h}x{w}x{channels}-{policy}-v{CACHE_VERSION}"
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]
    npy, meta = folder / f"{digest}.npy", folder / f"{digest}.json"
    found = _open(npy, meta, keys, shape)
    if found is not None:
        return Decoded(paths, found[0], found[1], npy, True, 0, time.perf_counter() - t0)

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy) as tmp:
            images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            _reserve(tmp)
            bad, todo = _reuse(folder, keys, images)
            bad.update(_decode_into(images, paths, todo, size, channels, policy, workers, progress))
            images.flush()
            del images
        atomic_write_text(meta, json.dumps({"version": CACHE_VERSION, "keys": keys,
                                            "bad": {str(i): r for i, r in bad.items()}}))
    except (OSError, CnnlabError) as e:  # no space, read-only file system: use memory instead
        print(f"cnnlab: cannot write the decode cache in {folder} ({e}); keeping images in memory",
              file=sys.stderr)
        return decode_all(paths, size, channels, policy, False, workers, progress)
    images = np.load(npy, mmap_mode="r")
    return Decoded(paths, images, bad, npy, False, len(todo), time.perf_counter() - t0)


def _open(npy: Path, meta: Path, keys: list[str], shape: tuple) -> tuple[np.ndarray, dict] | None:
    """(memmap, bad rows) of a complete cache entry for exactly these files, else None."""
    try:
        info = json.loads(meta.read_text())
        images = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if info.get("keys") != keys or images.shape != shape or images.dtype != np.uint8:
        return None
    return images, {int(i): r for i, r in info.get("bad", {}).items()}


def _reserve(npy: Path) -> None:
    """Allocate the file's blocks now, so a full disk is an error here, not a crash later."""
    if hasattr(os, "posix_fallocate"):
        fd = os.open(npy, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        except OSError as e:
            if e.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: a file system without fallocate
                raise
        finally:
            os.close(fd)


def _reuse(folder: Path, keys: list[str], images: np.ndarray) -> tuple[dict[int, str], list[int]]:
    """Copy rows of unchanged files from older cache entries; return (bad rows, rows to decode)."""
    wanted = {k: i for i, k in enumerate(keys)}
    bad: dict[int, str] = {}
    for meta in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            info = json.loads(meta.read_text())
            old = np.load(meta.with_suffix(".npy"), mmap_mode="r")
        except (OSError, ValueError):
            continue
        if old.shape[1:] != images.shape[1:] or len(old) != len(info.get("keys", [])):
            continue
        old_bad = {int(i): r for i, r in info.get("bad", {}).items()}
        pairs = [(wanted.pop(k), j) for j, k in enumerate(info["keys"]) if k in wanted]
        for new_row, old_row in pairs:
            if old_row in old_bad:
                bad[new_row] = old_bad[old_row]
            else:
                images[new_row] = old[old_row]
        if not wanted:
            break
    return bad, sorted(wanted.values())


def _decode_into(images: np.ndarray, paths: list[str], rows, size, channels, policy, workers,
                 progress) -> dict[int, str]:
    """Decode paths[rows] into images[rows]; return {row: reason} for the bad ones."""
    rows = list(rows)
    if not rows:
        return {}
    job = _DecodeJob([paths[r] for r in rows], size, channels, policy)
    bad: dict[int, str] = {}
    with _progress_bar(len(rows), progress) as advance:
        for start, block, block_bad in _run(job, workers):
            targets = rows[start:start + len(block)]
            images[targets] = block
            bad.update({rows[start + j]: reason for j, reason in block_bad.items()})
            advance(len(block))
    return bad


class _DecodeJob:
    """A torch-style map dataset: item i decodes the i-th chunk of CHUNK files."""

    def __init__(self, paths: list[str], size, channels: int, policy: str):
        self.paths, self.size, self.channels, self.policy = paths, size, channels, policy

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / CHUNK)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, dict[int, str]]:
        start = i * CHUNK
        chunk = self.paths[start:start + CHUNK]
        out = np.zeros((len(chunk), self.channels, *self.size), np.uint8)
        bad = {}
        for j, p in enumerate(chunk):
            try:
                out[j] = load_image(p, self.size, self.channels, self.policy).transpose(2, 0, 1)
            except BadImage as e:
                bad[j] = e.reason
            except Exception as e:  # a decoder bug on one file must not end a long run
                bad[j] = f"cannot decode: {e.__class__.__name__}: {e}"
        return start, out, bad


def _identity(x):
    return x


def _run(job: _DecodeJob, workers: int):
    """Yield the job's chunks, in worker processes (torch's DataLoader) when workers > 0."""
    if workers <= 0 or len(job) <= 1:
        yield from (job[i] for i in range(len(job)))
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(job, batch_size=None, num_workers=min(workers, len(job)),
                        collate_fn=_identity, prefetch_factor=4)
    yield from loader


class _progress_bar:
    """A rich progress bar on a terminal; nothing when output goes to a file or a pipe."""

    def __init__(self, total: int, show: bool | None):
        self.total = total
        self.show = sys.stdout.isatty() if show is None else show
        self.bar = None

    def __enter__(self):
        if not self.show:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("decoding images once (cached for later epochs)"), BarColumn(),
                            MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
        self.bar.start()
        task = self.bar.add_task("decode", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
