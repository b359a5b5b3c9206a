"""The model's answer out of the endpoint's response: its text (no echoed prompt, no stop
sequence, no control characters, capped), and for a preset that asks for one, the fields of
a structured (JSON) answer."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import CONTROL, Failure, scrub

ANSWER_MAX_CHARS = 4000  # longer answers are cut (a runaway generation, not a description)


def strip_stops(text: str, stops: list[str]) -> str:
    """TGI returns a plain-text stop sequence at the end of the answer: cut it off."""
    text = text.strip()
    while True:
        stop = next((s for s in stops if s and text.endswith(s)), None)
        if stop is None:
            return text
        text = text[: -len(stop)].rstrip()


def model_text(style: str, payload: Any, request: Mapping[str, Any]) -> str:
    """The model's text: no echoed prompt, no stop sequence (Failure: not the style's shape)."""
    try:
        if style == "tgi":
            item = payload[0] if isinstance(payload, list) else payload
            text = item["generated_text"]
        else:
            text = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        text = None
    if not isinstance(text, str):
        raise Failure(
            "bad_model_response",
            f"The endpoint answered in an unexpected shape ({scrub(json.dumps(payload), 200)}): "
            f"check that REQUEST_STYLE={style} matches the model deployed on the endpoint.",
        )
    prompt = request.get("inputs")
    if isinstance(prompt, str) and text.startswith(prompt):  # echoed despite return_full_text
        text = text[len(prompt):]
    stops = request.get("parameters", {}).get("stop") or request.get("stop") or []
    return strip_stops(text, [stops] if isinstance(stops, str) else list(stops))


def parse_answer(style: str, payload: Any, request: Mapping[str, Any]) -> str:
    """The model's text alone: no echoed prompt, no stop sequence, stripped."""
    return clean_answer(model_text(style, payload, request))


def clean_answer(answer: str) -> str:
    # Stored and shown as it is: no control characters (newlines and tabs kept), and no more
    # than ANSWER_MAX_CHARS (three sentences are asked for; more is a runaway generation).
    answer = CONTROL.sub("", answer)
    if len(answer) > ANSWER_MAX_CHARS:
        answer = answer[: ANSWER_MAX_CHARS - 1].rstrip() + "\u2026"
    answer = answer.strip()
    if not answer:
        raise Failure("empty_answer", "The model returned an empty answer: upload again.")
    return answer


def parse_result(style: str, payload: Any, request: Mapping[str, Any],
                 structured: bool = False) -> dict[str, Any]:
    """The record's answer fields: ``answer``, and for a structured answer ``fields`` (None
    with ``fields_error`` when the model's JSON was unusable: the text answer stays)."""
    text = model_text(style, payload, request)
    if not structured:
        return {"answer": clean_answer(text)}
    return structured_result(text)


# -- structured answers -------------------------------------------------------------------

_TEXT_FIELDS = ("description", "story", "where_to_eat")  # joined, they are the text answer
_JSON_TRIES = 64  # a "{" that does not start a JSON object: at most this many are tried


def structured_fields(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(fields, None) from the first JSON object in ``text`` that has any of the structured
    fields (presets_schema.STRUCTURED_FIELDS), or (None, why not).

    Lenient: the object may sit anywhere (in a code fence, after a sentence); a missing field
    is None, and so is a field of the wrong type (a number for ``city``, "yes" for
    ``recognised``); other keys are ignored.
    """
    from . import presets_schema  # a structured answer comes only with a preset

    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    any_object = False
    for tries, match in enumerate(re.finditer(r"\{", text)):
        if tries >= _JSON_TRIES:
            break
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            any_object = True
            if any(name in value for name in presets_schema.STRUCTURED_FIELDS):
                found = value
                break
    if found is None:
        why = ("the JSON object in the answer has none of the fields "
               f"{', '.join(presets_schema.STRUCTURED_FIELDS)}" if any_object else
               "the answer holds no complete JSON object (cut off by max_new_tokens, or the "
               "model did not follow the format)")
        return None, why
    fields: dict[str, Any] = {}
    for name, kind in presets_schema.STRUCTURED_FIELDS.items():
        value = found.get(name)
        if kind == "boolean":
            fields[name] = value if isinstance(value, bool) else None
        elif isinstance(value, str) and value.strip():
            value = CONTROL.sub("", value).strip()
            fields[name] = (value if len(value) <= ANSWER_MAX_CHARS
                            else value[: ANSWER_MAX_CHARS - 1].rstrip() + "\u2026")
        else:
            fields[name] = None
    return fields, None


def structured_result(text: str) -> dict[str, Any]:
    """The record's answer fields for a structured answer (parse_result):
    ``answer``, the text fields joined, and ``fields`` (None with ``fields_error`` when the
    model's JSON was unusable: the text answer stays)."""
    fields, why = structured_fields(text)
    parts = [fields[name] for name in _TEXT_FIELDS if fields and fields[name]]
    out: dict[str, Any] = {"answer": clean_answer(" ".join(parts) if parts else text),
                           "fields": fields}
    if why:
        out["fields_error"] = why
    return out
