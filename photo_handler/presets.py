"""Answer presets, imported only when PRESETS_TABLE is set: reading a preset (one DynamoDB
GetItem, cached) and choosing the prompt and language a photo's S3 metadata asks for.
presets_schema.py holds the item schema, validation and prompts (request.preset_request
builds a preset's request from them; answer.structured_result parses a structured answer);
it is imported only with presets, so only a stack with presets loads it.

With PRESETS_TABLE set, the uploader picks a preset and a language with the photo's S3
metadata (x-amz-meta-preset, x-amz-meta-language: in the GetObject response the handler
already makes), and the preset is read with one DynamoDB GetItem, kept by a warm container
for PRESET_CACHE_SECONDS (monotonic clock; an unknown name for PRESET_MISS_SECONDS at most).
A preset is checked again here (presets_schema.validate_preset: someone may have edited it
in the console): a broken one is an error record naming it and the field, without a model
call. An unknown name is answered with `default`; an unreadable table with the copy this
container has (however old), else with the function's built-in prompt; the record says so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import clients, presets_schema, serving_limits
from .errors import Failure, describe, scrub
from .logs import log
from .request import Prompt
from .settings import Settings

PRESET_MISS_SECONDS = 10.0  # an unknown preset name is asked for again after this long
PRESET_ERROR_SECONDS = 5.0  # after a failed read, the table is not asked again for this long
PRESET_READ_TIMEOUT = 3  # seconds; one attempt (the photo is answered anyway)
# Without CONTAINER_LIMITS (deployed before the limits were passed) a preset is checked
# against TGI's parameter rules only: its token budget is the container's to check.
_RULES_ONLY = serving_limits.ContainerLimits(
    engine="tgi", container_version="1.4.5", max_input_tokens=10**9 - 1,
    max_total_tokens=10**9, payload_limit_bytes=2_000_000, max_stop_sequences=4,
    image_formula="idefics")

_presets: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}
_presets_down: dict[str, float] = {}  # table -> clock time until which it is not asked
clock = time.monotonic  # the cache's clock: a test moves it instead of waiting


def clear_cache() -> None:
    """Forget every preset read by this container (tests)."""
    _presets.clear()
    _presets_down.clear()


class _PresetsUnavailable(Exception):
    """The presets table cannot be read, and this container has no copy of the preset."""


def _read_preset(settings: Settings, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the preset, None when the table has no such item; a note when it is a stale copy).

    One GetItem unless this container read it less than PRESET_CACHE_SECONDS ago.
    """
    table, now = settings.presets_table, clock()
    cached = _presets.get((table, name))
    if cached is not None:
        age = now - cached[0]
        fresh = settings.preset_cache_seconds
        if cached[1] is None:
            fresh = min(fresh, PRESET_MISS_SECONDS)
        if age < fresh:
            return cached[1], None
    if _presets_down.get(table, 0.0) > now:
        error = "it failed moments ago"
    else:
        try:
            response = clients.client("dynamodb", PRESET_READ_TIMEOUT).get_item(
                TableName=table, Key={presets_schema.KEY: {"S": name}})
        except (ClientError, BotoCoreError) as exc:
            error = describe(exc)
            _presets_down[table] = now + PRESET_ERROR_SECONDS
            log.warning("Cannot read preset %s from %s: %s", name, table, error)
        else:
            _presets_down.pop(table, None)
            raw = response.get("Item")
            try:
                item = presets_schema.from_dynamodb(raw) if raw else None
            except (ValueError, TypeError) as exc:  # an attribute type no preset uses
                item = {"name": name, "__unreadable__": scrub(str(exc), 200)}
            if len(_presets) >= 64:
                _presets.clear()
            _presets[(table, name)] = (now, item)
            return item, None
    if cached is not None and cached[1] is not None:
        return cached[1], (f"the presets table could not be read ({error}): answered with this "
                           f"function's copy of the preset, read {now - cached[0]:.0f} s ago")
    raise _PresetsUnavailable(error)


def _pick_language(item: Mapping[str, Any], asked: str | None,
                   notes: list[str]) -> str:
    preset_language = str(item.get("language") or presets_schema.PROMPT_LANGUAGE)
    if not asked:
        return preset_language
    offered = [str(v) for v in item.get("languages") or [preset_language]]
    match = presets_schema.offered_language(offered, asked)  # "fr", "French", "french"
    if match is None:
        notes.append(f"language {asked!r} is not offered by preset {item.get('name')!r} "
                     f"({', '.join(offered)}): answered in {preset_language}")
        return preset_language
    return match


def choose_prompt(settings: Settings, metadata: Mapping[str, str],
                  result: dict[str, Any]) -> Prompt:
    """The Prompt for a photo with this S3 metadata; sets the record's ``preset``.

    Failure ("preset_invalid") when the preset breaks the container's rules: the record
    names the preset and says which field; the model is not called.
    """
    requested = scrub((metadata.get(presets_schema.METADATA[0]) or "").strip(), 80)
    asked = scrub((metadata.get(presets_schema.METADATA[1]) or "").strip(), 40) or None
    default = presets_schema.DEFAULT_NAME
    name, notes = requested or default, []
    info: dict[str, Any] = {}
    try:
        item, stale = (_read_preset(settings, name) if presets_schema.NAME_RE.match(name)
                       else (None, None))
        if item is None and name != default:
            notes.append(f"preset {requested!r} does not exist: answered with {default}")
            name = default
            item, stale = _read_preset(settings, default)
        if item is None:
            notes.append(f"the presets table has no {default} preset: answered with the "
                         "function's built-in prompt (run 'visual-tourism up' to seed it)")
        from_table = item is not None
    except _PresetsUnavailable as exc:
        notes.append(f"the presets table could not be read ({exc}): answered with the "
                     "function's built-in prompt")
        item, stale, from_table, name = None, None, False, default
    if stale:
        notes.append(stale)
    if item is None:
        item = _builtin_preset(settings)
    info["name"] = name
    info["version"] = item.get("version")
    if requested and requested != name:
        info["requested"] = requested
    result["preset"] = info
    limits = settings.container_limits or _RULES_ONLY
    if not from_table:  # the environment's prompt: checked by load_settings and the budget
        problems = []
    elif "__unreadable__" in item:
        problems = [f"preset: an attribute cannot be read ({item['__unreadable__']})"]
    else:
        prefix = settings.example_key.rpartition("/")[0] + "/" if "/" in settings.example_key \
            else "example/"
        problems = presets_schema.validate_preset(item, limits, settings.request_style,
                                                  example_prefix=prefix)
    if problems:
        if notes:
            info["note"] = "; ".join(notes)
        label = f"preset {name!r}" + (f" (version {info['version']})"
                                      if info["version"] is not None else "")
        raise Failure(
            "preset_invalid",
            f"The {label} cannot be sent to the model ({limits.engine} "
            f"{limits.container_version}, {settings.request_style} requests), so the model was "
            f"not called: {'; '.join(problems)}. Fix it (visual-tourism presets set {name} ...) "
            "and upload the photo again.")
    language = _pick_language(item, asked, notes)
    info["language"] = language  # as the preset names it, whatever code was asked
    if asked and presets_schema.language_id(asked) != presets_schema.language_id(language):
        info["requested_language"] = asked  # not honoured (the note says why)
    if item.get("structured"):
        info["structured"] = True
    if notes:
        info["note"] = "; ".join(notes)
    return preset_prompt(settings, item, language, from_table)


def preset_prompt(settings: Settings, item: Mapping[str, Any], language: str | None,
                  from_table: bool = True) -> Prompt:
    """The Prompt of a valid preset ``item`` answered in ``language``."""
    generation = presets_schema.generation_parameters(item)
    if generation == settings.generation:  # the environment's parameters in its own order,
        generation = settings.generation   # so that `default` sends the environment's bytes
    examples = tuple((str(e["photo"]), str(e["answer"])) for e in item.get("examples") or [])
    return Prompt(str(item.get("instruction", "")), examples, generation, item,
                  language or str(item.get("language") or presets_schema.PROMPT_LANGUAGE),
                  bool(item.get("structured")), from_table)


def _builtin_preset(settings: Settings) -> dict[str, Any]:
    """The `default` preset as the function's environment defines it (the original prompt)."""
    generation = dict(settings.generation)
    max_new = generation.pop("max_new_tokens", None)
    return {
        "name": presets_schema.DEFAULT_NAME, "instruction": settings.instruction,
        "examples": [{"photo": settings.example_key, "answer": settings.example_answer}],
        "language": presets_schema.PROMPT_LANGUAGE, "languages": list(presets_schema.LANGUAGES),
        "generation": generation, "max_new_tokens": max_new, "structured": False,
    }
