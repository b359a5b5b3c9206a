"""`visual-tourism presets list|show|set|delete`: the answer presets (visual_tourism/presets.py).

Every `set` is checked against the active profile's container limits before anything is
written, and is conditional on the version it started from: an edit made meanwhile by someone
else is never overwritten (the command says so; show the preset again and redo the change).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from photo_handler import presets_schema

from .. import presets
from ..aws import Aws
from ..bucket import bucket_name
from ..presets import PresetError
from .common import WIDE_HELP, config_from_args, printable, say, table, wrapped

KEY = presets_schema.KEY
HEADERS = ("NAME", "VERSION", "LANGUAGE", "EXAMPLES", "MAX TOKENS", "STRUCTURED", "TITLE")


def _context(args: argparse.Namespace, config: Callable[..., Any]) -> tuple[Any, Aws]:
    cfg = config(args)
    return cfg, Aws(cfg.region)


def cmd_list(args: argparse.Namespace, config: Callable[..., Any] = config_from_args) -> int:
    cfg, aws = _context(args, config)
    items = presets.list_presets(aws, cfg)
    if args.json:
        say(json.dumps(items, indent=2, ensure_ascii=False))
        return 0
    if not items:
        say(f"No presets in {cfg.presets_table} (run 'visual-tourism up' to seed them).")
        return 0
    rows = [(str(i[KEY]), str(i.get("version", "")), str(i.get("language", "")),
              str(len(i.get("examples") or [])), str(i.get("max_new_tokens", "")),
              "yes" if i.get("structured") else "no", printable(str(i.get("title", ""))))
             for i in items]
    for line in table(HEADERS, rows, wide=args.wide):
        say(line)
    offered = sorted({lang for i in items for lang in i.get("languages") or []})
    say("\n" + wrapped(f"Languages offered: {', '.join(offered)}"))
    return 0


def cmd_show(args: argparse.Namespace, config: Callable[..., Any] = config_from_args) -> int:
    cfg, aws = _context(args, config)
    item = presets.require_preset(aws, cfg, args.name)
    say(printable(json.dumps(item, indent=2, ensure_ascii=False)))
    return 0


def _value(key: str, raw: str) -> Any:
    """One --field value by the field's kind: text as is, numbers, true/false, JSON for lists
    and objects (a comma-separated list is accepted for languages)."""
    kind = presets_schema.FIELDS.get(key)
    if kind is None:
        known = ", ".join(presets_schema.FIELDS)
        raise PresetError(f"--field {key}: unknown field; editable fields: {known} (and "
                          "generation.NAME for one sampling parameter)")
    if kind == "str":
        return raw
    if kind == "bool":
        words = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
        if raw.lower() not in words:
            raise PresetError(f"--field {key}={raw}: use true or false")
        return words[raw.lower()]
    if kind == "list" and key == "languages" and not raw.lstrip().startswith("["):
        return [part.strip() for part in raw.split(",") if part.strip()]
    try:
        value = json.loads(raw)
    except ValueError:
        raise PresetError(f"--field {key}={raw}: not valid JSON ({kind} expected)") from None
    return value


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def edited(current: dict[str, Any] | None, base: dict[str, Any], name: str,
           from_file: str | None, fields: list[str]) -> dict[str, Any]:
    """The preset after the edit: ``current`` (or, for a new one, a copy of ``base``), then
    the file's fields, then each --field in order. ``generation.NAME=VALUE`` sets one sampling
    parameter; an empty VALUE removes it."""
    item = dict(current) if current is not None else {
        k: v for k, v in base.items() if k in presets_schema.FIELDS}
    if current is None:
        item["title"] = name
    item[KEY] = name
    if from_file:
        path = Path(from_file)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PresetError(f"--from-file {path}: cannot read it as JSON ({exc})") from None
        if not isinstance(data, dict):
            raise PresetError(f"--from-file {path}: must hold one JSON object (a preset)")
        if data.get(KEY, name) != name:
            raise PresetError(f"--from-file {path} is preset {data[KEY]!r}, not {name!r}")
        item.update(data)
    for spec in fields:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep:
            raise PresetError(f"--field {spec!r}: write it as key=value")
        if key.startswith("generation."):
            parameter = key.removeprefix("generation.")
            generation = dict(item.get("generation") or {})
            if raw == "":
                generation.pop(parameter, None)
            else:
                generation[parameter] = _json_or_text(raw)
            item["generation"] = generation
        else:
            item[key] = _value(key, raw)
    return item


def cmd_set(args: argparse.Namespace, config: Callable[..., Any] = config_from_args) -> int:
    cfg, aws = _context(args, config)
    if not args.from_file and not args.field:
        raise PresetError("Nothing to set: give --from-file FILE.json and/or --field key=value.")
    current = presets.get_preset(aws, cfg, args.name) if cfg.presets_table else None
    base = current or presets.get_preset(aws, cfg, presets_schema.DEFAULT_NAME) or {}
    item = edited(current, base, args.name, args.from_file, args.field or [])
    # The version the edit is based on: the file's (show > edit > set), else the one read now.
    expected = item.pop("version", None) if args.from_file else None
    if current is None:
        expected = None
    elif expected is None:
        expected = current.get("version")
    for managed in presets_schema.MANAGED[1:]:
        item.pop(managed, None)
    presets.validate(cfg, item)
    presets.require_example_photos(aws, cfg, bucket_name(cfg, aws), item)
    stored = presets.put_preset(aws, cfg, item, expected_version=expected)
    verb = "created" if current is None else "saved"
    say(f"preset {args.name} {verb}: version {stored.get('version')}")
    return 0


def cmd_delete(args: argparse.Namespace, config: Callable[..., Any] = config_from_args) -> int:
    cfg, aws = _context(args, config)
    presets.delete_preset(aws, cfg, args.name, expected_version=args.version)
    say(f"preset {args.name} deleted")
    return 0


def add_cli(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`visual-tourism presets list|show|set|delete`."""
    top = sub.add_parser(
        "presets", help="list, show, edit and delete the answer presets",
        description="The answer presets: named instructions, in-context examples, answer "
        "languages and generation parameters, stored in the stack's DynamoDB table. An "
        "uploader picks one per photo ('visual-tourism ask --preset NAME --language NAME', the "
        "web page, the notebook). Every edit is checked against the active model profile's "
        "container limits before it is written, and never overwrites an edit made meanwhile.")
    psub = top.add_subparsers(dest="presets_command", required=True, metavar="COMMAND",
                              help="what to do with the presets")

    p = psub.add_parser("list", parents=[common], help="list the presets and their languages")
    p.add_argument("--json", action="store_true", help="print every preset in full as JSON")
    p.add_argument("--wide", action="store_true", help=WIDE_HELP)
    p.set_defaults(func=cmd_list)

    p = psub.add_parser("show", parents=[common], help="print one preset as JSON")
    p.add_argument("name", help="the preset's name, e.g. default")
    p.set_defaults(func=cmd_show)

    p = psub.add_parser(
        "set", parents=[common], help="create or edit a preset (checked before it is written)",
        description="Create or edit a preset. A new preset starts as a copy of 'default'. "
        "--from-file takes a JSON object (as 'presets show' prints it: its version makes the "
        "write refuse if someone changed the preset since); each --field then sets one field. "
        f"Editable fields: {', '.join(presets_schema.FIELDS)}; generation.NAME=VALUE sets one "
        "sampling parameter (empty VALUE removes it). Lists and objects are JSON, e.g. "
        "--field 'examples=[{\"photo\": \"example/trevi.jpeg\", \"answer\": \"...\"}]'; "
        "languages may be comma-separated. Checked against the active profile's container "
        "(--model-profile): each refused field is named with its allowed range.")
    p.add_argument("name", help="the preset's name: letters, digits, '-' or '_'")
    p.add_argument("--from-file", metavar="FILE",
                   help="JSON file with the preset's fields (default: none)")
    p.add_argument("--field", action="append", metavar="KEY=VALUE",
                   help="set one field, e.g. max_new_tokens=300 or generation.top_p=0.9 "
                        "(repeatable; default: none)")
    p.set_defaults(func=cmd_set)

    p = psub.add_parser("delete", parents=[common],
                        help="delete a preset ('default' cannot be deleted)")
    p.add_argument("name", help="the preset's name")
    p.add_argument("--version", type=int, metavar="N",
                   help="delete only if the preset is still at this version (default: any)")
    p.set_defaults(func=cmd_delete)
