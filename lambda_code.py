"""Visual Tourism Lambda: describe every photo uploaded under ``input/`` with a vision model.

S3 invokes ``lambda_handler`` for each upload. For every record of the event it

1. ignores keys outside INPUT_PREFIX, and photos already answered (same ETag, one HEAD;
   with presets also the same preset, version and language, known after step 2);
2. reads the first 256 KiB of the photo and checks its content with the standard library (a
   photo from the web page, under INPUT_PREFIX + "web/" with THUMBNAIL_PREFIX set, then gets
   its small copy without metadata, once per upload form: claim_web_photo);
3. asks the SageMaker endpoint (Hugging Face TGI) to describe it, retrying transient failures
   within the time this invocation has left;
4. writes one JSON result to ``OUTPUT_PREFIX + <key after INPUT_PREFIX> + ".json"``, only if
   the photo is still the upload read in step 2 (ETag, metadata, date: _write_result) and
   conditionally on the result seen in step 1; else the photo's newer upload answers it.

With PRESETS_TABLE set, step 3's prompt comes from the answer preset and language the upload
names in its S3 metadata (lambda_presets.py, with presets_schema.py, zipped beside).

Only a failed result write raises (so Lambda's asynchronous retry runs the photo again,
inference included). Every other failure becomes an error result, so a model that fails or
times out is not asked again by Lambda's retries on top of the handler's own.

Standard library and boto3 only. The parts only some paths need are modules zipped beside this
one and imported where first needed, so that a cold start compiles no more than it uses:
lambda_presets.py (PRESETS_TABLE set), lambda_images.py (an image sent inline or resized, with
Pillow: for the data-uri transport's payload limit, or for the container's image token budget,
CONTAINER_LIMITS; see "the image budget" below) and lambda_async.py (INFERENCE_MODE=async).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import struct
import sys
import time
import traceback
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

import serving_limits  # zipped beside this file: the model container's limits and rules

log = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = (
    "You are a travel agent. Describe in 1 sentence what is in the image. Add another "
    "sentence for an entertaining story related to this location. Add a last sentence saying "
    "what is the best place to eat near this location."
)
DEFAULT_EXAMPLE_ANSWER = (
    "The Trevi Fountain is a popular tourist attraction in Rome, Italy. The act of tossing a "
    "coin with one's right hand over the left shoulder is said to ensure a return to Rome, a "
    "promise of enduring romance with the city. The best place to eat near this location is "
    "the Pinsitaly Trevi restaurant."
)
DEFAULT_GENERATION: dict[str, Any] = {
    "do_sample": True, "top_p": 0.2, "temperature": 0.4, "top_k": 50, "max_new_tokens": 512,
}
TGI_STOP = ["User:", "<end_of_utterance>"]
STYLES = ("tgi", "messages")
TRANSPORTS = ("url", "data-uri")
HEAD_BYTES = 256 * 1024  # holds the header of nearly every photo, EXIF included
ACCEPTED = "JPEG, PNG, GIF, WebP or BMP"

# SageMaker/TGI failures worth another attempt. ModelError (424) covers container errors and
# the 60 s container timeout; TGI answers 429 when its queue is full.
RETRYABLE_CODES = {
    "ModelError", "ModelNotReadyException", "ThrottlingException", "InternalFailure",
    "ServiceUnavailable", "InternalDependencyException", "TooManyRequestsException",
}
# ...unless the container said the request itself is wrong: the same request fails again.
MODEL_INPUT_STATUSES = {400, 413, 422}
MIN_ATTEMPT_SECONDS = 1.0  # an attempt with less time left than this is not started
MAX_KEY_BYTES = 1024  # S3's limit on an object key, in UTF-8 bytes
ANSWER_MAX_CHARS = 4000  # longer answers are cut (a runaway generation, not a description)
ERROR_TEXT_MAX_CHARS = 600  # foreign text (container, S3) kept in an error message or log line


class ConfigError(ValueError):
    """A missing or invalid environment variable: the deployment needs fixing."""


class BadImage(Exception):
    """The upload is not a photo the model can take; ``message`` says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class PhotoChanged(Exception):
    """The photo was replaced while being handled: the newer upload's own event answers it."""


class Failure(Exception):
    """No answer, through no fault of the photo: a later delivery or upload may succeed."""

    def __init__(self, code: str, message: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.code, self.message, self.attempts = code, message, attempts


# -- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    bucket: str
    endpoint: str
    input_prefix: str = "input/"
    output_prefix: str = "output/"
    example_key: str = "example/trevi.jpeg"
    example_answer: str = DEFAULT_EXAMPLE_ANSWER
    instruction: str = DEFAULT_INSTRUCTION
    request_style: str = "tgi"
    generation: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_GENERATION))
    image_transport: str = "url"
    url_expires_seconds: int = 900
    max_payload_bytes: int = 1_900_000  # TGI's PAYLOAD_LIMIT defaults to 2,000,000
    model_profile: str | None = None
    model_id: str | None = None
    max_attempts: int = 4
    model_timeout_seconds: float = 60.0  # SageMaker's limit for one real-time call
    retry_base_seconds: float = 1.0
    result_margin_seconds: float = 5.0  # time kept back to write the result
    max_image_bytes: int = 20_000_000
    max_image_pixels: int = 50_000_000
    min_image_side: int = 32
    # "async": submit to SageMaker Asynchronous Inference and return (lambda_async.py).
    inference_mode: str = "realtime"
    async_prefix: str = "async/"
    async_ttl_seconds: int = 3600
    async_invocation_timeout_seconds: int = 900
    # From CONTAINER_LIMITS (JSON, serving_limits.ContainerLimits): the container's token
    # budget, image token formula and payload limit. None: deployed before the limits were
    # passed; images are then sized by bytes only, as before.
    container_limits: serving_limits.ContainerLimits | None = None
    # The answer presets' DynamoDB table (presets_schema.py); empty: no presets, the prompt
    # above as it is. A preset read is kept this many seconds by a warm container.
    presets_table: str = ""
    preset_cache_seconds: float = 60.0
    # Set when the web page is on (visual_tourism/web.py): photos under INPUT_PREFIX + "web/"
    # get a small copy without metadata here, for the gallery, and answer once per upload form.
    thumbnail_prefix: str = ""


ENV_NAMES = {  # environment variable -> Settings field
    "BUCKET_NAME": "bucket", "ENDPOINT_NAME": "endpoint", "INPUT_PREFIX": "input_prefix",
    "OUTPUT_PREFIX": "output_prefix", "EXAMPLE_KEY": "example_key",
    "EXAMPLE_ANSWER": "example_answer", "INSTRUCTION": "instruction",
    "REQUEST_STYLE": "request_style", "GENERATION_PARAMETERS": "generation",
    "IMAGE_TRANSPORT": "image_transport", "URL_EXPIRES_SECONDS": "url_expires_seconds",
    "MAX_PAYLOAD_BYTES": "max_payload_bytes", "MODEL_PROFILE": "model_profile",
    "MODEL_ID": "model_id", "MAX_ATTEMPTS": "max_attempts",
    "MODEL_TIMEOUT_SECONDS": "model_timeout_seconds", "RETRY_BASE_SECONDS": "retry_base_seconds",
    "RESULT_MARGIN_SECONDS": "result_margin_seconds", "MAX_IMAGE_BYTES": "max_image_bytes",
    "MAX_IMAGE_PIXELS": "max_image_pixels", "MIN_IMAGE_SIDE": "min_image_side",
    "INFERENCE_MODE": "inference_mode", "ASYNC_PREFIX": "async_prefix",
    "ASYNC_TTL_SECONDS": "async_ttl_seconds",
    "ASYNC_INVOCATION_TIMEOUT_SECONDS": "async_invocation_timeout_seconds",
    "PRESETS_TABLE": "presets_table",  # presets_schema.ENV_VAR
    "PRESET_CACHE_SECONDS": "preset_cache_seconds",
    "THUMBNAIL_PREFIX": "thumbnail_prefix",
}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration from the environment (read per invocation: tests vary it)."""
    env = os.environ if env is None else env
    kinds = {f.name: f.default for f in fields(Settings)}
    values: dict[str, Any] = {}
    for var, name in ENV_NAMES.items():
        raw = env.get(var, "")
        if raw == "":
            continue
        default = kinds[name]
        try:
            if name == "generation":
                value = json.loads(raw)
                if not isinstance(value, dict):
                    raise ValueError("not a JSON object")
            elif isinstance(default, int | float):
                value = type(default)(raw)
            else:
                value = raw
        except ValueError as exc:
            raise ConfigError(f"Environment variable {var}={raw!r} is invalid ({exc}).") from None
        values[name] = value
    missing = [var for var in ("BUCKET_NAME", "ENDPOINT_NAME") if ENV_NAMES[var] not in values]
    if missing:
        raise ConfigError(f"Set {' and '.join(missing)} in the Lambda's environment.")
    problems = []
    raw_limits = env.get(serving_limits.ENV_VAR, "")
    if raw_limits:
        try:
            limits = serving_limits.ContainerLimits.from_env(raw_limits)
        except serving_limits.GenerationError as exc:
            problems.append(str(exc))
        else:
            values["container_limits"] = limits
            # The body must stay under the container's own limit (TGI's PAYLOAD_LIMIT, or
            # SageMaker's 6 MB): 5% kept back, as the 1,900,000 default does for TGI's 2 MB.
            cap = limits.payload_limit_bytes * 95 // 100
            values["max_payload_bytes"] = min(values.get("max_payload_bytes", cap), cap)
    settings = Settings(**values)
    if settings.request_style not in STYLES:
        problems.append(f"REQUEST_STYLE must be one of {', '.join(STYLES)}")
    if settings.image_transport not in TRANSPORTS:
        problems.append(f"IMAGE_TRANSPORT must be one of {', '.join(TRANSPORTS)}")
    inp, out = settings.input_prefix, settings.output_prefix
    # Overlapping folders would make every result trigger the function again.
    if not inp.endswith("/") or not out.endswith("/") or inp.startswith(out) or out.startswith(inp):
        problems.append("INPUT_PREFIX and OUTPUT_PREFIX must be separate folders like 'input/'")
    if settings.inference_mode not in ("realtime", "async"):
        problems.append("INFERENCE_MODE must be realtime or async")
    if settings.max_attempts < 1:
        problems.append("MAX_ATTEMPTS must be at least 1")
    problems.extend(_generation_problems(settings))
    if problems:
        raise ConfigError("Invalid Lambda configuration: " + "; ".join(problems) + ".")
    return settings


def _generation_problems(settings: Settings) -> list[str]:
    """GENERATION_PARAMETERS the container would refuse (serving_limits holds the rules, the
    same ones load_config applies; CONTAINER_LIMITS says which container)."""
    limits = settings.container_limits
    if limits is None:  # deployed before the limits were passed: nothing to check against
        return []
    return [f"GENERATION_PARAMETERS: {problem}" for problem in serving_limits.generation_problems(
        settings.generation, limits, settings.request_style)]


# -- AWS clients --------------------------------------------------------------------------

# boto3 reads endpoints, region and credentials from the environment when a client is made.
# Keying the cache on them keeps one client per warm Lambda yet never hands local mode or a
# test a client that still points at an earlier endpoint.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
)
_sessions: dict[tuple[str | None, ...], Any] = {}
_clients: dict[tuple[Any, ...], Any] = {}


def _client(service: str, read_timeout: int | None = None) -> Any:
    env = tuple(os.environ.get(name) for name in _CLIENT_ENV)
    key = (service, read_timeout, env)
    if key not in _clients:
        if len(_clients) > 16:
            _clients.clear()
        if env not in _sessions:  # clients of one session share its loaded service models
            _sessions.clear()
            _sessions[env] = boto3.session.Session()
        if service == "s3":
            config = Config(signature_version="s3v4", retries={"mode": "standard"})
        else:
            # One attempt per call: the retry loop below decides, knowing the time left.
            # (botocore's "max_attempts" counts retries, so max_attempts=1 would mean two.)
            config = Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                read_timeout=read_timeout, connect_timeout=min(5, read_timeout or 5),
            )
        _clients[key] = _sessions[env].client(service, config=config)
    return _clients[key]


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _accepts(client: Any, operation: str, *params: str) -> bool:
    """Whether this client's SDK knows the parameters (the Lambda runtime's bundled botocore
    may be older than the one we test with: S3 conditional writes need botocore >= 1.35.69
    for IfMatch, >= 1.35.2 for IfNoneMatch; python3.12 runtimes shipped 1.34.x)."""
    members = client.meta.service_model.operation_model(operation).input_shape.members
    return all(name in members for name in params)


# Foreign text (a container's error, S3's message, an exception) can carry a presigned URL's
# signature and session token or the account id: neither belongs in a record or a log line.
_URL_QUERY = re.compile(r"(?i)(\bhttps?://[^\s?#\"'<>]*)\?[^\s\"'<>)\]]*")
_SECRET_PARAMS = re.compile(
    r"(?i)\b(X-Amz-[A-Za-z-]+|AWSAccessKeyId|Signature|Expires|x-amz-security-token)"
    r"=[^&\s\"'<>]*")
_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_ACCOUNT_ID = re.compile(r"(?<!\d)\d{12}(?!\d)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _scrub(text: str, limit: int = ERROR_TEXT_MAX_CHARS) -> str:
    """``text`` without URL query strings, signing parameters, access key or account ids and
    control characters, cut to ``limit`` characters."""
    text = _URL_QUERY.sub(r"\1?<query removed>", str(text))
    text = _SECRET_PARAMS.sub(r"\1=<removed>", text)
    text = _ACCESS_KEY.sub("<access key>", text)
    text = _ACCOUNT_ID.sub("<account>", text)
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# -- keys ---------------------------------------------------------------------------------


def result_key(
    key: str, input_prefix: str = "input/", output_prefix: str = "output/",
) -> str | None:
    """``input/a/b.jpg`` -> ``output/a/b.jpg.json``; None for keys this function ignores.

    The whole name is kept, extension included, so ``a.jpg`` and ``a.png`` never collide.
    A name that would pass S3's 1,024-byte key limit (the output prefix and ".json" can push
    a valid input key over it) is cut at a character boundary and ends with ``~`` and a hash
    of the whole input key: deterministic (a redelivery finds it) and still unique.
    """
    if not key.startswith(input_prefix) or key.endswith("/") or key == input_prefix:
        return None
    out = output_prefix + key[len(input_prefix):] + ".json"
    if len(out.encode()) <= MAX_KEY_BYTES:
        return out
    tail = f"~{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    room = MAX_KEY_BYTES - len(tail.encode())
    return out[:-len(".json")].encode()[:room].decode("utf-8", "ignore") + tail


# -- image checks (content, not name) -----------------------------------------------------


def _truncated() -> BadImage:
    return BadImage(
        "truncated_image",
        "The file is cut short (its image header is incomplete), as after an interrupted copy: "
        "upload the complete photo again.",
    )


def _corrupt(fmt: str, detail: str) -> BadImage:
    return BadImage(
        "corrupt_image",
        f"The {fmt} header is damaged ({detail}), so the image cannot be decoded: open the photo "
        "in a photo app, export it as JPEG and upload that.",
    )


def _unpack(fmt: str, data: bytes, offset: int) -> tuple[int, ...]:
    if len(data) < offset + struct.calcsize(fmt):
        raise _truncated()
    return struct.unpack_from(fmt, data, offset)


# Start-of-frame markers carry the size; C4 (DHT), C8 (reserved) and CC (DAC) do not.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # markers without a length field


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while True:
        if i >= len(data):
            raise _truncated()
        if data[i] != 0xFF:
            raise _corrupt("JPEG", f"no marker at byte {i}")
        while i < len(data) and data[i] == 0xFF:  # 0xFF fill bytes may precede a marker
            i += 1
        if i >= len(data):
            raise _truncated()
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise _corrupt("JPEG", "image data before the frame header")
        (length,) = _unpack(">H", data, i)
        if marker in _JPEG_SOF:
            height, width = _unpack(">HH", data, i + 3)
            return width, height
        if length < 2:
            raise _corrupt("JPEG", f"segment length {length}")
        i += length


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: key frame start code, then 14-bit sizes
        _unpack("<HH", data, 26)
        if data[23:26] != b"\x9d\x01\x2a":
            raise _corrupt("WebP", "no VP8 key frame")
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature byte, then 14-bit (size - 1) fields
        (signature, bits) = _unpack("<BI", data, 20)
        if signature != 0x2F:
            raise _corrupt("WebP", "bad VP8L signature")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit (canvas size - 1) fields
        _unpack("<3s3s", data, 24)
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if len(data) < 16:
        raise _truncated()
    raise _corrupt("WebP", f"unknown chunk {chunk!r}")


_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                b"mif1", b"msf1"}


def _not_accepted(data: bytes) -> BadImage:
    """Name what the file is when it can be told, so the message says what to do."""
    if data[4:8] == b"ftyp":  # ISO media: HEIC/AVIF photos, MP4/MOV videos
        size = struct.unpack_from(">I", data, 0)[0]
        brands = {data[i:i + 4] for i in range(8, min(len(data), max(size, 16)) - 3, 4)}
        if brands & {b"avif", b"avis"}:
            return BadImage(
                "unsupported_format",
                "AVIF images are not supported by the model server: convert the photo to JPEG "
                "and upload again.",
            )
        if brands & _HEIF_BRANDS:
            return BadImage(
                "unsupported_format",
                "HEIC photos are not supported by the model server: convert to JPEG (on iPhone: "
                "Settings > Camera > Formats > Most Compatible) and upload again.",
            )
        return BadImage(
            "not_an_image", f"This file is a video, not a photo: upload a {ACCEPTED} photo."
        )
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return BadImage(
            "unsupported_format",
            "TIFF images (and camera RAW files, which are built on TIFF) are not supported by the "
            "model server: export the photo as JPEG and upload again.",
        )
    if data[:2] == b"\xff\x0a" or data[4:12] == b"JXL \r\n\x87\n":
        return BadImage(
            "unsupported_format",
            "JPEG XL images are not supported by the model server: export the photo as JPEG "
            "and upload again.",
        )
    sample = data[:1024]
    if b"\x00" not in sample and sample.decode("utf-8", "replace").count("\ufffd") <= 1:
        return BadImage(
            "not_an_image",
            f"This file is text, not a photo, whatever its name says: upload a {ACCEPTED} photo.",
        )
    return BadImage(
        "not_an_image",
        f"This file is not an image the model server can read: upload a {ACCEPTED} photo.",
    )


def sniff_image(data: bytes) -> tuple[str, int, int]:
    """Return ``(format, width, height)`` from the first bytes of a file, or raise BadImage.

    Formats are told by their magic bytes and sizes read from their headers; nothing is
    decoded, so a few hundred bytes (a JPEG's EXIF aside) are enough.
    """
    if not data:
        raise BadImage("empty_file", "The file is empty (0 bytes): upload the photo again.")
    if data.startswith(b"\xff\xd8\xff"):
        fmt, (width, height) = "jpeg", _jpeg_size(data)
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) >= 16 and data[12:16] != b"IHDR":
            raise _corrupt("PNG", "first chunk is not IHDR")
        fmt, (width, height) = "png", _unpack(">II", data, 16)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        fmt, (width, height) = "gif", _unpack("<HH", data, 6)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        fmt, (width, height) = "webp", _webp_size(data)
    elif data[:2] == b"BM" and len(data) >= 18 and _unpack("<I", data, 14)[0] in _BMP_HEADER_SIZES:
        if _unpack("<I", data, 14)[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            width, height = _unpack("<HH", data, 18)
        else:  # a negative height means rows stored top-down
            width, height = _unpack("<ii", data, 18)
            height = abs(height)
        fmt = "bmp"
    else:
        raise _not_accepted(data)
    if width <= 0 or height <= 0:
        raise _corrupt(fmt.upper(), f"size {width}x{height}")
    return fmt, width, height


def check_limits(width: int, height: int, size: int, settings: Settings) -> None:
    """Raise BadImage when the photo is too large or too small for the model."""
    if size > settings.max_image_bytes:
        raise BadImage(
            "image_too_large",
            f"The file is {size / 1e6:.1f} MB, over the {settings.max_image_bytes / 1e6:g} MB "
            "limit: export the photo at a smaller size (e.g. 4000 pixels wide) and upload again.",
        )
    if width * height > settings.max_image_pixels:
        raise BadImage(
            "image_too_large",
            f"The image is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), over "
            f"the {settings.max_image_pixels / 1e6:g} megapixel limit: resize it (e.g. 4000 "
            "pixels wide) and upload again.",
        )
    if min(width, height) < settings.min_image_side:
        raise BadImage(
            "image_too_small",
            f"The image is only {width}x{height} pixels; at least {settings.min_image_side} "
            "pixels on each side are needed to see anything: upload the full-size photo.",
        )


# -- the request ---------------------------------------------------------------------------

# Generation parameter names of TGI's /generate -> OpenAI-style chat completion fields.
_CHAT_PARAMETERS = {
    "max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
    "seed": "seed", "stop": "stop", "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}


def build_request(
    style: str, instruction: str, example_answer: str, example_url: str, image_url: str,
    generation: Mapping[str, Any],
) -> dict[str, Any]:
    """The endpoint's request body: a one-shot prompt (example photo, its answer, the photo)."""
    if style == "tgi":
        prompt = (
            f"User:{instruction}![]({example_url})<end_of_utterance>\n"
            f"Assistant: {example_answer}<end_of_utterance>\n"
            f"User:{instruction}![]({image_url})<end_of_utterance>\nAssistant:"
        )
        # Without return_full_text=false Idefics echoes the whole prompt.
        parameters = {"return_full_text": False, "stop": list(TGI_STOP), **generation}
        return {"inputs": prompt, "parameters": parameters}

    def user(url: str) -> dict[str, Any]:
        return {"role": "user", "content": [
            {"type": "text", "text": instruction},
            {"type": "image_url", "image_url": {"url": url}},
        ]}

    body: dict[str, Any] = {"messages": [
        user(example_url), {"role": "assistant", "content": example_answer}, user(image_url),
    ]}
    body.update({_CHAT_PARAMETERS[k]: v for k, v in generation.items() if k in _CHAT_PARAMETERS})
    if generation.get("do_sample") is False:  # chat completions have no do_sample: greedy
        body["temperature"] = 0
    return body


@dataclass(frozen=True)
class Prompt:
    """What one request asks: the instruction, the in-context examples, the parameters.

    ``preset`` None: the function's own one-shot prompt (INSTRUCTION, EXAMPLE_KEY,
    EXAMPLE_ANSWER, GENERATION_PARAMETERS), sent exactly as before presets existed. Otherwise
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

    @property
    def name(self) -> str:
        import presets_schema

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
    with one, presets_schema's prompt (lambda_presets.preset_request)."""
    style = settings.request_style
    if prompt.preset is None:
        (_, answer), = prompt.examples
        return build_request(style, prompt.instruction, answer, example_urls[0], image_url,
                             prompt.generation)
    import lambda_presets  # a preset's prompt: presets_schema's (PRESETS_TABLE set)

    return lambda_presets.preset_request(settings, prompt, example_urls, image_url)


def _strip_stops(text: str, stops: list[str]) -> str:
    """TGI returns a plain-text stop sequence at the end of the answer: cut it off."""
    text = text.strip()
    while True:
        stop = next((s for s in stops if s and text.endswith(s)), None)
        if stop is None:
            return text
        text = text[: -len(stop)].rstrip()


def _model_text(style: str, payload: Any, request: Mapping[str, Any]) -> str:
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
            f"The endpoint answered in an unexpected shape ({_scrub(json.dumps(payload), 200)}): "
            f"check that REQUEST_STYLE={style} matches the model deployed on the endpoint.",
        )
    prompt = request.get("inputs")
    if isinstance(prompt, str) and text.startswith(prompt):  # echoed despite return_full_text
        text = text[len(prompt):]
    stops = request.get("parameters", {}).get("stop") or request.get("stop") or []
    return _strip_stops(text, [stops] if isinstance(stops, str) else list(stops))


def parse_answer(style: str, payload: Any, request: Mapping[str, Any]) -> str:
    """The model's text alone: no echoed prompt, no stop sequence, stripped."""
    return _clean_answer(_model_text(style, payload, request))


def _clean_answer(answer: str) -> str:
    # Stored and shown as it is: no control characters (newlines and tabs kept), and no more
    # than ANSWER_MAX_CHARS (three sentences are asked for; more is a runaway generation).
    answer = _CONTROL.sub("", answer)
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
    text = _model_text(style, payload, request)
    if not structured:
        return {"answer": _clean_answer(text)}
    import lambda_presets  # a structured answer comes only with a preset

    return lambda_presets.structured_result(text)


# -- images for the request ----------------------------------------------------------------


def _presign(bucket: str, key: str, settings: Settings) -> str:
    # Computed locally (no AWS call); the endpoint fetches the photo with it, so the bucket
    # stays private.
    return _client("s3").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key},
        ExpiresIn=settings.url_expires_seconds,
    )


def _read_pinned(s3: Any, bucket: str, key: str, etag: str | None, size: int) -> bytes:
    """The whole photo again, pinned to the ETag already read and bounded by the size checked.

    If the photo was replaced since the first read, PhotoChanged: the handler then ends
    without a record for these bytes (status "superseded"). Why skip rather than write an
    error record for the older ETag: the older bytes no longer exist at this key, and the newer
    upload has an ObjectCreated event of its own that writes the key's one record; an error
    record for the old ETag would only be overwritten by it, or (if the newer answer is already
    written) be refused by the conditional write. The ETag pin also means the answer can never
    describe a newer upload while carrying the older ETag.
    """
    args: dict[str, Any] = {"Bucket": bucket, "Key": key, "Range": f"bytes=0-{max(size, 1) - 1}"}
    if etag:
        args["IfMatch"] = f'"{etag}"'
    try:
        response = s3.get_object(**args)
    except ClientError as exc:
        if _error_code(exc) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
            raise PhotoChanged() from None
        raise
    data = response["Body"].read(size + 1)
    if len(data) != size:  # another object than the one whose size was checked
        raise PhotoChanged()
    return data


# -- the image budget ---------------------------------------------------------------------
#
# Every image is sized so that the request fits the container's limits by its own accounting
# (CONTAINER_LIMITS: serving_limits.ContainerLimits): text (estimated from above) + image
# tokens <= MAX_INPUT_TOKENS and + max_new_tokens <= MAX_TOTAL_TOKENS. Each in-context example
# (one, or up to three with a preset) gets at most limits.example_image_tokens, the photo
# everything left (serving_limits.image_allowances), and each is sent at the largest size
# within its allowance (serving_limits.fit_image).
#
# The url transport: an image whose stored size fits its allowance is sent as a presigned URL
# of the original, as before (nothing decoded here, nothing more uploaded). One that does not
# fit is resized here (lambda_images: the bounded decoder) and sent inline as a data: URI,
# within the container's payload limit, rather than as a resized copy under a private prefix:
# that copy would cost a PUT per photo plus a DELETE (or a lifecycle rule, and a stale copy
# that outlives the upload, ETag pinning lost), and the endpoint would download it again; the
# inline copy is ~0.1-1 MB, well under TGI's 2 MB and SageMaker's 6 MB, adds no S3 call and
# sends exactly the bytes whose ETag the record carries. Each sized example is kept in module
# state, keyed by its ETag and the limits, so a warm function resizes it once (one
# conditional GET per example and photo checks the example is unchanged).
# Idefics (TGI 1.4.5) counts one token per image whatever its size: nothing changes there.


@dataclass(frozen=True)
class SentImage:
    """One image as the request carries it."""

    url: str  # a presigned URL of the stored object, or a data: URI
    width: int  # the size the container sees (0: not read; only where size costs nothing)
    height: int
    resized: bool = False  # a smaller copy than the one stored


@dataclass(frozen=True)
class _Example:
    etag: str
    width: int  # as stored
    height: int
    sent: SentImage | None  # None: send a presigned URL of the original


_examples: dict[tuple[Any, ...], _Example] = {}  # warm-container cache of the sized examples
_examples_seen: dict[tuple[str, str], float] = {}  # preset example photo -> checked until


def clear_cache() -> None:
    """Forget every preset read (lambda_presets) and example photo checked by this container
    (tests)."""
    _examples_seen.clear()
    if "lambda_presets" in sys.modules:  # nothing was read unless it was imported
        sys.modules["lambda_presets"].clear_cache()


def _formula(settings: Settings) -> str:
    """How the container counts an image's tokens; "idefics" (1 per image) without limits."""
    limits = settings.container_limits
    return limits.image_formula if limits is not None else "idefics"


def _max_new_tokens(settings: Settings, prompt: Prompt | None = None) -> int:
    value = (prompt.generation if prompt else settings.generation).get("max_new_tokens")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    limits = settings.container_limits
    return limits.max_total_tokens - limits.max_input_tokens if limits else 0


def request_texts(settings: Settings, prompt: Prompt | None = None) -> tuple[list[str], int]:
    """(texts of the request, number of chat messages) by which the container counts text."""
    if prompt is not None and prompt.preset is not None:
        import presets_schema

        return presets_schema.request_texts(prompt.preset, prompt.language,
                                            settings.request_style)
    if settings.request_style == "tgi":  # every ![](url) is an image, counted apart
        bare = build_request("tgi", settings.instruction, settings.example_answer, "", "",
                             settings.generation)
        return [bare["inputs"]], 0
    texts = [settings.instruction, settings.example_answer, settings.instruction]
    return texts, len(texts)


def request_budget(settings: Settings, sizes: list[tuple[int, int]],
                   prompt: Prompt | None = None) -> serving_limits.Budget:
    """The request's tokens with images of these sizes, by the container's accounting."""
    limits = settings.container_limits
    assert limits is not None
    texts, messages = request_texts(settings, prompt)
    return serving_limits.request_budget(limits, texts, [(max(w, 1), max(h, 1)) for w, h in sizes],
                                         _max_new_tokens(settings, prompt), messages=messages)


def _over_budget(settings: Settings, detail: str, prompt: Prompt | None = None) -> Failure:
    limits = settings.container_limits
    assert limits is not None
    if prompt is not None and prompt.from_table:
        code, fix = "preset_invalid", (
            f"Shorten the instruction or the examples' answers of {prompt.label()}, use fewer "
            f"examples, or lower its max_new_tokens (visual-tourism presets set {prompt.name} "
            "...), then upload the photo again.")
    else:
        code, fix = "configuration_error", (
            "Shorten INSTRUCTION or EXAMPLE_ANSWER, or lower max_new_tokens, redeploy, then "
            "upload the photo again.")
    return Failure(
        code,
        f"The request cannot fit the model container's limits ({limits.engine} "
        f"{limits.container_version}: MAX_INPUT_TOKENS {limits.max_input_tokens}, "
        f"MAX_TOTAL_TOKENS {limits.max_total_tokens}, payload {limits.payload_limit_bytes:,} "
        f"bytes), so the model was not called: {detail}. {fix}",
    )


def image_allowances(settings: Settings, example_sizes: list[tuple[int, int]],
                     prompt: Prompt | None = None) -> tuple[list[int], int]:
    """(token allowance of each example, of the photo); Failure when the photo gets no room."""
    limits = settings.container_limits
    assert limits is not None
    text = request_budget(settings, [], prompt).text_tokens
    try:
        return serving_limits.image_allowances(
            limits, text, _max_new_tokens(settings, prompt), example_sizes)
    except serving_limits.GenerationError as exc:
        raise _over_budget(settings, str(exc), prompt) from None


def _payload_room(settings: Settings, prompt: Prompt) -> int:
    """Bytes the images' URLs may take in the body (under MAX_PAYLOAD_BYTES)."""
    bare = prompt_request(settings, prompt, [""] * len(prompt.examples), "")
    return settings.max_payload_bytes - len(json.dumps(bare).encode()) - 64


def _example_failure(settings: Settings, prompt: Prompt, index: int, detail: str) -> Failure:
    key = prompt.examples[index][0]
    if prompt.from_table:
        return Failure(
            "preset_invalid",
            f"The {prompt.label()} cannot be used, so the model was not called: "
            f"examples[{index}].photo: s3://{settings.bucket}/{key} cannot be used ({detail}): "
            f"upload that photo, or change the preset's examples (visual-tourism presets set "
            f"{prompt.name} ...), then upload the photo again.")
    return Failure(
        "configuration_error",
        f"The example image s3://{settings.bucket}/{key} cannot be used ({detail}): upload it "
        "again or fix EXAMPLE_KEY.",
    )


def _check_example_exists(settings: Settings, prompt: Prompt, index: int) -> None:
    """A preset's example photo that the endpoint will fetch by URL: one HEAD, remembered
    with the preset (PRESET_CACHE_SECONDS), so that a photo missing from example/ (a preset
    edited by hand) is an error record rather than a model call that cannot fetch it."""
    key = prompt.examples[index][0]
    seen = (settings.bucket, key)
    now = time.monotonic()
    if _examples_seen.get(seen, 0.0) > now:
        return
    try:
        _client("s3").head_object(Bucket=settings.bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied"):
            raise _example_failure(settings, prompt, index, "no such photo") from None
        log.warning("Cannot check the example photo %s: %s", key, _describe(exc))
        return  # the endpoint will tell
    except BotoCoreError as exc:
        log.warning("Cannot check the example photo %s: %s", key, _describe(exc))
        return
    if len(_examples_seen) >= 64:
        _examples_seen.clear()
    _examples_seen[seen] = now + max(settings.preset_cache_seconds, 0.0)


def _example_image(settings: Settings, prompt: Prompt, index: int,
                   budget: int) -> tuple[SentImage, tuple[int, int]]:
    """(in-context example ``index`` as sent, its stored size, by which its tokens count)."""
    limits = settings.container_limits
    key = prompt.examples[index][0]
    if settings.image_transport == "url" and _formula(settings) == "idefics":
        # One token whatever its size: the original by URL, as ever (no S3 call for the
        # function's own example).
        if prompt.from_table and key != settings.example_key:
            _check_example_exists(settings, prompt, index)
        return SentImage(_presign(settings.bucket, key, settings), 0, 0), (1, 1)
    cache_key = (settings.bucket, key, settings.image_transport,
                 limits.to_env() if limits else "", budget)
    cached = _examples.get(cache_key)
    args: dict[str, Any] = {"Bucket": settings.bucket, "Key": key,
                            "Range": f"bytes=0-{settings.max_image_bytes - 1}"}
    if cached is not None:
        args["IfNoneMatch"] = f'"{cached.etag}"'
    try:
        try:
            response = _client("s3").get_object(**args)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if cached is None or (_error_code(exc) not in ("304", "NotModified")
                                  and status != 304):
                raise
            example = cached  # unchanged since this container sized it
        else:
            data = response["Body"].read(settings.max_image_bytes + 1)
            total = str(response.get("ContentRange") or "").rpartition("/")[2]
            if total.isdigit() and int(total) > len(data):
                raise BadImage("image_too_large", f"over {settings.max_image_bytes} bytes")
            fmt, width, height = sniff_image(data)
            target: tuple[int, int] | None = (width, height)
            if limits is not None:
                # Its share: at most limits.example_image_tokens (serving_limits.image_allowances)
                allowance = min(limits.example_image_tokens,
                                serving_limits.image_tokens(width, height, limits.image_formula))
                target = serving_limits.fit_image(width, height, allowance,
                                                  limits.image_formula)
                if target is None:
                    raise BadImage("image_too_large", f"{width}x{height} pixels cannot be made "
                                   f"to cost at most {allowance} tokens")
            sent = None
            if settings.image_transport == "data-uri" or target != (width, height):
                import lambda_images  # zipped beside this file: data: URIs, Pillow

                sent = lambda_images.inline(data, fmt, (width, height), target, budget, settings)
            example = _Example(response["ETag"].strip('"'), width, height, sent)
            if len(_examples) >= 24:
                _examples.clear()
            _examples[cache_key] = example
    except (ClientError, BadImage) as exc:
        raise _example_failure(settings, prompt, index, _scrub(str(exc))) from None
    stored = (example.width, example.height)
    if example.sent is not None:
        return example.sent, stored
    return SentImage(_presign(settings.bucket, key, settings), *stored), stored


def _image_urls(
    settings: Settings, prompt: Prompt, bucket: str, key: str, head: bytes, size: int,
    fmt: str, etag: str | None = None, stored: tuple[int, int] | None = None,
) -> tuple[list[SentImage], SentImage]:
    """(the examples, the photo) as the request carries them, per IMAGE_TRANSPORT, each sized
    to its share of the container's token budget (see "the image budget" above)."""
    stored = stored or sniff_image(head)[1:]
    room = _payload_room(settings, prompt)
    # Each example gets at most a (2n+1)th of the payload room: with one example a third, as
    # ever; the photo always keeps more than half.
    share = room // (2 * len(prompt.examples) + 1)
    examples, sizes = [], []
    for index in range(len(prompt.examples)):
        sent, example_size = _example_image(settings, prompt, index, share)
        examples.append(sent)
        sizes.append(example_size)
    target = stored
    limits = settings.container_limits
    if limits is not None:
        allowance = image_allowances(settings, sizes, prompt)[1]
        fitted = serving_limits.fit_image(*stored, allowance, limits.image_formula)
        if fitted is None:
            raise BadImage(
                "image_too_large",
                f"The photo's shape ({stored[0]}x{stored[1]} pixels) cannot be made small enough "
                f"for the model's image budget ({allowance} tokens) and still show anything: "
                "crop it closer to a square and upload again.",
            )
        target = fitted
    if settings.image_transport == "url" and target == stored:
        return examples, SentImage(_presign(bucket, key, settings), *stored)
    photo = head if size <= len(head) else _read_pinned(_client("s3"), bucket, key, etag, size)
    used = sum(len(example.url) for example in examples)
    import lambda_images  # zipped beside this file: data: URIs, Pillow

    return examples, lambda_images.inline(photo, fmt, stored, target, room - used, settings)


def check_request(settings: Settings, prompt: Prompt, body: bytes,
                  images: list[SentImage]) -> None:
    """Failure, before the model is called, when the request would not fit the container."""
    limits = settings.container_limits
    if limits is None:
        return
    if len(body) > limits.payload_limit_bytes:
        raise _over_budget(settings, f"the request body is {len(body):,} bytes", prompt)
    budget = request_budget(settings, [(image.width, image.height) for image in images], prompt)
    if not budget.fits:
        raise _over_budget(settings, budget.explain(), prompt)


# -- calling the model ---------------------------------------------------------------------


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, BotoConnectionError | HTTPClientError):  # incl. timeouts
        return True
    if isinstance(exc, ClientError):
        code, original = _error_code(exc), exc.response.get("OriginalStatusCode")
        if code == "ModelError" and original in MODEL_INPUT_STATUSES:
            return False
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in RETRYABLE_CODES or status == 429 or status >= 500
    return False


# TGI v1.4.5 serves Idefics v1 by fetching and decoding images in the Python shard
# (server/text_generation_server/models/custom_modeling/idefics_image_processing.py,
# fetch_images: requests.get(...).raise_for_status(), then PIL; "Could not load image from url"
# when PIL cannot read it). A failure there is a generation error: HTTP 424, body
# {"error": "Request failed during generation: Server error: <the exception>", ...}, which
# SageMaker wraps in a ModelError with OriginalStatusCode 424. A 424 is also what a CUDA
# out-of-memory or a crashed shard gives (worth retrying), so the body tells them apart.
# (The local model server's wording, "cannot decode image" / "cannot fetch image", too.)
_IMAGE_DECODE_FAILURE = re.compile(
    r"(?i)could not load image|cannot (identify|decode) image|unrecognized image|image file "
    r"is truncated|invalid (base64|image data uri)|\b4\d\d client error\b[^\n]*\bfor url\b")
_IMAGE_FETCH_FAILURE = re.compile(
    r"(?i)cannot fetch image|\b5\d\d server error\b[^\n]*\bfor url\b|HTTPS?ConnectionPool|"
    r"max retries exceeded|read timed out|connect(ion)? ?timeout|"
    r"connection (aborted|refused|reset)")


def _image_failure(exc: Exception, settings: Settings) -> str | None:
    """"decode" (the same bytes fail again), "fetch" (the download failed: may pass once
    more) or None: a container answer that says it could not fetch or decode an image.

    Only an answer with the container's own image-failure status counts
    (ContainerLimits.image_failure_status: 424 for Idefics on TGI 1.4.5); without
    CONTAINER_LIMITS, 424 (the original design's container).
    """
    if not isinstance(exc, ClientError) or _error_code(exc) != "ModelError":
        return None
    limits = settings.container_limits
    status = limits.image_failure_status if limits is not None else 424
    if exc.response.get("OriginalStatusCode") != status:
        return None
    text = f"{exc.response.get('OriginalMessage', '')} {exc.response['Error'].get('Message')}"
    if _IMAGE_DECODE_FAILURE.search(text):
        return "decode"
    if _IMAGE_FETCH_FAILURE.search(text):
        return "fetch"
    return None


def _describe(exc: Exception) -> str:
    """The error in one line, scrubbed (see _scrub): safe for a record and a log line."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return _scrub(f"{error.get('Code')}: {error.get('Message')}")
    return _scrub(f"{type(exc).__name__}: {exc}")


def invoke_model(
    body: bytes, settings: Settings, deadline: float, sleep: Any = time.sleep,
) -> tuple[Any, int]:
    """Call the endpoint until it answers; return (decoded JSON, attempts) or raise Failure.

    Transient failures are retried with exponential backoff and jitter, up to MAX_ATTEMPTS
    and never past ``deadline`` (monotonic seconds) less the margin for writing the result.
    """
    stop_at = deadline - settings.result_margin_seconds
    attempts, last_error, image_retries = 0, "none", 0

    def out_of_time() -> Failure:
        return Failure(
            "model_timeout",
            f"The model did not answer in the time this invocation had left (attempts: "
            f"{attempts}, last error: {last_error}): upload the photo again; if it keeps "
            "happening, raise the Lambda timeout.", attempts,
        )

    while True:
        left = stop_at - time.monotonic()
        if left < MIN_ATTEMPT_SECONDS:
            raise out_of_time()
        attempts += 1
        timeout = max(1, int(min(settings.model_timeout_seconds + 5, left)))
        try:
            response = _client("sagemaker-runtime", timeout).invoke_endpoint(
                EndpointName=settings.endpoint, ContentType="application/json",
                Accept="application/json", Body=body,
            )
            raw = response["Body"].read()
        except (ClientError, BotoConnectionError, HTTPClientError) as exc:
            # An image the container could not decode fails the same way every time: no retry.
            # One it could not download (a timeout, S3's 5xx) gets one more attempt, not four:
            # the presigned URL stays valid, and a second failure says S3 or the endpoint's
            # network is the problem, which more attempts within this invocation do not fix.
            image_failure = _image_failure(exc, settings)
            if image_failure == "decode" or (image_failure == "fetch" and image_retries >= 1):
                raise Failure(
                    "model_rejected_input",
                    f"The model container could not {image_failure} an image of the request "
                    f"({_describe(exc)}): check that the photo opens in a photo app (export it "
                    "as JPEG if not) and upload it again.", attempts,
                ) from None
            image_retries += image_failure == "fetch"
            if not _retryable(exc):
                raise _permanent_failure(exc, settings, attempts) from None
            if attempts >= settings.max_attempts:
                raise Failure(
                    "model_unavailable",
                    f"Endpoint {settings.endpoint} failed {attempts} times (last: "
                    f"{_describe(exc)}): upload the photo again later; if it persists, check "
                    "the endpoint's logs in CloudWatch.", attempts,
                ) from None
            last_error = _describe(exc)
            log.warning("Attempt %d of %s failed, retrying: %s", attempts, settings.endpoint,
                        last_error)
            delay = settings.retry_base_seconds * 2 ** (attempts - 1) * random.uniform(0.5, 1.0)
            if time.monotonic() + delay + MIN_ATTEMPT_SECONDS > stop_at:
                raise out_of_time() from None  # no time to wait and try once more
            sleep(delay)
            continue
        try:
            return json.loads(raw), attempts
        except ValueError:
            raise Failure(
                "bad_model_response",
                f"The endpoint's answer is not JSON ({_scrub(repr(raw[:200]), 200)}): check the "
                "model container.",
                attempts,
            ) from None


def _permanent_failure(exc: Exception, settings: Settings, attempts: int) -> Failure:
    message = _describe(exc)
    if isinstance(exc, ClientError) and _error_code(exc) == "ModelError":
        return Failure(
            "model_rejected_input",
            f"The model refused the request ({message}): check the photo and the endpoint's "
            "limits (e.g. MAX_INPUT_TOKENS), then upload again.", attempts,
        )
    if "not found" in message.lower():
        return Failure(
            "endpoint_not_found",
            f"Endpoint {settings.endpoint} was not found ({message}): deploy it, or set "
            "ENDPOINT_NAME to the endpoint's name, then upload the photo again.", attempts,
        )
    return Failure(
        "model_request_failed",
        f"The endpoint call was refused ({message}): check ENDPOINT_NAME and the Lambda role's "
        "sagemaker:InvokeEndpoint permission, then upload the photo again.", attempts,
    )


# -- one record ----------------------------------------------------------------------------


RESULT_FIELDS = ("status", "answer", "fields", "fields_error", "error", "input", "image", "model",
                 "preset", "timing", "request_id", "written_at")


class ResultWriteError(RuntimeError):
    """The result could not be stored: the one failure that makes the invocation fail."""


_UNKNOWN = "?"  # the earlier result could not be checked: write unconditionally


def _earlier_result(s3: Any, bucket: str, key: str) -> tuple[str | None, str | None]:
    """(input ETag a final result for ``key`` was made from, the result's own ETag).

    The result's ETag makes the final write conditional, so that a slow invocation for an
    older upload cannot overwrite the answer to a newer one (None: no result yet).
    """
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None, None
        log.warning("Cannot check for an earlier result %s: %s", key, _describe(exc))
        return None, _UNKNOWN
    except BotoCoreError as exc:  # network trouble: answer again rather than lose the photo
        log.warning("Cannot check for an earlier result %s: %s", key, _describe(exc))
        return None, _UNKNOWN
    meta = head.get("Metadata", {})
    answered = meta.get("input-etag") if meta.get("final") != "false" else None
    if answered is not None:
        answered = answer_key(answered, meta.get("choice", ""))
    return answered, head["ETag"]


def answer_key(etag: str | None, choice: str = "") -> str:
    """What a result answers: the upload (its ETag) and, with presets, the preset (name and
    version) and language that answered it, so that the same photo asked again with another
    preset, language or an edited preset is answered again, and a redelivery is not."""
    return f"{etag or ''}|{choice}" if choice else (etag or "")


def _choice(result: Mapping[str, Any]) -> str:
    """The preset part of answer_key, from the record's ``preset`` ('' without presets)."""
    info = result.get("preset")
    if not info:
        return ""
    return f"{info.get('name')}@{info.get('version')}:{info.get('language')}"


def _write_result(
    s3: Any, bucket: str, key: str, out_key: str, etag: str | None, seen: str | None,
    body: bytes, metadata: dict[str, str], upload: Mapping[str, Any] | None = None,
) -> bool:
    """Write the result if it answers the photo's current upload (``upload``, from
    _upload_of; None: only its ETag is known) and no newer upload has been answered since the
    result was read (``seen``); False: superseded, nothing written."""
    # A HEAD of the photo first: the result's ETag (IfMatch) only tells that nobody wrote
    # since we read it. A newer upload may still be unanswered, or have ended without a write
    # (a duplicate of the record there), and the same bytes re-asked with another preset or
    # language keep the ETag: only the photo's own ETag, metadata and date tell.
    if upload is not None and not _is_current(s3, bucket, key, upload, strict=False):
        return False
    args = {"Bucket": bucket, "Key": out_key, "ContentType": "application/json",
            "Metadata": metadata, "Body": body}
    condition = {} if seen == _UNKNOWN else (
        {"IfMatch": seen} if seen else {"IfNoneMatch": "*"})
    if not condition:
        s3.put_object(**args)
        return True
    if _accepts(s3, "PutObject", *condition):
        try:
            s3.put_object(**args, **condition)
            return True
        except ClientError as exc:
            if _error_code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict",
                                        "412"):
                raise
        other = None
    else:
        # An SDK without conditional writes (botocore < 1.35.69, as bundled with older Lambda
        # runtimes): the same test by a HEAD of the result right before an unconditional PUT.
        # This leaves a small race that the conditional write does not: another invocation
        # for this key writing between our HEAD and our PUT (milliseconds apart) is
        # overwritten. It takes two invocations for the same key finishing inference within
        # that window; each still writes a complete record, and the later upload's own
        # invocation usually comes last. Bundle botocore >= 1.35.69 to close it.
        other = _result_head(s3, bucket, out_key)
        now = _UNKNOWN if other is None else other.get("ETag")
        if now == _UNKNOWN or _same_etag(now, seen):
            s3.put_object(**args)
            return True
    # Someone wrote this result since we looked: ours only counts if the photo is still ours,
    # and if that writer did not answer this same upload with a newer version of our preset
    # (two uploads within the same second with the same bytes and metadata look alike).
    if not _is_current(s3, bucket, key, upload or {"etag": etag}, strict=True):
        return False
    if metadata.get("choice") and _newer_preset_there(
            metadata, other if other is not None else _result_head(s3, bucket, out_key)):
        return False
    s3.put_object(**args)
    return True


def _result_head(s3: Any, bucket: str, out_key: str) -> dict[str, Any] | None:
    """HeadObject of a result: {} when there is none, None when it cannot be told."""
    try:
        return s3.head_object(Bucket=bucket, Key=out_key)
    except ClientError as exc:
        if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return {}
        log.warning("Cannot check the result %s: %s", out_key, _describe(exc))
    except BotoCoreError as exc:
        log.warning("Cannot check the result %s: %s", out_key, _describe(exc))
    return None


def _newer_preset_there(ours: Mapping[str, str], head: Mapping[str, Any] | None) -> bool:
    """Whether the result there answers the same upload and preset/language as ``ours`` (the
    metadata we would write) with a higher preset version (presets only go up on edits)."""
    theirs = (head or {}).get("Metadata") or {}
    if not _same_etag(theirs.get("input-etag"), ours.get("input-etag")):
        return False
    mine, other = _split_choice(ours.get("choice", "")), _split_choice(theirs.get("choice", ""))
    if mine is None or other is None or mine[0::2] != other[0::2]:
        return False
    return other[1] > mine[1]


def _split_choice(choice: str) -> tuple[str, int, str] | None:
    """_choice's ``name@version:language`` (names have no '@' or ':') as its three parts."""
    name, at, rest = choice.partition("@")
    version, colon, language = rest.partition(":")
    if not (at and colon):
        return None
    return name, int(version) if version.isdigit() else -1, language


def _same_etag(a: str | None, b: str | None) -> bool:
    return (a or "").strip('"') == (b or "").strip('"')


def _upload_of(response: Mapping[str, Any]) -> dict[str, Any]:
    """What tells one upload of a key from another, from a GetObject or HeadObject response:
    its ETag, its user metadata (the preset and language asked for), when it was written
    (LastModified: to the second) and, in a versioned bucket, its version. JSON-safe, so that
    a queued request's marker can carry it."""
    modified = response.get("LastModified")
    return {
        "etag": str(response.get("ETag") or "").strip('"'),
        "modified": modified.isoformat() if hasattr(modified, "isoformat") else str(
            modified or ""),
        "version": str(response.get("VersionId") or ""),
        "metadata": dict(sorted((response.get("Metadata") or {}).items())),
    }


def _is_current(s3: Any, bucket: str, key: str, upload: Mapping[str, Any],
                strict: bool) -> bool:
    """Whether the photo is still ``upload`` (only its ETag is compared when that is all
    ``upload`` holds). A deleted photo is not. When S3 cannot tell (an error other than 404):
    ``strict`` raises (the caller's retry asks again), else True (the conditional write
    still guards the result)."""
    try:
        now = _upload_of(s3.head_object(Bucket=bucket, Key=key))
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and _error_code(exc) in ("404", "NoSuchKey",
                                                                 "NotFound"):
            return False
        if strict:
            raise
        log.warning("Cannot check the photo %s before writing its result: %s", key,
                    _describe(exc))
        return True
    return all(now[name] == value for name, value in upload.items())


def _read_head(s3: Any, bucket: str, key: str,
               ) -> tuple[bytes, str | None, int, dict[str, str], dict[str, Any] | None]:
    """First HEAD_BYTES of the object with its ETag, total size, user metadata
    (x-amz-meta-*: the preset and language asked for) and which upload it is (_upload_of;
    None for an empty object), in one ranged GET."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEAD_BYTES - 1}")
    except ClientError as exc:
        if _error_code(exc) == "InvalidRange":  # S3's answer for a range of an empty object
            return b"", None, 0, {}, None
        raise
    content_range = response.get("ContentRange") or ""  # "bytes 0-262143/4500000"
    size = int(content_range.rpartition("/")[2]) if "/" in content_range else None
    data = response["Body"].read()
    return (data, response["ETag"].strip('"'), size if size is not None else len(data),
            dict(response.get("Metadata") or {}), _upload_of(response))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- photos from the web page: one photo per upload form, and the gallery's small copy --------
WEB_FOLDER = "web/"  # under INPUT_PREFIX: the web page's uploads (visual_tourism/web.py)
THUMBNAIL_SIDE = 480  # the gallery's copies: at most this many pixels on the long side
THUMBNAIL_CACHE = "private, max-age=86400, immutable"  # one copy per key, never rewritten


def _claimed_by(s3: Any, bucket: str, key: str) -> str | None:
    """The input ETag the small copy at ``key`` was made from (None: no copy yet)."""
    try:
        return s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("input-etag", "")
    except ClientError as exc:
        if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def claim_web_photo(s3: Any, settings: Settings, bucket: str, key: str, etag: str | None,
                    size: int) -> str | None:
    """For a photo from the web page: make its small copy (the claim of its upload form), or
    refuse a later photo posted with the same form. Returns the copy's key (None: not a web
    photo, or the page is off).

    An upload form signs one key, and S3 lets a form be posted again and again for its
    lifetime. The copy is written only if none exists (a conditional write), with the ETag of
    the photo it was made from: the first photo through a form claims it; a later one finds
    another ETag there and raises BadImage("upload_form_used") before any model call, so it
    ends with a final record saying so (and an invocation still answering the first photo,
    replaced meanwhile, ends as superseded). A redelivery of the first photo's event finds its
    own ETag and goes on. The copy is a JPEG of at most THUMBNAIL_SIDE pixels, upright, made
    from the pixels alone: no EXIF (GPS position, camera serial, owner), XMP, ICC or comment.
    """
    web = settings.input_prefix + WEB_FOLDER
    if not settings.thumbnail_prefix or not key.startswith(web):
        return None
    copy_key = settings.thumbnail_prefix + key[len(settings.input_prefix):] + ".jpg"
    claimed = _claimed_by(s3, bucket, copy_key)
    if claimed is None:
        import lambda_images  # zipped beside this file, with Pillow when the page is on

        data = _read_pinned(s3, bucket, key, etag, size)
        small = lambda_images.thumbnail(data, THUMBNAIL_SIDE, settings.max_image_pixels)
        args = {"Bucket": bucket, "Key": copy_key, "Body": small, "ContentType": "image/jpeg",
                "CacheControl": THUMBNAIL_CACHE, "Metadata": {"input-etag": etag or ""}}
        if not _accepts(s3, "PutObject", "IfNoneMatch"):
            # An SDK without conditional writes: checked by the HEAD above, a small race left.
            s3.put_object(**args)
            return copy_key
        try:
            s3.put_object(**args, IfNoneMatch="*")
            return copy_key
        except ClientError as exc:
            if _error_code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict",
                                        "412"):
                raise
        claimed = _claimed_by(s3, bucket, copy_key)  # another upload's, written meanwhile
    if claimed is not None and not _same_etag(claimed, etag):
        raise BadImage(
            "upload_form_used",
            "This upload form was already used for another photo, and each form takes one "
            "photo: this one was not sent to the model. Take or pick the photo again on the "
            "page (it asks for a new form for every photo).",
        )
    return copy_key


def process_record(
    record: Mapping[str, Any], settings: Settings, deadline: float, request_id: str | None,
    broken: ConfigError | None = None,
) -> dict[str, Any]:
    """Handle one S3 record; return a summary (also logged as one JSON line).

    ``broken``: the function's configuration is invalid; the photo gets an error record
    saying so (not final: once the configuration is fixed, an upload is answered).
    """
    started = time.monotonic()
    bucket = record["s3"]["bucket"]["name"]
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    out_key = result_key(key, settings.input_prefix, settings.output_prefix)
    summary: dict[str, Any] = {"bucket": bucket, "key": key, "result_key": out_key}
    if out_key is None or not record.get("eventName", "ObjectCreated:").startswith("ObjectCreated"):
        return _log({**summary, "status": "ignored"})
    if settings.bucket and bucket != settings.bucket:
        # Only the stack's bucket is ours: never read or write in another one (a notification
        # wired by mistake, or a forged event), whatever the role would allow.
        log.warning("Ignoring a record for bucket %s: this function serves %s only",
                    _scrub(bucket, 100), settings.bucket)
        return _log({**summary, "status": "ignored", "reason": "foreign_bucket"})

    s3 = _client("s3")
    event_etag = str(record["s3"]["object"].get("eTag") or "").strip('"') or None
    done, seen = _earlier_result(s3, bucket, out_key)
    # With presets the answer also depends on the object's metadata (read below), so only a
    # plain stack can tell a redelivery from the event alone.
    if done is not None and done == event_etag and not settings.presets_table:
        return _log({**summary, "status": "duplicate", "etag": done})

    result: dict[str, Any] = {
        "status": "error",
        "input": {"bucket": bucket, "key": key, "etag": event_etag, "size": None},
        "model": {
            "endpoint": settings.endpoint, "profile": settings.model_profile,
            "model_id": settings.model_id, "request_style": settings.request_style,
            "image_transport": settings.image_transport,
        },
    }
    attempts, model_seconds, final = 0, 0.0, False
    upload: dict[str, Any] | None = None  # which upload of the key this answers (_upload_of)
    try:
        if broken is not None:
            raise Failure("configuration_error", f"{broken} Then upload the photo again.")
        head, etag, size, metadata, upload = _read_head(s3, bucket, key)
        etag = etag or event_etag
        result["input"].update(etag=etag, size=size)
        if done is not None and done == etag and not settings.presets_table:
            return _log({**summary, "status": "duplicate", "etag": done})  # an older event's
        try:
            fmt, width, height = sniff_image(head)
        except BadImage as exc:
            if exc.code != "truncated_image" or not len(head) < size <= settings.max_image_bytes:
                raise
            # The header lies beyond the first 256 KiB (a huge EXIF block): read it all once,
            # the same object (ETag) and no more than its size, already checked.
            head = _read_pinned(s3, bucket, key, etag, size)
            fmt, width, height = sniff_image(head)
        result["image"] = {"format": fmt, "width": width, "height": height}
        check_limits(width, height, size, settings)
        claim_web_photo(s3, settings, bucket, key, etag, size)  # the web page's photos only

        prompt = environment_prompt(settings)
        if settings.presets_table:  # the preset and language the uploader chose
            import lambda_presets  # zipped beside this file: read only with PRESETS_TABLE

            prompt = lambda_presets.choose_prompt(settings, metadata, result)
            if done is not None and done == answer_key(etag, _choice(result)):
                return _log({**summary, "status": "duplicate", "etag": etag})
        examples, photo = _image_urls(settings, prompt, bucket, key, head, size, fmt, etag,
                                      (width, height))
        images = [*examples, photo]
        summary["images_resized"] = sum(image.resized for image in images)
        if photo.resized:  # what the model saw
            result["image"]["sent"] = {"width": photo.width, "height": photo.height}
        request = prompt_request(settings, prompt, [e.url for e in examples], photo.url)
        body = json.dumps(request).encode()
        check_request(settings, prompt, body, images)
        if settings.inference_mode == "async":  # the answer comes back as an S3 object
            import lambda_async

            return _log(lambda_async.submit(s3, settings, bucket, key, out_key, request, result,
                                            summary, structured=prompt.structured,
                                            upload=upload, seen=seen))
        model_started = time.monotonic()
        try:
            payload, attempts = invoke_model(body, settings, deadline)
            result.update(parse_result(settings.request_style, payload, request,
                                       prompt.structured))
        finally:
            model_seconds = time.monotonic() - model_started
        # With the url transport the endpoint fetched the photo itself, unpinned: if it was
        # replaced meanwhile the answer may describe the newer upload. _write_result's HEAD of
        # the photo, right after this, tells (and the newer upload's own event answers it).
        result["status"], final = "ok", True
    except PhotoChanged:
        return _log({**summary, "status": "superseded", "etag": result["input"]["etag"],
                     "reason": "photo replaced while being handled"})
    except BadImage as exc:
        result["error"], final = {"code": exc.code, "message": exc.message}, True
    except Failure as exc:
        attempts = max(attempts, exc.attempts)
        result["error"] = {"code": exc.code, "message": exc.message}
    except ClientError as exc:  # reading the photo from S3
        if _error_code(exc) in ("NoSuchKey", "404"):  # deleted before we got to it
            return _log({**summary, "status": "ignored", "reason": "deleted"})
        result["error"] = {
            "code": "input_unreadable",
            "message": f"The photo could not be read ({_describe(exc)}): upload it again.",
        }
    except Exception as exc:  # a bug here must still leave a record, not lose the photo
        log.error("Unexpected failure for %s: %s", key,
                  _scrub("".join(traceback.format_exception(exc)), 4000))
        result["error"] = {
            "code": "internal_error",
            "message": f"The handler failed unexpectedly ({_describe(exc)}): upload the photo "
                       "again; if it keeps happening, report it with this record.",
        }

    result["timing"] = {
        "model_seconds": round(model_seconds, 3),
        "total_seconds": round(time.monotonic() - started, 3), "attempts": attempts,
    }
    result["request_id"] = request_id
    result["written_at"] = _now()
    result = {name: result[name] for name in RESULT_FIELDS if name in result}  # reading order
    if "error" in result:  # every message may quote foreign text: scrubbed and capped once more
        result["error"]["message"] = _scrub(result["error"]["message"], 2 * ERROR_TEXT_MAX_CHARS)
    # Results are keyed by the input's ETag: a redelivered event finds it with one HEAD.
    # Transient failures are not final, so the next delivery or re-upload tries again.
    metadata = {"input-etag": result["input"]["etag"] or "", "final": str(final).lower()}
    if _choice(result):
        metadata["choice"] = _choice(result)
    try:
        written = _write_result(
            s3, bucket, key, out_key, result["input"]["etag"], seen,
            json.dumps(result, ensure_ascii=False, indent=2).encode(), metadata, upload,
        )
    except Exception as exc:
        _log({**summary, "status": "write_failed", "error_code": "result_write_failed"})
        raise ResultWriteError(
            f"Could not write s3://{bucket}/{out_key}: {_describe(exc)}") from exc
    if not written:
        return _log({**summary, "status": "superseded", "etag": result["input"]["etag"]})
    return _log({
        **summary, "status": result["status"],
        "error_code": result.get("error", {}).get("code"), **result["timing"],
    })


def _log(line: dict[str, Any]) -> dict[str, Any]:
    log.info(json.dumps(line, ensure_ascii=False))
    return line


def _remaining_seconds(context: Any) -> float:
    get = getattr(context, "get_remaining_time_in_millis", None)
    return get() / 1000 if get else 900.0  # no context (a local call): Lambda's maximum


def lambda_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Entry point: describe every photo of an S3 ObjectCreated event."""
    deadline = time.monotonic() + _remaining_seconds(context)
    broken = None
    try:
        settings = load_settings()
    except ConfigError as exc:
        # Still answer every photo, with the error, in the configured folders if they are
        # usable, else in the default ones.
        log.error("Invalid configuration: %s", exc)
        settings, broken = _fallback_settings(), exc
    request_id = getattr(context, "aws_request_id", None)
    summaries, failures = [], []
    for record in event.get("Records") or []:
        try:
            if broken is None and _is_async_result(record, settings):
                import lambda_async

                summaries.append(lambda_async.complete(record, settings, request_id))
                continue
            summaries.append(process_record(record, settings, deadline, request_id, broken))
        except ResultWriteError as exc:  # keep going: the other photos' results still count
            failures.append(exc)
        except (KeyError, TypeError, AttributeError) as exc:  # no bucket or key: nowhere to answer
            summaries.append(_log({"status": "malformed_record", "error": _scrub(repr(exc))}))
    if failures:
        raise failures[0]
    return {"records": summaries}


def _is_async_result(record: Mapping[str, Any], settings: Settings) -> bool:
    """An output or failure object SageMaker wrote for a queued request (async mode)."""
    if settings.inference_mode != "async":
        return False
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    return key.startswith((settings.async_prefix + "outputs/", settings.async_prefix + "failures/"))


def _fallback_settings() -> Settings:
    prefixes = {
        name: value for name, value in (
            ("input_prefix", os.environ.get("INPUT_PREFIX", "")),
            ("output_prefix", os.environ.get("OUTPUT_PREFIX", "")),
        ) if value.endswith("/") and len(value) > 1
    }
    bucket = os.environ.get("BUCKET_NAME", "")  # still refuse other buckets when it is set
    fallback = Settings(bucket=bucket, endpoint="", **prefixes)
    inp, out = fallback.input_prefix, fallback.output_prefix
    return fallback if not (inp.startswith(out) or out.startswith(inp)) else Settings(bucket, "")


def _configure_logging() -> None:
    # Lambda's runtime installs a root handler at WARNING unless the function sets a log level
    # (AWS_LAMBDA_LOG_LEVEL). Raise only this module's logger to INFO so its one line per photo
    # shows without botocore's INFO chatter. Outside Lambda logging is left to the importer.
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and not os.environ.get("AWS_LAMBDA_LOG_LEVEL"):
        log.setLevel(logging.INFO)


_configure_logging()
