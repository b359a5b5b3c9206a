"""Asking a managed model: Amazon Bedrock's Converse API (MODEL_KIND=bedrock), step 3 of the
handler when no endpoint is deployed.

The same prompt as the endpoint path (the function's one-shot prompt, or a preset with its
examples and language), in Converse's shape: the image bytes in the message, the example's
answer as the assistant's turn. What Converse takes (botocore's ``bedrock-runtime``
2023-09-30 service model and the Bedrock user guide): images png, jpeg, gif or webp, each at
most 3.75 MB and 8,000 pixels a side, up to 20 a request (fewer where the model takes fewer:
Llama 3.2 Vision one, so its example's answer travels as text alone); ``inferenceConfig``
``maxTokens``, ``temperature`` and ``topP`` in [0, 1], ``stopSequences``. Each image is
sent as it is when it meets those limits and its token allowance, else as a JPEG within them
(``resize.jpeg_within``, Pillow).

A structured answer (a preset that asks for one) is a forced tool call where the model takes
``toolChoice`` (STRUCTURED_OUTPUT=tool: Amazon Nova), else JSON asked for in the prompt and
read from the text, as on the endpoint path. The answer's ``usage`` (tokens in and out) and,
with MODEL_PRICES, its list price go into the record.

Throttling and the service's transient failures are retried with backoff within the time
the invocation has left; every other failure is a Failure whose message says what to do
(model access not granted, a request the model refused, a model ID unknown in the region).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import answer, budget, clients, model, serving_limits, upload
from .errors import BadImage, Failure, describe, scrub
from .logs import log
from .request import Prompt
from .settings import Settings
from .sniff import sniff_image

FORMATS = ("png", "jpeg", "gif", "webp")  # Converse's ImageFormat enum
MAX_IMAGE_BYTES = 3_750_000  # 3.75 MB per image
MAX_SIDE = 8_000  # pixels, width and height
MAX_IMAGES = 20  # per request
TOOL_NAME = "answer"
# Converse errors worth another attempt (the service model's error shapes).
RETRYABLE = {
    "ThrottlingException", "ServiceUnavailableException", "InternalServerException",
    "ModelNotReadyException", "ModelTimeoutException",
}


@dataclass(frozen=True)
class ImagePart:
    """One image as the Converse request carries it."""

    data: bytes
    format: str  # one of FORMATS
    width: int
    height: int
    resized: bool = False

    def block(self) -> dict[str, Any]:
        return {"image": {"format": self.format, "source": {"bytes": self.data}}}


def fit_image(data: bytes, fmt: str, stored: tuple[int, int], settings: Settings,
              max_tokens: int | None = None) -> ImagePart:
    """``data`` as Converse takes it: as it is when its format, bytes, sides and tokens fit;
    else a JPEG within all of them."""
    width, height = stored
    target = stored
    if max_tokens is not None:
        fitted = serving_limits.fit_image(width, height, max_tokens, "bedrock")
        if fitted is None:
            raise BadImage("image_too_large", f"The photo's shape ({width}x{height} pixels) "
                           "cannot be made small enough for the model and still show anything: "
                           "crop it closer to a square and upload again.")
        target = fitted
    if max(target) > MAX_SIDE:
        scale = MAX_SIDE / max(target)
        target = (max(1, math.floor(target[0] * scale)), max(1, math.floor(target[1] * scale)))
    if fmt in FORMATS and len(data) <= MAX_IMAGE_BYTES and target == stored:
        return ImagePart(data, fmt, width, height)
    from . import resize  # Pillow: only an image that must change

    jpeg, size = resize.jpeg_within(data, MAX_IMAGE_BYTES, settings.max_image_pixels,
                                    None if target == stored else target)
    return ImagePart(jpeg, "jpeg", *size, resized=True)


# -- the example photos: read once per warm container, checked unchanged per photo ---------

_examples: dict[tuple[str, str, int | None], tuple[str, ImagePart]] = {}


def clear_cache() -> None:
    _examples.clear()


def example_image(settings: Settings, prompt: Prompt, key: str,
                  max_tokens: int | None) -> ImagePart:
    """The example photo ``key`` sized for Converse (one conditional GET per photo)."""
    cache_key = (settings.bucket, key, max_tokens)
    cached = _examples.get(cache_key)
    try:
        read = budget.read_example(settings, key, cached[0] if cached is not None else None)
        if read is None:  # unchanged since this container sized it (only a copy asks)
            return cached[1]
        data, etag = read
        fmt, width, height = sniff_image(data)
        part = fit_image(data, fmt, (width, height), settings, max_tokens)
    except (ClientError, BadImage) as exc:
        where = (f"{prompt.label()}: its example photo" if prompt.from_table
                 else "The example image")
        fix = (f"upload that photo, or change the preset's examples (visual-tourism presets "
               f"set {prompt.name} ...)" if prompt.from_table else "upload it again or fix "
               "EXAMPLE_KEY")
        raise Failure("preset_invalid" if prompt.from_table else "configuration_error",
                      f"{where} s3://{settings.bucket}/{key} cannot be used "
                      f"({scrub(str(exc))}): {fix}, then upload the photo again.") from None
    if len(_examples) >= 24:
        _examples.clear()
    _examples[cache_key] = (etag, part)
    return part


# -- the request ------------------------------------------------------------------------------


def inference_config(generation: dict[str, Any]) -> dict[str, Any]:
    """GENERATION_PARAMETERS (or a preset's) as Converse's inferenceConfig: do_sample false is
    temperature 0; top_k has no field there and is left out."""
    config = {field: generation[name] for name, field in
              serving_limits.CONVERSE_PARAMETERS.items() if generation.get(name) is not None}
    if isinstance(config.get("stopSequences"), str):
        config["stopSequences"] = [config["stopSequences"]]
    if generation.get("do_sample") is False:
        config["temperature"] = 0
    return config


def max_images(settings: Settings) -> int:
    limits = settings.container_limits
    return min(limits.max_images, MAX_IMAGES) if limits is not None else MAX_IMAGES


def build_request(settings: Settings, prompt: Prompt, examples: list[ImagePart],
                  photo: ImagePart) -> dict[str, Any]:
    """The Converse request for ``prompt``: an example photo (if the model takes more than
    one image) and its answer per example, then the photo; with one image a request, the
    examples' answers go in the system prompt as text."""
    system: list[dict[str, Any]] = []
    with_photos = len(examples) == len(prompt.examples)
    # The photo's own turn ends with the grounding (the real places nearby, places.py).
    if prompt.preset is None:
        instruction = prompt.instruction
        final = f"{instruction} {prompt.grounding}" if prompt.grounding else instruction
    else:
        from . import presets_schema  # PRESETS_TABLE set

        instruction = str(prompt.preset.get("instruction", ""))
        final = presets_schema.answer_instruction(prompt.item(), prompt.language)
    messages: list[dict[str, Any]] = []
    for (_, example_answer), part in zip(prompt.examples, examples if with_photos else
                                          [None] * len(prompt.examples), strict=True):
        if part is None:
            continue
        messages.append({"role": "user", "content": [part.block(), {"text": instruction}]})
        messages.append({"role": "assistant", "content": [{"text": example_answer}]})
    if not with_photos and prompt.examples:
        shown = "\n\n".join(f"Example answer for another photo: {text}"
                            for _, text in prompt.examples)
        system.append({"text": f"{instruction}\n\n{shown}"})
    messages.append({"role": "user", "content": [photo.block(), {"text": final}]})
    request: dict[str, Any] = {"modelId": settings.model_id, "messages": messages,
                               "inferenceConfig": inference_config(dict(prompt.generation))}
    if system:
        request["system"] = system
    if prompt.structured and settings.structured_output == "tool":
        from . import presets_schema

        request["toolConfig"] = {
            "tools": [{"toolSpec": {
                "name": TOOL_NAME, "description": "Record the answer about the photo.",
                "inputSchema": {"json": presets_schema.structured_schema()}}}],
            "toolChoice": {"tool": {"name": TOOL_NAME}},
        }
    return request


def photo_parts(settings: Settings, prompt: Prompt, bucket: str, key: str, head: bytes,
                size: int, fmt: str, etag: str | None,
                stored: tuple[int, int]) -> tuple[list[ImagePart], ImagePart]:
    """(the example photos, the photo) sized for Converse and the model's token budget."""
    room_for_examples = max_images(settings) > len(prompt.examples)
    keys = [example_key for example_key, _ in prompt.examples] if room_for_examples else []
    limits = settings.container_limits
    example_tokens = limits.example_image_tokens if limits is not None else None
    examples = [example_image(settings, prompt, k, example_tokens) for k in keys]
    allowance = None
    if limits is not None:
        allowance = budget.image_allowances(
            settings, [(e.width, e.height) for e in examples], prompt)[1]
    data = head if size <= len(head) else upload.read_pinned(clients.client("s3"), bucket, key,
                                                             etag, size)
    return examples, fit_image(data, fmt, stored, settings, allowance)


# -- the call ---------------------------------------------------------------------------------


def converse(request: dict[str, Any], settings: Settings, deadline: float,
             sleep: Any = time.sleep) -> tuple[dict[str, Any], int]:
    """Call Converse until it answers; (response, attempts) or Failure (the endpoint's retry
    policy: model.Attempts)."""
    attempts = model.Attempts(settings, deadline, "Amazon Bedrock", sleep)
    while True:
        timeout = attempts.start()
        try:
            return clients.client("bedrock-runtime", timeout).converse(**request), attempts.count
        except ClientError as exc:
            if clients.error_code(exc) not in RETRYABLE:
                raise refusal(exc, settings, attempts.count) from None
            error = describe(exc)
        except BotoCoreError as exc:  # connection trouble, timeouts
            error = describe(exc)
        if attempts.count >= settings.max_attempts:
            throttled = "Throttling" in error
            raise Failure(
                "model_throttled" if throttled else "model_unavailable",
                f"Amazon Bedrock failed {attempts.count} times for {settings.model_id} (last: "
                f"{error}): upload the photo again later"
                + ("; many photos at once exceed the account's tokens-per-minute quota for "
                   "this model: lower the function's reserved concurrency or ask for a higher "
                   "quota (Service Quotas, Amazon Bedrock)." if throttled else "."),
                attempts.count)
        attempts.back_off(error, settings.model_id)


def refusal(exc: ClientError, settings: Settings, attempts: int) -> Failure:
    """A Converse error no retry fixes, as a record's error with what to do."""
    code, message = clients.error_code(exc), describe(exc)
    model = settings.model_id
    if code == "AccessDeniedException":
        return Failure(
            "model_access_denied",
            f"Amazon Bedrock refused to run {model} ({message}): either the function's role "
            f"may not call bedrock:InvokeModel on it (run 'visual-tourism up' again), or this "
            "account has no access to the model in this region ('visual-tourism check' says "
            "which, and how to request access). Then upload the photo again.", attempts)
    if code == "ResourceNotFoundException":
        return Failure(
            "model_not_found",
            f"Amazon Bedrock does not know {model} here ({message}): pick a profile the "
            "region offers ('visual-tourism profiles', 'visual-tourism check'), redeploy, then "
            "upload the photo again.", attempts)
    if code == "ValidationException":
        return Failure(
            "model_rejected_input",
            f"Amazon Bedrock refused the request for {model} ({message}): check the photo "
            "(PNG, JPEG, GIF or WebP, at most 3.75 MB and 8,000 pixels a side once sized) and "
            "the generation parameters, then upload again.", attempts)
    if code == "ModelErrorException":
        return Failure("model_error", f"{model} failed on this photo ({message}): upload it "
                       "again; if it keeps failing, try another photo or profile.", attempts)
    return Failure("model_request_failed", f"The Bedrock call failed ({message}): upload the "
                   "photo again.", attempts)


# -- the answer -------------------------------------------------------------------------------


def read_answer(response: dict[str, Any], structured: bool) -> dict[str, Any]:
    """The record's answer fields (as answer.parse_result makes them) from a Converse
    response: a forced tool call's input, or the text."""
    stop = response.get("stopReason")
    if stop in ("guardrail_intervened", "content_filtered"):
        raise Failure("content_filtered", f"Amazon Bedrock withheld the answer ({stop}): "
                      "try another photo.", 0)
    try:
        content = response["output"]["message"]["content"]
    except (KeyError, TypeError):
        raise Failure("bad_model_response", "Amazon Bedrock answered in an unexpected shape "
                      f"({scrub(repr(response)[:200], 200)}).") from None
    for block in content:
        use = block.get("toolUse") if isinstance(block, dict) else None
        if use and use.get("name") == TOOL_NAME and structured:
            return answer.structured_result(json.dumps(use.get("input")))
    text = "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return answer.structured_result(text) if structured else {
        "answer": answer.clean_answer(text)}


def usage(response: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Tokens in and out, the service's latency, and their list price with MODEL_PRICES."""
    used = response.get("usage") or {}
    out: dict[str, Any] = {
        "input_tokens": used.get("inputTokens"), "output_tokens": used.get("outputTokens"),
        "latency_ms": (response.get("metrics") or {}).get("latencyMs"),
    }
    if settings.model_prices:
        try:
            price = json.loads(settings.model_prices)
            out["cost_usd"] = round(
                (int(used.get("inputTokens", 0)) * float(price["input_per_million"])
                 + int(used.get("outputTokens", 0)) * float(price["output_per_million"]))
                / 1_000_000, 8)
            out["price_basis"] = str(price.get("basis", "list price"))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("MODEL_PRICES is unusable (%s): no cost in the record", exc)
    return out


def ask(settings: Settings, prompt: Prompt, bucket: str, key: str, head: bytes, size: int,
        fmt: str, etag: str | None, stored: tuple[int, int], deadline: float,
        result: dict[str, Any], summary: dict[str, Any]) -> tuple[int, float]:
    """Step 3 on a managed model: size the images, call Converse, put the answer and its
    usage into ``result``; return (attempts, seconds in the call); Failure or BadImage
    otherwise."""
    examples, photo = photo_parts(settings, prompt, bucket, key, head, size, fmt, etag, stored)
    summary["images_resized"] = sum(part.resized for part in (*examples, photo))
    if photo.resized:
        result["image"]["sent"] = {"width": photo.width, "height": photo.height}
    request = build_request(settings, prompt, examples, photo)
    started = time.monotonic()
    response, attempts = converse(request, settings, deadline)
    seconds = time.monotonic() - started
    result.update(read_answer(response, prompt.structured))
    result["usage"] = usage(response, settings)
    return attempts, seconds
