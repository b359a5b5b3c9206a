"""What every `visual-tourism` subcommand shares: the parser class, the common options, the
settings they select, and printing (lines, tables that fit the terminal, a result record).
Each command group's module imports from here, never from another group's module.

``Parser`` makes the house rules automatic for every subcommand built under it:
- each option's help ends with its default, e.g. ``(default: 8080)``, unless the default is
  None/False or the help already says what the default is;
- each subcommand's description defaults to its one-line help;
- ``-v/--verbose`` is accepted after any subcommand as well as before it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import DEFAULT_PROFILE, Config, load_config


def say(message: str) -> None:
    print(as_typed(message), flush=True)


_HINT = re.compile(r"(['`])visual-tourism(?= )")


def wait_for_interrupt() -> None:
    """Block until Ctrl-C (or a handler that raises KeyboardInterrupt, as SIGTERM's does).

    Sleeps in short steps rather than on a lock: the kernel may hand a process's signal to any
    of its threads, and Python runs the handler only when the main thread next runs bytecode; a
    main thread asleep on a lock with no timeout then never wakes (seen under load: SIGTERM
    ignored for a minute). Half a second is the longest a signal can wait.
    """
    while True:
        time.sleep(0.5)


def as_typed(message: str) -> str:
    """The library's hints name the bare command ('visual-tourism up'): the way to type it in
    this shell instead, so that a hint works as printed when the venv is not active."""
    vt = command()
    return message if vt == "visual-tourism" else _HINT.sub(lambda m: m.group(1) + vt, message)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from a record (the model's answer, a container's error) made safe for a terminal:
    control characters, escape sequences included, become U+FFFD; newlines and tabs stay."""
    return _CONTROL.sub("\ufffd", text)


def command() -> str:
    """How to type `visual-tourism` in this shell: the bare name when it is on PATH (an active
    venv), else the path of the script beside this Python (``.venv/bin/visual-tourism``)."""
    script = Path(sys.executable).parent / "visual-tourism"
    found = shutil.which("visual-tourism")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "visual-tourism"
    if not script.exists():
        return f"{sys.executable} -m visual_tourism.cli"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else str(script)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to option help; keeps the help's own line breaks otherwise."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower():
            return text
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class _Commands(argparse._SubParsersAction):
    """Subcommands whose description defaults to their help line."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if kwargs.get("help") and not kwargs.get("description"):
            kwargs["description"] = kwargs["help"][0].upper() + kwargs["help"][1:] + "."
        return super().add_parser(name, **kwargs)


class Parser(argparse.ArgumentParser):
    """The parser of every (sub)command; ``add_subparsers`` makes more of the same class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)
        if self.add_help:  # not the option-only parents
            # SUPPRESS: a subcommand without -v must not reset a -v given before it.
            self.add_argument("-v", "--verbose", action="store_true",
                              default=argparse.SUPPRESS,
                              help="log every step (before or after the subcommand)")


def common_options() -> argparse.ArgumentParser:
    """The options that select a stack: pass as ``parents=[common]`` to a subcommand."""
    common = argparse.ArgumentParser(add_help=False, formatter_class=HelpFormatter)
    common.add_argument("--config", metavar="FILE",
                        help="TOML or JSON settings file (default: VT_CONFIG, else none)")
    common.add_argument("--region",
                        help="AWS region (default: VT_REGION, else AWS_REGION)")
    common.add_argument("--prefix",
                        help="name prefix of every resource (default: VT_PREFIX, else "
                             f"{Config.prefix})")
    common.add_argument("--bucket",
                        help="bucket name (default: VT_BUCKET, else {prefix}-{account}-{region})")
    common.add_argument("--model-profile",
                        help="model profile (default: VT_MODEL_PROFILE, else "
                             f"{DEFAULT_PROFILE})")
    common.add_argument("--inference-mode", choices=("realtime", "async"),
                        help="realtime, or async: scales to zero when idle (default: "
                             "VT_INFERENCE_MODE, else realtime)")
    return common


def config_from_args(args: argparse.Namespace, **extra: Any) -> Config:
    """The settings the common options select: defaults < VT_CONFIG < VT_* < options."""
    options = {
        "region": getattr(args, "region", None),
        "prefix": getattr(args, "prefix", None),
        "bucket": getattr(args, "bucket", None),
        "model_profile": getattr(args, "model_profile", None),
        "inference_mode": getattr(args, "inference_mode", None),
        **extra,
    }
    return load_config(getattr(args, "config", None), **options)


# -- tables and records ----------------------------------------------------------------------

WIDE_HELP = "print every column, however wide (default: as many as fit the terminal)"


def terminal_width() -> int:
    """The terminal's columns; 80 when output goes to a pipe or a file (COLUMNS overrides)."""
    return shutil.get_terminal_size((80, 24)).columns


def aligned(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Each row's cells under their headers, two spaces apart, with a rule under the headers."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, wide: bool = False,
          narrow: Sequence[str] | None = None) -> list[str]:
    """The aligned table, made to fit the terminal unless ``wide``.

    A table wider than the terminal keeps only the ``narrow`` columns (all when None), cuts
    what still overflows, and ends with a line naming the option that shows everything: a
    table is read on an 80-column terminal, or in a pipe, as often as in a wide window.
    """
    lines = aligned(headers, rows)
    width = terminal_width()
    if wide or max(map(len, lines)) <= width:
        return lines
    keep = [list(headers).index(h) for h in narrow] if narrow else list(range(len(headers)))
    lines = aligned([headers[i] for i in keep], [[r[i] for i in keep] for r in rows])
    cut = [line if len(line) <= width else line[:width - 1] + "\u2026" for line in lines]
    left_out = [h for i, h in enumerate(headers) if i not in keep]
    note = (f"({', '.join(left_out)} left out" if left_out else "(lines cut") + (
        f" to fit {width} columns: --wide shows the whole table, --json every field)")
    return cut + textwrap.wrap(note, width=width)


def wrapped(text: str) -> str:
    """A paragraph wrapped to the terminal (words such as URLs are never split)."""
    return textwrap.fill(text, width=terminal_width(), break_long_words=False,
                         break_on_hyphens=False)


def labelled(label: str, text: str) -> str:
    """``text`` after an indented label, wrapped to the terminal under its first line (words
    such as ARNs are never split, so they stay whole for copying)."""
    head = f"  {label:12} "
    return textwrap.fill(text, width=terminal_width(), initial_indent=head,
                         subsequent_indent=" " * len(head), break_long_words=False,
                         break_on_hyphens=False) or head.rstrip()


def print_result(record: dict[str, Any]) -> None:
    """A result record as the person who asked reads it: the answer, or the error."""
    if record.get("status") == "ok":
        say("\n" + textwrap.fill(printable(str(record["answer"])), width=min(terminal_width(), 88))
            + "\n")
    else:
        error = record.get("error", {})
        say(f"\nNo answer: {printable(str(error.get('code')))}: "
            f"{printable(str(error.get('message')))}\n")
    from ..places import nearby_lines

    for line in nearby_lines(record):
        say(printable(line))
    say(f"(result record: {record.get('result_key')}, seen "
        f"{record.get('seen_after_seconds')} s after upload)")
