"""Idle cost toward zero: real-time against asynchronous inference.

Three kinds of figure, each labelled as what it is:

- **list prices** (``visual_tourism/prices.py``, dated): endpoint cost per day and per photo,
  and idle cost per day, at 10, 100 and 1,000 photos a day, for the default profile. The async
  figures use a stated model of the day (below) and the documented wake time; neither was
  measured on AWS (no AWS from this machine).
- **measured, local path**: upload-to-answer latency of an async photo in local mode, with the
  endpoint awake and waking from zero (local mode's configured wake delay stands in for a GPU
  instance starting), and the AWS calls the handler makes per photo in async mode (counted
  through botocore, the handler running in this process against the local stack).

The model of a day (async): photos spread evenly over an 8-hour teaching day. An instance is
billed from the moment it starts: a wake takes WAKE_MINUTES (documented range 5-10, midpoint),
then it stays up while photos keep arriving and for SCALE_IN_MINUTES after the last one (target
tracking needs about 15 one-minute datapoints below target before it scales in). If photos
arrive more often than that, the instance simply stays up for the whole day.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Context, Row, environment, percentile, photos, s3_event
from .handler_overhead import counted_calls

PHOTOS_PER_DAY = (10, 100, 1000)
DAY_MINUTES = 8 * 60
WAKE_MINUTES = 7.5  # midpoint of the documented 5-10 minutes
SCALE_IN_MINUTES = 15.0
MODEL_MINUTES = 0.1  # about 6 s of GPU per photo: small next to the wake and the tail
LOCAL_WAKE_SECONDS = 2.0


def async_instance_hours(photos_per_day: int) -> float:
    """Billed instance-hours a day under the model above (one instance suffices here)."""
    gap = DAY_MINUTES / photos_per_day
    if gap > SCALE_IN_MINUTES + WAKE_MINUTES:  # each photo wakes the endpoint on its own
        return photos_per_day * (WAKE_MINUTES + MODEL_MINUTES + SCALE_IN_MINUTES) / 60
    return (WAKE_MINUTES + DAY_MINUTES + SCALE_IN_MINUTES) / 60


def cost_table() -> tuple[list[Row], list[dict[str, Any]]]:
    from visual_tourism import prices
    from visual_tourism.config import load_config

    cfg = load_config(region="us-east-1")
    price = prices.HOURLY_USD[cfg.effective_instance_type]
    label = (f"list price {cfg.effective_instance_type} ${price}/h ({prices.PRICE_REGION}, "
             f"{prices.PRICE_DATE}); S3, Lambda and CloudWatch cents excluded")
    realtime_day = price * cfg.min_instances * 24
    rows = [
        Row("async-cost", "idle cost per day: realtime / async", "async $0",
            f"${realtime_day:,.2f} / $0.00", True, realtime_day, "USD/day", label),
    ]
    table = []
    for n in PHOTOS_PER_DAY:
        hours = async_instance_hours(n)
        async_day = price * hours
        table.append({"photos_per_day": n, "realtime_usd_day": round(realtime_day, 2),
                      "realtime_usd_photo": round(realtime_day / n, 4),
                      "async_instance_hours": round(hours, 2),
                      "async_usd_day": round(async_day, 2),
                      "async_usd_photo": round(async_day / n, 4)})
        rows.append(Row(
            "async-cost", f"cost per photo at {n:,}/day: realtime / async", "",
            f"${realtime_day / n:,.3f} / ${async_day / n:,.3f} (per day ${realtime_day:,.0f} / "
            f"${async_day:,.0f})", None, async_day / n, "USD/photo",
            f"{label}; async: model of an 8 h day, wake {WAKE_MINUTES} min (documented 5-10), "
            f"scale-in after {SCALE_IN_MINUTES:g} min idle: not measured on AWS"))
    return rows, table


def _complete_event(s3: Any, bucket: str, prefix: str, timeout: float = 30.0) -> dict[str, Any]:
    """The S3 event of the first object SageMaker (the local queue) writes under ``prefix``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        found = [o for o in found if not o["Key"].endswith("/")]
        if found:
            event = s3_event(s3, bucket, found[0]["Key"])
            return event
        time.sleep(0.05)
    raise RuntimeError(f"nothing written under {prefix}")


def measured(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    import lambda_code
    from visual_tourism import async_inference, lambda_fn, packaging, stack
    from visual_tourism.aws import Aws
    from visual_tourism.config import load_config
    from visual_tourism.local.stack import LocalStack

    pictures = photos()
    count = 3 if quick else 8
    with tempfile.TemporaryDirectory() as work, LocalStack(
            model="stand-in", work_dir=Path(work), wake_seconds=LOCAL_WAKE_SECONDS) as local, \
            environment(local.env):
        cfg = load_config(prefix="bench-async", inference_mode="async",
                          state_dir=str(Path(work) / "state"))
        aws = Aws(cfg.region)
        real_vendor = packaging.vendor_pillow
        packaging.vendor_pillow = lambda _cfg, _cache=None: None  # photos fit inline as they are
        try:
            stack.up(cfg, aws, endpoint_poll=0.1)
        finally:
            packaging.vendor_pillow = real_vendor
        bucket = cfg.bucket_name(aws.account_id)
        awake = [stack.ask(pictures[i % len(pictures)], cfg, aws, timeout=60,
                           key=f"input/awake-{i}.jpeg")["seen_after_seconds"]
                 for i in range(count)]
        from_zero = []
        for i in range(2 if quick else 3):
            async_inference.sleep(aws, cfg)
            record = stack.ask(pictures[i % len(pictures)], cfg, aws, timeout=60,
                               key=f"input/zero-{i}.jpeg")
            from_zero.append(record["seen_after_seconds"])
        local.runtime.wait_idle(30)

        # AWS calls per photo: the handler in this process, notifications unwired so the
        # local Lambda service does not run it too.
        async_inference.remove_notifications(aws, cfg, bucket)
        lambda_fn.remove_notification(aws, cfg, bucket)
        variables = aws.lambda_.get_function_configuration(
            FunctionName=cfg.function_name)["Environment"]["Variables"]
        key = "input/counted.jpeg"
        aws.s3.put_object(Bucket=bucket, Key=key, Body=pictures[0].read_bytes())
        with environment(variables):
            with counted_calls() as submit_ops:
                lambda_code.lambda_handler(s3_event(aws.s3, bucket, key), Context())
            submitted = list(submit_ops)
            event = _complete_event(aws.s3, bucket, async_inference.outputs_prefix(cfg))
            with counted_calls() as complete_ops:
                summary = lambda_code.lambda_handler(event, Context())["records"][0]
            completed = list(complete_ops)
        if summary["status"] != "ok":
            raise RuntimeError(f"the counted photo was not answered: {summary}")
        record = json.loads(aws.s3.get_object(Bucket=bucket, Key="output/counted.jpeg.json")[
            "Body"].read())
        assert record["status"] == "ok"
        stack.down(cfg, aws, delete_bucket=True)

    rows = [
        Row("async-cost", "local async upload-to-answer, endpoint awake (p50 / max)", "",
            f"{percentile(awake, 50):.2f} / {max(awake):.2f} s", None, percentile(awake, 50),
            "s", f"measured, local mode, stand-in model, {count} photos one at a time"),
        Row("async-cost", "local async upload-to-answer, endpoint at zero (p50)", "",
            f"{percentile(from_zero, 50):.2f} s (wake delay {LOCAL_WAKE_SECONDS:g} s)", None,
            percentile(from_zero, 50), "s",
            "measured, local mode; on AWS add the documented 5-10 minutes of a GPU start"),
        Row("async-cost", "AWS calls per photo, async (submit + complete)", "",
            f"{len(submitted)} + {len(completed)}: {', '.join(submitted)} | "
            f"{', '.join(completed)}", None, len(submitted) + len(completed), "calls",
            "counted through botocore; the completion's marker is found at once here"),
    ]
    return rows, {"awake_s": awake, "from_zero_s": from_zero, "submit_calls": submitted,
                  "complete_calls": completed}


def run(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    cost_rows, table = cost_table()
    local_rows, local = measured(quick)
    return cost_rows + local_rows, {"cost_table": table, "local": local,
                                    "model": {"day_minutes": DAY_MINUTES,
                                              "wake_minutes": WAKE_MINUTES,
                                              "scale_in_minutes": SCALE_IN_MINUTES}}
