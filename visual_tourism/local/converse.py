"""Amazon Bedrock's Converse API, locally: ``POST /model/{modelId}/converse`` on the local model
server, where boto3's ``bedrock-runtime`` client sends it when ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``
points there (botocore's per-service variable: "AWS_ENDPOINT_URL_" + the service id "Bedrock
Runtime" in capitals, spaces as underscores). moto's bedrock-runtime has no Converse.

As strict as the service where the handler could trip on it:

- the request is checked against botocore's own ``bedrock-runtime`` service model (the
  ``ConverseRequest`` shape: required members, unknown members, enums, list and number
  bounds, blobs as base64), as the service's validation does;
- the documented limits (Bedrock API reference, ``Message`` and ``ImageBlock``): png, jpeg,
  gif or webp, the format named matching the bytes, in user messages only, each image at
  most 3.75 MB and 8,000 pixels a side, at most 20 images a request (fewer where the model
  takes fewer), and the conversation's shape: it starts with a user message, roles
  alternate, and it ends with the user's;
- the model: only the managed profiles' models, by the ID the region invokes them with (a
  model served through an inference profile refuses its bare ID on demand, as Bedrock does);
- IAM: with local mode's enforcement on, the caller's role must allow ``bedrock:InvokeModel``
  on the model's ARN (a foundation model, or an inference profile and its model): 403
  AccessDeniedException otherwise, checked first, as AWS does.

Answers come from the server's backend (the labelled stand-in or a small transformers model)
in Converse's response shape, ``usage`` included (words stand for tokens: no tokenizer here;
images by ``serving_limits``' "bedrock" estimate). A forced tool call is answered with a
``toolUse`` block whose input is the backend's JSON answer.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from PIL import Image, UnidentifiedImageError

from photo_handler import converse as limits
from photo_handler import serving_limits

from .backends import Turn, generation_params

logger = logging.getLogger(__name__)

PATH = re.compile(r"^/model/([^/]+)/converse$")
# Bedrock's own request body limit is not published as one figure; twenty 3.75 MB images in
# base64 and their text fit in this, so every larger body is refused unread.
PAYLOAD_LIMIT = 110_000_000
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "WEBP": "webp"}


class ConverseError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> ConverseError:
    return ConverseError(400, "ValidationException", message)


@functools.cache
def _service_model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("bedrock-runtime")


def models(region: str) -> dict[str, Any]:
    """modelId -> profile, for the managed profiles, as the region invokes them."""
    from ..profiles import PROFILES

    return {p.invoke_id(region): p for p in PROFILES.values()
            if p.managed and region in p.regions}


# -- the service model's checks -------------------------------------------------------------


def check_shape(value: Any, shape: Any, where: str) -> Any:
    """``value`` (decoded JSON) checked against the botocore ``shape``; blobs decoded."""
    kind = shape.type_name
    if getattr(shape, "is_document_type", False):
        return value  # a JSON document (a tool's schema, its input): any value
    if kind == "structure":
        if not isinstance(value, dict):
            raise _invalid(f"{where}: expected an object")
        unknown = sorted(set(value) - set(shape.members))
        if unknown:
            raise _invalid(f"{where}: unknown field(s) {', '.join(unknown)}")
        missing = [m for m in shape.required_members if m not in value]
        if missing:
            raise _invalid(f"{where}: missing required field(s) {', '.join(missing)}")
        if shape.metadata.get("union") and len(value) != 1:
            raise _invalid(f"{where}: exactly one member must be set (a union)")
        return {name: check_shape(item, shape.members[name], f"{where}.{name}")
                for name, item in value.items()}
    if kind == "list":
        if not isinstance(value, list):
            raise _invalid(f"{where}: expected a list")
        _bounds(len(value), shape, where, "items")
        return [check_shape(item, shape.member, f"{where}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _invalid(f"{where}: expected an object")
        return {k: check_shape(v, shape.value, f"{where}.{k}") for k, v in value.items()}
    if kind == "string":
        if not isinstance(value, str):
            raise _invalid(f"{where}: expected a string")
        if shape.enum and value not in shape.enum:
            raise _invalid(f"{where}: {value!r} is not one of {', '.join(shape.enum)}")
        _bounds(len(value), shape, where, "characters")
        return value
    if kind == "blob":
        if not isinstance(value, str):
            raise _invalid(f"{where}: expected base64 bytes")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(f"{where}: not valid base64") from None
        _bounds(len(data), shape, where, "bytes")
        return data
    if kind in ("integer", "long", "float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                kind in ("integer", "long") and not isinstance(value, int)):
            raise _invalid(f"{where}: expected a number")
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise _invalid(f"{where}: {value} is out of range [{low}, {high}]")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _invalid(f"{where}: expected true or false")
        return value
    return value  # document, timestamp: as given


def _bounds(n: int, shape: Any, where: str, unit: str) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and n < low:
        raise _invalid(f"{where}: at least {low} {unit} needed")
    if high is not None and n > high:
        raise _invalid(f"{where}: at most {high} {unit} allowed")


# -- the documented limits ------------------------------------------------------------------


def _image(block: Mapping[str, Any], where: str) -> Image.Image:
    source = block.get("source") or {}
    if "bytes" not in source:
        raise _invalid(f"{where}.source: only image bytes are supported here (no S3 location)")
    data = source["bytes"]
    if len(data) > limits.MAX_IMAGE_BYTES:
        raise _invalid(f"{where}: the image is {len(data):,} bytes; the limit is 3.75 MB")
    try:
        image = Image.open(io.BytesIO(data))
        found = _PIL_FORMATS.get(image.format or "")
        width, height = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise _invalid(f"{where}: the image bytes cannot be decoded") from None
    if found is None or found != block.get("format"):
        raise _invalid(f"{where}: the image is {image.format or 'not an image'}, but its format "
                       f"says {block.get('format')!r}; use png, jpeg, gif or webp")
    if max(width, height) > limits.MAX_SIDE:
        raise _invalid(f"{where}: the image is {width}x{height} pixels; at most "
                       f"{limits.MAX_SIDE:,} pixels a side")
    try:
        image.load()
    except (OSError, Image.DecompressionBombError):
        raise _invalid(f"{where}: the image bytes cannot be decoded") from None
    return image


def conversation(request: Mapping[str, Any], max_images: int) -> list[Turn]:
    """The request's turns (system first), its shape and images checked."""
    messages = request.get("messages") or []
    if not messages:
        raise _invalid("messages: at least one message is needed")
    turns = [Turn("system", tuple(block["text"] for block in request.get("system") or []
                                  if "text" in block))] if request.get("system") else []
    images = 0
    for number, message in enumerate(messages):
        expected = "user" if number % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise _invalid("A conversation must start with a user message and alternate "
                           f"user and assistant roles: messages[{number}] is "
                           f"{message['role']!r}")
        parts: list[Any] = []
        for index, block in enumerate(message["content"]):
            where = f"messages[{number}].content[{index}]"
            if "text" in block:
                parts.append(block["text"])
            elif "image" in block:
                if message["role"] != "user":  # the API reference's Message.content rule
                    raise _invalid(f"{where}: images are allowed only in user messages")
                images += 1
                parts.append(_image(block["image"], f"{where}.image"))
            else:
                raise _invalid(f"{where}: only text and image blocks are supported here")
        if not parts:
            raise _invalid(f"messages[{number}].content: must not be empty")
        turns.append(Turn(message["role"], tuple(parts)))
    if messages[-1]["role"] != "user":
        raise _invalid("The conversation must end with a user message")
    if images > max_images:
        raise _invalid(f"Too many images: {images} given, the model takes at most {max_images}")
    return turns


def _forced_tool(request: Mapping[str, Any]) -> dict[str, Any] | None:
    """The tool spec a ``toolChoice {"tool": {"name"}}`` forces, else None."""
    config = request.get("toolConfig")
    if not config:
        return None
    name = ((config.get("toolChoice") or {}).get("tool") or {}).get("name")
    specs = [t["toolSpec"] for t in config["tools"] if "toolSpec" in t]
    if name is None:
        return None
    for spec in specs:
        if spec["name"] == name:
            return spec
    raise _invalid(f"toolChoice names {name!r}, which is not among the tools")


# -- the route ------------------------------------------------------------------------------


def handle(model_id: str, body: bytes | None, region: str, account: str,
           generate: Callable[[list[Turn], Any], str],
           authorize: Callable[[str], str | None] | None) -> tuple[int, dict[str, Any],
                                                                   dict[str, str], int]:
    """One Converse call: (status, JSON body, headers, images). ``authorize``: resource ARN
    -> None, or why the caller may not bedrock:InvokeModel it."""
    try:
        response, images = _converse(unquote(model_id), body, region, account, generate,
                                     authorize)
        return 200, response, {}, images
    except ConverseError as error:
        return error.status, {"message": error.message}, {"x-amzn-ErrorType": error.code}, 0


def _converse(model_id: str, body: bytes | None, region: str, account: str,
              generate: Callable[[list[Turn], Any], str],
              authorize: Callable[[str], str | None] | None) -> tuple[dict[str, Any], int]:
    started = time.monotonic()
    known = models(region)
    profile = known.get(model_id)
    if profile is None:
        bare = next((p for p in known.values() if p.model_id == model_id), None)
        if bare is not None:
            raise _invalid(f"Invocation of model ID {model_id} with on-demand throughput isn't "
                           "supported. Retry your request with the ID or ARN of an inference "
                           "profile that contains this model.")
        raise _invalid("The provided model identifier is invalid.")
    if authorize is not None:
        for arn in _arns(profile, region, account):
            denied = authorize(arn)
            if denied is not None:
                raise ConverseError(403, "AccessDeniedException", denied)
    if body is None:
        raise _invalid("The request body is too large")
    try:
        raw = json.loads(body)
    except ValueError:
        raise ConverseError(400, "SerializationException", "The body is not JSON") from None
    if not isinstance(raw, dict):
        raise ConverseError(400, "SerializationException", "The body is not a JSON object")
    operation = _service_model().operation_model("Converse")
    request = check_shape({**raw, "modelId": model_id}, operation.input_shape,
                          "ConverseRequest")
    turns = conversation(request, min(profile.limits.max_images, limits.MAX_IMAGES))
    config = request.get("inferenceConfig") or {}
    max_tokens = int(config.get("maxTokens") or 512)
    limit = profile.limits.max_total_tokens - profile.limits.max_input_tokens
    if max_tokens > limit:
        raise _invalid(f"maxTokens {max_tokens} is over this model's limit of {limit}")
    tool = _forced_tool(request)
    params = generation_params(
        max_new_tokens=max_tokens, do_sample=bool(config.get("temperature")),
        temperature=config.get("temperature") or None, top_p=config.get("topP"),
        stop=list(config.get("stopSequences") or []),
        grammar={"type": "json", "schema": tool["inputSchema"].get("json")} if tool else None)
    text = generate(turns, params).strip()
    images = [image for turn in turns for image in turn.images]
    input_tokens = (sum(len(turn.text.split()) for turn in turns)
                    + sum(serving_limits.image_tokens(*image.size, "bedrock")
                          for image in images))
    output_tokens = len(text.split())
    content: list[dict[str, Any]]
    stop = "end_turn"
    if tool is not None:
        try:
            value = json.loads(text)
        except ValueError:
            raise ConverseError(400, "ModelErrorException",
                                "The model produced malformed tool input") from None
        content = [{"toolUse": {"toolUseId": f"tooluse_{uuid.uuid4().hex[:22]}",
                                "name": tool["name"], "input": value}}]
        stop = "tool_use"
    else:
        content = [{"text": text}]
        if output_tokens >= max_tokens:
            stop = "max_tokens"
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                  "totalTokens": input_tokens + output_tokens},
        "metrics": {"latencyMs": int((time.monotonic() - started) * 1000)},
    }, len(images)


def _arns(profile: Any, region: str, account: str) -> list[str]:
    """What Bedrock checks: the inference profile's ARN, then the model's in the region the
    request is routed to (here: the source region), or the foundation model's alone."""
    model = f"arn:aws:bedrock:{region}::foundation-model/{profile.model_id}"
    if not profile.inference_profile:
        return [model]
    return [f"arn:aws:bedrock:{region}:{account}:inference-profile/"
            f"{profile.invoke_id(region)}", model]

