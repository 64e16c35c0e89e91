"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Write to a temporary file in the same folder, flush it to disk, then rename it over the
target; a rename within one file system is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from cnnlab.errors import CnnlabError


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.close(fd)
    except OSError as e:
        raise CnnlabError(f"cannot write {path}: {e.strerror or e}") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
            # again: a writer may have made the file anew (safetensors' save_file leaves 0600)
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise CnnlabError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def check_can_write(path: str | Path, flag: str, hint: str = "") -> None:
    """Fail now, in one sentence, when ``path`` (a folder or file still to be made) cannot be
    written: before minutes of work whose results would then be lost. Creates nothing.
    ``flag`` names what the user gave (``--out``); ``hint`` ends the sentence ("; ...")."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise CnnlabError(f"{flag} {path}: cannot write there: {existing} is a file, not a folder{hint}")
    folder = existing if existing.is_dir() else existing.parent
    try:  # a real try (root ignores permission bits; a read-only mount refuses even root)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise CnnlabError(f"{flag} {path}: cannot write there ({folder}: {e.strerror or e}){hint}") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    # surrogateescape: a file name that is not valid UTF-8 (from a Windows zip, say) is
    # written back as the bytes it was, instead of failing.
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))
