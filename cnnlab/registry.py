"""A registry: the one place where a name a user types (``--optimizer sgd``) meets its code.

timm's idea: each choice is declared once, with its help line and defaults, next to the
code that builds it; the config's validation, the CLI's ``choices`` and ``--help`` and the
builder all read the same entry. The registries live in the modules of what they hold:

==========================================  =================================================
:data:`cnnlab.model.layers.LAYERS`          the layer types a model spec can use (the class)
:data:`cnnlab.model.spec.PRESETS`           the preset models (a function giving the spec)
:data:`cnnlab.train.optimizers.OPTIMIZERS`  ``--optimizer`` (a function giving the optimiser)
:data:`cnnlab.train.schedules.SCHEDULES`    ``--scheduler`` (the learning-rate factor)
:data:`cnnlab.train.losses.LOSSES`          ``--loss`` (a function giving the loss module)
:data:`cnnlab.train.recipes.RECIPES`        ``--recipe`` (a function giving the recipe)
==========================================  =================================================

To add an entry, see the docstring of that module. An unknown name is refused with the
closest known one: "unknown recipe 'airbenh'; did you mean 'airbench'? (known: airbench)".

``cnnlab --help`` reads the optimisers, schedules and losses, so their modules import
torch only inside their builders. This module sits at the bottom of cnnlab, beside
:mod:`cnnlab.errors`, and imports nothing else of it.
"""

from __future__ import annotations

import difflib
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

    ``what`` is what an entry is ("optimizer", "layer type"), used in error messages; ``see``
    replaces the list of known names in them when that list is long ("see `cnnlab layers`").
    Iterating gives the entries; :meth:`names` the names.
    """

    def __init__(self, what: str, see: str = ""):
        self.what = what
        self.see = see
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
            raise CnnlabError(self.unknown(name)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def closest(self, name: object) -> str | None:
        """The registered name nearest to ``name`` (a typo's intended name), or None."""
        close = difflib.get_close_matches(str(name), self._entries, n=1)
        return close[0] if close else None

    def unknown(self, name: object) -> str:
        """The sentence refusing ``name``: "unknown loss 'focl'; did you mean 'focal'? (known: ...)"."""
        close = self.closest(name)
        hint = f"; did you mean {close!r}?" if close else ""
        listing = self.see or f"known: {', '.join(self._entries)}"
        return f"unknown {self.what} {name!r}{hint} ({listing})"

    def check(self, name: str) -> str:
        """``name`` if registered; else a ValueError for pydantic ('must be one of ...')."""
        if name not in self:
            close = self.closest(name)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ValueError(f"must be one of {', '.join(self._entries)}, got {name!r}{hint}")
        return name
