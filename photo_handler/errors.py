"""The failures a photo can meet, and foreign text made safe to keep in a record or a log line.

A failure becomes the photo's error record (``code`` and ``message``: what to do), except
ResultWriteError, the one failure that makes the invocation fail so that Lambda runs it again.
"""

from __future__ import annotations

import re

from botocore.exceptions import ClientError

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


class ResultWriteError(RuntimeError):
    """The result could not be stored: the one failure that makes the invocation fail."""


# Foreign text (a container's error, S3's message, an exception) can carry a presigned URL's
# signature and session token or the account id: neither belongs in a record or a log line.
# Kept as patterns that ``re`` compiles on first use and caches: only a failure or a warning
# needs them, so a cold start does not pay for compiling them.
_URL_QUERY = r"(?i)(\bhttps?://[^\s?#\"'<>]*)\?[^\s\"'<>)\]]*"
_SECRET_PARAMS = (r"(?i)\b(X-Amz-[A-Za-z-]+|AWSAccessKeyId|Signature|Expires|x-amz-security-token)"
                  r"=[^&\s\"'<>]*")
_ACCESS_KEY = r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"
_ACCOUNT_ID = r"(?<!\d)\d{12}(?!\d)"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # every answer is cleaned of these


def scrub(text: str, limit: int = ERROR_TEXT_MAX_CHARS) -> str:
    """``text`` without URL query strings, signing parameters, access key or account ids and
    control characters, cut to ``limit`` characters."""
    text = re.sub(_URL_QUERY, r"\1?<query removed>", str(text))
    text = re.sub(_SECRET_PARAMS, r"\1=<removed>", text)
    text = re.sub(_ACCESS_KEY, "<access key>", text)
    text = re.sub(_ACCOUNT_ID, "<account>", text)
    text = CONTROL.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def describe(exc: Exception) -> str:
    """The error in one line, scrubbed (see scrub): safe for a record and a log line."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return scrub(f"{error.get('Code')}: {error.get('Message')}")
    return scrub(f"{type(exc).__name__}: {exc}")
