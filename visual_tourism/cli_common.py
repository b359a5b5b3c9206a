"""What every `visual-tourism` subcommand shares: the parser class, the common options, the
settings they select, and printing. `cli.py` and the modules that add their own subcommands
(`infra.py`, ...) import from here, never from each other.

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
from pathlib import Path
from typing import Any

from .config import DEFAULT_PROFILE, Config, load_config


def say(message: str) -> None:
    print(as_typed(message), flush=True)


_HINT = re.compile(r"(['`])visual-tourism(?= )")


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
