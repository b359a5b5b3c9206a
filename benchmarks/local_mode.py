"""Local mode end to end: the deployed stack on LocalStack, photos in through S3, answers out.

Everything runs as in ``visual-tourism local demo``: ``stack.up`` deploys, an upload under
``input/`` fires the bucket notification, the local Lambda service runs the deployed zip in
a fresh process, the handler asks the local model server, and ``stack.ask`` polls for the
result. moto's S3 runs in this process, so a hook on its PutObject notes (on the same
monotonic clock as the client) the moment each result becomes visible.

Measured per backend: upload-to-answer latency of one photo at a time through ``stack.ask``;
the delay between the result's write and ``ask`` returning it, with the requests ``ask``
makes while it waits; then N photos uploaded at once: completeness and throughput.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .common import REGION, Row, WriteClock, environment, percentile, photos

SEEN_TARGET_SECONDS = 0.5
POLL_SECONDS = 0.2  # stack.ask's default poll interval
TINY_MODEL_TOKENS = 32  # a random model never stops early: keep its answers short


def _function_env(aws: Any, name: str, **extra: str) -> None:
    config = aws.lambda_.get_function_configuration(FunctionName=name)
    variables = {**config["Environment"]["Variables"], **extra}
    aws.lambda_.update_function_configuration(FunctionName=name,
                                              Environment={"Variables": variables})


def measure(model: str, label: str, sequential: int, burst: int,
            generation: dict[str, Any] | None = None) -> tuple[list[Row], dict[str, Any]]:
    from visual_tourism import stack
    from visual_tourism.aws import Aws
    from visual_tourism.config import load_config
    from visual_tourism.local import moto_patches
    from visual_tourism.local.stack import LocalStack

    pictures = photos()
    clock = WriteClock()
    heads: list[float] = []
    head_lock = threading.Lock()

    def count_head(**_: Any) -> None:
        with head_lock:
            heads.append(time.monotonic())

    with tempfile.TemporaryDirectory() as work, LocalStack(model=model, work_dir=Path(work)) \
            as local, environment(local.env):
        description = local.backend_description
        if model != "stand-in" and not description.startswith("transformers"):
            raise RuntimeError(f"the model did not load: {local.backend_reason}")
        moto_patches.hook_put_object(after=clock.after)
        cfg = load_config(env={}, prefix="bench" + uuid.uuid4().hex[:6], region=REGION,
                          state_dir=str(Path(work) / "state"))
        aws = Aws(cfg.region)
        started = time.monotonic()
        stack.up(cfg, aws, endpoint_poll=0.1)
        up_seconds = time.monotonic() - started
        if generation:
            _function_env(aws, cfg.function_name,
                          GENERATION_PARAMETERS=json.dumps(generation, sort_keys=True))
        aws.s3.meta.events.register("before-call.s3.HeadObject", count_head)
        bucket = cfg.bucket_name(aws.account_id)

        def ask(name: str, picture: Path) -> dict[str, Any]:
            """One photo through stack.ask (the notebook demo's call), with its timings."""
            key = f"input/{name}"
            uploaded: list[float] = []  # ask reports once the upload is done, then waits
            begin = time.monotonic()
            record = stack.ask(picture, cfg, aws, timeout=180, key=key,
                               progress=lambda _message: uploaded.append(time.monotonic()))
            end = time.monotonic()
            written = clock.written[stack.result_key(cfg, key)]
            with head_lock:
                polls = sorted(t for t in heads if uploaded[0] <= t <= end)
            return {
                "status": record["status"], "latency": end - begin, "seen": end - written,
                "waited": end - uploaded[0], "heads": len(polls),
                "intervals": [b - a for a, b in zip(polls, polls[1:], strict=False)],
            }

        # -- one photo at a time; the first is a warm-up
        one_by_one = [ask(f"one-by-one/{n:03d} {pictures[n % len(pictures)].name}",
                          pictures[n % len(pictures)]) for n in range(sequential + 1)]
        warm_up, one_by_one = one_by_one[0], one_by_one[1:]
        # -- again, each answer delayed by a random 0-0.2 s: the handler takes about the same
        # time for every photo, so without this the writes would all land at the same point
        # of ask's poll interval and sample one delay instead of the whole range.
        jitter = random.Random(1)
        polled = []
        for number in range(sequential):
            local.model_server.faults.delay(jitter.uniform(0, POLL_SECONDS), n=1)
            polled.append(ask(f"polled/{number:03d} {pictures[number % len(pictures)].name}",
                              pictures[number % len(pictures)]))

        # -- many photos at once
        keys = [f"input/at-once/{n:03d} {pictures[n % len(pictures)].name}"
                for n in range(burst)]
        uploads: dict[str, float] = {}

        def upload(number: int) -> None:
            aws.s3.put_object(Bucket=bucket, Key=keys[number],
                              Body=pictures[number % len(pictures)].read_bytes())
            uploads[keys[number]] = time.monotonic()

        out_keys = [stack.result_key(cfg, key) for key in keys]
        begin = time.monotonic()
        with ThreadPoolExecutor(10) as pool:  # boto3's connection pool holds 10
            list(pool.map(upload, range(burst)))
        uploaded_all = time.monotonic() - begin
        deadline = begin + 60 + burst * (4.0 if generation else 2.0)
        while time.monotonic() < deadline and not all(k in clock.written for k in out_keys):
            time.sleep(0.2)
        local.runtime.wait_idle(max(1.0, deadline - time.monotonic()))
        records = {}
        for key in out_keys:
            if key in clock.written:
                body = aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                records[key] = json.loads(body)
        written_times = [clock.written[k] for k in records]
        answered = sum(1 for r in records.values() if r["status"] == "ok")
        elapsed = (max(written_times) - begin) if written_times else float("nan")
        per_photo = [clock.written[out] - uploads[key]
                     for key, out in zip(keys, out_keys, strict=True) if out in records]
        invocations, failures = local.runtime.invocations, local.runtime.failures
        log = local.log_path(cfg.function_name).read_text()
        # The burst's invocations end last: the last REPORT lines of the function's log.
        durations = [float(v) / 1000 for v in re.findall(r"\tDuration: ([\d.]+) ms", log)][-burst:]
        handler_seconds = [r["timing"]["total_seconds"] for r in records.values()]
        stack.down(cfg, aws, delete_bucket=True)

    if any(r["status"] != "ok" for r in [warm_up, *one_by_one, *polled]):
        raise RuntimeError("a photo was not answered: "
                           f"{[r['status'] for r in [*one_by_one, *polled]]}")
    latencies = [r["latency"] for r in one_by_one]
    seen = [r["seen"] for r in polled]
    intervals = [i for r in [*one_by_one, *polled] for i in r.pop("intervals")]
    poll = POLL_SECONDS
    rate = 1 / statistics.mean(intervals)
    group = f"local ({label})"
    rows = [
        Row(group, "upload to answer, one photo at a time (p50 / p95)", "",
            f"{percentile(latencies, 50):.2f} / {percentile(latencies, 95):.2f} s", None,
            percentile(latencies, 95), "s",
            f"{len(latencies)} photos through stack.ask; the local Lambda's warm workers"),
        Row(group, "result written -> ask returns it (p50 / p95 / max)",
            f"< {SEEN_TARGET_SECONDS} s",
            f"{percentile(seen, 50):.3f} / {percentile(seen, 95):.3f} / {max(seen):.3f} s",
            max(seen) < SEEN_TARGET_SECONDS, max(seen), "s",
            f"{len(seen)} photos, each answer delayed by a random 0-{poll:g} s so the writes "
            "fall anywhere in ask's poll interval; write time taken inside moto's S3"),
        Row(group, "requests while ask waits", "no busy polling",
            f"{rate:.1f} HEAD/s (polls {percentile(intervals, 50) * 1000:.0f} ms apart, "
            f"never under {min(intervals) * 1000:.0f} ms)",
            min(intervals) >= 0.9 * poll, rate, "requests/s",
            f"ask sleeps {poll:g} s between HEADs, then makes one GET"),
        Row(group, f"{burst} photos uploaded at once: results", f"{burst}/{burst} answered",
            f"{answered}/{burst} answered, {len(records)} results, "
            f"{burst - len(records)} missing", answered == burst, answered, "photos"),
        Row(group, f"{burst} photos uploaded at once: throughput", "",
            f"{burst / elapsed:.2f} photos/s (last result {elapsed:.1f} s after the first "
            f"upload; upload to result p50 {percentile(per_photo, 50):.1f} s, p95 "
            f"{percentile(per_photo, 95):.1f} s)" if per_photo else "no result",
            None, burst / elapsed if per_photo else None, "photos/s",
            f"local Lambda: warm workers up to the function's concurrency; invocation "
            f"p50 {percentile(durations, 50):.1f} s, of which the handler "
            f"{percentile(handler_seconds, 50):.1f} s" if durations and handler_seconds
            else ""),
    ]
    details = {
        "backend": label, "up_seconds": round(up_seconds, 2),
        "warm_up_latency_s": round(warm_up["latency"], 3),
        "one_by_one": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                       for r in one_by_one],
        "polled": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                   for r in polled],
        "burst": {"photos": burst, "uploads_seconds": round(uploaded_all, 3),
                  "results": len(records), "answered": answered,
                  "last_result_seconds": round(elapsed, 3),
                  "upload_to_result_s": [round(v, 3) for v in per_photo],
                  "lambda_invocations": invocations, "lambda_failures": failures,
                  "invocation_seconds": durations,
                  "handler_seconds": handler_seconds},
        "generation": generation,
    }
    return rows, details


STAND_IN_12MP_TARGET_SECONDS = 0.05


def stand_in_on_12_megapixels() -> Row:
    """The stand-in's own time for one decoded 12 MP photo (best of 5): its answer must not be
    what makes local mode slow. A figure, not a test: a busy machine only makes it larger."""
    import io

    from PIL import Image

    from visual_tourism.local.backends import StandInBackend, Turn, generation_params

    buffer = io.BytesIO()
    Image.open(photos()[0]).convert("RGB").resize((4000, 3000)).save(buffer, "JPEG")
    big = Image.open(buffer)
    big.load()  # the server hands over decoded images
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        StandInBackend().generate([Turn("user", ("Describe", big))], generation_params())
        timings.append(time.perf_counter() - started)
    best = min(timings)
    return Row("local (offline stand-in)", "stand-in answer, one 12 MP photo (best of 5)",
               f"< {STAND_IN_12MP_TARGET_SECONDS * 1000:.0f} ms", f"{best * 1000:.1f} ms",
               best < STAND_IN_12MP_TARGET_SECONDS, round(best, 4), "s")


def run(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    rows, stand_in = measure("stand-in", "offline stand-in", sequential=8 if quick else 20,
                             burst=30 if quick else 100)
    rows.append(stand_in_on_12_megapixels())
    details: dict[str, Any] = {"stand_in": stand_in}
    label = "transformers, tiny random Idefics3"
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        rows.append(Row(f"local ({label})", "transformers backend", "", f"not run: {error}",
                        None))
        return rows, details

    from tiny_model import build_tiny_model  # from tests/, put on the path by common

    from photo_handler.settings import DEFAULT_GENERATION

    generation = {**DEFAULT_GENERATION, "max_new_tokens": TINY_MODEL_TOKENS}
    with tempfile.TemporaryDirectory() as folder:
        model = build_tiny_model(Path(folder) / "tiny-idefics3")
        more, tiny = measure(str(model), label, sequential=3 if quick else 5,
                             burst=20 if quick else 100, generation=generation)
    more[0].note += (f"; a 1-layer random model built offline (tests/tiny_model.py), "
                     f"max_new_tokens={TINY_MODEL_TOKENS}: the pipeline's latency through "
                     "transformers, not a real model's")
    details["tiny_transformers"] = tiny
    return rows + more, details
