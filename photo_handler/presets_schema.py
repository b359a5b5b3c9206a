"""Answer presets: the item schema, the seeded presets, how a preset becomes a request, and the
rules a preset must follow to be sent to the model container.

Standard library only (with ``serving_limits``), because it is in the photo function's zip:
the handler reads a preset with one GetItem, converts it with ``from_dynamodb``, checks it
again with ``validate_preset`` (someone may have edited it by hand in the console) and builds
its request with ``tgi_prompt`` / ``chat_messages`` and ``generation_parameters``. The CLI
(``visual-tourism presets``) and ``up`` (the seeds) use the same functions, so what is refused
on writing is exactly what would be refused on reading, and the token budget checked is the
request the handler sends.

A preset (one DynamoDB item, key ``name``)::

    name            str   [A-Za-z0-9_-]{1,40}; "default" always exists and cannot be deleted
    title           str   short label for pickers (web page, notebook)
    description     str   one sentence: what kind of answer it gives
    instruction     str   the user turn's text, repeated before every photo
    examples        list  0-3 in-context examples: {"photo": "example/<file>", "answer": str}
    language        str   the answer language when the uploader names none
    languages       list  the answer languages offered (the pickers list them); an uploader
                          may name one by name or code in any case (offered_language)
    generation      map   sampling parameters (GENERATION_KEYS; no max_new_tokens), each of
                          the type and range the container reads it as (_generation_types)
    max_new_tokens  int   the answer length limit, in tokens
    structured      bool  ask for a JSON answer with STRUCTURED_FIELDS as well as the text
    version         int   1 on creation, +1 on each write (conditional: no lost updates)
    schema          int   SCHEMA_VERSION of the item's layout
    updated_at      str   ISO time of the last write (informational)

The prompt: the examples' turns use ``instruction`` as written (their answers are in
PROMPT_LANGUAGE); the photo's turn uses ``answer_instruction``: the instruction, then "Answer in
<language>." when the language is not PROMPT_LANGUAGE, then STRUCTURED_LINE when structured.
With the default preset in English that is exactly the original one-shot prompt.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import serving_limits
from .serving_limits import ContainerLimits

ENV_VAR = "PRESETS_TABLE"  # the functions read the table's name from this variable
KEY = "name"
DEFAULT_NAME = "default"
SCHEMA_VERSION = 1
METADATA = ("preset", "language")  # S3 object metadata: x-amz-meta-preset, x-amz-meta-language

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")  # web_function/app.py: the same names pass
LANGUAGES = ("English", "French", "Spanish", "German", "Italian", "Japanese")
PROMPT_LANGUAGE = "English"  # the language the seeds' instructions and answers are written in
LANGUAGE_LINE = "Answer in {language}."
STRUCTURED_FIELDS = {
    "place": "string", "city": "string", "country": "string", "description": "string",
    "story": "string", "where_to_eat": "string", "recognised": "boolean",
}
STRUCTURED_LINE = (
    "Reply with one JSON object with the keys place, city, country, description, story, "
    "where_to_eat (strings) and recognised (true or false)."
)
MAX_EXAMPLES = 3
MAX_TITLE = 80
MAX_DESCRIPTION = 300
MAX_INSTRUCTION = 2000
MAX_ANSWER = 2000
# The sampling parameters a preset may set (TGI /generate names; the handler maps them to the
# chat fields for the messages style). Request plumbing (return_full_text, details, grammar...)
# stays the handler's: structured answers are asked for with ``structured``.
GENERATION_KEYS = (
    "do_sample", "temperature", "top_p", "top_k", "typical_p", "repetition_penalty",
    "frequency_penalty", "presence_penalty", "seed", "stop",
)
TGI_STOP = ("User:", "<end_of_utterance>")  # request.TGI_STOP: added unless `stop` is set
# The JSON types the containers read these into (a value they cannot read is refused, 422 or
# 400, after the photo was already paid for): TGI router/src/lib.rs at v1.4.5 and v3.3.6,
# GenerateParameters (do_sample: bool, seed: Option<u64>, top_k: Option<i32>, stop:
# Vec<String>, the rest Option<f32>) and v3.3.6 ChatRequest (seed: Option<u64>, stop:
# Option<Vec<String>>); vLLM's OpenAI protocol: seed int64, stop a string or a list.
_FLOATS = ("temperature", "top_p", "typical_p", "repetition_penalty", "frequency_penalty",
           "presence_penalty")
_I32_MAX = 2**31 - 1
_SEED_RANGE = {"tgi": (0, 2**64 - 1), "vllm": (-(2**63), 2**63 - 1)}

# Language names (as presets offer them, in English) and the codes people type for them:
# ISO 639-1, then ISO 639-2 (terminology and bibliographic). A BCP 47 tag with a region or
# script (fr-CA, zh_Hant) counts as its language.
LANGUAGE_CODES: dict[str, tuple[str, ...]] = {
    "English": ("en", "eng"), "French": ("fr", "fra", "fre"), "Spanish": ("es", "spa"),
    "German": ("de", "deu", "ger"), "Italian": ("it", "ita"), "Japanese": ("ja", "jpn"),
    "Portuguese": ("pt", "por"), "Dutch": ("nl", "nld", "dut"),
    "Chinese": ("zh", "zho", "chi"), "Korean": ("ko", "kor"), "Russian": ("ru", "rus"),
    "Arabic": ("ar", "ara"), "Hindi": ("hi", "hin"), "Turkish": ("tr", "tur"),
    "Polish": ("pl", "pol"), "Swedish": ("sv", "swe"), "Norwegian": ("no", "nor"),
    "Danish": ("da", "dan"), "Finnish": ("fi", "fin"), "Greek": ("el", "ell", "gre"),
    "Czech": ("cs", "ces", "cze"), "Hungarian": ("hu", "hun"),
    "Romanian": ("ro", "ron", "rum"), "Ukrainian": ("uk", "ukr"), "Hebrew": ("he", "heb"),
    "Indonesian": ("id", "ind"), "Vietnamese": ("vi", "vie"), "Thai": ("th", "tha"),
    "Catalan": ("ca", "cat"), "Irish": ("ga", "gle"), "Welsh": ("cy", "cym", "wel"),
    "Basque": ("eu", "eus", "baq"), "Galician": ("gl", "glg"), "Croatian": ("hr", "hrv"),
    "Bulgarian": ("bg", "bul"), "Persian": ("fa", "fas", "per"),
    "Malay": ("ms", "msa", "may"), "Bengali": ("bn", "ben"), "Tamil": ("ta", "tam"),
    "Urdu": ("ur", "urd"), "Swahili": ("sw", "swa"), "Latin": ("la", "lat"),
}
_LANGUAGE_IDS = {key.casefold(): name for name, codes in LANGUAGE_CODES.items()
                 for key in (name, *codes)}

# Editable fields and their kinds (the CLI's --field key=value parses by these).
FIELDS: dict[str, str] = {
    "title": "str", "description": "str", "instruction": "str", "examples": "list",
    "language": "str", "languages": "list", "generation": "dict", "max_new_tokens": "int",
    "structured": "bool",
}
MANAGED = ("name", "version", "schema", "updated_at")


# -- the prompt ---------------------------------------------------------------------------------


def answer_instruction(item: Mapping[str, Any], language: str | None = None) -> str:
    """The instruction of the photo's turn, in ``language`` (default: the preset's)."""
    language = language or item.get("language") or PROMPT_LANGUAGE
    text = str(item.get("instruction", ""))
    if language != PROMPT_LANGUAGE:
        text += " " + LANGUAGE_LINE.format(language=language)
    if item.get("grounding"):  # the real places nearby (places.py), not a stored field
        text += " " + str(item["grounding"])
    if item.get("structured"):
        text += " " + STRUCTURED_LINE
    return text


def tgi_prompt(item: Mapping[str, Any], language: str | None, example_urls: Sequence[str],
               image_url: str) -> str:
    """The TGI prompt (Idefics chat format), one ``![](url)`` per image, in turn order.

    With the default preset, one example and English it equals the original prompt
    (request.build_request).
    """
    examples = list(item.get("examples") or [])
    if len(example_urls) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(example_urls)} example URLs")
    instruction = str(item.get("instruction", ""))
    turns = [
        f"User:{instruction}![]({url})<end_of_utterance>\n"
        f"Assistant: {example['answer']}<end_of_utterance>\n"
        for example, url in zip(examples, example_urls, strict=True)
    ]
    turns.append(f"User:{answer_instruction(item, language)}![]({image_url})"
                 "<end_of_utterance>\nAssistant:")
    return "".join(turns)


def chat_messages(item: Mapping[str, Any], language: str | None, example_urls: Sequence[str],
                  image_url: str) -> list[dict[str, Any]]:
    """OpenAI-style messages: a user turn (text, image) and an assistant answer per example,
    then the photo's user turn."""
    examples = list(item.get("examples") or [])
    if len(example_urls) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(example_urls)} example URLs")

    def user(text: str, url: str) -> dict[str, Any]:
        return {"role": "user", "content": [
            {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}},
        ]}

    instruction = str(item.get("instruction", ""))
    messages: list[dict[str, Any]] = []
    for example, url in zip(examples, example_urls, strict=True):
        messages += [user(instruction, url), {"role": "assistant", "content": example["answer"]}]
    messages.append(user(answer_instruction(item, language), image_url))
    return messages


def generation_parameters(item: Mapping[str, Any]) -> dict[str, Any]:
    """What the handler sends as generation parameters: ``generation`` + ``max_new_tokens``."""
    return {**dict(item.get("generation") or {}), "max_new_tokens": item.get("max_new_tokens")}


def structured_schema() -> dict[str, Any]:
    """The JSON schema of a structured answer (TGI ``grammar`` / chat ``response_format``)."""
    return {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in STRUCTURED_FIELDS.items()},
        "required": list(STRUCTURED_FIELDS),
        "additionalProperties": False,
    }


def request_texts(item: Mapping[str, Any], language: str | None,
                  style: str) -> tuple[list[str], int]:
    """(texts, chat messages) of the request, as the container counts them (images apart)."""
    examples = list(item.get("examples") or [])
    if style == "tgi":
        return [tgi_prompt(item, language, [""] * len(examples), "")], 0
    texts = [t for e in examples for t in (str(item.get("instruction", "")), e["answer"])]
    texts.append(answer_instruction(item, language))
    return texts, len(texts)


def prompt_tokens(item: Mapping[str, Any], limits: ContainerLimits, style: str,
                  language: str | None = None) -> dict[str, int]:
    """The request's tokens by the container's accounting, before the answer: ``text`` (from
    above), ``examples`` (each example photo is shrunk to at most
    ``limits.example_image_tokens``), ``photo`` (the least an upload needs), their ``input``
    sum, and ``max_new_tokens_allowed``: the largest answer length that still fits."""
    texts, messages = request_texts(item, language, style)
    text = serving_limits.request_budget(limits, texts, [], 0, messages=messages).text_tokens
    examples = len(item.get("examples") or []) * limits.example_image_tokens
    needed = text + examples + limits.min_image_tokens
    return {"text": text, "examples": examples, "photo": limits.min_image_tokens,
            "input": needed, "max_new_tokens_allowed": limits.max_total_tokens - needed}


# -- languages ------------------------------------------------------------------------------------


def language_id(text: str) -> str:
    """What identifies a language however it is written: "fr", "FR", "fr-FR", "fra", "French"
    and "french" all give "French"; a name not in LANGUAGE_CODES gives itself, casefolded."""
    key = text.strip().casefold().replace("_", "-")
    if key in _LANGUAGE_IDS:
        return _LANGUAGE_IDS[key]
    primary = key.partition("-")[0]
    return _LANGUAGE_IDS.get(primary, key) if primary != key else key


def offered_language(offered: Sequence[str], asked: str) -> str | None:
    """The language of ``offered`` (spelt as the preset spells it) that ``asked`` names, by
    name or code in any case; None when it names none of them."""
    if not asked.strip():
        return None
    wanted = language_id(asked)
    return next((str(v) for v in offered if language_id(str(v)) == wanted), None)


# -- validation ---------------------------------------------------------------------------------


def _text(item: Mapping[str, Any], name: str, limit: int, problems: list[str],
          required: bool = True) -> None:
    value = item.get(name)
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value.strip()):
        problems.append(f"{name}: must be {'non-empty ' if required else ''}text")
    elif len(value) > limit:
        problems.append(f"{name}: {len(value)} characters, at most {limit} allowed")


def _languages(item: Mapping[str, Any], problems: list[str]) -> list[str]:
    offered = item.get("languages")
    if not isinstance(offered, list) or not offered or not all(
            isinstance(v, str) and NAME_RE.match(v) for v in offered):
        problems.append("languages: must be a non-empty list of language names (letters, "
                        f"digits, '-' or '_', at most 40), e.g. {list(LANGUAGES)}")
        return []
    seen: dict[str, str] = {}
    for value in offered:  # "French" and "fr" would be one choice to an uploader: say so
        earlier = seen.get(language_id(value))
        if earlier is not None:
            same = ("is listed twice" if earlier == value
                    else f"and {value} are the same language")
            problems.append(f"languages: {earlier} {same}; list each language once")
            break
        seen[language_id(value)] = value
    language = item.get("language")
    if not isinstance(language, str) or language not in offered:
        problems.append(f"language: {language!r} must be one of the languages offered "
                        f"({', '.join(offered)})")
    return offered


def _examples(item: Mapping[str, Any], limits: ContainerLimits, example_prefix: str,
              problems: list[str]) -> bool:
    examples = item.get("examples")
    if not isinstance(examples, list):
        problems.append("examples: must be a list of {photo, answer} objects (may be empty)")
        return False
    most = MAX_EXAMPLES
    if limits.engine == "vllm":  # limit_mm_per_prompt: the examples' photos and the upload
        most = min(most, limits.max_images - 1)
    if len(examples) > most:
        why = (f" ({limits.engine} {limits.container_version} takes {limits.max_images} "
               "images per request, the photo included)" if most < MAX_EXAMPLES else "")
        problems.append(f"examples: {len(examples)} given, 0 to {most} allowed{why}")
    ok = True
    for i, example in enumerate(examples):
        where = f"examples[{i}]"
        if not isinstance(example, Mapping) or set(example) != {"photo", "answer"}:
            problems.append(f"{where}: must be an object with exactly photo and answer")
            ok = False
            continue
        photo, answer = example["photo"], example["answer"]
        if (not isinstance(photo, str) or not photo.startswith(example_prefix)
                or len(photo) == len(example_prefix) or photo.endswith("/")
                or ".." in photo.split("/") or len(photo) > 1024):
            problems.append(f"{where}.photo: {photo!r} must be a photo's key under "
                            f"{example_prefix} (e.g. {example_prefix}trevi.jpeg): the "
                            "function may read only that folder")
        if not isinstance(answer, str) or not answer.strip():
            problems.append(f"{where}.answer: must be non-empty text")
            ok = False
        elif len(answer) > MAX_ANSWER:
            problems.append(f"{where}.answer: {len(answer)} characters, at most {MAX_ANSWER}")
    return ok


def _generation_types(generation: Mapping[str, Any], limits: ContainerLimits,
                      style: str) -> tuple[list[str], dict[str, Any]]:
    """(problems, the parameters without them): every generation parameter of a type or range
    the container cannot take, named as ``name=value``. What is left goes on to
    serving_limits.generation_problems for the ranges it rules on (one message per field)."""
    problems: list[str] = []
    where = f"({limits.engine} {limits.container_version}, {style} requests)"
    for name, value in generation.items():
        said = f"{name}={value!r}"
        if name not in GENERATION_KEYS:
            continue  # refused as unknown by validate_preset
        if value is None:
            problems.append(f"{said}: leave the parameter out rather than set it to null "
                            f"(presets set NAME --field generation.{name}=)")
        elif name == "do_sample":
            if not isinstance(value, bool):
                problems.append(f"{said} must be true or false")
        elif name in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{said} must be a number")
            elif not math.isfinite(value):
                problems.append(f"{said} must be a finite number")
            elif (name == "presence_penalty" and limits.engine == "tgi"
                  and style != "tgi" and value <= -2):
                # v3.3.6 ChatRequest::try_into_generate sends repetition_penalty =
                # presence_penalty + 2, which must be > 0.
                problems.append(f"{said} must be > -2 and <= 2 {where}: TGI turns it into "
                                "repetition_penalty = presence_penalty + 2, which must be > 0")
        elif name == "top_k":
            if isinstance(value, bool) or not isinstance(value, int) or not (
                    1 <= value <= _I32_MAX):
                problems.append(f"{said} must be a whole number from 1 to {_I32_MAX}; leave it "
                                "out to disable top-k sampling")
        elif name == "seed":
            low, high = _SEED_RANGE.get(limits.engine, (0, 2**63 - 1))  # Converse: no seed
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                unsigned = " (an unsigned 64-bit integer)" if low == 0 else ""
                problems.append(f"{said} must be a whole number from {low} to {high}{unsigned} "
                                f"{where}; leave it out for a new random seed per photo")
        elif name == "stop":
            # TGI reads only a list; vLLM also a single string.
            stops = [value] if isinstance(value, str) and limits.engine == "vllm" else value
            if not isinstance(stops, list) or not all(isinstance(v, str) for v in stops):
                kind = "a string or a list" if limits.engine == "vllm" else "a list"
                problems.append(f"{said} must be {kind} of strings {where}, e.g. "
                                '["User:"]')
            elif not all(stops):
                # TGI's StopSequenceCriteria matches "" at once: every answer one token long.
                problems.append(f"{said}: a stop sequence must not be empty (the model would "
                                "stop after its first token); remove the empty one")
    refused = {problem.partition("=")[0] for problem in problems}
    return problems, {k: v for k, v in generation.items() if k not in refused}


def validate_preset(item: Mapping[str, Any], limits: ContainerLimits, request_style: str, *,
                    example_prefix: str = "example/") -> list[str]:
    """Every problem with ``item`` for this container and request style; [] when it can be
    sent. Each message starts with the field (``generation``, ``max_new_tokens``,
    ``examples[1].photo``...) and says the allowed range."""
    if not isinstance(item, Mapping):
        return ["preset: must be an object"]
    problems: list[str] = []
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(f"name: {name!r} must be 1-40 letters, digits, '-' or '_'")
    _text(item, "title", MAX_TITLE, problems, required=False)
    _text(item, "description", MAX_DESCRIPTION, problems, required=False)
    _text(item, "instruction", MAX_INSTRUCTION, problems)
    examples_ok = _examples(item, limits, example_prefix, problems)
    offered = _languages(item, problems)
    if not isinstance(item.get("structured", False), bool):
        problems.append(f"structured: {item.get('structured')!r} must be true or false")
    version = item.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 0):
        problems.append(f"version: {version!r} must be a whole number >= 0")
    unknown = sorted(set(item) - set(FIELDS) - set(MANAGED))
    if unknown:
        problems.append(f"{', '.join(unknown)}: unknown field(s); known: "
                        f"{', '.join([*MANAGED[:1], *FIELDS, *MANAGED[1:]])}")

    generation = item.get("generation", {})
    max_new = item.get("max_new_tokens")
    if not isinstance(generation, Mapping):
        problems.append("generation: must be an object of sampling parameters "
                        f"({', '.join(GENERATION_KEYS)})")
        generation = {}
    elif "max_new_tokens" in generation:
        problems.append("generation: max_new_tokens is a field of its own: set "
                        "max_new_tokens, not generation.max_new_tokens")
    else:
        extra = sorted(set(generation) - set(GENERATION_KEYS))
        if extra:
            problems.append(f"generation: {', '.join(extra)} cannot be set in a preset; "
                            f"allowed: {', '.join(GENERATION_KEYS)}")
    typed, generation = _generation_types(generation, limits, request_style)
    problems += [f"generation: {problem}" for problem in typed]
    for problem in serving_limits.generation_problems(
            {**generation, "max_new_tokens": max_new}, limits, request_style):
        field = "max_new_tokens" if problem.startswith("max_new_tokens") else "generation"
        problems.append(f"{field}: {problem}")
    if problems or not examples_ok:
        return problems

    # The whole request, in the longest answer language offered, within the token budget.
    worst = max(offered, key=lambda lang: len(answer_instruction(item, lang).encode()))
    tokens = prompt_tokens(item, limits, request_style, worst)
    where = (f"{limits.engine} {limits.container_version}: MAX_INPUT_TOKENS "
             f"{limits.max_input_tokens}, MAX_TOTAL_TOKENS {limits.max_total_tokens}")
    count = (f"{tokens['text']} text tokens (instruction, examples' answers, prompt markup; "
             f"estimated from above, in {worst}) + {tokens['examples']} for "
             f"{len(item['examples'])} example photo(s) + at least {tokens['photo']} for the "
             f"photo = {tokens['input']} input tokens")
    if tokens["input"] > limits.max_input_tokens or tokens["max_new_tokens_allowed"] < 1:
        problems.append(f"instruction/examples: the prompt is too long for {where}: {count}; "
                        "shorten the instruction or the answers, or use fewer examples")
    elif max_new > tokens["max_new_tokens_allowed"]:
        problems.append(f"max_new_tokens: {max_new} does not fit ({where}): {count}, so "
                        f"max_new_tokens must be between 1 and "
                        f"{tokens['max_new_tokens_allowed']} (or shorten the prompt)")
    return problems


# -- DynamoDB attribute values (the low-level client's shape), without boto3 -------------------


def _to_av(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be stored (DynamoDB numbers are finite)")
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, Mapping):
        return {"M": {str(k): _to_av(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [_to_av(v) for v in value]}
    raise ValueError(f"{value!r} ({type(value).__name__}) cannot be stored in a preset")


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        number = float(text)
        return number


def _from_av(value: Mapping[str, Any]) -> Any:
    (kind, raw), = value.items()
    if kind == "S":
        return raw
    if kind == "N":
        return _number(raw)
    if kind == "BOOL":
        return bool(raw)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: _from_av(v) for k, v in raw.items()}
    if kind == "L":
        return [_from_av(v) for v in raw]
    if kind in ("SS",):
        return sorted(raw)
    if kind == "NS":
        return sorted(_number(v) for v in raw)
    raise ValueError(f"unsupported DynamoDB type {kind}")


def to_dynamodb(item: Mapping[str, Any]) -> dict[str, Any]:
    """A preset as the low-level client's Item (numbers as text, as DynamoDB stores them)."""
    return {str(k): _to_av(v) for k, v in item.items()}


def from_dynamodb(item: Mapping[str, Any]) -> dict[str, Any]:
    """A GetItem/Scan Item as plain Python: numbers int where whole in their text, else float
    (so that a console edit's 0.2 reads back as 0.2, not Decimal)."""
    return {k: _from_av(v) for k, v in item.items()}


# -- the seeds ------------------------------------------------------------------------------------

NO_LANDMARK_PHOTO = "no_landmark.jpg"  # images/: a generated brick wall (ATTRIBUTION.md)
NO_LANDMARK_ANSWER = (
    "I can't tell where this is: the photo shows only a brick wall, with no landmark or sign "
    "that names a place."
)
_TREVI = "trevi.jpeg"
_NEUSCHWANSTEIN = "neuschwanstein.jpeg"
_SANTIAGO = "santiago_cathedral.jpeg"

_RICHER: tuple[dict[str, Any], ...] = (
    {
        "name": "family",
        "title": "Family (for children)",
        "description": "Three short, simple sentences for children: what it is, a fun fact, a "
                       "treat to try nearby.",
        "instruction": "You are a friendly guide for children. In 3 short sentences say what "
                       "this place is, a fun fact about it, and a treat to try nearby.",
        "examples": [
            (_TREVI, "This is the Trevi Fountain in Rome, Italy, a giant fountain with stone "
                     "horses and a sea god. People throw a coin over their shoulder into the "
                     "water so that they will come back to Rome one day! Nearby you can try a "
                     "scoop of gelato, Italian ice cream."),
            (_NEUSCHWANSTEIN, "This is Neuschwanstein Castle in Germany, a white castle with "
                              "pointy towers on a hill in the forest. It looks so much like a "
                              "fairy tale that it inspired the castle in Disney's Sleeping "
                              "Beauty! In the village below you can try a warm pretzel."),
            (NO_LANDMARK_PHOTO, NO_LANDMARK_ANSWER),
        ],
        "generation": {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": 50},
        "max_new_tokens": 200,
    },
    {
        "name": "history",
        "title": "History",
        "description": "When it was built, one event from its past, and a museum nearby.",
        "instruction": "You are a history guide. In 3 sentences say what this place is and when "
                       "it was built, one event from its past, and a museum nearby.",
        "examples": [
            (_TREVI, "This is the Trevi Fountain in Rome, Italy, finished in 1762 to designs "
                     "by Nicola Salvi. It ends the Aqua Virgo, an aqueduct built in 19 BC that "
                     "still brings water to the city. Nearby stands the Pantheon, a Roman "
                     "temple about 1,900 years old."),
            (_SANTIAGO, "This is the Cathedral of Santiago de Compostela in Spain, begun in "
                        "1075; its baroque Obradoiro facade was finished in 1750. For a "
                        "thousand years pilgrims have walked the Way of Saint James to the "
                        "apostle's tomb inside. Nearby, the Museum of Pilgrimage tells their "
                        "story."),
            (NO_LANDMARK_PHOTO, NO_LANDMARK_ANSWER),
        ],
        "generation": {"do_sample": True, "temperature": 0.3, "top_p": 0.5, "top_k": 50},
        "max_new_tokens": 250,
    },
    {
        "name": "food",
        "title": "Food",
        "description": "What the place is, a local dish or drink to try, and where to eat it "
                       "nearby.",
        "instruction": "You are a food-loving travel guide. In 3 sentences say what this place "
                       "is, name a local dish or drink to try, and recommend where to eat it "
                       "nearby.",
        "examples": [
            (_TREVI, "This is the Trevi Fountain in Rome, Italy. Try cacio e pepe, pasta with "
                     "pecorino cheese and black pepper, a Roman classic. The trattorias in the "
                     "side streets towards the Pantheon serve it, and gelato is never far."),
            (_SANTIAGO, "This is the Cathedral of Santiago de Compostela in Spain. Try pulpo a "
                        "feira, octopus with paprika and olive oil, then a tarta de Santiago "
                        "almond cake. The bars around the Mercado de Abastos, a short walk "
                        "away, cook it."),
            (NO_LANDMARK_PHOTO, NO_LANDMARK_ANSWER),
        ],
        "generation": {"do_sample": True, "temperature": 0.5, "top_p": 0.8, "top_k": 50},
        "max_new_tokens": 250,
    },
)


def default_from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``default`` preset: the function's own prompt and parameters (INSTRUCTION,
    EXAMPLE_KEY, EXAMPLE_ANSWER, GENERATION_PARAMETERS), so it is exactly the original
    one-shot prompt. Also the handler's fallback when the table or the item is missing."""
    generation = json.loads(env["GENERATION_PARAMETERS"])
    max_new = generation.pop("max_new_tokens")
    return {
        "name": DEFAULT_NAME,
        "title": "Travel agent",
        "description": "The original prompt: what it is, a story about it, and the best "
                       "place to eat nearby.",
        "instruction": env["INSTRUCTION"],
        "examples": [{"photo": env["EXAMPLE_KEY"], "answer": env["EXAMPLE_ANSWER"]}],
        "language": PROMPT_LANGUAGE,
        "languages": list(LANGUAGES),
        "generation": generation,
        "max_new_tokens": max_new,
        "structured": False,
    }


def seed_presets(env: Mapping[str, str], example_prefix: str = "example/") -> list[dict[str, Any]]:
    """The seeded presets, ``default`` first (from the function's environment), then family,
    history and food: up to three examples each, the last a photo with no landmark answered
    honestly. Examples' photos are ``example_prefix`` + a file of the project's images/."""
    seeds = [default_from_environment(env)]
    for spec in _RICHER:
        seeds.append({
            **spec,
            "examples": [{"photo": example_prefix + photo, "answer": answer}
                         for photo, answer in spec["examples"]],
            "generation": dict(spec["generation"]),
            "language": PROMPT_LANGUAGE,
            "languages": list(LANGUAGES),
            "structured": False,
        })
    return seeds
