"""A burst in local mode: 1,000 photos uploaded at once, answered by warm Lambda workers.

The stack is deployed with ``stack.up`` on LocalStack (stand-in model), the function's
reserved concurrency comes from the documented rule (here 2 instances x 4 requests = 8), and
every photo goes the real way: upload, bucket notification, the local Lambda service's queue,
a worker process that imported the zip once, the model server, the result in S3.

Measured: completeness (every photo one record), throughput, upload-to-answer p50/p95 (the
moment the result becomes visible inside moto's S3, on this process's clock), cold starts,
throttled events, and the AWS calls per photo, counted where moto receives them (a WSGI
wrapper around its server) and on the model server: what one photo costs end to end once the
workers are warm.
"""

from __future__ import annotations

import io
import json
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from .common import REGION, Row, WriteClock, environment, percentile


class CallCounter:
    """WSGI middleware: counts the requests moto's server receives, by operation."""

    def __init__(self, app: Any) -> None:
        self.app, self.calls, self.lock, self.on = app, Counter[str](), threading.Lock(), False

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.on:
            with self.lock:
                self.calls[self.operation(environ)] += 1
        return self.app(environ, start_response)

    @staticmethod
    def operation(environ: dict[str, Any]) -> str:
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return target.split(".")[-1]
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        folder = path.strip("/").split("/")[1] + "/" if path.count("/") >= 2 else ""
        if "list-type" in query:
            return "S3 ListObjectsV2"
        if path.startswith("/2015-03-31/functions") or "/functions/" in path:
            return f"Lambda {method} {path.rsplit('/', 1)[-1]}"
        kind = {"HEAD": "HeadObject", "GET": "GetObject", "PUT": "PutObject"}.get(method, method)
        # The model server fetches presigned URLs with urllib: the endpoint's reads, not the
        # handler's calls (on AWS the container makes them too).
        who = "" if "botocore" in environ.get("HTTP_USER_AGENT", "").lower() else "endpoint "
        return f"{who}S3 {kind} {folder}"


def _picture(number: int) -> bytes:
    from PIL import Image

    ramp = Image.linear_gradient("L").resize((200 + number % 400, 150))
    out = io.BytesIO()
    Image.merge("RGB", [ramp, ramp, ramp.rotate(180)]).save(out, "JPEG", quality=70)
    return out.getvalue()


def measure(photos: int) -> tuple[list[Row], dict[str, Any]]:
    from visual_tourism import stack
    from visual_tourism.aws import Aws
    from visual_tourism.config import load_config
    from visual_tourism.local import moto_patches
    from visual_tourism.local.stack import LocalStack

    clock = WriteClock()
    with tempfile.TemporaryDirectory() as work, LocalStack(model="stand-in",
                                                           work_dir=Path(work)) as local, \
            environment(local.env):
        counter = CallCounter(local._moto._server.app)
        local._moto._server.app = counter
        moto_patches.hook_put_object(after=clock.after)
        cfg = load_config(env={}, prefix="burst" + uuid.uuid4().hex[:6], region=REGION,
                          state_dir=str(Path(work) / "state"), min_instances=1,
                          max_instances=2, requests_per_instance=4)
        aws = Aws(cfg.region)
        stack.up(cfg, aws, endpoint_poll=0.1)
        bucket = cfg.bucket_name(aws.account_id)
        runtime, server = local.runtime, local.model_server
        assert runtime is not None
        bodies = [_picture(n) for n in range(photos)]
        keys = [f"{cfg.input_prefix}burst/{n:04d}.jpg" for n in range(photos)]
        uploads: dict[str, float] = {}

        def upload(number: int) -> None:
            aws.s3.put_object(Bucket=bucket, Key=keys[number], Body=bodies[number])
            uploads[keys[number]] = time.monotonic()

        cold, throttles = runtime.cold_starts, runtime.throttles
        model_calls = len(server.calls)
        counter.on = True
        begin = time.monotonic()
        with ThreadPoolExecutor(10) as pool:  # boto3's connection pool holds 10
            list(pool.map(upload, range(photos)))
        runtime.wait_idle(120 + photos * 2.0)
        counter.on = False
        out_keys = {key: stack.result_key(cfg, key) for key in keys}
        done = [key for key in keys if out_keys[key] in clock.written]
        elapsed = max(clock.written[out_keys[k]] for k in done) - begin if done else float("nan")
        latency = [clock.written[out_keys[k]] - uploads[k] for k in done]
        statuses: Counter[str] = Counter()
        for key in done[:: max(1, len(done) // 50)]:  # a sample: reading all costs time
            body = aws.s3.get_object(Bucket=bucket, Key=out_keys[key])["Body"].read()
            statuses[json.loads(body)["status"]] += 1
        burst_calls = dict(counter.calls)
        burst_model_calls = len(server.calls) - model_calls
        cold_starts, throttled = runtime.cold_starts - cold, runtime.throttles - throttles
        peak = runtime.peak_concurrency.get(cfg.function_name, 0)
        failures = runtime.failures
        stack.down(cfg, aws, delete_bucket=True)

    uploads_put = burst_calls.get(f"S3 PutObject {cfg.input_prefix}", 0)
    handler_calls = {op: n for op, n in burst_calls.items()
                     if op != f"S3 PutObject {cfg.input_prefix}" and op != "DescribeEndpoint"}
    fetches = {op: n for op, n in handler_calls.items() if op.startswith("endpoint ")}
    handler_calls = {op: n for op, n in handler_calls.items() if op not in fetches}
    per_photo = {op: round(n / photos, 3) for op, n in sorted(handler_calls.items())}
    per_photo["SageMaker InvokeEndpoint"] = round(burst_model_calls / photos, 3)
    per_fetch = {op: round(n / photos, 3) for op, n in sorted(fetches.items())}
    total = sum(handler_calls.values()) + burst_model_calls
    group = "local burst (stand-in)"
    lost = photos - len(done)
    rows = [
        Row(group, f"{photos} photos at once: results", f"{photos}/{photos}, 0 lost",
            f"{len(done)}/{photos} results, {lost} lost", lost == 0, lost, "lost",
            f"reserved concurrency {cfg.reserved_concurrency} ({cfg.max_instances} instances x "
            f"{cfg.requests_per_instance}); peak {peak} at once; {failures} events given up"),
        Row(group, f"{photos} photos at once: throughput", "",
            f"{photos / elapsed:.1f} photos/s (last result {elapsed:.1f} s after the first "
            "upload)", None, photos / elapsed, "photos/s"),
        Row(group, "upload to answer (p50 / p95)", "",
            f"{percentile(latency, 50):.1f} / {percentile(latency, 95):.1f} s", None,
            percentile(latency, 95), "s",
            "queueing included: the burst waits behind the reserved concurrency"),
        Row(group, "cold starts / throttled events", "cold starts <= reserved concurrency",
            f"{cold_starts} cold starts for {photos} photos, {throttled} events throttled",
            cold_starts <= cfg.reserved_concurrency, cold_starts, "cold starts"),
        Row(group, "AWS calls per photo (warm workers)", "",
            f"{total / photos:.2f} ("
            + ", ".join(f"{op} {n:g}" for op, n in per_photo.items()) + ")",
            None, total / photos, "calls",
            "made by the handler, counted where moto and the model server receive them "
            "(uploads excluded); the endpoint's own reads of the presigned URLs per photo: "
            + ", ".join(f"{op.removeprefix('endpoint ')} {n:g}" for op, n in per_fetch.items())),
    ]
    details = {"photos": photos, "uploads_counted": uploads_put, "calls": burst_calls,
               "model_calls": burst_model_calls, "per_photo": per_photo,
               "endpoint_fetches_per_photo": per_fetch,
               "cold_starts": cold_starts, "throttled": throttled, "peak_concurrency": peak,
               "reserved_concurrency": cfg.reserved_concurrency,
               "upload_to_answer_s": {"p50": percentile(latency, 50),
                                      "p95": percentile(latency, 95)},
               "elapsed_s": elapsed, "sampled_statuses": dict(statuses), "lost": lost}
    return rows, details


def run(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    return measure(200 if quick else 1000)
