"""What the notebooks print: aligned key/value lines, with AWS account IDs masked.

Notebook outputs get shared as files and screenshots, so every helper here masks 12-digit
numbers (``********1234``). ``print(...)`` a value yourself when you need it in full.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_ACCOUNT_ID = re.compile(r"(?<!\d)(\d{8})(\d{4})(?!\d)")


def redact(text: str) -> str:
    """Mask 12-digit numbers (AWS account IDs) down to their last four digits."""
    return _ACCOUNT_ID.sub(lambda m: "*" * 8 + m.group(2), text)


def say(message: str) -> None:
    """The notebooks' progress callback: print, with account IDs masked."""
    print(redact(message), flush=True)


def show(info: Mapping[str, Any]) -> None:
    """Print a dict as aligned ``key: value`` lines (nested values as compact JSON)."""
    width = max((len(str(k)) for k in info), default=0)
    for key, value in info.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        say(f"{str(key):<{width}}  {text}")


def home_relative(path: Path) -> str:
    """A path as ``~/...`` when under the home folder: no user name in shared outputs."""
    try:
        return "~/" + str(path.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)
