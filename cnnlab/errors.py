"""Errors a user can cause.

Anything that is the user's to fix (a bad path, a bad spec, a corrupt file) is raised as
a :class:`CnnlabError`. The command line prints its message as one sentence and exits
with code 2, without a traceback; the Python API lets it propagate like any exception.
"""

import os


class CnnlabError(Exception):
    """A problem the user can fix; its message is one clear sentence."""

    exit_code = 2


class SpecError(CnnlabError, ValueError):
    """The model spec is invalid (unknown layer, bad argument, impossible shape...)."""


class DataError(CnnlabError):
    """The dataset cannot be used as given (missing folder, no images, ...)."""


class WeightsError(CnnlabError):
    """A weights file cannot be loaded (not safetensors, wrong model, ...)."""


class SaidByAnotherProcess(CnnlabError):
    """Under torchrun: another process (rank 0, or the rank that found the problem) said the
    error; this one stops with the same exit code and says nothing, instead of printing the
    message again or a traceback when that process leaves their next collective call."""

    def __init__(self, message: str = "", exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def is_main_process() -> bool:
    """True outside torchrun, and in its rank-0 process (torchrun sets RANK)."""
    return os.environ.get("RANK", "0") == "0"
