"""Rows of the decode cache's ``.npy`` file, read and written through the page cache.

The decode cache is one uint8 (N, C, H, W) array in a ``.npy`` file (:mod:`cnnlab.data.cache`).
Batches are read out of it with ``os.preadv`` into a fresh array, not by indexing a memory
map: the kernel's page cache keeps the rows read lately (shared by every process reading the
file, and handed back to whoever needs the memory), while the training process holds only
its batches. Through a memory map every row ever read would count as the process's own
resident memory (RSS), up to the whole file, and a page fault on a cold map makes the kernel
read a neighbourhood around the row (up to the disk's ``read_ahead_kb``, 8 MiB on some
virtual disks) that a random order never uses.

Writing goes the same way (``os.pwrite``, one image at a time as it is decoded), so building
a cache larger than the memory never holds more than the images in flight.

:func:`available_memory` says how much memory the machine (or the container) has left:
the loader compares the cache's size with it to choose the batch order
(:func:`cnnlab.data.loader.choose_shuffle`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

# POSIX's positioned reads and writes; elsewhere RowFile seeks first, and the loader reads
# batches out of the memory map
HAS_PREAD = hasattr(os, "preadv") and hasattr(os, "pwrite")


class RowFile:
    """A uint8 ``.npy`` array on disk, read and written by rows (``write=True`` to write).

    ``shape``, ``row_bytes`` and ``offset`` (where row 0 starts) come from the file's header.
    ``read(rows)`` returns their pixels, in that order; ``write(row, pixels)`` stores one or
    more consecutive rows; ``advise(first, count)`` asks the kernel to read rows ahead.
    """

    def __init__(self, path: str | Path, write: bool = False):
        self.path, self.writable = Path(path), write
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if dtype != np.uint8 or fortran or len(shape) < 1:
            raise ValueError(f"{self.path}: not a C-ordered uint8 array")
        self.shape = tuple(int(s) for s in shape)
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64))
        self.fd = os.open(self.path, (os.O_RDWR if write else os.O_RDONLY) | getattr(os, "O_BINARY", 0))
        if os.fstat(self.fd).st_size < self.offset + self.nbytes:  # cut short: not rows to read
            self.close()
            raise ValueError(f"{self.path}: shorter than its {self.shape} rows")

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def read(self, rows) -> np.ndarray:
        """uint8 (len(rows), *row_shape): the pixels of ``rows`` (any order, repeats allowed).

        Each run of consecutive rows is one system call; a row asked for twice is read once.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) == 0:
            return np.empty((0, *self.row_shape), np.uint8)
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"rows outside 0..{len(self) - 1} of {self.path}")
        unique, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(unique), *self.row_shape), np.uint8)
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        for start, end in zip(np.r_[0, breaks], np.r_[breaks, len(unique)]):
            self._read_into(out[start:end], int(unique[start]))
        if len(unique) == len(rows) and np.array_equal(unique, rows):
            return out
        return out[inverse.reshape(-1)]

    def _read_into(self, block: np.ndarray, row: int) -> None:
        view = memoryview(block).cast("B")
        done, at = 0, self.offset + row * self.row_bytes
        while done < len(view):
            if HAS_PREAD:
                n = os.preadv(self.fd, [view[done:]], at + done)
            else:  # no positioned reads (Windows): seek, then read
                os.lseek(self.fd, at + done, os.SEEK_SET)
                chunk = os.read(self.fd, len(view) - done)
                n = len(chunk)
                view[done:done + n] = chunk
            if n == 0:
                raise OSError(errno.EIO, f"{self.path} ends before row {row + done // self.row_bytes}")
            done += n

    def write(self, row: int, pixels: np.ndarray) -> None:
        """Store ``pixels`` (one row, or several consecutive ones) from ``row`` on."""
        data = np.ascontiguousarray(pixels, dtype=np.uint8)
        view = memoryview(data).cast("B")
        if len(view) % self.row_bytes or row < 0 or row + len(view) // self.row_bytes > len(self):
            raise ValueError(f"{data.shape} does not fit rows {row}.. of {self.shape}")
        done, at = 0, self.offset + row * self.row_bytes
        while done < len(view):
            if HAS_PREAD:
                done += os.pwrite(self.fd, view[done:], at + done)
            else:  # no positioned writes (Windows): seek, then write
                os.lseek(self.fd, at + done, os.SEEK_SET)
                done += os.write(self.fd, view[done:])

    def advise(self, first: int, count: int, advice: int | None = None) -> None:
        """posix_fadvise on rows first..first+count (default: WILLNEED, read them ahead)."""
        if not hasattr(os, "posix_fadvise"):
            return
        advice = os.POSIX_FADV_WILLNEED if advice is None else advice
        try:
            os.posix_fadvise(self.fd, self.offset + first * self.row_bytes, count * self.row_bytes, advice)
        except OSError:
            pass  # advice only: a file system without it reads on demand

    def close(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.close()

    def __getstate__(self):  # another process opens the file itself (a descriptor is per process)
        return {"path": self.path, "writable": self.writable}

    def __setstate__(self, state):
        self.__init__(state["path"], state["writable"])


def size_text(n: float) -> str:
    """Bytes as a person reads them: "31.2 GiB", "614 MiB", "12 KiB"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}" if unit == "GiB" else f"{n / scale:,.0f} {unit}"
    return f"{int(n)} bytes"


def available_memory(meminfo: str | Path = "/proc/meminfo", cgroup: str | Path = "/sys/fs/cgroup") -> int | None:
    """Bytes of memory still available here: the kernel's MemAvailable (free memory plus the
    page cache it can reclaim), or a container's memory limit less what it uses, if lower.
    None when neither can be read (not Linux, and no ``os.sysconf``)."""
    found = []
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    limited = _cgroup_available(Path(cgroup))
    if limited is not None:
        found.append(limited)
    return min(found) if found else None


def _cgroup_available(root: Path) -> int | None:
    """limit - usage + reclaimable page cache of this container's memory cgroup (v2, else v1)."""
    for limit_file, usage_file, cache_key in (("memory.max", "memory.current", "file"),
                                              ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
                                               "total_cache")):
        try:
            limit = (root / limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:  # no limit
                return None
            usage = int((root / usage_file).read_text())
            stat = (root / limit_file).parent / "memory.stat"
            cache = next((int(line.split()[1]) for line in stat.read_text().splitlines()
                          if line.split()[0] == cache_key), 0)
        except (OSError, ValueError, IndexError):
            continue
        return max(0, int(limit) - usage + cache)
    return None
