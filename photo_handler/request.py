"""The request body the endpoint gets: a one-shot prompt (an example photo, its answer, then
the photo) in the container's request style, or a preset's prompt, and the images it carries.

Both styles carry images as URLs: a presigned URL of the stored photo, or a data: URI
(``budget`` decides which, and at what size).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .serving_limits import ContainerLimits
from .settings import Settings

TGI_STOP = ["User:", "<end_of_utterance>"]


@dataclass(frozen=True)
class SentImage:
    """One image as the request carries it."""

    url: str  # a presigned URL of the stored object, or a data: URI
    width: int  # the size the container sees (0: not read; only where size costs nothing)
    height: int
    resized: bool = False  # a smaller copy than the one stored


CHAT_PARAMETERS = {
    "max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
    "seed": "seed", "stop": "stop", "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}


def build_request(
    style: str, instruction: str, example_answer: str, example_url: str, image_url: str,
    generation: Mapping[str, Any], grounding: str = "",
) -> dict[str, Any]:
    """The endpoint's request body: a one-shot prompt (example photo, its answer, the photo).
    ``grounding`` (the nearby places, places.py) ends the photo's turn only."""
    asked = f"{instruction} {grounding}" if grounding else instruction
    if style == "tgi":
        prompt = (
            f"User:{instruction}![]({example_url})<end_of_utterance>\n"
            f"Assistant: {example_answer}<end_of_utterance>\n"
            f"User:{asked}![]({image_url})<end_of_utterance>\nAssistant:"
        )
        # Without return_full_text=false Idefics echoes the whole prompt.
        parameters = {"return_full_text": False, "stop": list(TGI_STOP), **generation}
        return {"inputs": prompt, "parameters": parameters}

    def user(url: str, text: str = instruction) -> dict[str, Any]:
        return {"role": "user", "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": url}},
        ]}

    body: dict[str, Any] = {"messages": [
        user(example_url), {"role": "assistant", "content": example_answer},
        user(image_url, asked),
    ]}
    body.update({CHAT_PARAMETERS[k]: v for k, v in generation.items() if k in CHAT_PARAMETERS})
    if generation.get("do_sample") is False:  # chat completions have no do_sample: greedy
        body["temperature"] = 0
    return body


@dataclass(frozen=True)
class Prompt:
    """What one request asks: the instruction, the in-context examples, the parameters.

    ``preset`` None: the function's own one-shot prompt (INSTRUCTION, EXAMPLE_KEY,
    EXAMPLE_ANSWER, GENERATION_PARAMETERS), what a stack without presets sends. Otherwise
    the preset item (presets_schema's layout) the request is built from; ``from_table`` says
    whether it came from the presets table (False: the built-in default, the same prompt as
    the environment's, used when the table cannot be read).
    """

    instruction: str
    examples: tuple[tuple[str, str], ...]  # (S3 key of the example photo, its written answer)
    generation: Mapping[str, Any]  # max_new_tokens included
    preset: Mapping[str, Any] | None = None
    language: str | None = None
    structured: bool = False
    from_table: bool = False
    grounding: str = ""  # what the photo's turn adds: the real places nearby (places.py)

    def item(self) -> Mapping[str, Any]:
        """The preset as the request is built from it, the grounding included."""
        assert self.preset is not None
        return {**self.preset, "grounding": self.grounding} if self.grounding else self.preset

    @property
    def name(self) -> str:
        from . import presets_schema

        return str((self.preset or {}).get("name", presets_schema.DEFAULT_NAME))

    def label(self) -> str:
        """How messages name the preset: "preset 'family' (version 3)"."""
        version = (self.preset or {}).get("version")
        return f"preset {self.name!r}" + (f" (version {version})" if version is not None else "")


def environment_prompt(settings: Settings) -> Prompt:
    return Prompt(settings.instruction, ((settings.example_key, settings.example_answer),),
                  settings.generation)


def prompt_request(settings: Settings, prompt: Prompt, example_urls: list[str],
                   image_url: str) -> dict[str, Any]:
    """The request body for ``prompt``: build_request's one-shot prompt without a preset;
    with one, presets_schema's prompt (preset_request)."""
    style = settings.request_style
    if prompt.preset is None:
        (_, answer), = prompt.examples
        return build_request(style, prompt.instruction, answer, example_urls[0], image_url,
                             prompt.generation, prompt.grounding)
    return preset_request(settings, prompt, example_urls, image_url)


def structured_request(limits: ContainerLimits | None, style: str,
                       ) -> dict[str, Any] | None:
    """The request fields that constrain the answer to presets_schema.structured_schema(),
    as this container takes them; None: it cannot, the answer is parsed from text.

    - TGI prompt style: ``parameters.grammar = {"type": "json", "value": <schema>}``, from
      TGI 1.4 (router GrammarType; on by default, --disable-grammar-support opts out).
    - Messages on TGI (>= 2; 3.3.6 checked): ``response_format = {"type": "json_object",
      "value": <schema>}``, TGI's own shape ("json_object" is an alias of "json").
    - Messages on vLLM: OpenAI's ``{"type": "json_schema", "json_schema": {"name", "schema"}}``.
    """
    from . import presets_schema  # PRESETS_TABLE set

    schema = presets_schema.structured_schema()
    engine = limits.engine if limits is not None else "tgi"
    version = limits.container_version if limits is not None else ""
    major_minor = tuple(int(p) for p in re.findall(r"\d+", version)[:2]) or (99, 0)
    if style == "tgi":
        if engine != "tgi" or major_minor < (1, 4):
            return None
        return {"grammar": {"type": "json", "value": schema}}
    if engine == "vllm":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "answer", "schema": schema}}}
    if major_minor < (2, 0):  # TGI 1.x's chat route has no response_format
        return None
    return {"response_format": {"type": "json_object", "value": schema}}


def preset_request(settings: Settings, prompt: Prompt, example_urls: list[str],
                   image_url: str) -> dict[str, Any]:
    """The request body for a preset's ``prompt`` (prompt_request): presets_schema's
    prompt (up to three examples, the answer language), its parameters and, for a structured
    answer, the container's constraint."""
    from . import presets_schema  # PRESETS_TABLE set

    style = settings.request_style
    item, generation = prompt.item(), prompt.generation
    constraint = (structured_request(settings.container_limits, style)
                  if prompt.structured else None)
    if style == "tgi":
        parameters = {"return_full_text": False, "stop": list(TGI_STOP), **generation}
        parameters.update(constraint or {})
        return {"inputs": presets_schema.tgi_prompt(item, prompt.language, example_urls,
                                                    image_url), "parameters": parameters}
    body: dict[str, Any] = {"messages": presets_schema.chat_messages(
        item, prompt.language, example_urls, image_url)}
    body.update({CHAT_PARAMETERS[k]: v for k, v in generation.items()
                 if k in CHAT_PARAMETERS})
    if generation.get("do_sample") is False:
        body["temperature"] = 0
    body.update(constraint or {})
    return body
