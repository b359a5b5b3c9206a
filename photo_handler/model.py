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
                    "as JPEG if not) and upload it again.", attempts,
                ) from None
            image_retries += trouble == "fetch"
            if not retryable(exc):
                raise permanent_failure(exc, settings, attempts) from None
            if attempts >= settings.max_attempts:
                raise Failure(
                    "model_unavailable",
                    f"Endpoint {settings.endpoint} failed {attempts} times (last: "
                    f"{describe(exc)}): upload the photo again later; if it persists, check "
                    "the endpoint's logs in CloudWatch.", attempts,
                ) from None
            last_error = describe(exc)
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
                f"The endpoint's answer is not JSON ({scrub(repr(raw[:200]), 200)}): check the "
                "model container.",
                attempts,
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

