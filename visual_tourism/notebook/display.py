"""What the notebooks print: tables and lines, with AWS account IDs masked.

Notebook outputs get shared as files and screenshots, so every helper here masks 12-digit
numbers (``********1234``). ``print(...)`` a value yourself when you need it in full.
"""

from __future__ import annotations

import html
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


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value if value else "(empty)"
    if value is None:
        return "-"
    if isinstance(value, list | tuple) and all(not isinstance(v, Mapping | list) for v in value):
        return ", ".join(_text(v) for v in value) if value else "(none)"
    return json.dumps(value, default=str)


class Table:
    """A dict as a two-column table: HTML in JupyterLab, aligned text elsewhere. A nested dict
    becomes a table of its own (HTML) or indented lines under its key (text). Account IDs
    masked in both."""

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.info = info

    def text(self) -> str:
        lines: list[str] = []

        def rows(info: Mapping[str, Any], indent: str) -> None:
            width = max((len(str(k)) for k in info), default=0)
            for key, value in info.items():
                if isinstance(value, Mapping) and value:
                    lines.append(f"{indent}{key}")
                    rows(value, indent + "  ")
                else:
                    lines.append(f"{indent}{str(key):<{width}}  {_text(value)}".rstrip())

        rows(self.info, "")
        return redact("\n".join(lines))

    def html(self) -> str:
        cell = 'style="text-align:left;vertical-align:top;padding:2px 10px 2px 0"'

        def table(info: Mapping[str, Any]) -> str:
            body = []
            for key, value in info.items():
                shown = (table(value) if isinstance(value, Mapping) and value
                         else html.escape(_text(value)))
                body.append(f"<tr><th {cell}>{html.escape(str(key))}</th>"
                            f"<td {cell}>{shown}</td></tr>")
            return ('<table style="border-collapse:collapse;margin:0">'
                    + "".join(body) + "</table>")

        return redact(table(self.info))

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())


def in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    return get_ipython() is not None


def show(info: Mapping[str, Any]) -> None:
    """Show a dict as a table (HTML in JupyterLab, aligned lines elsewhere), IDs masked."""
    table = Table(info)
    if in_ipython():
        from IPython.display import display

        display(table)
    else:
        print(table.text(), flush=True)


def home_relative(path: Path) -> str:
    """A path as ``~/...`` when under the home folder: no user name in shared outputs."""
    try:
        return "~/" + str(path.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)
