"""Visual Tourism Lambda: describe every photo uploaded under ``input/`` with a vision model.

S3 invokes ``lambda_handler`` for each upload. For every record of the event it

1. ignores keys outside INPUT_PREFIX, and photos already answered (one HEAD of the result,
   ``records.earlier_result``): the same upload (a redelivered event, known once step 2 has
   read the photo), or the same ETag, with presets also the same preset, version and
   language;
2. reads the first 256 KiB of the photo and checks its content with the standard library
   (``upload.read_head``, ``sniff``); a photo from the web page, under INPUT_PREFIX + "web/"
   with THUMBNAIL_PREFIX set, then gets its small copy without metadata, once per upload
   form (``web_photos.claim_web_photo``); with PRESETS_TABLE set, the answer preset and
   language the upload names in its S3 metadata give the prompt (``presets.choose_prompt``);
   where the photo was taken (a position sent with the upload, else the photo's GPS) adds
   the real places to eat nearby, from Amazon Location Service (``places.ground``; without
   a position, ``places.complete`` looks up the recognised place after the answer);
3. asks the SageMaker endpoint (Hugging Face TGI) to describe it: the images sized to the
   model container's limits (``budget.image_urls``), the request built
   (``request.prompt_request``), the endpoint called with retries of transient failures
   within the time this invocation has left (``model.invoke_model``) and its answer read
   (``answer.parse_result``). With INFERENCE_MODE=async the request is queued instead
   (``asynchronous.submit``), and the invocation that SageMaker's answer triggers finishes
   the photo (``asynchronous.complete``). With MODEL_KIND=bedrock there is no endpoint: a
   managed model answers through Amazon Bedrock's Converse API (``converse.ask``);
4. writes one JSON result to ``OUTPUT_PREFIX + <key after INPUT_PREFIX> + ".json"``, only if
   the photo is still the upload read in step 2 (ETag, metadata, date) and conditionally on
   the result seen in step 1 (``records.store``); else the photo's newer upload answers it.

Only a failed result write raises (so Lambda's asynchronous retry runs the photo again,
inference included). Every other failure becomes an error record, so a model that fails or
times out is not asked again by Lambda's retries on top of the handler's own.

This file holds the handler and its steps; what each step runs is a module of the
``photo_handler/`` folder, zipped whole beside it. The function needs boto3 (the Lambda
runtime's) and, for an image resized or sent inline, Pillow (vendored into the zip for the
configurations that resize). What only some configurations use is imported where first
needed, so that a cold start compiles no more than it uses: ``photo_handler.presets``
(PRESETS_TABLE set), ``photo_handler.resize`` (Pillow) and ``photo_handler.asynchronous``
(INFERENCE_MODE=async).
"""

from __future__ import annotations

import json
import time
import traceback
import urllib.parse
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from photo_handler import (
    answer,
    budget,
    clients,
    logs,
    model,
    places,
    records,
    request,
    sniff,
    upload,
)
from photo_handler.errors import (
    ERROR_TEXT_MAX_CHARS,
    BadImage,
    ConfigError,
    Failure,
    PhotoChanged,
    ResultWriteError,
    describe,
    scrub,
)
from photo_handler.logs import log
from photo_handler.settings import Settings, fallback_settings, load_settings
from photo_handler.web_photos import claim_web_photo


def lambda_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Entry point: describe every photo of an S3 ObjectCreated event."""
    get_remaining = getattr(context, "get_remaining_time_in_millis", None)
    # No context (a local call): Lambda's maximum, 900 s.
    deadline = time.monotonic() + (get_remaining() / 1000 if get_remaining else 900.0)
    broken = None
    try:
        settings = load_settings()
    except ConfigError as exc:
        # Still answer every photo, with the error, in the configured folders if they are
        # usable, else in the default ones.
        log.error("Invalid configuration: %s", exc)
        settings, broken = fallback_settings(), exc
    request_id = getattr(context, "aws_request_id", None)
    summaries, failures = [], []
    for record in event.get("Records") or []:
        try:
            if broken is None and _is_async_result(record, settings):
                from photo_handler import asynchronous  # INFERENCE_MODE=async only

                summaries.append(asynchronous.complete(record, settings, request_id))
                continue
            summaries.append(process_record(record, settings, deadline, request_id, broken))
        except ResultWriteError as exc:  # keep going: the other photos' results still count
            failures.append(exc)
        except (KeyError, TypeError, AttributeError) as exc:  # no bucket or key: nowhere to answer
            summaries.append(logs.summary({"status": "malformed_record",
                                           "error": scrub(repr(exc))}))
    if failures:
        raise failures[0]
    return {"records": summaries}


def _is_async_result(record: Mapping[str, Any], settings: Settings) -> bool:
    """An output or failure object SageMaker wrote for a queued request (async mode)."""
    if settings.inference_mode != "async":
        return False
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    return key.startswith((settings.async_prefix + "outputs/", settings.async_prefix + "failures/"))


def process_record(
    record: Mapping[str, Any], settings: Settings, deadline: float, request_id: str | None,
    broken: ConfigError | None = None,
) -> dict[str, Any]:
    """Handle one S3 record (steps 1 to 4); return a summary (also logged as one JSON line).

    ``broken``: the function's configuration is invalid; the photo gets an error record
    saying so (not final: once the configuration is fixed, an upload is answered).
    """
    # -- 1. ours, and not answered yet ------------------------------------------------------
    started = time.monotonic()
    bucket = record["s3"]["bucket"]["name"]
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    out_key = records.result_key(key, settings.input_prefix, settings.output_prefix)
    summary: dict[str, Any] = {"bucket": bucket, "key": key, "result_key": out_key}
    if out_key is None or not record.get("eventName", "ObjectCreated:").startswith("ObjectCreated"):
        return logs.summary({**summary, "status": "ignored"})
    if settings.bucket and bucket != settings.bucket:
        # Only the stack's bucket is ours: never read or write in another one (a notification
        # wired by mistake, or a forged event), whatever the role would allow.
        log.warning("Ignoring a record for bucket %s: this function serves %s only",
                    scrub(bucket, 100), settings.bucket)
        return logs.summary({**summary, "status": "ignored", "reason": "foreign_bucket"})
    s3 = clients.client("s3")
    event_etag = str(record["s3"]["object"].get("eTag") or "").strip('"') or None
    done, done_upload, seen = records.earlier_result(s3, bucket, out_key)
    # With presets the answer also depends on the object's metadata (read below), so only a
    # plain stack can tell a redelivery from the event alone.
    if done is not None and done == event_etag and not settings.presets_table:
        return logs.summary({**summary, "status": "duplicate", "etag": done})

    result = records.new_result(settings, bucket, key, event_etag)  # an error until answered
    attempts, model_seconds, final = 0, 0.0, False
    photo_upload: dict[str, Any] | None = None  # which upload of the key this answers
    try:
        if broken is not None:
            raise Failure("configuration_error", f"{broken} Then upload the photo again.")
        # -- 2. read and check the photo ----------------------------------------------------
        head, etag, size, metadata, photo_upload = upload.read_head(s3, bucket, key)
        etag = etag or event_etag
        result["input"].update(etag=etag, size=size)
        if records.same_upload(done_upload, photo_upload) or (
                done is not None and done == etag and not settings.presets_table):
            return logs.summary({**summary, "status": "duplicate", "etag": etag})  # older event
        try:
            fmt, width, height = sniff.sniff_image(head)
        except BadImage as exc:
            if exc.code != "truncated_image" or not len(head) < size <= settings.max_image_bytes:
                raise
            # The header lies beyond the first 256 KiB (a huge EXIF block): read it all once,
            # the same object (ETag) and no more than its size, already checked.
            head = upload.read_pinned(s3, bucket, key, etag, size)
            fmt, width, height = sniff.sniff_image(head)
        result["image"] = {"format": fmt, "width": width, "height": height}
        sniff.check_limits(width, height, size, settings)
        claim_web_photo(s3, settings, bucket, key, etag, size)  # the web page's photos only
        prompt = request.environment_prompt(settings)
        if settings.presets_table:  # the preset and language the uploader chose
            from photo_handler import presets  # read only with PRESETS_TABLE

            prompt = presets.choose_prompt(settings, metadata, result)
            if done is not None and done == records.answer_key(etag, records.choice(result)):
                return logs.summary({**summary, "status": "duplicate", "etag": etag})
        # Where the photo was taken (the upload's position, else its GPS): the real places to
        # eat nearby go into the prompt; places.complete adds them after the answer otherwise.
        prompt = places.ground(settings, prompt, head, metadata, result)

        # -- 3. ask the model ---------------------------------------------------------------
        if settings.model_kind == "bedrock":  # a managed model: Converse, no endpoint
            from photo_handler import converse  # MODEL_KIND=bedrock only

            attempts, model_seconds = converse.ask(settings, prompt, bucket, key, head, size, fmt,
                                                   etag, (width, height), deadline, result,
                                                   summary)
        else:
            examples, photo = budget.image_urls(settings, prompt, bucket, key, head, size, fmt,
                                                etag, (width, height))
            images = [*examples, photo]
            summary["images_resized"] = sum(image.resized for image in images)
            if photo.resized:  # what the model saw
                result["image"]["sent"] = {"width": photo.width, "height": photo.height}
            body = request.prompt_request(settings, prompt, [e.url for e in examples], photo.url)
            encoded = json.dumps(body).encode()
            budget.check_request(settings, prompt, encoded, images)
            if settings.inference_mode == "async":  # the answer comes back as an S3 object
                from photo_handler import asynchronous  # INFERENCE_MODE=async only

                return logs.summary(asynchronous.submit(
                    s3, settings, bucket, key, out_key, body, result, summary,
                    structured=prompt.structured, upload=photo_upload, seen=seen))
            model_started = time.monotonic()
            try:
                payload, attempts = model.invoke_model(encoded, settings, deadline)
                result.update(answer.parse_result(settings.request_style, payload, body,
                                                  prompt.structured))
            finally:
                model_seconds = time.monotonic() - model_started
            # With the url transport the endpoint fetched the photo itself, unpinned: if it was
            # replaced meanwhile the answer may describe the newer upload. records.store's HEAD
            # of the photo, in step 4, tells (and the newer upload's own event answers it).
        places.complete(settings, result)  # which place it recommends; a landmark's places
        result["status"], final = "ok", True
    except PhotoChanged:
        return logs.summary({**summary, "status": "superseded", "etag": result["input"]["etag"],
                             "reason": "photo replaced while being handled"})
    except BadImage as exc:
        result["error"], final = {"code": exc.code, "message": exc.message}, True
    except Failure as exc:
        attempts = max(attempts, exc.attempts)
        result["error"] = {"code": exc.code, "message": exc.message}
    except ClientError as exc:  # reading the photo from S3
        if clients.error_code(exc) in ("NoSuchKey", "404"):  # deleted before we got to it
            return logs.summary({**summary, "status": "ignored", "reason": "deleted"})
        result["error"] = {
            "code": "input_unreadable",
            "message": f"The photo could not be read ({describe(exc)}): upload it again.",
        }
    except Exception as exc:  # a bug here must still leave a record, not lose the photo
        log.error("Unexpected failure for %s: %s", key,
                  scrub("".join(traceback.format_exception(exc)), 4000))
        result["error"] = {
            "code": "internal_error",
            "message": f"The handler failed unexpectedly ({describe(exc)}): upload the photo "
                       "again; if it keeps happening, report it with this record.",
        }

    # -- 4. write the record ----------------------------------------------------------------
    result["timing"] = {
        "model_seconds": round(model_seconds, 3),
        "total_seconds": round(time.monotonic() - started, 3), "attempts": attempts,
    }
    result["request_id"] = request_id
    result["written_at"] = records.now()
    if "error" in result:  # every message may quote foreign text: scrubbed and capped once more
        result["error"]["message"] = scrub(result["error"]["message"], 2 * ERROR_TEXT_MAX_CHARS)
    if not records.store(s3, bucket, key, out_key, result, final, seen, photo_upload, summary):
        return logs.summary({**summary, "status": "superseded", "etag": result["input"]["etag"]})
    return logs.summary({
        **summary, "status": result["status"],
        "error_code": result.get("error", {}).get("code"), **result["timing"],
    })


logs.configure_logging()
