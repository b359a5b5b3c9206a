"""Bursts and failed events: how S3's events reach the photo function, and how to re-drive them.

- **Reserved concurrency** ``max_instances x requests_per_instance``: the endpoint at full scale
  serves that many requests at once; each invocation holds one model request at a time, so no
  more can usefully run. The rest wait in Lambda's asynchronous queue instead of piling onto a
  saturated endpoint (where they would time out and cost retries). It also guarantees the
  photo function that much of the account's concurrency.
- **Asynchronous settings** (PutFunctionEventInvokeConfig): ``retry_attempts`` (2, Lambda's
  default: the handler raises only when it cannot write a result, a transient S3 fault worth
  two more tries) and ``max_event_age`` (1 h: longer than a scale-out from one to
  ``max_instances`` GPU instances, shorter than Lambda's 6 h so that a stuck burst surfaces the
  same working session).
- **On-failure destination**: this stack's own bucket. Lambda writes each event it gives up
  on (retries exhausted, too old, or reserved concurrency 0) as an invocation record under
  ``aws/lambda/async/<function>/`` (a prefix fixed by AWS; outside ``input/`` so it triggers
  nothing). Chosen over an SQS queue: no new resource to create, secure, pay for and tear down;
  the records are kept as long as the bucket; the function's role only needs ``s3:PutObject``
  on that prefix. (An S3 destination needs botocore >= 1.35.67 in the deploying client.)
- ``replay`` re-drives them: each record's original S3 event is sent to the function again
  (asynchronously, so through the same queue, retries and destination), then the record is
  deleted. The handler skips photos already answered, so replaying twice is harmless.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from .aws import Aws, ignore_not_found, is_not_found
from .config import Config
from .lambda_fn import get_function, is_ours

log = logging.getLogger(__name__)

DESTINATION_ROOT = "aws/lambda/async/"  # where Lambda's S3 on-failure destination writes


def destination_prefix(cfg: Config) -> str:
    return f"{DESTINATION_ROOT}{cfg.function_name}/"


def destination_arn(aws: Aws, bucket: str) -> str:
    return f"arn:{aws.partition}:s3:::{bucket}"


def event_invoke_settings(cfg: Config, destination: str) -> dict[str, Any]:
    return {
        "MaximumRetryAttempts": cfg.retry_attempts,
        "MaximumEventAgeInSeconds": cfg.max_event_age,
        "DestinationConfig": {"OnFailure": {"Destination": destination}},
    }


def _event_invoke_config(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        return aws.lambda_.get_function_event_invoke_config(FunctionName=name)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def _same(have: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    if have is None:
        return False
    on_failure = have.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
    return (have.get("MaximumRetryAttempts"), have.get("MaximumEventAgeInSeconds"),
            on_failure) == (want["MaximumRetryAttempts"], want["MaximumEventAgeInSeconds"],
                            want["DestinationConfig"]["OnFailure"]["Destination"])


def ensure_delivery(aws: Aws, cfg: Config, bucket: str) -> dict[str, Any]:
    """Set reserved concurrency and the asynchronous settings where they differ."""
    name = cfg.function_name
    have = aws.lambda_.get_function_concurrency(FunctionName=name).get(
        "ReservedConcurrentExecutions")
    if have != cfg.reserved_concurrency:
        aws.lambda_.put_function_concurrency(
            FunctionName=name, ReservedConcurrentExecutions=cfg.reserved_concurrency)
        log.info("Reserved concurrency of %s: %d", name, cfg.reserved_concurrency)
    want = event_invoke_settings(cfg, destination_arn(aws, bucket))
    if not _same(_event_invoke_config(aws, name), want):
        # Put, not Update: it replaces the whole configuration, so nothing stale survives.
        aws.lambda_.put_function_event_invoke_config(FunctionName=name, **want)
        log.info("Asynchronous invocation settings of %s: %s", name, want)
    return {"reserved_concurrency": cfg.reserved_concurrency, **want}


def remove_delivery(aws: Aws, cfg: Config) -> bool:
    """Undo ensure_delivery on our own function (deleting the function removes both too)."""
    function = get_function(aws, cfg.function_name)
    if function is None or not is_ours(aws, cfg, function):
        return False
    removed = ignore_not_found(
        lambda: aws.lambda_.delete_function_event_invoke_config(FunctionName=cfg.function_name),
        "the asynchronous invocation settings",
    )
    if aws.lambda_.get_function_concurrency(FunctionName=cfg.function_name).get(
            "ReservedConcurrentExecutions") is not None:
        aws.lambda_.delete_function_concurrency(FunctionName=cfg.function_name)
        removed = True
    return removed


def describe(aws: Aws, cfg: Config, bucket: str | None) -> dict[str, Any]:
    """The function's delivery settings; ``bucket`` None (absent or not ours): failed events
    are not counted, since their records live in the stack's bucket."""
    if get_function(aws, cfg.function_name) is None:
        return {"state": "absent"}
    config = _event_invoke_config(aws, cfg.function_name) or {}
    return {
        "reserved_concurrency": aws.lambda_.get_function_concurrency(
            FunctionName=cfg.function_name).get("ReservedConcurrentExecutions"),
        "retry_attempts": config.get("MaximumRetryAttempts"),
        "max_event_age": config.get("MaximumEventAgeInSeconds"),
        "on_failure": config.get("DestinationConfig", {}).get("OnFailure", {}).get(
            "Destination"),
        "failed_events": sum(1 for _ in failed_record_keys(aws, cfg, bucket))
        if bucket else None,
    }


# -- replay -----------------------------------------------------------------------------------
def failed_record_keys(aws: Aws, cfg: Config, bucket: str) -> Iterator[str]:
    pages = aws.s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=destination_prefix(cfg))
    try:
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"]
    except ClientError as exc:
        if not is_not_found(exc):
            raise


def s3_event(aws: Aws, bucket: str, key: str, etag: str, size: int) -> dict[str, Any]:
    """An S3 ObjectCreated event for one object, shaped as S3 sends it."""
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": aws.region,
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": destination_arn(aws, bucket)},
            "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": size,
                       "eTag": etag},
        },
    }]}


def _transient_error_photos(aws: Aws, cfg: Config, bucket: str) -> Iterator[tuple[str, dict]]:
    """Photos whose result is an error a later try may fix (metadata final=false)."""
    pages = aws.s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=cfg.output_prefix)
    for page in pages:
        for item in page.get("Contents", []):
            if item["Key"] == cfg.output_prefix:
                continue
            head = aws.s3.head_object(Bucket=bucket, Key=item["Key"])
            if head.get("Metadata", {}).get("final") != "false":
                continue
            record = json.loads(aws.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            key = record.get("input", {}).get("key")
            if not key:
                continue
            try:
                photo = aws.s3.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if is_not_found(exc):  # the photo is gone: nothing to answer
                    continue
                raise
            yield key, s3_event(aws, bucket, key, photo["ETag"].strip('"'),
                                photo["ContentLength"])


def replay(aws: Aws, cfg: Config, bucket: str, *, errors: bool = False,
           dry_run: bool = False) -> dict[str, int]:
    """Re-drive the events Lambda gave up on (and, with ``errors``, photos whose result is a
    transient error). Returns how many of each were found and re-driven."""
    name = cfg.function_name
    if get_function(aws, name) is None:
        from .errors import NotDeployedError

        raise NotDeployedError(f"Lambda {name} does not exist: run 'visual-tourism up' first.")
    counts = {"failed_events": 0, "error_records": 0, "redriven": 0}
    for key in list(failed_record_keys(aws, cfg, bucket)):
        counts["failed_events"] += 1
        record = json.loads(aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        event = record.get("requestPayload")
        if not isinstance(event, dict) or not event.get("Records"):
            log.warning("%s holds no S3 event: left in place", key)
            continue
        if dry_run:
            continue
        aws.lambda_.invoke(FunctionName=name, InvocationType="Event",
                           Payload=json.dumps(event).encode())
        # Only once Lambda accepted it; a replay cut short here re-drives it again next
        # time, which the handler's "already answered" check makes harmless.
        aws.s3.delete_object(Bucket=bucket, Key=key)
        counts["redriven"] += 1
    if errors:
        for _, event in _transient_error_photos(aws, cfg, bucket):
            counts["error_records"] += 1
            if not dry_run:
                aws.lambda_.invoke(FunctionName=name, InvocationType="Event",
                                   Payload=json.dumps(event).encode())
                counts["redriven"] += 1
    return counts
