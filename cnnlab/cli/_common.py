"""Small helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys
from typing import Any


def add_subcommand(sub, name: str, help: str, description: str, epilog: str = ""):
    """A subparser with cnnlab's help formatting (examples keep their line breaks)."""
    from cnnlab.cli import HelpFormatter

    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=HelpFormatter)
    return p


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)
