"""Ctrl-C during training: the first one stops after the current batch (and saves), a second one kills.

The :class:`~cnnlab.train.loop.Trainer` wraps its epochs in :func:`catch_ctrl_c`; the signal
handler only sets ``trainer.interrupted``, and the loop looks at it after every batch, so a
step is never cut in half. The loop then saves a resumable checkpoint of the unfinished epoch
(see :mod:`cnnlab.train.resume`) and raises :class:`TrainingInterrupted` (exit code 130, as
a shell reports SIGINT).
"""

from __future__ import annotations

import contextlib
import signal
import threading

from cnnlab.errors import CnnlabError


class TrainingInterrupted(CnnlabError):
    """Ctrl-C: training stopped after the current batch and saved a resumable checkpoint."""

    exit_code = 130


class Interrupt(Exception):
    """Raised inside the epoch when Ctrl-C asked to stop (caught by Trainer.fit)."""


@contextlib.contextmanager
def catch_ctrl_c(trainer):
    """While inside, SIGINT sets ``trainer.interrupted``; a second SIGINT raises KeyboardInterrupt.

    Not in a thread other than the main one (signals go to the main thread), nor under
    torchrun: there Ctrl-C ends every process at once, and the checkpoint of the last
    finished epoch is there to resume from.
    """
    if threading.current_thread() is not threading.main_thread() or trainer.world > 1:
        yield
        return

    def handler(signum, frame):
        if trainer.interrupted:
            raise KeyboardInterrupt
        trainer.interrupted = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
