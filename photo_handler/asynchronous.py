"""Asynchronous inference (INFERENCE_MODE=async), imported only in that mode.

Submit (an upload under INPUT_PREFIX, after the same checks as real-time mode):

1. the request body, images inline as data URIs (a queued request may run hours later, when a
   presigned URL signed with this function's session credentials may no longer work), is
   written to ``ASYNC_PREFIX/requests/<inference id>.json``;
2. ``InvokeEndpointAsync`` queues it, with ``RequestTTLSeconds`` and an ``InferenceId`` made
   from the bucket, key and ETag of the upload;
3. the locations SageMaker returns (never rebuilt here: the file name is SageMaker's) each get
   a small marker under ``ASYNC_PREFIX/pending/``, named by a hash of the location, holding the
   partial record (input, image, model) and where the answer goes.

Complete (SageMaker wrote the output or failure object; its S3 notification brings us here):
the marker for that location gives the photo; the usual record is written under OUTPUT_PREFIX
with the same rules as real-time mode (ETag metadata, one record per upload, written only if
the photo is still the upload that was queued, conditional on the result read at submit), else
the request ends "superseded"; the request, markers and SageMaker's object are then deleted.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import clients, logs, records
from .answer import parse_result
from .errors import Failure, describe, scrub
from .logs import log
from .model import permanent_failure, retryable
from .settings import Settings

MARKER_WAIT_SECONDS = 10.0  # an output can land before the submit has written its markers
SUBMIT_ATTEMPTS = 3


def inference_id(bucket: str, key: str, etag: str | None, variant: str = "") -> str:
    """Tied to the upload (1-64 characters, as InvokeEndpointAsync allows). ``variant`` tells
    apart requests for the same bytes (same ETag) asked again with another preset, language
    or preset version: each needs its own request object until SageMaker has read it."""
    tail = f"|{variant}" if variant else ""
    return hashlib.sha256(f"{bucket}/{key}#{etag}{tail}".encode()).hexdigest()[:40]


def marker_key(settings: Settings, location: str) -> str:
    digest = hashlib.sha256(location.encode()).hexdigest()[:40]
    return f"{settings.async_prefix}pending/{digest}.json"


def _stops(request: Mapping[str, Any]) -> list[str]:
    stops = request.get("parameters", {}).get("stop") or request.get("stop") or []
    return [stops] if isinstance(stops, str) else list(stops)


def _invoke(settings: Settings, **params: Any) -> dict[str, Any]:
    """InvokeEndpointAsync, retried briefly on throttling and 5xx (it only queues)."""
    client = clients.client("sagemaker-runtime", 30)
    # The runtime's bundled SDK may predate a parameter (all of these are in botocore 1.34,
    # checked): leave out what it does not know rather than fail every photo.
    for name in ("RequestTTLSeconds", "InvocationTimeoutSeconds"):
        if name in params and not clients.accepts(client, "InvokeEndpointAsync", name):
            log.warning("This SDK has no InvokeEndpointAsync %s: sent without it", name)
            del params[name]
    for attempt in range(1, SUBMIT_ATTEMPTS + 1):
        try:
            return client.invoke_endpoint_async(EndpointName=settings.endpoint, **params)
        except (ClientError, BotoCoreError) as exc:
            retry = isinstance(exc, BotoCoreError) or retryable(exc)
            if not retry or attempt == SUBMIT_ATTEMPTS:
                if isinstance(exc, ClientError):
                    raise permanent_failure(exc, settings, attempt) from None
                raise Failure(
                    "model_unavailable",
                    f"Endpoint {settings.endpoint} could not queue the photo "
                    f"({describe(exc)}): upload "
                    "it again later.", attempt,
                ) from None
            time.sleep(settings.retry_base_seconds * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def submit(
    s3: Any, settings: Settings, bucket: str, key: str, out_key: str,
    request: dict[str, Any], result: dict[str, Any], summary: dict[str, Any],
    structured: bool = False, upload: Mapping[str, Any] | None = None,
    seen: str | None = None,
) -> dict[str, Any]:
    """Queue the request; return the summary line ("queued").

    ``structured``: the preset asked for a structured answer; the completion parses it as
    real-time mode does (answer.parse_result), from the marker. ``upload`` (upload.upload_of)
    and ``seen`` (the result's ETag when the photo was read) go in the marker: the
    completion writes under the same rules as a real-time answer that took this long.
    """
    etag = result["input"]["etag"]
    iid = inference_id(bucket, key, etag, json.dumps(
        [upload, records.choice(result)], sort_keys=True) if upload else "")
    payload_key = f"{settings.async_prefix}requests/{iid}.json"
    s3.put_object(Bucket=bucket, Key=payload_key, Body=json.dumps(request).encode(),
                  ContentType="application/json")
    submitted = time.time()
    response = _invoke(
        settings, InputLocation=f"s3://{bucket}/{payload_key}", InferenceId=iid,
        ContentType="application/json", Accept="application/json",
        RequestTTLSeconds=settings.async_ttl_seconds,
        InvocationTimeoutSeconds=settings.async_invocation_timeout_seconds,
    )
    output, failure = response["OutputLocation"], response.get("FailureLocation")
    marker = {
        "bucket": bucket, "key": key, "out_key": out_key, "etag": etag,
        "inference_id": response.get("InferenceId") or iid, "payload_key": payload_key,
        "output_location": output, "failure_location": failure,
        "submitted_at": submitted, "ttl_seconds": settings.async_ttl_seconds,
        "request_style": settings.request_style, "stops": _stops(request), "result": result,
        "structured": structured, "upload": upload, "seen": seen,
    }
    body = json.dumps(marker).encode()
    for location in filter(None, (output, failure)):
        s3.put_object(Bucket=bucket, Key=marker_key(settings, location), Body=body,
                      ContentType="application/json")
    return {**summary, "status": "queued", "inference_id": marker["inference_id"]}


def _read_marker(s3: Any, settings: Settings, bucket: str, location: str) -> dict | None:
    key = marker_key(settings, location)
    waited_until = time.monotonic() + MARKER_WAIT_SECONDS
    while True:
        try:
            return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if clients.error_code(exc) not in ("NoSuchKey", "404") or (
                time.monotonic() > waited_until
            ):
                if clients.error_code(exc) in ("NoSuchKey", "404"):
                    return None
                raise
        time.sleep(0.25)


def _outcome(
    is_output: bool, body: bytes, marker: Mapping[str, Any], now: float,
) -> tuple[dict[str, Any], bool]:
    """(fields to add to the record, final?) from SageMaker's output or failure object."""
    if is_output:
        try:
            payload = json.loads(body)
        except ValueError:
            return {"error": {
                "code": "bad_model_response",
                "message": f"The endpoint's answer is not JSON ({scrub(repr(body[:200]))}): "
                           "check the "
                           "model container.",
            }}, False
        request = {"parameters": {"stop": marker["stops"]}}
        try:
            return {"status": "ok", **parse_result(
                marker["request_style"], payload, request, bool(marker.get("structured")))}, True
        except Failure as exc:
            return {"error": {"code": exc.code, "message": exc.message}}, False
    detail = scrub(body.decode("utf-8", "replace").strip(), 300) or "no detail"
    # Told by the time waited; the message is a fallback (local mode's clock can be moved).
    if now - marker["submitted_at"] >= marker["ttl_seconds"] or "expired" in detail.lower():
        return {"error": {
            "code": "queue_expired",
            "message": f"The photo waited in the queue longer than {marker['ttl_seconds']} s "
                       f"and was dropped ({detail}): the endpoint was asleep, stopped by its "
                       "deadline or busy. Run 'visual-tourism wake' (or 'up'), then upload the "
                       "photo again.",
        }}, False
    return {"error": {
        "code": "model_failed",
        "message": f"The model failed on this photo ({detail}): upload it again; if it keeps "
                   "failing, check the endpoint's logs in CloudWatch.",
    }}, False


def complete(
    record: Mapping[str, Any], settings: Settings, request_id: str | None,
) -> dict[str, Any]:
    """Turn SageMaker's output or failure object into the photo's one record."""
    bucket = record["s3"]["bucket"]["name"]
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    location = f"s3://{bucket}/{key}"
    s3 = clients.client("s3")
    marker = _read_marker(s3, settings, bucket, location)
    if marker is None:  # already completed (a redelivery), or not a request of ours
        return logs.summary({"bucket": bucket, "key": key, "status": "ignored",
                             "reason": "no pending request for this object"})
    out_key, photo = marker["out_key"], marker["key"]
    summary = {"bucket": bucket, "key": photo, "result_key": out_key,
               "inference_id": marker["inference_id"]}
    is_output = key.startswith(settings.async_prefix + "outputs/")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    now = time.time()
    fields, final = _outcome(is_output, body, marker, now)
    result = {**marker["result"], "status": "error", **fields}
    if "answer" in fields:  # the nearby places, as real-time mode completes them
        from . import places

        places.complete(settings, result)
    waited = round(now - marker["submitted_at"], 3)
    result["timing"] = {"model_seconds": waited, "total_seconds": waited, "attempts": 1,
                        "queued_and_model_seconds": waited}
    result["request_id"] = request_id
    result["written_at"] = records.now()
    result = {name: result[name] for name in records.RESULT_FIELDS if name in result}
    etag = marker["etag"]
    done, done_upload, seen_now = records.earlier_result(s3, bucket, out_key)
    choice = records.choice(result)  # the marker's record carries the preset that answered
    if records.same_upload(done_upload, marker.get("upload")) or (
            done is not None and done == records.answer_key(etag, choice)):
        status = "duplicate"
    else:
        # The result's ETag when the photo was read, as in real-time mode (read now, IfMatch
        # would always hold); a marker without it (written by an older deployment of the
        # function, still queued): the one read now.
        seen = marker.get("seen", seen_now)
        # Lambda's retry runs this completion again when the write fails (ResultWriteError).
        written = records.store(s3, marker["bucket"], photo, out_key, result, final, seen,
                                marker.get("upload") or {"etag": etag}, summary)
        status = result["status"] if written else "superseded"
    _tidy(s3, settings, bucket, key, marker)
    return logs.summary({**summary, "status": status,
                         "error_code": result.get("error", {}).get("code"), **result["timing"]})


def _tidy(s3: Any, settings: Settings, bucket: str, key: str,
          marker: Mapping[str, Any]) -> None:
    """The queued request holds the photo: delete it with the markers and SageMaker's object."""
    # Markers first: a redelivered event then finds none and is ignored.
    keys = [
        marker_key(settings, loc)
        for loc in (marker["output_location"], marker["failure_location"]) if loc
    ] + [marker["payload_key"], key]
    for name in keys:
        try:
            s3.delete_object(Bucket=bucket, Key=name)
        except (ClientError, BotoCoreError) as exc:  # the answer is written; this is tidying
            log.warning("Could not delete s3://%s/%s: %s", bucket, name, describe(exc))
