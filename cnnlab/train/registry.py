"""A registry: the one place where a name a user types (``--optimizer sgd``) meets its code.

timm's idea: each choice is declared once, with its help line and defaults, next to the
code that builds it; the config's validation, the CLI's ``choices`` and ``--help`` and the
builder all read the same entry. The registries themselves live in the modules of what
they hold: :data:`cnnlab.train.optimizers.OPTIMIZERS`, :data:`cnnlab.train.schedules.SCHEDULES`,
:data:`cnnlab.train.losses.LOSSES`. To add an entry, see the docstring of that module.

Registries are read by ``cnnlab --help``, so the modules that fill them import torch only
inside their builders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Entry:
    """One choice: its name, one line of help, the function behind it and its defaults."""

    name: str
    help: str
    build: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)  # e.g. lr, weight_decay, warmup


class Registry:
    """name -> :class:`Entry`, in the order registered (the order ``--help`` lists them).

    ``what`` is the option that names an entry ("optimizer"), used in error messages.
    """

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, help: str, build: Callable[..., Any], **defaults: Any) -> Entry:
        """Declare ``name``; a second declaration of the same name is a mistake."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        entry = Entry(name, help, build, dict(defaults))
        self._entries[name] = entry
        return entry

    def register(self, name: str, help: str, **defaults: Any) -> Callable[[Callable], Callable]:
        """The decorator form of :meth:`add`: ``@OPTIMIZERS.register("sgd", "...", lr=0.05)``."""

        def wrap(build: Callable) -> Callable:
            self.add(name, help, build, **defaults)
            return build

        return wrap

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise CnnlabError(f"{self.what} must be one of {', '.join(self._entries)}, got {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def check(self, name: str) -> str:
        """``name`` if registered; else a ValueError for pydantic ('must be one of ...')."""
        if name not in self._entries:
            raise ValueError(f"must be one of {', '.join(self._entries)}, got {name!r}")
        return name
