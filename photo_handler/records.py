"""The photo's one record: its key, the result already there, and the conditional write.

A result is written only if it answers the photo's current upload (``upload.is_current``) and
nobody answered a newer upload since the result was read (the result's ETag, IfMatch or
IfNoneMatch); otherwise the newer upload's own event answers the key, and this one ends
"superseded".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import clients, logs
from . import upload as uploads
from .errors import ResultWriteError, describe
from .logs import log
from .settings import Settings

MAX_KEY_BYTES = 1024  # S3's limit on an object key, in UTF-8 bytes
RESULT_FIELDS = ("status", "answer", "fields", "fields_error", "error", "input", "image", "model",
                 "preset", "places", "usage", "timing", "request_id", "written_at")

_UNKNOWN = "?"  # the earlier result could not be checked: write unconditionally


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


def new_result(settings: Settings, bucket: str, key: str, etag: str | None) -> dict[str, Any]:
    """The record's first fields: what was asked of which model ("error" until answered)."""
    return {
        "status": "error",
        "input": {"bucket": bucket, "key": key, "etag": etag, "size": None},
        "model": {
            "endpoint": settings.endpoint, "profile": settings.model_profile,
            "model_id": settings.model_id, "request_style": settings.request_style,
            "image_transport": settings.image_transport,
        },
    }


def earlier_result(s3: Any, bucket: str, key: str,
                   ) -> tuple[str | None, str | None, str | None]:
    """(what a final result for ``key`` answers (answer_key), which upload it answers
    (``upload.fingerprint``; None from results written before it was kept), the result's own
    ETag).

    The result's ETag makes the final write conditional, so that a slow invocation for an
    older upload cannot overwrite the answer to a newer one (None: no result yet).
    """
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if clients.error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None, None, None
        log.warning("Cannot check for an earlier result %s: %s", key, describe(exc))
        return None, None, _UNKNOWN
    except BotoCoreError as exc:  # network trouble: answer again rather than lose the photo
        log.warning("Cannot check for an earlier result %s: %s", key, describe(exc))
        return None, None, _UNKNOWN
    meta = head.get("Metadata", {})
    answered = meta.get("input-etag") if meta.get("final") != "false" else None
    if answered is None:
        return None, None, head["ETag"]
    return answer_key(answered, meta.get("choice", "")), meta.get("upload"), head["ETag"]


def same_upload(done_upload: str | None, upload: Mapping[str, Any] | None) -> bool:
    """Whether the final result there (its ``upload`` metadata) answers this very upload: a
    redelivered event, to end as a duplicate before anything else is read or asked."""
    return done_upload is not None and done_upload == uploads.fingerprint(upload)


def answer_key(etag: str | None, choice: str = "") -> str:
    """What a result answers: the upload (its ETag) and, with presets, the preset (name and
    version) and language that answered it, so that the same photo asked again with another
    preset, language or an edited preset is answered again, and a redelivery is not."""
    return f"{etag or ''}|{choice}" if choice else (etag or "")


def choice(result: Mapping[str, Any]) -> str:
    """The preset part of answer_key, from the record's ``preset`` ('' without presets)."""
    info = result.get("preset")
    if not info:
        return ""
    return f"{info.get('name')}@{info.get('version')}:{info.get('language')}"


def write_result(
    s3: Any, bucket: str, key: str, out_key: str, etag: str | None, seen: str | None,
    body: bytes, metadata: dict[str, str], upload: Mapping[str, Any] | None = None,
) -> bool:
    """Write the result if it answers the photo's current upload (``upload``, from
    upload.upload_of; None: only its ETag is known) and no newer upload has been answered
    since the result was read (``seen``); False: superseded, nothing written."""
    # A HEAD of the photo first: the result's ETag (IfMatch) only tells that nobody wrote
    # since we read it. A newer upload may still be unanswered, or have ended without a write
    # (a duplicate of the record there), and the same bytes re-asked with another preset or
    # language keep the ETag: only the photo's own ETag, metadata and date tell.
    if upload is not None and not uploads.is_current(s3, bucket, key, upload, strict=False):
        return False
    args = {"Bucket": bucket, "Key": out_key, "ContentType": "application/json",
            "Metadata": metadata, "Body": body}
    condition = {} if seen == _UNKNOWN else (
        {"IfMatch": seen} if seen else {"IfNoneMatch": "*"})
    if not condition:
        s3.put_object(**args)
        return True
    if clients.accepts(s3, "PutObject", *condition):
        try:
            s3.put_object(**args, **condition)
            return True
        except ClientError as exc:
            if clients.error_code(exc) not in ("PreconditionFailed",
                                               "ConditionalRequestConflict", "412"):
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
        if now == _UNKNOWN or uploads.same_etag(now, seen):
            s3.put_object(**args)
            return True
    # Someone wrote this result since we looked: ours only counts if the photo is still ours,
    # and if that writer did not answer this same upload with a newer version of our preset
    # (two uploads within the same second with the same bytes and metadata look alike).
    if not uploads.is_current(s3, bucket, key, upload or {"etag": etag}, strict=True):
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
        if clients.error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return {}
        log.warning("Cannot check the result %s: %s", out_key, describe(exc))
    except BotoCoreError as exc:
        log.warning("Cannot check the result %s: %s", out_key, describe(exc))
    return None


def _newer_preset_there(ours: Mapping[str, str], head: Mapping[str, Any] | None) -> bool:
    """Whether the result there answers the same upload and preset/language as ``ours`` (the
    metadata we would write) with a higher preset version (presets only go up on edits)."""
    theirs = (head or {}).get("Metadata") or {}
    if not uploads.same_etag(theirs.get("input-etag"), ours.get("input-etag")):
        return False
    mine, other = _split_choice(ours.get("choice", "")), _split_choice(theirs.get("choice", ""))
    if mine is None or other is None or mine[0::2] != other[0::2]:
        return False
    return other[1] > mine[1]


def _split_choice(choice: str) -> tuple[str, int, str] | None:
    """choice's ``name@version:language`` (names have no '@' or ':') as its three parts."""
    name, at, rest = choice.partition("@")
    version, colon, language = rest.partition(":")
    if not (at and colon):
        return None
    return name, int(version) if version.isdigit() else -1, language


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def store(s3: Any, bucket: str, key: str, out_key: str, result: Mapping[str, Any], final: bool,
          seen: str | None, upload: Mapping[str, Any] | None, summary: Mapping[str, Any],
          ) -> bool:
    """Write ``result`` as the photo's record (fields in reading order, ``write_result``'s
    rules); False: superseded. Results are keyed by the input's ETag in their metadata, so a
    redelivered event finds the answer with one HEAD; a result that is not ``final`` (a
    transient failure) lets the next delivery or upload try again. ResultWriteError (the
    summary line logged) when S3 refuses the write."""
    etag = result["input"]["etag"]
    result = {name: result[name] for name in RESULT_FIELDS if name in result}
    metadata = {"input-etag": etag or "", "final": str(final).lower()}
    if choice(result):
        metadata["choice"] = choice(result)
    if mark := uploads.fingerprint(upload):
        metadata["upload"] = mark
    try:
        return write_result(s3, bucket, key, out_key, etag, seen,
                            json.dumps(result, ensure_ascii=False, indent=2).encode(), metadata,
                            upload)
    except Exception as exc:
        logs.summary({**summary, "status": "write_failed", "error_code": "result_write_failed"})
        raise ResultWriteError(f"Could not write s3://{bucket}/{out_key}: {describe(exc)}") from exc
