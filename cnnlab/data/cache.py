"""The decode-once cache: every image decoded and resized once, then read as raw pixels.

On a CPU, decoding a 500x375 JPEG costs more than a small CNN's training step on it. So
the first time a set of files is used at a given size, every file is decoded (in parallel
when ``workers > 0``) into one uint8 array of shape (N, C, H, W) stored on disk as a
``.npy`` file; every later epoch, and every later run on the same files, size, channels and
resize policy, reads its batches out of that file (:class:`cnnlab.data.rows.RowFile`, through
the page cache) without Pillow. ``Decoded.images`` is the file memory-mapped, read-only.

Layout on disk (default ``~/.cache/cnnlab``, or ``$CNNLAB_CACHE``)::

    <cache_dir>/<H>x<W>x<C>-<policy>-v<version>/
        <key>.npy    uint8 (N, C, H, W): one row per file, in the order of a hash of its path
        <key>.json   the files (path, byte size, mtime) behind the rows, and the bad ones

The rows follow a hash of the path, not the path itself: class folders would otherwise lie
one after the other, and a block of consecutive rows -- what a batch order that keeps reads
local draws from when the cache is larger than the memory (:mod:`cnnlab.data.loader`) --
would hold one class. In hash order any block is a random sample of the files.

``key`` is a hash of every file's (path, size, modification time), so changing, adding or
removing a file gives a new key (the cache is *invalidated*); rows of files that did not
change are copied from the older arrays instead of being decoded again. Both files are
written to a temporary name and renamed into place (the ``.json`` last, as the "complete"
mark), so two runs building the same cache at once never see a half-written file; the
loser's rename just replaces identical bytes. Deleting the folder is always safe.

Nothing here holds the whole array in memory unless asked to (``cache_dir=False``, or a
cache that cannot be written): decoded images are written to the file one by one as they
arrive (:class:`cnnlab.data.rows.RowFile`), and rows of an older entry are copied in
blocks of :data:`COPY_ROWS`. An array that must live in memory is refused, in one
sentence, when it is larger than the memory available.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.data.decode import BadImage, load_image
from cnnlab.data.parallel import chunked_map, progress_bar
from cnnlab.data.rows import RowFile, available_memory, size_text
from cnnlab.errors import CnnlabError
from cnnlab.io.fs import atomic_path, atomic_write_text

CACHE_VERSION = 1  # bump when decoding or resizing changes what a row holds
CHUNK = 32  # files per task handed to a worker process
COPY_ROWS = 1024  # rows copied at once from an older cache entry


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


def row_order(paths) -> list[str]:
    """The unique paths in the cache's row order: by a hash of the path (then the path).

    A fixed order, the same on every machine for the same path strings, that spreads the
    files of each folder (each class) evenly over the rows.
    """
    def key(p: str) -> tuple[bytes, str]:
        return hashlib.blake2b(p.encode("utf-8", "surrogateescape"), digest_size=8).digest(), p

    return sorted(set(map(str, paths)), key=key)


@dataclass
class Decoded:
    """Decoded pixels of a set of files, one row per unique path (in :func:`row_order`)."""

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

    ``paths`` are de-duplicated and put in :func:`row_order`; the returned rows follow that
    order. Files that cannot be decoded keep an all-zero row and are listed in ``bad`` with
    the reason.
    """
    t0 = time.perf_counter()
    paths = row_order(paths)
    h, w = size
    shape = (len(paths), channels, h, w)
    if cache_dir is False:
        images = in_memory(shape)
        bad = _decode_into(images.__setitem__, paths, range(len(paths)), size, channels, policy, workers,
                           progress)
        return Decoded(paths, images, bad, None, False, len(paths), time.perf_counter() - t0)

    keys = [file_key(p) for p in paths]
    folder = Path(cache_dir or default_cache_dir()) / f"{h}x{w}x{channels}-{policy}-v{CACHE_VERSION}"
    digest = hashlib.sha256("\n".join(keys).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    npy, meta = folder / f"{digest}.npy", folder / f"{digest}.json"
    found = _open(npy, meta, keys, shape)
    if found is not None:
        return Decoded(paths, found[0], found[1], npy, True, 0, time.perf_counter() - t0)

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy) as tmp:
            _create_npy(tmp, shape)
            _reserve(tmp)
            out = RowFile(tmp, write=True)
            try:
                bad, todo = _reuse(folder, keys, out)
                bad.update(_decode_into(out.write, paths, todo, size, channels, policy, workers, progress))
            finally:
                out.close()
        atomic_write_text(meta, json.dumps({"version": CACHE_VERSION, "keys": keys,
                                            "bad": {str(i): r for i, r in bad.items()}}))
    except (OSError, CnnlabError) as e:  # no space, read-only file system: use memory instead
        images = in_memory(shape, f"the decode cache cannot be written in {folder} ({e})")
        print(f"cnnlab: cannot write the decode cache in {folder} ({e}); keeping images in memory",
              file=sys.stderr)
        bad = _decode_into(images.__setitem__, paths, range(len(paths)), size, channels, policy, workers,
                           progress)
        return Decoded(paths, images, bad, None, False, len(paths), time.perf_counter() - t0)
    images = np.load(npy, mmap_mode="r")
    return Decoded(paths, images, bad, npy, False, len(todo), time.perf_counter() - t0)


def in_memory(shape: tuple[int, ...], why: str = "") -> np.ndarray:
    """A zeroed uint8 array of ``shape`` in memory, refused when it cannot fit there.

    The check comes first because ``np.zeros`` of too much memory often succeeds (the pages
    are only promised) and the process is killed later, half-way through decoding.
    """
    n, c, h, w = shape
    need = float(np.prod(shape, dtype=np.float64))
    available = available_memory()
    if available is not None and need > available:
        cause = f"{why}, and " if why else ""
        raise CnnlabError(f"{cause}{n:,} images of {h}x{w}x{c} need {size_text(need)} of memory, more than "
                          f"the {size_text(available)} available; "
                          + ("free some disk space there or point CNNLAB_CACHE at a disk with room" if why else
                             "use the disk cache (do not pass cache_dir=False) or a smaller image size"))
    try:
        return np.zeros(shape, np.uint8)
    except MemoryError:
        raise CnnlabError(f"{n:,} images of {h}x{w}x{c} need {size_text(need)} of memory, "
                          "more than this machine has; use a smaller --img-size") from None


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


def _create_npy(path: Path, shape: tuple[int, ...]) -> None:
    """A .npy file of uint8 ``shape``: its header, then rows of zeros (a sparse file so far)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        f.truncate(f.tell() + int(np.prod(shape, dtype=np.int64)))


def _reserve(npy: Path) -> None:
    """Allocate the file's blocks now, so a full disk is an error here, not a crash later.

    The free space is checked first: a failed fallocate can keep what it got until the
    file is deleted, so asking for more than there is would fill the disk for a moment.
    """
    if shutil.disk_usage(npy.parent).free < npy.stat().st_size:
        raise OSError(errno.ENOSPC, "not enough free disk space for the cache")
    if hasattr(os, "posix_fallocate"):
        fd = os.open(npy, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        except OSError as e:
            if e.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: a file system without fallocate
                raise
        finally:
            os.close(fd)


def _reuse(folder: Path, keys: list[str], out: RowFile) -> tuple[dict[int, str], list[int]]:
    """Copy rows of unchanged files from older cache entries; return (bad rows, rows to decode).

    The rows are copied :data:`COPY_ROWS` at a time, in the new file's order: memory holds
    one block of rows, whatever the size of the entries."""
    wanted = {k: i for i, k in enumerate(keys)}
    bad: dict[int, str] = {}
    for meta in sorted(folder.glob("*.json"), key=_mtime, reverse=True):
        try:
            info = json.loads(meta.read_text())
            old = RowFile(meta.with_suffix(".npy"))
        except (OSError, ValueError):
            continue  # being replaced by another run, or not a cache entry
        try:
            if old.row_shape != out.row_shape or len(old) != len(info.get("keys", [])):
                continue
            old_bad = {int(i): r for i, r in info.get("bad", {}).items()}
            pairs = [(wanted.pop(k), j) for j, k in enumerate(info["keys"]) if k in wanted]
            good = np.array(sorted((n, o) for n, o in pairs if o not in old_bad), dtype=np.int64).reshape(-1, 2)
            for i in range(0, len(good), COPY_ROWS):
                _copy_rows(old, out, good[i:i + COPY_ROWS])
            bad.update({n: old_bad[o] for n, o in pairs if o in old_bad})
        finally:
            old.close()
        if not wanted:
            break
    return bad, sorted(wanted.values())


def _copy_rows(old: RowFile, out: RowFile, pairs: np.ndarray) -> None:
    """out[new] = old[old_row] for the (new, old_row) pairs, sorted by new: one write per run."""
    pixels = old.read(pairs[:, 1])
    breaks = np.flatnonzero(np.diff(pairs[:, 0]) != 1) + 1
    for start, end in zip(np.r_[0, breaks], np.r_[breaks, len(pairs)]):
        out.write(int(pairs[start, 0]), pixels[start:end])


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def decode_one(path: str, size: tuple[int, int], channels: int, policy: str) -> np.ndarray | str:
    """(C, H, W) uint8 pixels of one file, or the reason it cannot be used."""
    try:
        return load_image(path, size, channels, policy).transpose(2, 0, 1)
    except BadImage as e:
        return e.reason
    except Exception as e:  # a decoder bug on one file must not end a long run
        return f"cannot decode: {e.__class__.__name__}: {e}"


def _decode_into(put, paths: list[str], rows, size, channels, policy, workers, progress) -> dict[int, str]:
    """Decode paths[rows], handing each image to ``put(row, pixels)`` as it arrives (a write to
    the cache file, or into an array); return {row: reason} for the bad ones."""
    rows = list(rows)
    fn = functools.partial(decode_one, size=size, channels=channels, policy=policy)
    bad: dict[int, str] = {}
    with progress_bar(len(rows), progress, "decoding images once (cached for later epochs)") as advance:
        for start, results in chunked_map(fn, [paths[r] for r in rows], workers, CHUNK):
            for row, result in zip(rows[start:start + len(results)], results):
                if isinstance(result, str):
                    bad[row] = result
                else:
                    put(row, result)
            advance(len(results))
    return bad


def cache_entries(cache_dir: str | Path | None = None) -> list[dict]:
    """The complete entries of a cache folder: {folder, file, images, bytes, last_used}."""
    root = Path(cache_dir or default_cache_dir())
    out = []
    for meta in sorted(root.glob("*/*.json")):
        npy = meta.with_suffix(".npy")
        try:
            images = len(json.loads(meta.read_text()).get("keys", []))
            st = npy.stat()
        except (OSError, ValueError):
            continue
        out.append({"folder": meta.parent.name, "file": str(npy), "images": images,
                    "bytes": st.st_size, "last_used": max(st.st_atime, st.st_mtime)})
    return out


def clear_cache(cache_dir: str | Path | None = None, older_than_days: float | None = None) -> tuple[int, int]:
    """Delete cache entries (all, or those unused for ``older_than_days``); (entries, bytes) freed.

    Safe while a run uses an entry: on POSIX an open memory map keeps the data until closed.
    """
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    n = freed = 0
    for e in cache_entries(cache_dir):
        if cutoff is not None and e["last_used"] > cutoff:
            continue
        npy = Path(e["file"])
        npy.with_suffix(".json").unlink(missing_ok=True)  # the "complete" mark goes first
        npy.unlink(missing_ok=True)
        n, freed = n + 1, freed + e["bytes"]
    root = Path(cache_dir or default_cache_dir())
    for tmp in root.glob("*/.*.tmp"):  # left by a killed run; an hour old, so not being written
        if _mtime(tmp) < time.time() - 3600:
            freed += tmp.stat().st_size
            tmp.unlink(missing_ok=True)
    return n, freed
