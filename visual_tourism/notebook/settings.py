"""The settings notebook 01 checks and saves, and every notebook's first cell reads back."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import where
from ..config import Config, load_config
from ..errors import ConfigError
from .display import home_relative, say

SETTINGS_FILE = "settings.toml"
# What the settings file holds: the plain text and numbers of notebook 01's settings dict.
_SCALARS = (str, int, float)


_PLACEHOLDER = re.compile(
    r"<[^<>]*>|change[_-]?me|replace[_-]?me|(?-i:\bTODO\b|\bFIXME\b)|^your[-_ ]|^x{3,}$|^\.\.\.$"
    r"|123456789012",
    re.IGNORECASE,
)


def check_placeholders(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    """Raise ConfigError naming every value still left as a placeholder; return the settings.

    Catches what copy-pasted examples leave behind: ``"<your-bucket>"``, ``"CHANGE_ME"``,
    ``"your-role"``, ``"TODO"``, ``"..."``, the documentation's account ID.
    """
    found: list[str] = []

    def walk(path: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{path}.{key}" if path else str(key), inner)
        elif isinstance(value, list | tuple):
            for i, inner in enumerate(value):
                walk(f"{path}[{i}]", inner)
        elif isinstance(value, str) and _PLACEHOLDER.search(value.strip()):
            found.append(f"{path} = {value!r}")

    walk("", settings)
    if found:
        raise ConfigError(
            "Replace the placeholder values in the settings cell, then run it again:\n  - "
            + "\n  - ".join(found)
        )
    return settings


def settings_path(env: Mapping[str, str] | None = None) -> Path:
    """Where notebook 01 keeps the settings: ``VT_CONFIG`` if set, else in the state folder.

    The state folder (``VT_STATE_DIR``, default ``~/.visual-tourism``) is outside the
    repository, so account-specific choices are never committed by accident.
    """
    env = os.environ if env is None else env
    if env.get("VT_CONFIG"):
        return Path(env["VT_CONFIG"])
    base = env.get("VT_STATE_DIR") or str(Path.home() / ".visual-tourism")
    return Path(base) / SETTINGS_FILE


def _environment_with_region(env: Mapping[str, str]) -> dict[str, str]:
    """The environment, plus the region of the AWS profile or Studio image as a last resort.

    ``load_config`` reads only environment variables; on a laptop the region is often just in
    ``~/.aws/config``.
    """
    merged = dict(env)
    if not where.region(merged):
        import boto3

        region = boto3.session.Session().region_name
        if region:
            merged["AWS_DEFAULT_REGION"] = region
    return merged


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """The configuration every notebook starts from: defaults < settings file < VT_* variables
    < keyword arguments."""
    env = os.environ if env is None else env
    path = settings_path(env)
    # VT_CONFIG is read by load_config itself; the default file only if notebook 01 wrote it.
    explicit = None if env.get("VT_CONFIG") or not path.is_file() else path
    return load_config(explicit, env=_environment_with_region(env), **overrides)


def _toml_value(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, _SCALARS):
        raise ConfigError(
            f"Setting {key!r} = {value!r}: only text and numbers can be saved here; put "
            "structured settings in a TOML file of your own and point VT_CONFIG at it."
        )
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (no raw control characters, same escapes).
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def save_settings(settings: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Check, validate and save the settings for the other notebooks; return the config.

    Empty values mean "the default" and are not written.
    """
    env = os.environ if env is None else env
    check_placeholders(settings)
    chosen = {k: v for k, v in settings.items() if v not in ("", None)}
    load_config(None, env=_environment_with_region(env), **chosen)  # raises on a bad value
    path = settings_path(env)
    if path.suffix != ".toml":
        raise ConfigError(f"VT_CONFIG points at {path}: save_settings writes TOML files only.")
    lines = [
        "# Visual Tourism settings, written by notebooks/01_setup.ipynb.",
        "# VT_* environment variables override these values.",
        *(f"{key} = {_toml_value(key, value)}" for key, value in chosen.items()),
    ]
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != chosen:  # e.g. a character TOML cannot hold unescaped
        raise ConfigError(f"These settings cannot be written as TOML: {chosen!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    empty = [key for key in settings if key not in chosen]
    say(f"saved {len(settings)} settings to {home_relative(path)}"
        + (f" ({len(empty)} left empty use the default: {', '.join(empty)})" if empty else ""))
    for key in chosen:
        if env.get(f"VT_{key.upper()}"):
            say(f"note: VT_{key.upper()} is set in the environment and wins over the file")
    return load_settings(env)
