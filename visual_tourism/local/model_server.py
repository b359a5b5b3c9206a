"""A local stand-in for the SageMaker endpoint: the TGI container and the Runtime API in front.

Routes (HTTP on 127.0.0.1):

- ``GET /ping``: the container's health check (200).
- ``POST /invocations``: the container, as SageMaker forwards requests to Hugging Face TGI.
- ``POST /model/{modelId}/converse``: Amazon Bedrock's Converse API, for the managed profiles
  (``local/converse.py``: boto3's ``bedrock-runtime`` with ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``).
- ``POST /endpoints/{EndpointName}/invocations``: the SageMaker Runtime API, which boto3's
  ``sagemaker-runtime`` ``invoke_endpoint`` calls when ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``
  (or ``endpoint_url``) points here. Container errors come back wrapped as SageMaker does.

Two request styles, told apart by the JSON body:

- TGI: ``{"inputs": "User:...![](URL)<end_of_utterance>\\nAssistant:", "parameters": {...}}``
  answered ``[{"generated_text": "..."}]``. Images are markdown ``![](URL)``: http(s), fetched
  here as TGI fetches them, or ``data:image/...;base64,...``.
- Messages (TGI >= 2.4): ``{"messages": [...], "max_tokens": ...}`` answered with an OpenAI
  ``chat.completion``.

Errors on ``/invocations`` use TGI's shape, ``{"error": "...", "error_type": "..."}``: 422
``validation`` for bad input (bad JSON, missing fields, bad parameters, an image that cannot be
fetched or decoded), 424 ``generation`` when the backend fails, 415 for a non-JSON
Content-Type, and, as TGI's router does, 413 ``Failed to buffer the request body: length limit
exceeded`` (plain text) when Content-Length is over ``payload_limit``, before the body is
read. On the Runtime path any such answer becomes HTTP 424 ``ModelError``
(``OriginalStatusCode``, ``OriginalMessage``, ``LogStreamArn``), an unknown endpoint HTTP 400
``ValidationError``, a caller whose role may not invoke it (when ``authorize`` is given: local
mode's IAM) HTTP 403 ``AccessDeniedException``; see `Faults` for injected failures.

Images: http(s) URLs only from ``fetch_origins`` (local mode: its own S3 endpoint), never
following a redirect, and no image over ``MAX_IMAGE_PIXELS`` is decoded.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from PIL import Image, UnidentifiedImageError

from photo_handler import serving_limits
from photo_handler.serving_limits import ContainerLimits

from . import converse
from .backends import (
    Backend,
    GenerationParams,
    StandInBackend,
    Turn,
    generation_params,
    load_backend,
)

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account, used in SageMaker-style messages
DEFAULT_REGION = "us-east-1"
VARIANT = "AllTraffic"  # the variant name the SageMaker SDK gives a single-model endpoint
PAYLOAD_LIMIT = 2_000_000  # TGI 3.x's default PAYLOAD_LIMIT, in bytes
MAX_IMAGE_BYTES = 50 * 1024 * 1024
# Decoding is refused above this many pixels (the handler's own limit, MAX_IMAGE_PIXELS): a
# small compressed file can otherwise expand to gigabytes of RGB in this process.
MAX_IMAGE_PIXELS = 50_000_000
# What TGI's router (axum's DefaultBodyLimit) answers for a body over PAYLOAD_LIMIT: 413 with
# this plain-text body, decided from Content-Length before the body is read.
PAYLOAD_TOO_LARGE = b"Failed to buffer the request body: length limit exceeded"
# An over-long body is read and thrown away (never kept) up to this size, so that the client
# gets the 413 rather than a reset; beyond it the connection is simply closed.
_DRAIN_LIMIT = 16 * 1024 * 1024
MAX_STOP_SEQUENCES = 4  # TGI's default --max-stop-sequences
DEFAULT_MAX_NEW_TOKENS = 100  # TGI's default when a request gives none

_RUNTIME_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
_ASYNC_PATH = re.compile(r"^/endpoints/([^/]+)/async-invocations$")
_ROLE_MARKER = re.compile(r"(?:^|\n)(User|Assistant|System):")
_MARKDOWN_IMAGE = re.compile(r"!\[\]\(([^)\s]+)\)")
_CREDENTIAL_REGION = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/")
_END_OF_UTTERANCE = "<end_of_utterance>"

# Injected Runtime failures: HTTP status -> (botocore error code, message).
RUNTIME_FAULTS: dict[int, tuple[str, str]] = {
    424: ("ModelError", "Injected fault: the model container answered 500."),
    500: ("InternalFailure", "Injected fault: an internal failure occurred."),
    503: ("ServiceUnavailable", "Injected fault: the service is unavailable. Try again."),
    429: ("ThrottlingException", "Injected fault: rate exceeded."),
}


class InvocationError(Exception):
    """The container answers this instead of a generation (TGI's error shape)."""

    def __init__(self, status: int, message: str, error_type: str = "validation",
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type
        self.body = body  # another engine's error shape (vLLM's); None: TGI's

    def response(self) -> _Response:
        body = self.body or {"error": self.message, "error_type": self.error_type}
        return _Response.json(self.status, body)


def _invalid(message: str) -> InvocationError:
    return InvocationError(422, f"Input validation error: {message}")


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, **headers: str) -> _Response:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json",
                                                         **headers})


def _aws_error(status: int, code: str, message: str, **fields: Any) -> _Response:
    """An error as the Runtime API sends it; botocore reads the code from x-amzn-ErrorType."""
    return _Response.json(
        status, {"Message": message, **fields},
        **{"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


# -- fault injection ----------------------------------------------------------------------------


class Hold:
    """Requests kept in flight (holding their share of the instance's capacity) until
    ``release()``: a test decides when a slow answer comes instead of racing a timer.

    ``arrived`` is set once the first held request is waiting. A held request is let go by
    ``release()``, when the server stops, or after ``timeout`` seconds at the latest, so a
    test that never releases ends instead of hanging.
    """

    def __init__(self, n: int | None, timeout: float) -> None:
        self.left, self.timeout = n, timeout
        self.arrived, self.released = threading.Event(), threading.Event()
        self.held = 0

    def release(self) -> None:
        self.released.set()


@dataclass
class _Plan:
    delay: float = 0.0
    drop: bool = False
    fail: int | None = None
    hold: Hold | None = None


class Faults:
    """Failures for the next requests on the Runtime path, to test a client's retries.

    Thread-safe. Each request takes at most one of each kind, in this order: the delay, then
    a drop (the connection closes without an answer), then a failure. ``/invocations`` and
    ``/ping`` are never affected.

    What boto3 does with each (botocore's default "standard" retry mode, 3 attempts):
    424 ModelError is not retried; 500 InternalFailure and 503 ServiceUnavailable are retried
    as transient (status 500/502/503/504); 429 ThrottlingException is retried as throttling
    (its code is in botocore's throttling list; "legacy" mode retries any 429); a drop raises
    ``ConnectionClosedError`` and a delay past ``read_timeout`` ``ReadTimeoutError``, both
    retried as transient.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def fail(self, n: int = 1, status: int = 500) -> None:
        """The next ``n`` requests fail with ``status``: 424, 500, 503 or 429."""
        if status not in RUNTIME_FAULTS:
            raise ValueError(f"status must be one of {sorted(RUNTIME_FAULTS)}, got {status}")
        with self._lock:
            self._failures.extend([status] * n)

    def delay(self, seconds: float, n: int | None = None) -> None:
        """Answer ``seconds`` late: the next ``n`` requests, or all of them when ``n`` is None."""
        with self._lock:
            self._delay, self._delays_left = seconds, n

    def hold(self, n: int | None = 1, timeout: float = 120.0) -> Hold:
        """Keep the next ``n`` requests (all when None) in flight until the hold's release."""
        hold = Hold(n, timeout)
        with self._lock:
            self._hold = hold
        return hold

    def drop(self, n: int = 1) -> None:
        """Close the connection of the next ``n`` requests without answering."""
        with self._lock:
            self._drops += n

    def clear(self) -> None:
        with self._lock:
            self._failures: list[int] = []
            self._delay, self._delays_left = 0.0, 0
            self._drops = 0
            self._hold: Hold | None = None
            self.delayed = 0  # requests that were given a delay

    def take(self) -> _Plan:
        """What to do to one request (used by the server)."""
        with self._lock:
            plan = _Plan()
            if self._delay and (self._delays_left is None or self._delays_left > 0):
                plan.delay = self._delay
                self.delayed += 1
                if self._delays_left is not None:
                    self._delays_left -= 1
            hold = self._hold
            if hold is not None and (hold.left is None or hold.left > 0):
                plan.hold = hold
                if hold.left is not None:
                    hold.left -= 1
            if self._drops:
                self._drops -= 1
                plan.drop = True
            elif self._failures:
                plan.fail = self._failures.pop(0)
            return plan


# -- reading requests -----------------------------------------------------------------------------


def _describe_url(url: str) -> str:
    """A URL fit for messages and logs: no presigned query string, no megabytes of base64."""
    if url.startswith("data:"):
        return f"{url[:30]}... ({len(url)} characters)"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: it could lead an allowed origin's URL anywhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def load_image(url: str, timeout: float = 10.0,
               allowed_origins: Sequence[str] | None = ()) -> Image.Image:
    """Fetch or decode one image as TGI does; any failure is a 422 validation error.

    Unlike TGI on SageMaker (which fetches any URL the endpoint can reach), only
    ``allowed_origins`` (scheme://host:port; None allows any) are fetched here, without
    following redirects: this server runs on a developer's machine, next to loopback services
    a crafted URL must not reach. data: URIs are always decoded.
    """
    where = _describe_url(url)
    if url.startswith("data:"):
        header, comma, payload = url[len("data:"):].partition(",")
        if not comma or not header.startswith("image/") or not header.endswith(";base64"):
            raise _invalid(f"invalid image data URI {where}: expected data:image/...;base64,...")
        try:
            data = base64.b64decode(payload, validate=True)
        except binascii.Error as error:
            raise _invalid(f"invalid base64 in image data URI {where}: {error}") from error
    elif url.startswith(("http://", "https://")):
        allowed = None if allowed_origins is None else {o.lower().rstrip("/")
                                                        for o in allowed_origins}
        if allowed is not None and _origin(url) not in allowed:
            raise _invalid(f"image URL {where} is not on an allowed origin (local mode fetches "
                           "only from its own S3 endpoint; use a data URI or upload the photo)")
        request = urllib.request.Request(url, headers={"User-Agent": "visual-tourism-local"})
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                data = response.read(MAX_IMAGE_BYTES + 1)
        except (urllib.error.URLError, OSError) as error:  # HTTPError, refused, timeout...
            raise _invalid(f"cannot fetch image {where}: {error}") from error
        if len(data) > MAX_IMAGE_BYTES:
            raise _invalid(f"image {where} is larger than {MAX_IMAGE_BYTES} bytes")
    else:
        raise _invalid(f"image URL must be http(s) or a data URI, got {where!r}")

    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # from the header: nothing decoded yet
        if width * height > MAX_IMAGE_PIXELS:
            raise _invalid(f"image {where} is {width}x{height} pixels, over the "
                           f"{MAX_IMAGE_PIXELS:,} pixel limit")
        image.load()  # decodes everything now, so a truncated file fails here
    except UnidentifiedImageError as error:
        raise _invalid(
            f"cannot decode image {where}: not an image format Pillow reads "
            f"(HEIC photos must be converted to JPEG or PNG first; starts with {data[:12]!r})"
        ) from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise _invalid(f"cannot decode image {where}: {error}") from error
    return image


def parse_tgi_prompt(prompt: str, fetch: Callable[[str], Image.Image]) -> list[Turn]:
    """Turns of an Idefics-style prompt: ``User:``/``Assistant:`` markers, ``![](URL)`` images.

    A prompt without markers is one user turn; the closing empty ``Assistant:`` (the cue to
    answer) is dropped, as the backend adds its own.
    """
    markers = list(_ROLE_MARKER.finditer(prompt))
    bounds = [marker.start() for marker in markers] + [len(prompt)]
    spans = [("user", 0, bounds[0])]  # any text before the first marker
    for marker, end in zip(markers, bounds[1:], strict=True):
        spans.append((marker.group(1).lower(), marker.end(), end))

    turns = []
    for role, start, end in spans:
        pieces = _MARKDOWN_IMAGE.split(prompt[start:end].replace(_END_OF_UTTERANCE, ""))
        parts: list[str | Image.Image] = []
        for index, piece in enumerate(pieces):
            if index % 2:  # re.split puts the captured URLs at odd positions
                parts.append(fetch(piece))
            elif piece.strip():
                parts.append(piece.strip())
        if parts:
            turns.append(Turn(role, tuple(parts)))
    return turns


def parse_messages(messages: Any, fetch: Callable[[str], Image.Image]) -> list[Turn]:
    """Turns of an OpenAI-style ``messages`` list (content a string or a list of parts)."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("`messages` must be a non-empty list")
    turns = []
    for number, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant"):
            raise _invalid(f"messages[{number}].role must be system, user or assistant")
        content = message.get("content")
        if isinstance(content, str):
            turns.append(Turn(role, (content,)))
            continue
        if not isinstance(content, list):
            raise _invalid(f"messages[{number}].content must be a string or a list of parts")
        parts: list[str | Image.Image] = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif kind == "image_url" and isinstance(part.get("image_url"), dict):
                parts.append(fetch(str(part["image_url"].get("url", ""))))
            else:
                raise _invalid(f"messages[{number}] has an unsupported content part: "
                               "expected {type: text, text} or {type: image_url, image_url: {url}}")
        turns.append(Turn(role, tuple(parts)))
    return turns


def _number(value: Any, name: str, kind: type = float) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        kind is int and not float(value).is_integer()
    ):
        raise _invalid(f"`{name}` must be {'an integer' if kind is int else 'a number'}")
    return kind(value)


def _checked_params(
    max_new_tokens: Any, do_sample: Any, temperature: Any, top_p: Any, top_k: Any, stop: Any
) -> GenerationParams:
    """Generation parameters validated with TGI's rules and messages."""
    max_new = _number(max_new_tokens, "max_new_tokens", int)
    if max_new is None:
        max_new = DEFAULT_MAX_NEW_TOKENS
    temperature = _number(temperature, "temperature")
    top_p = _number(top_p, "top_p")
    top_k = _number(top_k, "top_k", int)
    if max_new <= 0:
        raise _invalid("`max_new_tokens` must be strictly positive")
    if temperature is not None and temperature <= 0:
        raise _invalid("`temperature` must be strictly positive")
    if top_p is not None and not 0 < top_p < 1:
        raise _invalid("`top_p` must be > 0.0 and < 1.0")
    if top_k is not None and top_k <= 0:
        raise _invalid("`top_k` must be strictly positive")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _invalid("`stop` must be a list of strings")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise _invalid(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. "
                       f"Given: {len(stop)}")
    if not isinstance(do_sample, bool):
        raise _invalid("`do_sample` must be a boolean")
    return generation_params(max_new_tokens=max_new, do_sample=do_sample,
                             temperature=temperature, top_p=top_p, top_k=top_k, stop=stop)


# -- a deployed container's limits ----------------------------------------------------------------
#
# With a ContainerLimits (the endpoint's, see ModelServer.limits_for) a request is checked as
# that container checks it, in the same order, and refused with its status code and body. The
# rules (ranges, image token formulas, the text bound) come from serving_limits, the one source
# the handler and load_config use too; the wording and order below are the containers':
#
# - TGI, router/src/validation.rs at tags v1.4.5 and v3.3.6 (``ValidationError`` texts and
#   ``Validation::validate``: temperature, repetition_penalty, frequency_penalty, top_p,
#   typical_p, top_k, max_new_tokens, stop; then ``validate_input``, which fetches and counts
#   images on v3.x, checks inputs + max_new_tokens <= MAX_TOTAL_TOKENS, then inputs <=
#   MAX_INPUT_TOKENS). router/src/infer (``InferError::ValidationError``) prefixes "Input
#   validation error: " and router/src/server.rs answers 422 {"error", "error_type":
#   "validation"}; a shard failure is InferError::GenerationError, 424 "Request failed during
#   generation: Server error: ..." with error_type "generation". On v1.4.5 Idefics images are
#   replaced by one <image> token each and fetched by the Python shard, after validation: an
#   image it cannot fetch or decode is that 424 (ContainerLimits.image_failure_status).
#   Without max_new_tokens v1.4.5 generates 100 tokens; v3.3.6 counts min(MAX_TOTAL_TOKENS -
#   inputs, 1024) (validation.rs DEFAULT_GENERATION_LENGTH).
# - vLLM's OpenAI server in LMI 0.33.0 (vLLM 0.8.4): images parsed first
#   (vllm/entrypoints/chat_utils.py: "At most {n} image(s) may be provided in one request."),
#   then the context length (vllm/entrypoints/openai/serving_engine.py ``_validate_input``),
#   then the sampling parameters (vllm/sampling_params.py ``_verify_args``); every refusal is
#   HTTP 400 with ``ErrorResponse`` {"object": "error", "message", "type": "BadRequestError",
#   "param": null, "code": 400} (vllm/entrypoints/openai/protocol.py).
#
# Input tokens are counted from above, never below: every UTF-8 byte of text counts as a token
# (a real tokenizer makes fewer), plus serving_limits.TEMPLATE_TOKENS and MESSAGE_TOKENS per chat
# message for the template, plus each image's tokens by the profile's formula on the image as
# fetched and decoded here. So a request refused here may pass the real container (a long text
# close to the limit), but one that passes here passes there.

TGI_DEFAULT_MAX_NEW_TOKENS_V1 = 100  # v1.4.5: a request without max_new_tokens gets 100
TGI_DEFAULT_GENERATION_LENGTH = 1024  # v3.3.6 validation.rs DEFAULT_GENERATION_LENGTH
_PLACEHOLDER_SIZE = (1, 1)  # stands for an image that could not be fetched (never generated)

# Parameters in TGI's validation order, with TGI's texts (validation.rs, v1.4.5 and v3.3.6).
_TGI_PARAMETER_ERRORS = {
    "temperature": "`temperature` must be strictly positive",
    "repetition_penalty": "`repetition_penalty` must be strictly positive",
    "frequency_penalty": "`frequency_penalty` must be >= -2.0 and <= 2.0",
    "top_p": "`top_p` must be > 0.0 and < 1.0",
    "typical_p": "`typical_p` must be > 0.0 and < 1.0",
    "top_k": "`top_k` must be strictly positive",
    "max_new_tokens": "`max_new_tokens` must be strictly positive",
    "stop": "`stop` supports up to {limit} stop sequences. Given: {given}",
}
# vLLM's texts (vllm/sampling_params.py ``_verify_args``), by the handler's parameter names.
_VLLM_PARAMETER_ERRORS = {
    "max_new_tokens": "max_tokens must be at least 1, got {value}.",
    "temperature": "temperature must be non-negative, got {value}.",
    "top_p": "top_p must be in (0, 1], got {value}.",
    "frequency_penalty": "frequency_penalty must be in [-2, 2], got {value}.",
    "presence_penalty": "presence_penalty must be in [-2, 2], got {value}.",
}
# The parameters serving_limits.generation_problems rules on, per request style (best_of and
# the like are left to the container's own defaults, unknown fields are ignored as both do).
_RULED = {
    "tgi": ("temperature", "repetition_penalty", "frequency_penalty", "top_p", "typical_p",
            "top_k", "stop", "presence_penalty"),
    "messages": ("temperature", "frequency_penalty", "top_p", "stop", "presence_penalty"),
}


def _refusal(limits: ContainerLimits, message: str) -> InvocationError:
    """A request the container refuses, in its engine's status and shape."""
    if limits.engine == "vllm":
        return InvocationError(400, message, body={
            "object": "error", "message": message, "type": "BadRequestError", "param": None,
            "code": 400})
    return InvocationError(422, f"Input validation error: {message}")


def _image_failure(limits: ContainerLimits, error: InvocationError) -> InvocationError:
    """An image the container could not fetch or decode, as that container reports it."""
    detail = error.message.removeprefix("Input validation error: ")
    if limits.image_failure_status == 424:  # TGI v1.4.5 Idefics: the shard fetches it
        return InvocationError(424, f"Request failed during generation: Server error: {detail}",
                               "generation")
    return _refusal(limits, detail)


def _problem_parameter(problem: str) -> str:
    """The parameter a serving_limits problem is about ("top_p=1.0 must ..." -> "top_p")."""
    head = problem.split(" ", 1)[0]
    return head.split("=", 1)[0]


def parameter_refusal(
    params: dict[str, Any], limits: ContainerLimits, style: str,
) -> InvocationError | None:
    """The container's answer to the first generation parameter it refuses, else None.

    ``params`` in the handler's (TGI) names; ``style`` "tgi" or "messages". The ranges are
    serving_limits.generation_problems'; max_new_tokens only needs >= 1 here (the total
    check covers the upper bound, as the container does).
    """
    ruled = {name: params[name] for name in _RULED[style] if params.get(name) is not None}
    problems = serving_limits.generation_problems(
        {**ruled, "max_new_tokens": 1}, limits, style)
    refused = {_problem_parameter(p): p for p in problems}
    max_new = params.get("max_new_tokens")
    if max_new is not None and max_new < 1:
        refused["max_new_tokens"] = f"max_new_tokens={max_new} must be >= 1"
    if not refused:
        return None
    if limits.engine == "tgi":
        for name, text in _TGI_PARAMETER_ERRORS.items():
            if name in refused:
                stops = params.get("stop") or []
                return _refusal(limits, text.format(
                    limit=limits.max_stop_sequences,
                    given=len([stops] if isinstance(stops, str) else stops)))
    else:
        for name, text in _VLLM_PARAMETER_ERRORS.items():
            if name in refused:
                value = params[name]
                return _refusal(limits, text.format(
                    value=value if name == "max_new_tokens" else float(value)))
    return _refusal(limits, next(iter(refused.values())))


@dataclass
class _Checked:
    """A request the container accepts: what to generate from, and its token count."""

    turns: list[Turn]
    params: GenerationParams
    budget: serving_limits.Budget


def check_request(
    request: dict[str, Any], style: str, limits: ContainerLimits,
    fetch: Callable[[str], Image.Image],
) -> _Checked:
    """Check one request as the container of ``limits`` does; raise its refusal."""
    # Field types and shapes: the same checks and 422 texts as without limits, in the
    # engine's shape (vLLM's pydantic models answer 400).
    try:
        if style == "tgi":
            prompt, raw = request["inputs"], request.get("parameters") or {}
            if not isinstance(prompt, str) or not prompt.strip():
                raise _invalid("`inputs` must be a non-empty string")
            if not isinstance(raw, dict):
                raise _invalid("`parameters` must be an object")
            params = dict(raw)
        else:
            params = {name: request[chat] for name, chat in serving_limits.CHAT_PARAMETERS.items()
                      if request.get(chat) is not None}
        for name in ("temperature", "top_p", "typical_p", "repetition_penalty",
                     "frequency_penalty", "presence_penalty"):
            params[name] = _number(params.get(name), name)
        for name in ("max_new_tokens", "top_k"):
            params[name] = _number(params.get(name), name, int)
        stop = params.get("stop")
        stop = [stop] if isinstance(stop, str) else (stop or [])
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _invalid("`stop` must be a list of strings")
        params["stop"] = stop
        do_sample = params.get("do_sample", False) if style == "tgi" else True
        if not isinstance(do_sample, bool):
            raise _invalid("`do_sample` must be a boolean")
    except InvocationError as error:
        raise _refusal(limits, error.message.removeprefix("Input validation error: ")) from None

    failures: list[InvocationError] = []

    def fetch_or_note(url: str) -> Image.Image:
        try:
            return fetch(url)
        except InvocationError as error:
            failures.append(error)
            return Image.new("RGB", _PLACEHOLDER_SIZE)

    try:
        if style == "tgi":
            turns = parse_tgi_prompt(prompt, fetch_or_note)
            texts, messages = [_MARKDOWN_IMAGE.sub("", prompt)], 0
        else:
            turns = parse_messages(request["messages"], fetch_or_note)
            texts = [part for turn in turns for part in turn.parts if isinstance(part, str)]
            messages = len(turns)
    except InvocationError as error:
        raise _refusal(limits, error.message.removeprefix("Input validation error: ")) from None
    images = [image for turn in turns for image in turn.images]
    max_new = params["max_new_tokens"]

    def budget(new_tokens: int) -> serving_limits.Budget:
        return serving_limits.request_budget(
            limits, texts, [image.size for image in images], new_tokens, messages=messages)

    if limits.engine == "vllm":
        if len(images) > limits.max_images:  # OPTION_LIMIT_MM_PER_PROMPT
            raise _refusal(limits, f"At most {limits.max_images} image(s) may be provided in "
                                   "one request.")
        if failures:
            raise _image_failure(limits, failures[0])
        counted = budget(max_new or 0)
        tokens, context = counted.input_tokens, limits.max_total_tokens  # max_model_len
        if max_new is None and tokens >= context:
            raise _refusal(limits, f"This model's maximum context length is {context} tokens. "
                           f"However, you requested {tokens} tokens in the messages, Please "
                           "reduce the length of the messages.")
        if max_new is not None and tokens + max_new > context:
            raise _refusal(limits, f"This model's maximum context length is {context} tokens. "
                           f"However, you requested {tokens + max_new} tokens ({tokens} in the "
                           f"messages, {max_new} in the completion). Please reduce the length "
                           "of the messages or completion.")
        if (refused := parameter_refusal(params, limits, style)) is not None:
            raise refused
        if max_new is None:
            max_new = min(context - tokens, TGI_DEFAULT_GENERATION_LENGTH)
    else:
        if (refused := parameter_refusal(params, limits, style)) is not None:
            raise refused
        fetched_by_router = limits.image_failure_status != 424
        if failures and fetched_by_router:
            raise _image_failure(limits, failures[0])
        tokens = budget(0).input_tokens
        if max_new is None:
            max_new = (TGI_DEFAULT_MAX_NEW_TOKENS_V1 if limits.container_version.startswith("1.")
                       else min(max(0, limits.max_total_tokens - tokens),
                                TGI_DEFAULT_GENERATION_LENGTH))
        if tokens + max_new > limits.max_total_tokens:
            raise _refusal(limits, f"`inputs` tokens + `max_new_tokens` must be <= "
                           f"{limits.max_total_tokens}. Given: {tokens} `inputs` tokens and "
                           f"{max_new} `max_new_tokens`")
        if tokens > limits.max_input_tokens:
            raise _refusal(limits, f"`inputs` must have less than {limits.max_input_tokens} "
                           f"tokens. Given: {tokens}")
        if failures:
            raise _image_failure(limits, failures[0])
    counted = budget(max_new)
    logger.info("within %s %s limits: %s", limits.engine, limits.container_version,
                counted.explain())

    temperature = params["temperature"]
    greedy = style == "messages" and temperature == 0  # chat: temperature 0 means greedy
    if style == "messages":
        do_sample = not greedy
    return _Checked(turns, generation_params(
        max_new_tokens=max_new, do_sample=do_sample,
        temperature=None if greedy else temperature, top_p=params["top_p"],
        top_k=params["top_k"], stop=stop), counted)


# -- constrained generation -----------------------------------------------------------------------
#
# What each container takes (the project's reference notes, "Constrained generation"):
# - TGI /generate (v1.4.5 and v3.3.6): ``parameters.grammar = {"type": "json" | "regex",
#   "value": ...}``, a JSON schema (an object, or a string holding one) or a regex; v3.x also
#   takes "json_object" for "json", and refuses a JSON schema without top-level
#   ``properties`` ("Grammar must have a 'properties' field"). A wrong shape is the router's
#   JSON rejection (422 "Failed to deserialize the JSON body ...").
# - TGI chat (v3.3.6): ``response_format`` in TGI's own shape, ``{"type": "json" |
#   "json_object", "value": <schema>}`` or ``{"type": "json_schema", "value": {"name",
#   "schema"}}``; OpenAI's ``{"type": "json_schema", "json_schema": {...}}`` has no ``value``
#   and is refused. TGI v1.4.5's chat route has no response_format: the field is ignored.
# - vLLM's OpenAI server (0.8.x): OpenAI's shapes, ``{"type": "json_schema", "json_schema":
#   {"name", "schema"}}``, ``{"type": "json_object"}`` (any object) or ``{"type": "text"}``.
# The backend gets the constraint normalised (backends.GenerationParams.grammar).


def _tgi_major(limits: ContainerLimits | None) -> int:
    """The TGI major version of these limits (none: 3, this server's default rules)."""
    if limits is None:
        return 3
    found = re.match(r"\d+", limits.container_version)
    return int(found.group()) if found else 3


def _undeserializable(where: str, detail: str) -> InvocationError:
    return InvocationError(422, "Failed to deserialize the JSON body into the target type: "
                           f"{where}: {detail}")


def _json_grammar(value: Any, where: str, limits: ContainerLimits | None) -> dict[str, Any]:
    if isinstance(value, str):  # a schema sent as text
        try:
            value = json.loads(value)
        except ValueError as error:
            raise _invalid(f"Grammar is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise _undeserializable(where, "the JSON schema must be an object")
    if _tgi_major(limits) >= 3 and "properties" not in value:
        raise _invalid("Grammar must have a 'properties' field")
    return {"type": "json", "schema": value}


def tgi_grammar(grammar: Any, limits: ContainerLimits | None) -> dict[str, Any] | None:
    """TGI's ``parameters.grammar``, normalised for the backend; the container's refusal when
    it would refuse it."""
    if grammar is None:
        return None
    kinds = ("json", "regex") if _tgi_major(limits) < 3 else ("json", "json_object", "regex")
    where = "parameters.grammar"
    if not isinstance(grammar, dict) or grammar.get("type") not in kinds:
        kind = grammar.get("type") if isinstance(grammar, dict) else grammar
        raise _undeserializable(where, f"unknown variant `{kind}`, expected one of "
                                f"{', '.join(f'`{k}`' for k in kinds)}")
    if "value" not in grammar:
        raise _undeserializable(where, "missing field `value`")
    if grammar["type"] == "regex":
        if not isinstance(grammar["value"], str):
            raise _undeserializable(where, "a regex grammar's value must be a string")
        return {"type": "regex", "pattern": grammar["value"]}
    return _json_grammar(grammar["value"], where, limits)


def chat_response_format(value: Any, limits: ContainerLimits | None) -> dict[str, Any] | None:
    """A chat request's ``response_format``, normalised for the backend, as the container of
    ``limits`` reads it (see above); its refusal when it would refuse it."""
    if value is None:
        return None
    where = "response_format"
    kind = value.get("type") if isinstance(value, dict) else None
    if limits is not None and limits.engine == "vllm":
        if kind == "text":
            return None
        if kind == "json_object":
            return {"type": "json", "schema": None}
        if kind == "json_schema":
            spec = value.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise _refusal(limits, "response_format: type json_schema needs json_schema "
                                       "with a schema ({name, schema})")
            return {"type": "json", "schema": schema}
        raise _refusal(limits, f"response_format.type: {kind!r}: input should be 'text', "
                               "'json_object' or 'json_schema'")
    if _tgi_major(limits) < 2:
        logger.info("TGI %s's chat route has no response_format: ignored, answering free text",
                    limits.container_version if limits else "")
        return None
    kinds = ("json", "json_object", "json_schema", "regex")
    if kind not in kinds:
        raise _undeserializable(where, f"unknown variant `{kind}`, expected one of "
                                f"{', '.join(f'`{k}`' for k in kinds)}")
    if "value" not in value:  # OpenAI's {"type": "json_schema", "json_schema": ...}
        raise _undeserializable(where, "missing field `value`")
    inner = value["value"]
    if kind == "regex":
        if not isinstance(inner, str):
            raise _undeserializable(where, "a regex's value must be a string")
        return {"type": "regex", "pattern": inner}
    if kind == "json_schema":
        if not isinstance(inner, dict) or "schema" not in inner:
            raise _undeserializable(f"{where}.value", "missing field `schema`")
        inner = inner["schema"]
    return _json_grammar(inner, where, limits)


def _word_count(turns: Sequence[Turn]) -> int:
    return sum(len(turn.text.split()) for turn in turns)


# -- the server ---------------------------------------------------------------------------------


@dataclass
class _Outcome:
    response: _Response | None  # None: close the connection without answering
    style: str | None = None
    images: int = 0


class ModelServer:
    """The local endpoint: start it, point boto3 (or urllib) at ``.url``, stop it.

    ``backend`` None is the offline stand-in. ``endpoint_exists``, when given, decides which
    endpoint names the Runtime path knows. Every request is served on its own thread; a backend
    that is not thread-safe runs one request at a time (the others wait their turn).

    ``limits`` / ``limits_for``: the deployed container's limits, enforced as that container
    does (``check_request``); local mode passes ``limits_for``, which reads the endpoint's model
    from the SageMaker stand-in.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        endpoint_exists: Callable[[str], bool] | None = None,
        fetch_timeout: float = 10.0,
        payload_limit: int | None = None,
        default_return_full_text: bool = True,  # TGI's default for Idefics (text-generation)
        authorize: Callable[[Any, str, str], str | None] | None = None,
        fetch_origins: Sequence[str] | None = (),
        limits: ContainerLimits | None = None,
        limits_for: Callable[[str], ContainerLimits | None] | None = None,
        authorize_model: Callable[[Any, str], str | None] | None = None,
    ) -> None:
        self.backend: Backend = backend or StandInBackend()
        self.host, self.port = host, port
        self.endpoint_exists = endpoint_exists
        # (headers, endpoint, region) -> None, or why the caller may not invoke it (IAM)
        self.authorize = authorize
        # (headers, resource ARN) -> None, or why the caller may not bedrock:InvokeModel it
        self.authorize_model = authorize_model
        self.fetch_timeout = fetch_timeout
        # The only http(s) origins images are fetched from (None: any; default: none).
        self.fetch_origins = fetch_origins
        # The container's limits (see check_request): ``limits`` for /invocations and for any
        # endpoint ``limits_for`` (endpoint name -> its container's limits, or None) does not
        # know; None for both: no token accounting, TGI 3.x's parameter rules (the default).
        self.limits = limits
        self.limits_for = limits_for
        # The request body limit, in bytes: ``payload_limit``, else the limits' own, else
        # TGI 3.x's default. An endpoint with limits of its own uses theirs.
        self.payload_limit = payload_limit if payload_limit is not None else (
            limits.payload_limit_bytes if limits is not None else PAYLOAD_LIMIT)
        self.default_return_full_text = default_return_full_text
        self.faults = Faults()
        # One instance's capacity (None: unbounded): requests in the container at once; one
        # more is refused as TGI refuses it ("Model is overloaded", 429, which SageMaker passes
        # on as a 424 ModelError) or, with overload_status 503, as SageMaker's
        # ServiceUnavailable. service_seconds: how long each request holds its place (GPU time).
        self.capacity: int | None = None
        self.overload_status = 429
        self.service_seconds = 0.0
        self.overloads = 0
        self.peak_in_flight = 0
        self._in_flight = 0
        self._capacity_lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        self._calls_lock = threading.Lock()
        self._open = 0  # POSTs being handled (logged in ``calls`` only once they end)
        self._quiet = threading.Condition(self._calls_lock)
        self._backend_lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        # InvokeEndpointAsync's route, when local mode plays an async endpoint (async_worker).
        self.async_handler: Callable[[str, Any, bytes], _Response] | None = None

    # -- life cycle
    def start(self) -> ModelServer:
        if self._httpd is None:
            self._stopping.clear()
            self._httpd = _HTTPServer((self.host, self.port), _Handler, self)
            self.port = self._httpd.server_address[1]
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"model-server-{self.port}", daemon=True,
            )
            self._thread.start()
            logger.info("Model server at %s answers with %s", self.url, self.backend.description)
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()  # ends injected delays at once
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None
        logger.info("Model server on port %s stopped", self.port)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the model server is not started; call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def calls(self) -> list[dict[str, Any]]:
        """One dict per invocation: endpoint (None on /invocations), style, status, seconds,
        images. A copy, safe to read while requests run."""
        with self._calls_lock:
            return [dict(call) for call in self._calls]

    def limits_of(self, endpoint: str | None) -> ContainerLimits | None:
        """The limits requests to ``endpoint`` (None: /invocations) are checked against."""
        if endpoint is not None and self.limits_for is not None:
            try:
                found = self.limits_for(endpoint)
            except Exception:  # a lookup that fails must not take the endpoint down
                logger.exception("cannot read the limits of endpoint %s", endpoint)
                found = None
            if found is not None:
                return found
        return self.limits

    def payload_limit_for(self, path: str) -> int:
        """The body limit of a POST to ``path``, decided before the body is read."""
        if converse.PATH.match(path):
            return converse.PAYLOAD_LIMIT
        match = _RUNTIME_PATH.match(path)
        if match and self.limits_for is not None:
            limits = self.limits_of(unquote(match.group(1)))
            if limits is not None and limits is not self.limits:
                return limits.payload_limit_bytes
        return self.payload_limit

    def wait_quiet(self, timeout: float) -> bool:
        """Wait until no POST is being handled, so ``calls`` holds every request received.
        A client that gave up on a slow answer leaves its request running here a while."""
        with self._quiet:
            return self._quiet.wait_for(lambda: self._open == 0, timeout)

    # -- requests (called from the handler threads)
    def handle_post(self, path: str, headers: Any, body: bytes | None) -> _Response | None:
        """One POST; ``body`` None: its Content-Length was over ``payload_limit`` (not read)."""
        with self._quiet:
            self._open += 1
        try:
            return self._handle_post(path, headers, body)
        finally:
            with self._quiet:
                self._open -= 1
                self._quiet.notify_all()

    def _handle_post(self, path: str, headers: Any, body: bytes | None) -> _Response | None:
        started = time.perf_counter()
        endpoint = None
        if path == "/invocations":
            outcome = self._container(body, headers.get("Content-Type"), self.limits)
        elif match := _RUNTIME_PATH.match(path):
            endpoint = unquote(match.group(1))
            outcome = self._runtime(endpoint, headers, body)
        elif match := converse.PATH.match(path):
            endpoint = unquote(match.group(1))
            outcome = self._converse(endpoint, headers, body)
        elif (match := _ASYNC_PATH.match(path)) and self.async_handler is not None:
            endpoint = unquote(match.group(1))
            outcome = _Outcome(self.async_handler(endpoint, headers, body), style="async")
        else:
            return _Response.json(404, {"error": f"no route for POST {path}",
                                        "error_type": "not_found"})
        seconds = time.perf_counter() - started
        status = outcome.response.status if outcome.response else None
        with self._calls_lock:
            self._calls.append({"endpoint": endpoint, "style": outcome.style, "status": status,
                                "seconds": seconds, "images": outcome.images})
        logger.info("POST %s: %s, %s image(s), status %s in %.3f s",
                    path, outcome.style, outcome.images, status, seconds)
        return outcome.response

    def _converse(self, model_id: str, headers: Any, body: bytes | None) -> _Outcome:
        """Bedrock's Converse (local/converse.py), answered by this server's backend."""
        found = _CREDENTIAL_REGION.search(headers.get("Authorization", ""))
        region = found.group(1) if found else DEFAULT_REGION
        check = self.authorize_model

        def authorize(arn: str) -> str | None:
            return check(headers, arn) if check is not None else None

        status, payload, extra, images = converse.handle(
            model_id, body, region, ACCOUNT_ID, self._generate_converse, authorize)
        extra["x-amzn-RequestId"] = str(uuid.uuid4())
        return _Outcome(_Response.json(status, payload, **extra), style="converse",
                        images=images)

    def _generate_converse(self, turns: list[Turn], params: GenerationParams) -> str:
        try:
            return self._generate(turns, params)
        except InvocationError as error:  # the backend failed: Bedrock's ModelErrorException
            raise converse.ConverseError(424, "ModelErrorException", str(error)) from None

    def _wait_held(self, hold: Hold) -> None:
        with self._capacity_lock:
            hold.held += 1
        hold.arrived.set()
        until = time.monotonic() + hold.timeout
        while not hold.released.wait(0.05):
            if self._stopping.is_set() or time.monotonic() > until:
                return

    def _runtime(self, endpoint: str, headers: Any, body: bytes | None) -> _Outcome:
        """What SageMaker adds in front of the container."""
        found = _CREDENTIAL_REGION.search(headers.get("Authorization", ""))
        region = found.group(1) if found else DEFAULT_REGION
        denied = self.authorize(headers, endpoint, region) if self.authorize else None
        if denied is not None:  # checked first: AWS answers it even for a missing endpoint
            return _Outcome(_aws_error(403, "AccessDeniedException", denied))
        if self.endpoint_exists is not None and not self.endpoint_exists(endpoint):
            return _Outcome(_aws_error(
                400, "ValidationError", f"Endpoint {endpoint} of account {ACCOUNT_ID} not found."
            ))
        plan = self.faults.take()
        if plan.delay:
            self._stopping.wait(plan.delay)
        if plan.drop:
            return _Outcome(None)
        if plan.fail is not None:
            return _Outcome(self._injected_failure(plan.fail, endpoint, region))

        content_type = headers.get("Content-Type")
        if content_type is None:
            logger.warning("invoke_endpoint without ContentType: pass "
                           "ContentType='application/json', the TGI container expects it")
            content_type = "application/json"
        with self._capacity_lock:
            if self.capacity is not None and self._in_flight >= self.capacity:
                self.overloads += 1
                return _Outcome(self._overloaded(endpoint, region))
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            if plan.hold is not None:
                self._wait_held(plan.hold)
            if self.service_seconds:
                self._stopping.wait(self.service_seconds)
            outcome = self._container(body, content_type, self.limits_of(endpoint))
        finally:
            with self._capacity_lock:
                self._in_flight -= 1
        response = outcome.response
        assert response is not None  # the container always answers
        if 200 <= response.status < 300:
            response.headers["X-Amzn-Invoked-Production-Variant"] = VARIANT
        else:
            outcome.response = self._model_error(endpoint, region, response.status,
                                                 response.body.decode("utf-8", "replace"))
        return outcome

    @staticmethod
    def _model_error(endpoint: str, region: str, status: int, original: str) -> _Response:
        """SageMaker's wrapping of a non-2xx container answer: HTTP 424 ModelError."""
        log_group = f"/aws/sagemaker/Endpoints/{endpoint}"
        kind = "client" if status < 500 else "server"
        message = (
            f'Received {kind} error ({status}) from primary with message "{original}". See '
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#logEventViewer:group={log_group} in account {ACCOUNT_ID} for more information."
        )
        return _aws_error(
            424, "ModelError", message, OriginalStatusCode=status, OriginalMessage=original,
            LogStreamArn=f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{log_group}",
        )

    def _overloaded(self, endpoint: str, region: str) -> _Response:
        if self.overload_status == 503:
            return _aws_error(503, "ServiceUnavailable", "The endpoint is over capacity.")
        body = json.dumps({"error": "Model is overloaded", "error_type": "overloaded"})
        return self._model_error(endpoint, region, 429, body)

    def _injected_failure(self, status: int, endpoint: str, region: str) -> _Response:
        code, message = RUNTIME_FAULTS[status]
        if code == "ModelError":
            body = json.dumps({"error": message, "error_type": "generation"})
            return self._model_error(endpoint, region, 500, body)
        return _aws_error(status, code, message)

    def _container(self, body: bytes | None, content_type: str | None,
                   limits: ContainerLimits | None = None) -> _Outcome:
        """The container: one request in, one answer out (errors in TGI's shape, or with
        ``limits`` in the shape of that container's engine)."""
        outcome = _Outcome(None)
        try:
            media_type = (content_type or "").split(";")[0].strip().lower()
            if media_type != "application/json" and not media_type.endswith("+json"):
                raise InvocationError(415, "Expected request with `Content-Type: "
                                      f"application/json`, got {content_type!r}")
            if body is None:  # the router's body limit: refused before any JSON is parsed
                outcome.response = _Response(413, PAYLOAD_TOO_LARGE,
                                             {"Content-Type": "text/plain; charset=utf-8"})
                return outcome
            try:
                request = json.loads(body)
            except ValueError as error:
                raise InvocationError(422, f"Failed to parse the request body as JSON: {error}",
                                      "validation") from error
            if isinstance(request, dict) and "messages" in request:
                outcome.style = "messages"
                answer = self._chat(request, outcome, limits)
            elif isinstance(request, dict) and "inputs" in request:
                outcome.style = "tgi"
                answer = self._generate_tgi(request, outcome, limits)
            else:
                raise InvocationError(422, "Failed to deserialize the JSON body into the target "
                                      "type: missing field `inputs` (or `messages`)")
            outcome.response = _Response.json(200, answer)
        except InvocationError as error:
            if (limits is not None and limits.engine == "vllm" and error.status == 422
                    and error.body is None):  # a malformed request: vLLM's 400
                error = _refusal(limits, error.message.removeprefix("Input validation error: "))
            outcome.response = error.response()
        return outcome

    def _fetch(self, url: str) -> Image.Image:
        return load_image(url, self.fetch_timeout, self.fetch_origins)

    def _generate_tgi(self, request: dict[str, Any], outcome: _Outcome,
                      limits: ContainerLimits | None = None) -> list[dict[str, str]]:
        prompt, raw = request["inputs"], request.get("parameters") or {}
        if limits is not None:
            checked = check_request(request, "tgi", limits, self._fetch)
            turns, params = checked.turns, checked.params
        else:
            if not isinstance(prompt, str) or not prompt.strip():
                raise _invalid("`inputs` must be a non-empty string")
            if not isinstance(raw, dict):
                raise _invalid("`parameters` must be an object")
            params = _checked_params(raw.get("max_new_tokens"), raw.get("do_sample", False),
                                     raw.get("temperature"), raw.get("top_p"), raw.get("top_k"),
                                     raw.get("stop"))
            turns = parse_tgi_prompt(prompt, self._fetch)
        if not (limits is not None and limits.engine == "vllm"):  # a TGI route only
            params["grammar"] = tgi_grammar(raw.get("grammar"), limits)
        outcome.images = sum(len(turn.images) for turn in turns)
        text = self._generate(turns, params)
        full_text = raw.get("return_full_text")
        if full_text is None:
            full_text = self.default_return_full_text
        return [{"generated_text": prompt + text if full_text else text}]

    def _chat(self, request: dict[str, Any], outcome: _Outcome,
              limits: ContainerLimits | None = None) -> dict[str, Any]:
        if limits is not None:
            checked = check_request(request, "messages", limits, self._fetch)
            turns, params = checked.turns, checked.params
        else:
            temperature = request.get("temperature")
            # TGI's chat route samples unless temperature is 0, which means greedy.
            greedy = temperature is not None and temperature == 0
            params = _checked_params(request.get("max_tokens"), not greedy,
                                     None if greedy else temperature, request.get("top_p"), None,
                                     request.get("stop"))
            turns = parse_messages(request["messages"], self._fetch)
        params["grammar"] = chat_response_format(request.get("response_format"), limits)
        outcome.images = sum(len(turn.images) for turn in turns)
        text = self._generate(turns, params)
        prompt_words, answer_words = _word_count(turns), len(text.split())
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.backend.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": "stop"}],
            # Words, not tokens: the stand-in has no tokenizer.
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": answer_words,
                      "total_tokens": prompt_words + answer_words},
        }

    def _generate(self, turns: list[Turn], params: GenerationParams) -> str:
        lock = nullcontext() if self.backend.thread_safe else self._backend_lock
        try:
            with lock:
                return self.backend.generate(turns, params)
        except Exception as error:  # whatever the backend raises is TGI's GenerationError
            logger.exception("%s failed", self.backend.description)
            raise InvocationError(424, f"Request failed during generation: {error}",
                                  "generation") from error


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients at once must queue, not be refused

    def __init__(self, address: tuple[str, int], handler: type, model_server: ModelServer):
        super().__init__(address, handler)
        self.model_server = model_server

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Only I/O errors get here (a client that hung up, e.g. after its read timeout):
        # log them instead of socketserver's traceback on stderr.
        logger.debug("connection from %s ended early", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stopped server really is down (no idle
    # keep-alive connection survives to answer a pooled client).
    protocol_version = "HTTP/1.0"
    server_version = "visual-tourism-local-model-server"
    server: _HTTPServer

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/ping":
            self._send(_Response(200, b"", {"Content-Type": "text/plain"}))
        else:
            self._send(_Response.json(404, {"error": f"no route for GET {self.path}",
                                            "error_type": "not_found"}))

    def do_POST(self) -> None:
        try:
            length = max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            length = 0
        body: bytes | None = None
        limit = self.server.model_server.payload_limit_for(self.path.split("?")[0])
        if length <= limit:
            body = self.rfile.read(length)
        elif length <= _DRAIN_LIMIT:
            remaining = length
            while remaining > 0:  # read and drop: never held in memory
                chunk = self.rfile.read(min(65536, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
        else:
            self.close_connection = True  # answered unread; nothing else on this connection
        try:
            response = self.server.model_server.handle_post(
                self.path.split("?")[0], self.headers, body
            )
        except Exception as error:  # a bug here must still answer, and be logged
            logger.exception("the model server failed on POST %s", self.path)
            response = _Response.json(500, {"error": f"local model server error: {error}",
                                            "error_type": "internal"})
        if response is None:
            self.close_connection = True  # injected drop: no status line at all
            return
        self._send(response)

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        logger.debug("%s %s", self.address_string(), format % args)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m visual_tourism.local.model_server``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model", help="model id or path, or 'stand-in' "
                        "(default: $VT_LOCAL_MODEL or the default model)")
    parser.add_argument("--allow-fetch", action="append", default=[], metavar="ORIGIN",
                        help="an http(s) origin images may be fetched from, e.g. "
                        "http://127.0.0.1:5000 (repeatable; default: data: URIs only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    backend, reason = load_backend(args.model)
    print(reason)
    with ModelServer(backend, port=args.port, fetch_origins=args.allow_fetch) as server:
        print(f"Serving {backend.description} at {server.url} (Ctrl-C to stop)")
        with suppress(KeyboardInterrupt):
            while True:  # wakes to run Python's signal handler (see cli.common.wait_for_interrupt)
                time.sleep(0.5)


if __name__ == "__main__":
    main()
