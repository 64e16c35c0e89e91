"""The `cnnlab` command. Each subcommand lives in its own module of this package.

A module defines ``register(subparsers)``, which adds its parser and sets ``func`` to a
function taking the parsed arguments and returning an exit code. Heavy imports (torch,
matplotlib) happen inside those functions so that `cnnlab --help` answers at once.
"""

from __future__ import annotations

import argparse
import atexit
import difflib
import gc
import importlib
import os
import pkgutil
import sys

from cnnlab import __version__
from cnnlab.errors import CnnlabError, SaidByAnotherProcess, is_main_process

# The order of `cnnlab --help`; modules not named here come after, alphabetically.
ORDER = ["demo", "train", "evaluate", "predict", "summary", "models", "recipes", "layers", "data", "viz",
         "explain", "export", "lr_find", "doctor"]

DESCRIPTION = """\
cnnlab: from a folder of labelled images to a trained, evaluated and understood CNN.

A typical session:
  cnnlab demo                              train + evaluate on a built-in dataset (~20 s)
  cnnlab summary seed                      the lecture's CNN: shapes and parameter formulas
  cnnlab train DATA --model resnet_small   train on your folder of class sub-folders
  cnnlab evaluate runs/NAME                accuracy, precision/recall/F1, confusion matrix
  cnnlab predict runs/NAME photo.jpg       classify new images

Run `cnnlab COMMAND --help` for each command's options and examples."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' line breaks and shows each option's default (when it has one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistyped command line is one line on stderr (and exit code 2), like
    every other error, instead of the whole usage block; it points to ``--help``."""

    def error(self, message: str):
        self.exit(2, f"cnnlab: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="cnnlab", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    names = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    for name in [n for n in ORDER if n in names] + sorted(names - set(ORDER)):
        module = importlib.import_module(f"{__name__}.{name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)command's parser that ``argv`` names: `cnnlab data check ...` -> that of `data check`."""
    for token in argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and token in subs[0].choices:
            parser = subs[0].choices[token]
    return parser


def main(argv: list[str] | None = None) -> int:
    # A file name that is not valid UTF-8 (from a Windows zip, say) is printed with an
    # escape (caf\udce9.jpg) instead of ending the command with UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if argv is None:  # the `cnnlab` program itself (not a call from Python code)
        # At exit, Python's last garbage collections walk every object torch and
        # torch._dynamo created at import: about a second of every command (benchmarks/log/2026-12-02.md).
        # Frozen objects are left to the operating system, as it frees the memory anyway;
        # atexit handlers (registered after this one, so run before it), weakref
        # finalizers and the flushing of stdout/stderr still run. (Spack's bin/spack does
        # the same, spack/spack#53020; gc.freeze: CPython issue 75739.)
        atexit.register(gc.freeze)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse would name `cnnlab --help`: name the command's own help, and the closest option
        command = _command_parser(parser, sys.argv[1:] if argv is None else argv)
        unknown = next((a.split("=")[0] for a in extra if a.startswith("--")), None)
        close = difflib.get_close_matches(unknown, [o for a in command._actions for o in a.option_strings
                                                    if o.startswith("--")], n=1) if unknown else []
        hint = f"; did you mean {close[0]}?" if close else ""
        parser.exit(2, f"cnnlab: error: unrecognized arguments: {' '.join(extra)}{hint} "
                       f"(see `{command.prog} --help`)\n")
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.alloc import tune_allocator

    tune_allocator()  # glibc: reuse freed blocks between training steps (cnnlab/alloc.py)
    try:
        return int(args.func(args) or 0)
    except CnnlabError as e:
        if not isinstance(e, SaidByAnotherProcess):
            print(f"cnnlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if is_main_process():  # under torchrun every process gets the Ctrl-C: one says so
            print("cnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The program reading our output has gone (`cnnlab train DATA | head`): stop, as
        # other tools do, with the shell's code for it (128 + SIGPIPE), but not in silence,
        # since a training run ends early. What was saved stays: --resume continues a run.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        try:
            print("cnnlab: stopped: the output pipe was closed", file=sys.stderr, flush=True)
        except (BrokenPipeError, OSError, ValueError):  # `2>&1 | head`: stderr went with it; the code says it
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
            except (OSError, ValueError):
                pass
        return 141
