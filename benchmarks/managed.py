"""Hosted and managed models side by side: cost per photo and idle cost for every profile, and
the handler's overhead and AWS calls per photo on the managed path (Amazon Bedrock's Converse).

Costs are list-price arithmetic (``visual_tourism.prices``, dated there; the Bedrock per-token
figures are third-party and unverified): a real-time endpoint bills its instance 24 hours a
day whatever the volume (1 instance, the default minimum), so a photo's share is the day's
price / photos a day; a managed model bills each photo's tokens and nothing while idle (a
photo as the default prompt sends it: ``prices.TYPICAL_INPUT_TOKENS`` in,
``TYPICAL_OUTPUT_TOKENS`` out). Lambda and S3 requests, the same for both, are left out.

The overhead is measured as ``handler_overhead`` measures the endpoint path:
``lambda_code.lambda_handler`` in this process against moto's S3 and the local model server
answering Converse at once (an instant backend), the Converse call's time inside the server
taken out; what is left is what the handler adds to every photo: reading the photo and the
example, sizing them for Converse, building the request, the result write.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .common import (
    Row,
    handler_rig,
    instant_backend,
    percentile,
    photos,
    timed_invocation,
    uploaded_events,
)
from .handler_overhead import MODEL_CALL_SECONDS, TARGET_SHARE, counted_calls

VOLUMES = (10, 100, 1000)
NOVA = "amazon.nova-lite-v1:0"


def cost_rows() -> tuple[list[Row], list[dict[str, Any]]]:
    from visual_tourism import costs

    table = costs.by_volume(VOLUMES)
    rows = []
    for entry in table:
        daily, idle = entry["usd_per_photo"], entry["idle_usd_per_day"]
        if idle is None:
            continue
        rows.append(Row(
            "managed", f"{entry['profile']}: cost per photo at 10 / 100 / 1,000 a day", "",
            " / ".join(f"${daily[n]:.5f}" for n in VOLUMES) + f"; idle ${idle:.2f}/day",
            None, daily[100], "USD", f"{entry['kind']}; list-price estimate ({entry['basis']})"))
    for entry in table:
        entry["usd_per_photo"] = {str(n): v for n, v in entry["usd_per_photo"].items()}
    return rows, table


def run(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    from photo_handler import converse

    rows, table = cost_rows()
    count = 10 if quick else 40
    pictures = photos()
    with handler_rig(instant_backend(), MODEL_KIND="bedrock", MODEL_ID=NOVA, ENDPOINT_NAME="",
                     REQUEST_STYLE="converse",
                     MODEL_PRICES='{"input_per_million": 0.06, "output_per_million": 0.24}',
                     RETRY_BASE_SECONDS="0.01") as rig:
        import os

        os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = rig.server.url
        try:
            events = uploaded_events(rig, pictures, "input/managed/", count)
            invoke = partial(timed_invocation, rig)

            converse.clear_cache()
            with counted_calls() as operations:
                first = invoke(events[0], operations)
            with counted_calls() as operations:
                invoke(events[1], operations)  # the clients again: not measured
                runs = [invoke(event, operations) for event in events[2:]]
        finally:
            os.environ.pop("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", None)
    if any(r["status"] != "ok" for r in [first, *runs]):
        raise RuntimeError(f"a managed-path run did not answer: {[r['status'] for r in runs]}")
    overheads = [r["overhead"] for r in runs]
    p50, p95 = percentile(overheads, 50), percentile(overheads, 95)
    budget = TARGET_SHARE * MODEL_CALL_SECONDS
    calls = sorted({len(r["operations"]) for r in runs})
    rows += [
        Row("managed", "AWS calls per photo, managed path (Converse)", "",
            f"{'/'.join(map(str, calls))}: {', '.join(runs[0]['operations'])}", None,
            max(calls), "calls", "the photo and the example read (Converse takes bytes, not "
            "URLs), one Converse call, the result write"),
        Row("managed", "handler overhead per photo, managed path, model excluded (p50 / p95)",
            f"< {budget * 1000:.0f} ms", f"{p50 * 1000:.1f} / {p95 * 1000:.1f} ms",
            p95 < budget, p95 * 1000, "ms",
            f"{len(runs)} photos; includes re-encoding no photo (all within Converse's limits)"),
    ]
    return rows, {"costs": table, "overhead_ms": [round(v * 1000, 3) for v in overheads],
                  "operations": runs[0]["operations"],
                  "first_photo_ms": round(first["overhead"] * 1000, 3)}
