"""`visual-tourism`: the command line over the same functions the notebooks call.

One module per command group, each named after the part of the package it drives and thin
over it; ``common`` holds what they share:

- ``stack``: up, wake, sleep, status, down, ask, replay (visual_tourism/stack.py)
- ``local``: local demo, serve and logs (visual_tourism/local/)
- ``infra``: infra package, deploy, delete and lint (visual_tourism/infra.py)
- ``web``: the web page's link, QR code and access code (visual_tourism/web.py)
- ``permissions``: check (the preflight), admin-policy and up --skip-check
- ``profiles``: the model lineup, offline (visual_tourism/profiles.py)
- ``evaluation``: eval, profiles scored on the labelled photos (visual_tourism/evaluation.py)
- ``presets``: presets list, show, set and delete (visual_tourism/presets.py)

Nothing outside this package imports it: the library never depends on its command line.

Adding a subcommand or an option (the convention, checked by tests/test_cli.py):
- add it in its group's ``add_cli(sub, common)`` (a new group: a new module with an
  ``add_cli``, listed in ``GROUPS``); import shared pieces from ``common``, never from another
  group's module;
- give every subcommand ``help=`` (its one-line summary; also its description unless it has its
  own ``description=``) and every argument ``help=`` that states its unit (seconds, MB, port,
  lines, ...);
- the default is appended to the help automatically (``(default: 8080)``); when the default is
  None or comes from the environment, say in the help what happens (``default: VT_X, else
  ...``);
- ``-v`` is added to every subcommand by ``common.Parser``; do not add your own;
- print through ``common.say`` and tables through ``common.table`` (they fit the terminal;
  ``--wide`` and ``--json`` give the rest).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import VisualTourismError
from . import evaluation, infra, local, permissions, presets, profiles, stack, web
from .common import Parser, as_typed, common_options

# In the order `visual-tourism -h` lists them; permissions adds `up --skip-check`, so it
# comes after stack.
GROUPS = (stack, local, infra, web, permissions, profiles, evaluation, presets)

# What a shell reports for a command stopped by SIGPIPE (128 + 13), as `yes | head -1` does.
EXIT_CLOSED_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="visual-tourism",
        description="Photo in, travel advice out: build, inspect and remove the stack, on AWS "
                    "or on this machine ('local').",
    )
    common = common_options()
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do (COMMAND -h for its options)")
    for group in GROUPS:
        group.add_cli(sub, common)
    return parser


def _closed_pipe() -> int:
    """The reader of our output left (`visual-tourism profiles | head -2`): stop quietly, as
    a command stopped by SIGPIPE does. Output still buffered would fail again when Python
    flushes it at exit, so standard output is pointed at the null device first."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout without a file descriptor (a test's capture)
        pass
    return EXIT_CLOSED_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        try:
            status = args.func(args)
        except VisualTourismError as exc:
            print(f"error: {as_typed(str(exc))}", file=sys.stderr)
            return 2
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit-time flush
        return status
    except BrokenPipeError:
        return _closed_pipe()
    except KeyboardInterrupt:
        return 130
