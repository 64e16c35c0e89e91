"""Run a function over many files, in worker processes, with a progress bar on a terminal.

Used by the decode-once cache and by ``cnnlab data check``. The work is cut into chunks
of files; with ``workers > 0`` torch's DataLoader runs the chunks in that many processes
(Pillow decoding holds the GIL, so threads would not help), otherwise they run here.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, Iterator, Sequence

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from torch.utils.data import DataLoader


class _Chunks:
    """A torch map-style dataset: item i is fn applied to the i-th chunk of items."""

    def __init__(self, fn: Callable[[Any], Any], items: Sequence[Any], chunk: int):
        self.fn, self.items, self.chunk = fn, items, chunk

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.chunk)

    def __getitem__(self, i: int) -> tuple[int, list[Any]]:
        start = i * self.chunk
        return start, [self.fn(x) for x in self.items[start:start + self.chunk]]


def _identity(x):
    return x


def chunked_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int = 0,
                chunk: int = 32) -> Iterator[tuple[int, list[Any]]]:
    """Yield (start, [fn(x) for x in items[start:start + chunk]]) until all items are done.

    ``fn`` must be picklable (a module-level function or a functools.partial of one) when
    workers > 0. Chunks may arrive in any order; ``start`` says where each belongs.
    """
    if workers > 0:  # small jobs: smaller chunks, so that every worker gets a share
        chunk = max(1, min(chunk, len(items) // (4 * workers)))
    job = _Chunks(fn, items, chunk)
    if workers <= 0 or len(job) <= 1:
        yield from (job[i] for i in range(len(job)))
        return

    yield from DataLoader(job, batch_size=None, num_workers=min(workers, len(job)),
                          collate_fn=_identity, prefetch_factor=4)


class progress_bar:
    """``with progress_bar(total, show, text) as advance: ... advance(n)``.

    A rich bar when ``show`` is True, or when it is None and stdout is a terminal;
    otherwise ``advance`` does nothing, so logs and pipes stay clean.
    """

    def __init__(self, total: int, show: bool | None, text: str):
        self.total, self.text = total, text
        self.show = sys.stdout.isatty() if show is None else show
        self.bar = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.show:
            return lambda n: None

        self.bar = Progress(TextColumn(self.text), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), transient=True)
        self.bar.start()
        task = self.bar.add_task(self.text, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
