"""Calling the endpoint: retries of transient failures within the time the invocation has
left, and every failure turned into a Failure whose message says what to do."""

from __future__ import annotations

import json
import random
import re
import time
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from . import clients
from .errors import Failure, describe, scrub
from .logs import log
from .settings import Settings

# SageMaker/TGI failures worth another attempt. ModelError (424) covers container errors and
# the 60 s container timeout; TGI answers 429 when its queue is full.
RETRYABLE_CODES = {
    "ModelError", "ModelNotReadyException", "ThrottlingException", "InternalFailure",
    "ServiceUnavailable", "InternalDependencyException", "TooManyRequestsException",
}
# ...unless the container said the request itself is wrong: the same request fails again.
MODEL_INPUT_STATUSES = {400, 413, 422}
MIN_ATTEMPT_SECONDS = 1.0  # an attempt with less time left than this is not started


class Attempts:
    """The retry policy of a model call (the endpoint's, and Bedrock's in converse.py): an
    attempt starts only while MIN_ATTEMPT_SECONDS are left before ``deadline`` less the margin
    for writing the result, with a read timeout of at most what is left; failed attempts that
    may pass are retried after exponential backoff with jitter."""

    def __init__(self, settings: Settings, deadline: float, who: str, sleep: Any) -> None:
        self.settings, self.who, self.sleep = settings, who, sleep
        self.stop_at = deadline - settings.result_margin_seconds
        self.count, self.last_error = 0, "none"

    def start(self) -> int:
        """Begin the next attempt: its read timeout in seconds (out_of_time if none is left)."""
        left = self.stop_at - time.monotonic()
        if left < MIN_ATTEMPT_SECONDS:
            raise self.out_of_time()
        self.count += 1
        return max(1, int(min(self.settings.model_timeout_seconds + 5, left)))

    def back_off(self, error: str, target: str) -> None:
        """After an attempt failed with ``error``: wait before the next (out_of_time when
        there is no time to wait and try once more)."""
        self.last_error = error
        log.warning("Attempt %d of %s failed, retrying: %s", self.count, target, error)
        jitter = random.uniform(0.5, 1.0)
        delay = self.settings.retry_base_seconds * 2 ** (self.count - 1) * jitter
        if time.monotonic() + delay + MIN_ATTEMPT_SECONDS > self.stop_at:
            raise self.out_of_time() from None  # not the attempt's error: the time it left
        self.sleep(delay)

    def out_of_time(self) -> Failure:
        return Failure(
            "model_timeout",
            f"{self.who} did not answer in the time this invocation had left (attempts: "
            f"{self.count}, last error: {self.last_error}): upload the photo again; if it keeps "
            "happening, raise the Lambda timeout.", self.count,
        )


def retryable(exc: Exception) -> bool:
    if isinstance(exc, BotoConnectionError | HTTPClientError):  # incl. timeouts
        return True
    if isinstance(exc, ClientError):
        code, original = clients.error_code(exc), exc.response.get("OriginalStatusCode")
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
# Patterns that ``re`` compiles on first use (only a failed call needs them), not at import.
_IMAGE_DECODE_FAILURE = (
    r"(?i)could not load image|cannot (identify|decode) image|unrecognized image|image file "
    r"is truncated|invalid (base64|image data uri)|\b4\d\d client error\b[^\n]*\bfor url\b")
_IMAGE_FETCH_FAILURE = (
    r"(?i)cannot fetch image|\b5\d\d server error\b[^\n]*\bfor url\b|HTTPS?ConnectionPool|"
    r"max retries exceeded|read timed out|connect(ion)? ?timeout|"
    r"connection (aborted|refused|reset)")


def image_failure(exc: Exception, settings: Settings) -> str | None:
    """"decode" (the same bytes fail again), "fetch" (the download failed: may pass once
    more) or None: a container answer that says it could not fetch or decode an image.

    Only an answer with the container's own image-failure status counts
    (ContainerLimits.image_failure_status: 424 for Idefics on TGI 1.4.5); without
    CONTAINER_LIMITS, 424 (the original design's container).
    """
    if not isinstance(exc, ClientError) or clients.error_code(exc) != "ModelError":
        return None
    limits = settings.container_limits
    status = limits.image_failure_status if limits is not None else 424
    if exc.response.get("OriginalStatusCode") != status:
        return None
    text = f"{exc.response.get('OriginalMessage', '')} {exc.response['Error'].get('Message')}"
    if re.search(_IMAGE_DECODE_FAILURE, text):
        return "decode"
    if re.search(_IMAGE_FETCH_FAILURE, text):
        return "fetch"
    return None


def invoke_model(
    body: bytes, settings: Settings, deadline: float, sleep: Any = time.sleep,
) -> tuple[Any, int]:
    """Call the endpoint until it answers; return (decoded JSON, attempts) or raise Failure.

    Transient failures are retried with exponential backoff and jitter, up to MAX_ATTEMPTS
    and never past ``deadline`` (monotonic seconds) less the margin for writing the result.
    """
    attempts, image_retries = Attempts(settings, deadline, "The model", sleep), 0
    while True:
        timeout = attempts.start()
        try:
            response = clients.client("sagemaker-runtime", timeout).invoke_endpoint(
                EndpointName=settings.endpoint, ContentType="application/json",
                Accept="application/json", Body=body,
            )
            raw = response["Body"].read()
        except (ClientError, BotoConnectionError, HTTPClientError) as exc:
            # An image the container could not decode fails the same way every time: no retry.
            # One it could not download (a timeout, S3's 5xx) gets one more attempt, not four:
            # the presigned URL stays valid, and a second failure says S3 or the endpoint's
            # network is the problem, which more attempts within this invocation do not fix.
            trouble = image_failure(exc, settings)
            if trouble == "decode" or (trouble == "fetch" and image_retries >= 1):
                raise Failure(
                    "model_rejected_input",
                    f"The model container could not {trouble} an image of the request "
                    f"({describe(exc)}): check that the photo opens in a photo app (export it "
                    "as JPEG if not) and upload it again.", attempts.count,
                ) from None
            image_retries += trouble == "fetch"
            if not retryable(exc):
                raise permanent_failure(exc, settings, attempts.count) from None
            if attempts.count >= settings.max_attempts:
                raise Failure(
                    "model_unavailable",
                    f"Endpoint {settings.endpoint} failed {attempts.count} times (last: "
                    f"{describe(exc)}): upload the photo again later; if it persists, check "
                    "the endpoint's logs in CloudWatch.", attempts.count,
                ) from None
            attempts.back_off(describe(exc), settings.endpoint)
            continue
        try:
            return json.loads(raw), attempts.count
        except ValueError:
            raise Failure(
                "bad_model_response",
                f"The endpoint's answer is not JSON ({scrub(repr(raw[:200]), 200)}): check the "
                "model container.",
                attempts.count,
            ) from None


def permanent_failure(exc: Exception, settings: Settings, attempts: int) -> Failure:
    message = describe(exc)
    if isinstance(exc, ClientError) and clients.error_code(exc) == "ModelError":
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

