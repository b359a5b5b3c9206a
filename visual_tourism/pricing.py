"""A dated price table for the endpoint instance types the profiles use.

SageMaker real-time inference, on-demand, Linux, us-east-1, in US dollars per instance-hour.
Prices change and differ by region: check the AWS pricing page or the Pricing Calculator
before you budget. The endpoint is billed per second for as long as it exists, busy or idle.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

PRICE_DATE = "2026-11"
PRICE_REGION = "us-east-1"
PRICE_SOURCE = "https://aws.amazon.com/sagemaker/pricing/ (real-time inference, on-demand)"

HOURLY_USD: dict[str, float] = {
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 0.94,
    "ml.g4dn.4xlarge": 1.505,
    "ml.g4dn.8xlarge": 2.72,
    "ml.g4dn.12xlarge": 4.89,
    "ml.g4dn.16xlarge": 5.44,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.g5.12xlarge": 7.09,
}


def hourly_cost(instance_type: str | None, instances: int) -> float | None:
    """Cost per hour of ``instances`` running instances, or None if the type is not listed."""
    price = HOURLY_USD.get(instance_type or "")
    return None if price is None else round(price * instances, 3)


def describe_cost(instance_type: str | None, instances: int, region: str,
                  local: bool = False) -> str:
    """The endpoint's hourly and monthly cost in words; in local mode, that none is billed."""
    cost = hourly_cost(instance_type, instances)
    if cost is None:
        text = f"no price recorded for {instance_type}: see {PRICE_SOURCE}"
    else:
        note = "" if region == PRICE_REGION else f"; {region} differs"
        text = (
            f"${cost:.2f}/hour ({instances} x {instance_type} at "
            f"${HOURLY_USD[instance_type]}/h, {PRICE_REGION} list price as of "
            f"{PRICE_DATE}{note}), about ${cost * 24 * 30:,.0f} a month if left running"
        )
    if local:
        return f"nothing is billed in local mode (on AWS this would be {text})"
    return text


HOURS_PER_MONTH = 730  # AWS's own convention for monthly estimates
LOCAL_NOTE = "AWS list prices for the same stack on AWS; nothing is billed in local mode"


def is_local() -> bool:
    """Local mode is chosen by endpoint URLs on loopback (see local/stack.py)."""
    url = os.environ.get("AWS_ENDPOINT_URL", "")
    return "127.0.0.1" in url or "localhost" in url


def _labelled(text: str) -> str:
    return f"{text} [{LOCAL_NOTE}]" if is_local() else text


def describe_plan(cfg: Any) -> str:
    """What the configured endpoint costs, said before `up` and before billable cells."""
    instance_type = cfg.effective_instance_type
    price = HOURLY_USD.get(instance_type)
    if price is None:
        return _labelled(f"no price recorded for {instance_type}: see {PRICE_SOURCE}")
    where = f"{PRICE_REGION} list price as of {PRICE_DATE}" + (
        "" if cfg.region == PRICE_REGION else f"; {cfg.region} differs"
    )
    if cfg.is_async:
        text = (
            f"async: $0/hour while idle (scales to 0 instances); ${price:.2f}/hour for each "
            f"running {instance_type} ({where}), about ${price * HOURS_PER_MONTH:,.0f} a month "
            f"if one ran all month; up to {cfg.max_instances} under load"
        )
    else:
        hourly = price * cfg.min_instances
        text = (
            f"${hourly:.2f}/hour ({cfg.min_instances} x {instance_type}, {where}), about "
            f"${hourly * HOURS_PER_MONTH:,.0f} a month if left running, busy or idle"
        )
    if cfg.stop_after:
        text += f"; stop deadline after {cfg.stop_after}"
    return _labelled(text)


def cost_so_far(aws: Any, cfg: Any, ep: dict[str, Any]) -> dict[str, Any]:
    """Estimated endpoint cost so far, and what the next hour costs at today's capacity.

    Instance time is estimated as the current instance count since the endpoint last changed
    (SageMaker reports no instance-hours); earlier changes, such as an async endpoint that ran
    and scaled back to zero, are not counted: Cost Explorer has the billed figure.
    """
    price = HOURLY_USD.get(ep.get("instance_type") or "")
    instances = int(ep.get("instances") or 0)
    if ep.get("state") in (None, "absent") or price is None:
        return {"so_far_usd": 0.0 if ep.get("state") in (None, "absent") else None,
                "next_hour_usd": 0.0 if ep.get("state") in (None, "absent") else None,
                "note": _labelled("no endpoint" if ep.get("state") in (None, "absent")
                                  else f"no price recorded for {ep.get('instance_type')}")}
    found = aws.sagemaker.describe_endpoint(EndpointName=cfg.endpoint_name)
    since = found.get("LastModifiedTime") or found.get("CreationTime")
    hours = max(0.0, (datetime.now(UTC) - since).total_seconds() / 3600) if since else 0.0
    return {
        "so_far_usd": round(price * instances * hours, 2),
        "next_hour_usd": round(price * instances, 2),
        "since": since.isoformat(timespec="seconds") if since else None,
        "note": _labelled(
            f"estimate: {instances} x {ep.get('instance_type')} for {hours:.1f} h since the "
            "endpoint last changed; see Cost Explorer for billed figures"
        ),
    }
