"""What a model container accepts: token budgets, image token counting, generation parameters.

The one source of truth for these rules. Standard library only, because it is in the photo
function's zip (the handler sizes images and refuses bad settings with it) and is also
imported by ``visual_tourism.profiles`` (``load_config``, the CLI, the presets) and by the local
model server (which enforces the same limits with the same accounting, as the real router does).

The rules are read from the containers' own source at the pinned versions:

- TGI (huggingface/text-generation-inference) v1.4.5 and v3.3.6, ``router/src/validation.rs``
  ``Validation::validate``: ``temperature`` > 0 whenever given, 0 < ``top_p`` < 1,
  0 < ``typical_p`` < 1, ``top_k`` > 0, ``repetition_penalty`` > 0, ``max_new_tokens`` > 0,
  at most ``max_stop_sequences`` stop sequences (``launcher/src/main.rs`` and
  ``router/src/main.rs``: default 4 at both tags), input tokens <= MAX_INPUT_TOKENS and
  input + ``max_new_tokens`` <= MAX_TOTAL_TOKENS; a failure is HTTP 422.
  Chat requests (v3.3.6 ``router/src/server.rs`` ``chat_completions``): ``temperature`` 0 means
  greedy (do_sample off), the rest is validated as above after conversion.
- vLLM's OpenAI server (inside the AWS LMI container ``djl-lmi``): ``temperature`` >= 0,
  0 < ``top_p`` <= 1, ``max_tokens`` >= 1, prompt + ``max_tokens`` <= ``max_model_len``;
  a failure is HTTP 400.

Image token counting (``image_tokens``), one formula per container and model family:

- ``"idefics"``: TGI v1.4.5 ``prepare_input`` replaces each ``![](...)`` with one ``<image>``
  token before counting: 1 token per image, whatever its size.
- ``"qwen2-vl-router"``: TGI v3.3.6 ``router/src/config.rs`` ``Qwen2Vl``/``Qwen2_5Vl``
  ``get_number_of_features`` counts ``height * width // 14**2`` on the image as fetched (the
  router never resizes): the image must be sent small enough.
- ``"qwen2-vl-processor"``: vLLM counts what the Hugging Face processor makes: ``smart_resize``
  to multiples of 28 within [56*56, 12845056] pixels, one token per 28x28 cell, plus
  ``<|vision_start|>``/``<|vision_end|>``.
- ``"idefics3"``: SmolVLM/Idefics3 through the Hugging Face processor (vLLM): longest edge
  scaled to 1536 (up or down), split into 384-pixel tiles, 81 tokens per tile plus a global
  image, with a few marker tokens per tile: at most 1,513 tokens whatever the photo's size.
- ``"bedrock"``: a managed model on Amazon Bedrock (Converse). The service resizes images
  itself and its accounting is not published per model; estimated from above as
  ``ceil(width * height / 750)`` (Anthropic's published estimate; Amazon Nova v1 is about
  1,300 tokens for 900x900, below it). Bedrock's own limits are per image: the formats, 3.75 MB
  and 8,000 pixels a side (``photo_handler.converse``).

Amazon Bedrock's Converse (engine ``"bedrock"``, request style ``"converse"``) takes
``inferenceConfig`` ``maxTokens`` >= 1, 0 <= ``temperature`` <= 1, 0 <= ``topP`` <= 1 and
``stopSequences`` (botocore's bedrock-runtime 2023-09-30 service model); a failure is a 400
ValidationException.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

ENV_VAR = "CONTAINER_LIMITS"  # the Lambda reads ContainerLimits from this variable (JSON)

FORMULAS = ("idefics", "qwen2-vl-router", "qwen2-vl-processor", "idefics3", "bedrock")
ENGINES = ("tgi", "vllm", "bedrock")

# Text tokens are estimated from above, without the tokenizer: every byte-level BPE or
# SentencePiece (byte fallback) token covers at least one UTF-8 byte, so a text never has more
# tokens than bytes. Special tokens, BOS and the chat template's wrapping are added on top.
TEMPLATE_TOKENS = 64  # BOS, a default system prompt, generation prompt
MESSAGE_TOKENS = 16  # role markers and separators per chat message


class GenerationError(ValueError):
    """A generation parameter or a request the container would refuse; says what and why."""


@dataclass(frozen=True)
class ContainerLimits:
    """The limits a deployed container enforces, and how it counts image tokens."""

    engine: str  # "tgi", "vllm" or "bedrock" (a managed model: no container of ours)
    container_version: str  # e.g. "1.4.5", "3.3.6", "0.33.0"
    max_input_tokens: int
    max_total_tokens: int
    payload_limit_bytes: int
    max_stop_sequences: int | None  # None: no limit (vLLM)
    image_formula: str  # one of FORMULAS
    max_images: int = 2  # images per request the container takes (vLLM: limit_mm_per_prompt)
    example_image_tokens: int = 1024  # at most this many tokens for the in-context example
    min_image_tokens: int = 1  # the upload needs at least this many to be worth sending

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise GenerationError(f"engine {self.engine!r}: use one of {ENGINES}")
        if self.image_formula not in FORMULAS:
            raise GenerationError(f"image_formula {self.image_formula!r}: use one of {FORMULAS}")
        if not 0 < self.max_input_tokens < self.max_total_tokens:
            raise GenerationError(
                f"need 0 < max_input_tokens ({self.max_input_tokens}) < max_total_tokens "
                f"({self.max_total_tokens}), as TGI's launcher requires"
            )

    @property
    def validation_status(self) -> int:
        """HTTP status of a refused request: TGI's 422, vLLM's and Bedrock's 400."""
        return 422 if self.engine == "tgi" else 400

    @property
    def image_failure_status(self) -> int:
        """HTTP status when the container cannot fetch or decode an image.

        TGI v1.4.5 serves Idefics v1 by fetching images in the Python shard, so a failure
        surfaces as a generation error (424); from v2 on the router fetches and answers 422.
        """
        if self.engine == "tgi" and self.image_formula == "idefics":
            return 424
        return self.validation_status

    def to_env(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_env(cls, raw: str) -> ContainerLimits:
        try:
            data = json.loads(raw)
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise GenerationError(f"{ENV_VAR} is not a valid limits object ({exc})") from None


# -- image tokens ---------------------------------------------------------------------------


def _smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                  max_pixels: int = 12_845_056) -> tuple[int, int]:
    """Qwen2-VL's processor resize: sides to multiples of ``factor`` within the pixel bounds."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _idefics3_grid(width: int, height: int, longest: int = 1536, tile: int = 384,
                   ) -> tuple[int, int]:
    """(rows, cols) of 384-pixel tiles the Idefics3/SmolVLM processor cuts an image into.

    transformers' Idefics3ImageProcessor: the longest side is scaled TO 1536 (small images are
    enlarged; the other side made even), then both sides rounded up to multiples of 384.
    """
    aspect = width / height
    if width >= height:
        w, h = longest, int(longest / aspect)
        h += h % 2
    else:
        w, h = int(longest * aspect), longest
        w += w % 2
    w, h = max(w, 1), max(h, 1)
    aspect = w / h
    if w >= h:
        w = math.ceil(w / tile) * tile
        h = math.ceil(int(w / aspect) / tile) * tile
    else:
        h = math.ceil(h / tile) * tile
        w = math.ceil(int(h * aspect) / tile) * tile
    return max(h // tile, 1), max(w // tile, 1)


def image_tokens(width: int, height: int, formula: str) -> int:
    """Tokens one ``width`` x ``height`` image costs by the container's own accounting."""
    if formula == "idefics":
        return 1
    if formula == "qwen2-vl-router":
        return height * width // 14**2
    if formula == "qwen2-vl-processor":
        h, w = _smart_resize(height, width)
        return (h // 28) * (w // 28) + 2
    if formula == "idefics3":
        rows, cols = _idefics3_grid(width, height)
        tiles = 0 if rows * cols == 1 else rows * cols
        # 81 tokens per tile and for the global image; <fake_token_around_image>, the
        # <row_i_col_j> marker (up to 7 tokens as text) and a newline per row, from above.
        return (tiles + 1) * 81 + tiles * 8 + rows + 4
    if formula == "bedrock":
        return math.ceil(width * height / 750)
    raise GenerationError(f"unknown image formula {formula!r}")


def fit_image(width: int, height: int, max_tokens: int, formula: str,
              min_side: int = 28) -> tuple[int, int] | None:
    """The largest size, aspect kept and never enlarged, whose image costs <= ``max_tokens``.

    None when even ``min_side`` pixels on the short side cost more.
    """
    if image_tokens(width, height, formula) <= max_tokens:
        return width, height

    def scaled(longest: int) -> tuple[int, int]:
        s = longest / max(width, height)
        return max(1, int(width * s)), max(1, int(height * s))

    low, high = 1, max(width, height)  # binary search on the longest side
    while low < high:
        mid = (low + high + 1) // 2
        if image_tokens(*scaled(mid), formula) <= max_tokens:
            low = mid
        else:
            high = mid - 1
    w, h = scaled(low)
    if min(w, h) < min_side or image_tokens(w, h, formula) > max_tokens:
        return None
    return w, h


# -- text tokens and the whole request --------------------------------------------------------


def text_tokens_bound(text: str) -> int:
    """At least as many tokens as the container's tokenizer makes of ``text``."""
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class Budget:
    """A request's tokens by the container's accounting (text estimated from above)."""

    text_tokens: int
    image_tokens: tuple[int, ...]
    max_new_tokens: int
    max_input_tokens: int
    max_total_tokens: int

    @property
    def input_tokens(self) -> int:
        return self.text_tokens + sum(self.image_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.max_new_tokens

    @property
    def fits(self) -> bool:
        return (self.input_tokens <= self.max_input_tokens
                and self.total_tokens <= self.max_total_tokens)

    def explain(self) -> str:
        return (
            f"{self.text_tokens} text tokens (estimated from above) + "
            f"{sum(self.image_tokens)} image tokens {list(self.image_tokens)} = "
            f"{self.input_tokens} input tokens (limit {self.max_input_tokens}); "
            f"+ max_new_tokens {self.max_new_tokens} = {self.total_tokens} "
            f"(limit {self.max_total_tokens})"
        )


def request_budget(
    limits: ContainerLimits, texts: Sequence[str], images: Sequence[tuple[int, int]],
    max_new_tokens: int, messages: int = 0,
) -> Budget:
    """Tokens of a request made of ``texts`` and ``images`` (width, height) as sent.

    ``messages``: the number of chat messages (0 for a plain TGI prompt).
    """
    text = sum(text_tokens_bound(t) for t in texts) + TEMPLATE_TOKENS + messages * MESSAGE_TOKENS
    return Budget(
        text_tokens=text,
        image_tokens=tuple(image_tokens(w, h, limits.image_formula) for w, h in images),
        max_new_tokens=max_new_tokens,
        max_input_tokens=limits.max_input_tokens,
        max_total_tokens=limits.max_total_tokens,
    )


def image_room(limits: ContainerLimits, text_tokens: int, max_new_tokens: int) -> int:
    """Tokens left for all the request's images once the text and the answer are counted."""
    return min(limits.max_input_tokens - text_tokens,
               limits.max_total_tokens - max_new_tokens - text_tokens)


def image_allowances(
    limits: ContainerLimits, text_tokens: int, max_new_tokens: int,
    example_sizes: Sequence[tuple[int, int]],
) -> tuple[list[int], int]:
    """(token allowance per example image, allowance for the upload).

    Examples get at most ``limits.example_image_tokens`` each (less if they are small); the
    upload gets everything left, so it stays as large as the budget allows. Raises
    GenerationError when the upload would get less than ``limits.min_image_tokens``.
    """
    room = image_room(limits, text_tokens, max_new_tokens)
    allowances = [min(limits.example_image_tokens,
                      image_tokens(w, h, limits.image_formula)) for w, h in example_sizes]
    left = room - sum(allowances)
    if left < limits.min_image_tokens:
        raise GenerationError(
            f"no room for the photo: {text_tokens} text tokens, {sum(allowances)} example "
            f"image tokens and max_new_tokens {max_new_tokens} leave {left} tokens, fewer than "
            f"the {limits.min_image_tokens} a photo needs (MAX_INPUT_TOKENS "
            f"{limits.max_input_tokens}, MAX_TOTAL_TOKENS {limits.max_total_tokens}): "
            "shorten the prompt or lower max_new_tokens"
        )
    return allowances, left


# -- generation parameters ----------------------------------------------------------------------

# The handler's generation keys (TGI /generate names) -> the chat completion fields it sends.
CHAT_PARAMETERS = {
    "max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
    "seed": "seed", "stop": "stop", "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}
# The handler's generation keys -> Converse's inferenceConfig fields. do_sample false means
# temperature 0; top_k has no inferenceConfig field (it would be a model-specific
# additionalModelRequestField) and is left out, as the defaults carry it for TGI.
CONVERSE_PARAMETERS = {
    "max_new_tokens": "maxTokens", "temperature": "temperature", "top_p": "topP",
    "stop": "stopSequences",
}
CONVERSE_IGNORED = {"do_sample", "top_k"}
TGI_PARAMETERS = {
    "do_sample", "temperature", "top_p", "top_k", "typical_p", "repetition_penalty",
    "frequency_penalty", "max_new_tokens", "stop", "seed", "truncate", "watermark",
    "best_of", "return_full_text", "details", "decoder_input_details", "top_n_tokens",
    "grammar",
}


def _number(params: Mapping[str, Any], name: str, problems: list[str]) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{name}={value!r} must be a number")
        return None
    return float(value)


def generation_problems(
    params: Mapping[str, Any], limits: ContainerLimits, style: str, extra_stops: int = 0,
) -> list[str]:
    """Every generation parameter the container would refuse, each with its allowed range.

    ``style``: the request style ("tgi" prompt or "messages" chat). ``extra_stops``: stop
    sequences the handler adds itself (two for the TGI prompt style).
    """
    problems: list[str] = []
    if not isinstance(params, Mapping):
        return ["generation must be an object of generation parameters"]
    where = f"({limits.engine} {limits.container_version}, {style} requests)"
    if style == "tgi":
        unknown = sorted(set(params) - TGI_PARAMETERS)
    elif style == "converse":
        unknown = sorted(set(params) - set(CONVERSE_PARAMETERS) - CONVERSE_IGNORED)
    else:
        unknown = sorted(set(params) - set(CHAT_PARAMETERS) - {"do_sample", "top_k"})
    if unknown:
        problems.append(f"unknown generation parameter(s) {', '.join(unknown)} {where}")

    max_new = params.get("max_new_tokens")
    if isinstance(max_new, bool) or not isinstance(max_new, int):
        problems.append(f"max_new_tokens={max_new!r} must be a whole number >= 1")
    elif not 1 <= max_new <= limits.max_total_tokens - 1:
        problems.append(
            f"max_new_tokens={max_new} must be between 1 and {limits.max_total_tokens - 1} "
            f"(MAX_TOTAL_TOKENS {limits.max_total_tokens} less at least one input token)"
        )

    temperature = _number(params, "temperature", problems)
    top_p = _number(params, "top_p", problems)
    if temperature is not None:
        if limits.engine == "tgi" and style == "tgi" and temperature <= 0:
            problems.append(
                f"temperature={params['temperature']} must be > 0 {where}; for greedy "
                "decoding set do_sample=false and leave temperature out")
        elif limits.engine == "bedrock" and not 0 <= temperature <= 1:
            problems.append(f"temperature={params['temperature']} must be between 0 and 1 "
                            f"{where}")
        elif temperature < 0:
            problems.append(f"temperature={params['temperature']} must be >= 0 {where}")
    if top_p is not None:
        upper_ok = top_p <= 1 if limits.engine in ("vllm", "bedrock") else top_p < 1
        lower_ok = top_p >= 0 if limits.engine == "bedrock" else top_p > 0
        if not (lower_ok and upper_ok):
            allowed = {"vllm": "0 < top_p <= 1", "bedrock": "0 <= top_p <= 1"}.get(
                limits.engine, "0 < top_p < 1")
            problems.append(f"top_p={params['top_p']} must satisfy {allowed} {where}; "
                            "leave it out to disable nucleus sampling")
    if style == "tgi":
        top_k = params.get("top_k")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k <= 0):
            problems.append(f"top_k={top_k!r} must be a whole number > 0 {where}; leave it out "
                            "to disable top-k sampling")
        typical_p = _number(params, "typical_p", problems)
        if typical_p is not None and not 0 < typical_p < 1:
            problems.append(f"typical_p={params['typical_p']} must satisfy 0 < typical_p < 1 "
                            f"{where}")
        penalty = _number(params, "repetition_penalty", problems)
        if penalty is not None and penalty <= 0:
            problems.append(f"repetition_penalty={params['repetition_penalty']} must be > 0 "
                            f"{where}")
        best_of = params.get("best_of")
        if best_of not in (None, 1):
            problems.append(f"best_of={best_of!r}: only 1 is supported (one answer per photo)")
    for name in ("frequency_penalty", "presence_penalty"):
        value = _number(params, name, problems)
        if value is not None and not -2 <= value <= 2:
            problems.append(f"{name}={params[name]} must be between -2 and 2 {where}")

    stop = params.get("stop", [])
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        problems.append(f"stop={stop!r} must be a list of strings")
    elif limits.max_stop_sequences is not None:
        allowed = limits.max_stop_sequences - extra_stops
        if len(stops) > allowed:
            added = f" (the handler adds {extra_stops} of its own)" if extra_stops else ""
            problems.append(
                f"stop has {len(stops)} sequences: at most {allowed} allowed{added}, "
                f"{limits.max_stop_sequences} in all {where}")
    return problems


def check_generation(
    params: Mapping[str, Any], limits: ContainerLimits, style: str, extra_stops: int = 0,
) -> None:
    """Raise GenerationError listing every parameter the container would refuse."""
    problems = generation_problems(params, limits, style, extra_stops)
    if problems:
        raise GenerationError("Invalid generation parameters: " + "; ".join(problems) + ".")
