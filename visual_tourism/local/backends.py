"""What answers behind the local model server: a real model through transformers, or a stand-in.

Both take the same normalised input, whichever request style the server received: a
conversation (a list of `Turn`, each a role and its parts, text or PIL images) and
`GenerationParams`. Both return only the new text; the server adds the prompt
(``return_full_text``) and builds the response shape.

torch and transformers are imported only inside `TransformersBackend` and `load_backend`, so
importing this module (and the server) stays cheap and works without the ``model`` extra.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit

from PIL import Image, ImageStat

from photo_handler import presets_schema

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
MODEL_ENV = "VT_LOCAL_MODEL"
STAND_IN = "stand-in"
HOW_TO_GET_A_MODEL = (
    "run local mode with the model extra installed (.venv/bin/pip install -e '.[model]') and "
    "either internet access (the default model downloads once, about 500 MB) or a downloaded "
    f"model ({MODEL_ENV}=<folder>)"
)
# What each reason to fall back lacks, said as what to do about it.
_INSTALL_THE_EXTRA = (
    "to use a model, install the model extra (.venv/bin/pip install -e '.[model]'), then run "
    f"with internet access once or with a downloaded model ({MODEL_ENV}=<folder>)"
)
_GET_THE_WEIGHTS = (
    "the model extra is installed; what is missing is the model's weights: run once with "
    "internet access (the default model downloads about 500 MB into the Hugging Face cache), "
    f"or copy a downloaded model here and set {MODEL_ENV}=<folder>"
)

Part = str | Image.Image


@dataclass(frozen=True)
class Turn:
    """One message of the conversation: ``role`` is "system", "user" or "assistant"."""

    role: str
    parts: tuple[Part, ...]

    @property
    def images(self) -> list[Image.Image]:
        return [p for p in self.parts if isinstance(p, Image.Image)]

    @property
    def text(self) -> str:
        return " ".join(p for p in self.parts if isinstance(p, str))


class GenerationParams(TypedDict):
    max_new_tokens: int
    do_sample: bool
    temperature: float | None
    top_p: float | None
    top_k: int | None
    stop: list[str]
    # The answer's constraint, as the server normalised TGI's ``grammar`` or a chat
    # ``response_format``: {"type": "json", "schema": <JSON schema, or None: any object>} or
    # {"type": "regex", "pattern": str}; None: free text.
    grammar: dict[str, Any] | None


def generation_params(**overrides: Any) -> GenerationParams:
    """Defaults as TGI's: greedy, 100 new tokens, no stop sequence, no grammar."""
    params = GenerationParams(
        max_new_tokens=100, do_sample=False, temperature=None, top_p=None, top_k=None, stop=[],
        grammar=None,
    )
    params.update(overrides)  # type: ignore[typeddict-item]
    return params


def cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """The text up to and including the earliest stop sequence, as TGI returns it; None if none."""
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if not hits:
        return None
    start, stop = min(hits)
    return text[: start + len(stop)]


_LANGUAGE = re.compile(
    re.escape(presets_schema.LANGUAGE_LINE).replace(re.escape("{language}"),
                                                     r"(?P<language>[A-Za-z0-9_-]{1,40})"))


def asked_language(conversation: Sequence[Turn]) -> str | None:
    """The answer language the last user turn asks for with presets_schema's language line
    ("Answer in French."), None when it asks for none (the prompt language)."""
    for turn in reversed(conversation):
        if turn.role == "user":
            found = _LANGUAGE.search(turn.text)
            return found.group("language") if found else None
    return None


def json_schema_of(grammar: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema of a JSON grammar ({} for any object); None for free text or a regex."""
    if not grammar or grammar.get("type") != "json":
        return None
    schema = grammar.get("schema")
    return schema if isinstance(schema, dict) else {}


def schema_instance(schema: dict[str, Any], texts: dict[str, str], default: str,
                    name: str = "") -> Any:
    """A value valid against ``schema`` (the subset grammars use: object, properties, string,
    boolean, number, integer, array, null, enum, const), strings from ``texts`` by property
    name, else ``default``."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {key: schema_instance(sub if isinstance(sub, dict) else {}, texts, default, key)
                for key, sub in properties.items()}
    if kind == "array":
        return []
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "null":
        return None
    return texts.get(name, default)


class Backend(ABC):
    """Something that writes the assistant's next message."""

    name: str
    description: str  # one line saying what answered
    thread_safe: bool = False  # if False the server serialises calls

    @abstractmethod
    def generate(self, conversation: Sequence[Turn], params: GenerationParams) -> str:
        """Return only the new text; a stop sequence that ended it is kept at the end."""


# -- the offline stand-in -------------------------------------------------------------------

STAND_IN_LABEL = "[Offline stand-in, not a model's answer.]"
STAND_IN_LANGUAGE = "[stand-in answer in {language}]"
STAND_IN_VALUE = "(stand-in: no model)"  # a structured answer's fields it cannot know

# Named reference colours; each pixel of a small copy is mapped to the nearest one.
_COLOURS = {
    "black": (20, 20, 20), "grey": (128, 128, 128), "white": (235, 235, 235),
    "red": (200, 40, 40), "orange": (230, 130, 40), "yellow": (230, 210, 60),
    "green": (60, 150, 60), "teal": (40, 150, 150), "blue": (50, 90, 200),
    "sky blue": (135, 185, 235), "purple": (130, 60, 160), "pink": (230, 150, 180),
    "brown": (120, 80, 45), "beige": (210, 190, 150),
}
_REGIONS = ("top left", "top", "top right", "left", "centre", "right",
            "bottom left", "bottom", "bottom right")
_EXIF_ORIENTATION = 0x0112


def _palette_image() -> Image.Image:
    image = Image.new("P", (1, 1))
    image.putpalette([c for rgb in _COLOURS.values() for c in rgb])
    return image


class StandInBackend(Backend):
    """Deterministic answers computed from the photo itself, clearly labelled as not a model's.

    Same images and text give the same answer; different photos give different answers, so
    the rest of the pipeline can be tested end to end without a model.
    """

    name = STAND_IN
    description = "offline stand-in (not a model)"
    thread_safe = True

    def __init__(self) -> None:
        self._palette = _palette_image()

    def generate(self, conversation: Sequence[Turn], params: GenerationParams) -> str:
        images = [image for turn in conversation for image in turn.images]
        sentences = self._describe(images[-1]) if images else [
            "There is no image in this request, so there is nothing to describe.",
            "A model would tell an entertaining story about the place here.",
        ]
        eat = ("A model would name the best place to eat nearby; to get real answers, "
               f"{HOW_TO_GET_A_MODEL}.")
        language = asked_language(conversation)
        # Labelled, so a test (or a reader) sees the language was asked for and honoured.
        tag = f"{STAND_IN_LANGUAGE.format(language=language)} " if language else ""
        schema = json_schema_of(params.get("grammar"))
        if schema is not None:
            return self._json(schema, tag, sentences, eat, params)
        if params.get("grammar"):
            logger.info("the stand-in cannot follow a %s grammar: answering free text",
                        params["grammar"].get("type"))
        sentences.append(eat)
        # Words stand for tokens; the label is free, so even a short answer carries it.
        words = " ".join(sentences).split(" ")
        # Idefics answers start with a space after "Assistant:".
        answer = f" {STAND_IN_LABEL} {tag}{' '.join(words[: params['max_new_tokens']])}"
        if len(words) > params["max_new_tokens"]:
            return answer  # stopped by length: TGI then returns no stop sequence either
        # A stop sequence that ended the generation is part of TGI's generated_text.
        return answer + (params["stop"][0] if params["stop"] else "")

    @staticmethod
    def _json(schema: dict[str, Any], tag: str, sentences: list[str], eat: str,
              params: GenerationParams) -> str:
        """A JSON answer valid against ``schema``; like a constrained model, cut (invalid)
        when it is longer than max_new_tokens words, and ended by the grammar, not a stop."""
        texts = {"description": f"{STAND_IN_LABEL} {tag}{sentences[0]}",
                 "story": f"{tag}{sentences[1]}", "where_to_eat": f"{tag}{eat}"}
        text = json.dumps(schema_instance(schema, texts, STAND_IN_VALUE), ensure_ascii=False)
        words = text.split(" ")
        return " ".join(words[: params["max_new_tokens"]])

    def _describe(self, image: Image.Image) -> list[str]:
        width, height = image.size
        if image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
            width, height = height, width  # shown rotated by a quarter turn
        orientation = (
            "square" if abs(width - height) <= 0.05 * max(width, height)
            else "landscape" if width > height else "portrait"
        )
        small = self._small_rgb(image)
        colour, hex_colour = self._dominant_colour(small)
        grey = small.convert("L")
        brightness = ImageStat.Stat(grey).mean[0]
        saturation = ImageStat.Stat(small.convert("HSV")).mean[1]
        regions = list(grey.resize((3, 3), Image.Resampling.BOX).tobytes())
        brightest = _REGIONS[regions.index(max(regions))]
        return [
            f"This is a {orientation} photo of {width}x{height} pixels, mostly {colour} "
            f"({hex_colour}), fingerprint {self._fingerprint(grey)}.",
            "A model would tell an entertaining story about this place here; the stand-in "
            f"only sees that the picture is {'bright' if brightness >= 128 else 'dark'} and "
            f"{'colourful' if saturation >= 80 else 'muted'}, brightest at the {brightest}.",
        ]

    @staticmethod
    def _small_rgb(image: Image.Image) -> Image.Image:
        # A box filter with reducing_gap shrinks a 12-megapixel photo in about 10 ms.
        if image.mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGB")
        size = (64, max(1, round(64 * image.height / image.width)))
        return image.resize(size, Image.Resampling.BOX, reducing_gap=2.0).convert("RGB")

    def _dominant_colour(self, small: Image.Image) -> tuple[str, str]:
        indexed = small.quantize(palette=self._palette, dither=Image.Dither.NONE)
        counts = indexed.getcolors() or []
        _, index = max(counts)
        name = list(_COLOURS)[index]
        # The hex code is the mean of the pixels that got this name: the photo's own shade.
        mask = indexed.point(lambda i: 255 if i == index else 0, mode="L")
        r, g, b = (round(v) for v in ImageStat.Stat(small, mask).mean)
        return name, f"#{r:02x}{g:02x}{b:02x}"

    @staticmethod
    def _fingerprint(grey: Image.Image) -> str:
        """Average hash: 64 bits saying which of 8x8 cells are brighter than the mean."""
        cells = list(grey.resize((8, 8), Image.Resampling.BOX).tobytes())
        mean = sum(cells) / len(cells)
        bits = "".join("1" if c > mean else "0" for c in cells)
        return f"{int(bits, 2):016x}"


# -- a real model through transformers --------------------------------------------------------


class _StopOnText:
    """A transformers stopping criterion: stop once the new text contains a stop sequence.

    Duck-typed (transformers only calls it) so this module does not import transformers.
    """

    def __init__(self, tokenizer: Any, prompt_length: int, stops: Sequence[str]) -> None:
        self.tokenizer, self.prompt_length, self.stops = tokenizer, prompt_length, list(stops)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = [
            cut_at_stop(self.tokenizer.decode(row[self.prompt_length:]), self.stops) is not None
            for row in input_ids
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


# Model types whose images are prepared by Idefics3's processing: SmolVLM is that architecture.
_IDEFICS3_FAMILY = frozenset({"idefics3", "smolvlm"})


def _load_processor(model: str, local_files_only: bool) -> Any:
    """The model's processor; for a SmolVLM whose processor cannot load here, an image-only one.

    SmolVLMProcessor also handles video: transformers 5 (checked with 5.24) loads its video
    processor only with torchvision, and the processor refuses to start without num2words (it
    spells out frame counts in video prompts). Images need neither: Idefics3Processor, read from
    the same files, uses the checkpoint's own image processor (its PIL variant), tokenizer,
    image_seq_len and chat template, and expands each image into the same tokens.
    """
    from transformers import AutoConfig, AutoProcessor, Idefics3Processor

    try:
        return AutoProcessor.from_pretrained(model, local_files_only=local_files_only)
    except ImportError as error:  # a missing optional dependency; anything else is raised
        config = AutoConfig.from_pretrained(model, local_files_only=local_files_only)
        if config.model_type not in _IDEFICS3_FAMILY:
            raise
        logger.info(
            "%s: AutoProcessor failed (%s); using Idefics3Processor over the same files, which "
            "handles images (not video) without that dependency",
            model, " ".join(str(error).split()),
        )
        return Idefics3Processor.from_pretrained(model, local_files_only=local_files_only)


class TransformersBackend(Backend):
    """A vision-language model with a chat template (Idefics3, SmolVLM, ...), run locally.

    Not thread-safe: one ``generate`` at a time (the server holds a lock around it).
    """

    thread_safe = False

    def __init__(
        self, model: str, device: str | None = None, local_files_only: bool | None = None
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText

        if local_files_only is None:
            local_files_only = Path(model).is_dir() or _hub_offline()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.processor = _load_processor(model, local_files_only)
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"{model} has no chat template; the local server needs one")
        self.model = AutoModelForImageTextToText.from_pretrained(
            model, dtype=dtype, local_files_only=local_files_only
        ).to(self.device)
        self.model.eval()
        self.name = model
        self.description = f"transformers: {model} on {self.device}"

    def generate(self, conversation: Sequence[Turn], params: GenerationParams) -> str:
        grammar = params.get("grammar")
        if grammar:
            schema = json_schema_of(grammar)
            fields = _flat_fields(schema) if schema is not None else None
            if fields is not None:
                return self._generate_json(conversation, params, fields)
            # transformers has no grammar-constrained decoding of its own (TGI uses outlines):
            # only a flat object is constrained here, by filling in its values.
            logger.warning(
                "%s: this %s grammar cannot be constrained locally (only a flat JSON object of "
                "strings, booleans and numbers can): generating free text instead",
                self.name, grammar.get("type"))
        inputs = self._inputs(conversation)
        return self._run(inputs, params, params["max_new_tokens"], params["stop"])

    def _inputs(self, conversation: Sequence[Turn], prefix: str = "") -> Any:
        """The model's inputs for the conversation, the assistant's answer begun with
        ``prefix``."""
        messages = [
            {
                "role": turn.role,
                "content": [
                    {"type": "text", "text": p} if isinstance(p, str) else {"type": "image"}
                    for p in turn.parts
                ],
            }
            for turn in conversation
        ]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        images = [image.convert("RGB") for turn in conversation for image in turn.images]
        return self.processor(
            text=[prompt + prefix], images=[images] if images else None, return_tensors="pt"
        ).to(self.device)

    def _run(self, inputs: Any, params: GenerationParams, max_new_tokens: int,
             stops: Sequence[str]) -> str:
        import torch
        from transformers import StoppingCriteriaList

        prompt_length = inputs["input_ids"].shape[1]
        options: dict[str, Any] = {"max_new_tokens": max_new_tokens,
                                   "do_sample": params["do_sample"]}
        if params["do_sample"]:  # greedy decoding ignores (and warns about) these
            for key in ("temperature", "top_p", "top_k"):
                if params[key] is not None:
                    options[key] = params[key]
        if stops:
            tokenizer = self.processor.tokenizer
            options["stopping_criteria"] = StoppingCriteriaList(
                [_StopOnText(tokenizer, prompt_length, stops)]
            )
        with torch.inference_mode():
            output = self.model.generate(**inputs, **options)
        text = self.processor.decode(output[0, prompt_length:], skip_special_tokens=True)
        return cut_at_stop(text, stops) or text

    def _generate_json(self, conversation: Sequence[Turn], params: GenerationParams,
                       fields: list[tuple[str, str]]) -> str:
        """A JSON object with exactly ``fields``: the keys and punctuation are written here,
        each value is generated by the model after the text so far (valid by construction)."""
        logger.info("%s: JSON grammar constrained by filling in %d fields", self.name,
                    len(fields))
        text = "{"
        share = max(1, params["max_new_tokens"] // max(1, len(fields)))
        for number, (name, kind) in enumerate(fields):
            text += ("" if number == 0 else ", ") + json.dumps(name) + ": "
            if kind == "string":
                value = self._run(self._inputs(conversation, text + '"'), params, share,
                                  ['"', "\n"])
                text += json.dumps(value.removesuffix('"').strip())
            elif kind == "boolean":
                value = self._run(self._inputs(conversation, text), params, 2, [])
                text += "true" if value.strip().lower().startswith(("true", "yes")) else "false"
            else:
                value = self._run(self._inputs(conversation, text), params, 4, [",", "}"])
                found = re.match(r"\s*(-?\d+(\.\d+)?)", value)
                number_text = found.group(1) if found else "0"
                text += str(int(float(number_text))) if kind == "integer" else number_text
        return text + "}"


def _flat_fields(schema: dict[str, Any]) -> list[tuple[str, str]] | None:
    """[(property, type)] of an object schema whose properties are all strings, booleans or
    numbers; None for anything else (nested, arrays, enums, any object)."""
    properties = schema.get("properties")
    if schema.get("type", "object") != "object" or not isinstance(properties, dict) or \
            not properties:
        return None
    fields = []
    for name, sub in properties.items():
        kind = sub.get("type") if isinstance(sub, dict) else None
        if kind not in ("string", "boolean", "integer", "number") or sub.get("enum"):
            return None
        fields.append((str(name), kind))
    return fields


# -- choosing a backend -------------------------------------------------------------------------


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 2.0) -> bool:
    """A TCP connect to the Hub, bounded even when DNS hangs (getaddrinfo has no timeout)."""
    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((url.hostname or "", port), timeout=timeout):
                result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result)


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def load_backend(spec: str | None = None) -> tuple[Backend, str]:
    """The backend for ``spec`` (a model id or path, or "stand-in") and why it was chosen.

    ``spec`` None means ``$VT_LOCAL_MODEL`` or the default model. Falls back to the stand-in
    within seconds, with the reason, when the model cannot be loaded here.
    """
    spec = spec or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    if spec == STAND_IN:
        return StandInBackend(), "the stand-in was asked for"

    def stand_in(why: str, what_to_do: str = _GET_THE_WEIGHTS) -> tuple[Backend, str]:
        reason = f"using the offline stand-in: {why}; {what_to_do}"
        logger.info(reason)  # returned to the caller, who shows it (the CLI prints it)
        return StandInBackend(), reason

    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        return stand_in(f"torch/transformers cannot be imported ({error})",
                        _INSTALL_THE_EXTRA)

    if Path(spec).expanduser().is_dir():
        where, local_only, spec = "local path", True, str(Path(spec).expanduser())
    elif _in_hub_cache(spec):
        where, local_only = "Hugging Face cache", True
    elif _hub_offline():
        return stand_in(f"{spec} is not a local folder nor in the Hugging Face cache, "
                        "and HF_HUB_OFFLINE is set",
                        _GET_THE_WEIGHTS.replace("internet access", "internet access and "
                                                 "HF_HUB_OFFLINE unset"))
    elif not _hub_reachable():
        return stand_in(f"{spec} is not a local folder nor in the Hugging Face cache, "
                        "and the Hugging Face Hub cannot be reached")
    else:
        where, local_only = "downloaded from the Hugging Face Hub", False

    started = time.perf_counter()
    try:
        backend = TransformersBackend(spec, local_files_only=local_only)
    except Exception as error:  # any loading failure: keep the server usable
        hint = "" if importlib.util.find_spec("torchvision") else (
            " (torchvision is not installed; some models' processors need it)")
        return stand_in(f"loading {spec} failed: {type(error).__name__}: {error}{hint}",
                        f"choose another model ({MODEL_ENV}=<id or folder>, or --model)")
    seconds = time.perf_counter() - started
    return backend, f"{backend.description} ({where}, loaded in {seconds:.1f} s)"
