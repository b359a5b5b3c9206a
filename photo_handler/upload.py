"""Reading the photo, and telling one upload of a key from another.

A key can be uploaded again while its first upload is being answered: every read after the
first is pinned to the ETag read then, and the result is written only if the photo is still
that upload (``is_current``), so that an answer never describes other bytes than it says.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import clients
from .errors import PhotoChanged, describe
from .logs import log

HEAD_BYTES = 256 * 1024  # holds the header of nearly every photo, EXIF included


def read_head(s3: Any, bucket: str, key: str,
              ) -> tuple[bytes, str | None, int, dict[str, str], dict[str, Any] | None]:
    """First HEAD_BYTES of the object with its ETag, total size, user metadata
    (x-amz-meta-*: the preset and language asked for) and which upload it is (upload_of;
    None for an empty object), in one ranged GET."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEAD_BYTES - 1}")
    except ClientError as exc:
        if clients.error_code(exc) == "InvalidRange":  # S3's answer for a range of an empty object
            return b"", None, 0, {}, None
        raise
    content_range = response.get("ContentRange") or ""  # "bytes 0-262143/4500000"
    size = int(content_range.rpartition("/")[2]) if "/" in content_range else None
    data = response["Body"].read()
    return (data, response["ETag"].strip('"'), size if size is not None else len(data),
            dict(response.get("Metadata") or {}), upload_of(response))


def read_pinned(s3: Any, bucket: str, key: str, etag: str | None, size: int) -> bytes:
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
        if clients.error_code(exc) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
            raise PhotoChanged() from None
        raise
    data = response["Body"].read(size + 1)
    if len(data) != size:  # another object than the one whose size was checked
        raise PhotoChanged()
    return data


def upload_of(response: Mapping[str, Any]) -> dict[str, Any]:
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


def fingerprint(upload: Mapping[str, Any] | None) -> str | None:
    """A short digest of a whole ``upload_of`` (None for less): its result keeps it, so that a
    redelivered event for that same upload is known whatever changed since (a preset edited,
    the presets table unreadable), and a new upload of the same bytes is not. S3 dates an
    upload to the second: two uploads of the same bytes and metadata within one second of an
    unversioned bucket are one, and are answered once."""
    if not upload or "modified" not in upload:
        return None
    text = json.dumps(dict(upload), sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def is_current(s3: Any, bucket: str, key: str, upload: Mapping[str, Any],
               strict: bool) -> bool:
    """Whether the photo is still ``upload`` (only its ETag is compared when that is all
    ``upload`` holds). A deleted photo is not. When S3 cannot tell (an error other than 404):
    ``strict`` raises (the caller's retry asks again), else True (the conditional write
    still guards the result)."""
    try:
        now = upload_of(s3.head_object(Bucket=bucket, Key=key))
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and clients.error_code(exc) in (
                "404", "NoSuchKey", "NotFound"):
            return False
        if strict:
            raise
        log.warning("Cannot check the photo %s before writing its result: %s", key,
                    describe(exc))
        return True
    return all(now[name] == value for name, value in upload.items())


def same_etag(a: str | None, b: str | None) -> bool:
    return (a or "").strip('"') == (b or "").strip('"')
