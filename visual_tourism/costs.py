"""What the endpoint has cost so far: instance-hours added up from its creation and its
scaling history (Application Auto Scaling's activities), at the list prices of ``prices``;
and what a photo costs at a class's volume, hosted or managed (``by_volume``).

An estimate, not the bill: Cost Explorer has the billed figure.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import autoscaling
from .prices import HOURLY_USD, labelled

log = logging.getLogger(__name__)

VOLUMES = (10, 100, 1000)  # photos a day: a class, a school, a busy public page


def by_volume(volumes: tuple[int, ...] = VOLUMES, min_instances: int = 1,
              ) -> list[dict[str, Any]]:
    """Every profile's cost per photo at ``volumes`` photos a day, idle included, at list
    prices: a real-time endpoint bills ``min_instances`` instances 24 hours a day whatever
    the volume, so a photo's share is the day's price / photos; a managed model (Amazon
    Bedrock) bills each photo's tokens (a photo as the default prompt sends it:
    prices.TYPICAL_INPUT_TOKENS in, TYPICAL_OUTPUT_TOKENS out) and nothing while idle.
    Lambda and S3 requests, the same for both, are left out."""
    from . import prices
    from .profiles import PROFILES

    rows = []
    for profile in PROFILES.values():
        if profile.managed:
            photo = prices.token_cost(profile.model_id, prices.TYPICAL_INPUT_TOKENS,
                                      prices.TYPICAL_OUTPUT_TOKENS)
            idle: float | None = 0.0
            per_photo = {n: photo for n in volumes}
            basis = (prices.TOKEN_USD[profile.model_id].basis() if photo is not None
                     else prices.BEDROCK_PRICE_SOURCE)
        else:
            hourly = prices.HOURLY_USD.get(profile.instance_type)
            idle = None if hourly is None else hourly * 24 * min_instances
            per_photo = {n: (None if idle is None else idle / n) for n in volumes}
            basis = (f"{min_instances} x {profile.instance_type} at ${hourly:g}/h, "
                     f"{prices.PRICE_REGION} list price as of {prices.PRICE_DATE}"
                     if hourly is not None else prices.PRICE_SOURCE)
        rows.append({"profile": profile.name, "kind": profile.kind,
                     "idle_usd_per_day": idle, "usd_per_photo": per_photo, "basis": basis})
    return rows

# Application Auto Scaling keeps scaling activities for six weeks.
ACTIVITY_HISTORY = timedelta(weeks=6)
# An endpoint change within this long after an activity ended is that activity's doing.
_SLACK = timedelta(minutes=5)
_COUNT = re.compile(r"instance count to (\d+)", re.IGNORECASE)


def capacity_changes(activities: list[dict[str, Any]]) -> list[tuple[datetime, int]]:
    """(when, instance count) for each successful activity that set a SageMaker variant's count.

    SageMaker's activities read "Setting desired instance count to 2." (Description) and
    "Successfully set desired instance count to 2. Change successfully fulfilled by
    sagemaker." (StatusMessage); an activity without an EndTime has not taken effect yet.
    """
    changes = []
    for activity in activities:
        if activity.get("StatusCode") != "Successful" or not activity.get("EndTime"):
            continue
        found = _COUNT.search(activity.get("Description") or "") or _COUNT.search(
            activity.get("StatusMessage") or "")
        if found:
            changes.append((activity["EndTime"], int(found.group(1))))
    return sorted(changes, key=lambda change: change[0])


def _activities(aws: Any, cfg: Any) -> list[dict[str, Any]] | None:
    """The variant's scaling activities, or None when they cannot be read."""
    try:
        pages = aws.autoscaling.get_paginator("describe_scaling_activities").paginate(
            ServiceNamespace=autoscaling.NAMESPACE, ResourceId=autoscaling.resource_id(cfg),
            ScalableDimension=autoscaling.DIMENSION,
        )
        return [a for page in pages for a in page.get("ScalingActivities", [])]
    except (ClientError, BotoCoreError, NotImplementedError) as exc:  # moto has none
        log.info("No scaling activities: %s", exc)
        return None


def instance_hours(
    *, created: datetime, modified: datetime | None, initial: int, current: int,
    changes: list[tuple[datetime, int]] | None, floor: int, now: datetime,
    tracks_changes: bool = True,
) -> tuple[float, bool]:
    """Instance-hours since ``created``, and whether the history accounts for all of them.

    The count starts at ``initial`` and follows ``changes`` (Application Auto Scaling's
    activities). Where the history cannot say (no activities readable, older than six weeks,
    or a change Application Auto Scaling did not make: `wake`, `sleep`, an endpoint update,
    seen as ``modified`` after the last activity or a count that does not match ``current``),
    only ``floor`` instances are counted (1 for a real-time endpoint, which cannot run on 0;
    0 for an asynchronous one), so the figure is then a lower bound. Without
    ``tracks_changes`` (local mode) LastModifiedTime says nothing about capacity changes.
    """
    def hours(start: datetime, end: datetime) -> float:
        return max(0.0, (end - start).total_seconds() / 3600)

    if changes is None:
        if not tracks_changes:  # local mode: moto keeps no LastModifiedTime for capacity
            return hours(created, now) * min(floor, current), False
        if modified is None or modified <= created + _SLACK:
            if current == initial:  # never changed since it was created
                return hours(created, now) * current, True
            return hours(created, now) * floor, False  # changed, but when is not recorded
        # Every capacity change updates LastModifiedTime: today's count holds since then.
        return hours(created, modified) * floor + hours(modified, now) * current, False
    complete = True
    start, count = created, initial
    oldest = now - ACTIVITY_HISTORY
    if created < oldest:  # activities before then have been dropped
        complete = False
        start, count = oldest, None
    total = hours(created, start) * floor
    for when, new in changes:
        if when < start:
            continue
        total += hours(start, when) * (floor if count is None else count)
        start, count = when, new
    if modified is not None and modified > start + _SLACK:
        # Changed outside Application Auto Scaling: known again only from that change on.
        total += hours(start, modified) * floor + hours(modified, now) * current
        return total, False
    if count != current:
        total += hours(start, now) * min(floor if count is None else count, current)
        return total, False
    return total + hours(start, now) * count, complete


def cost_so_far(aws: Any, cfg: Any, ep: dict[str, Any]) -> dict[str, Any]:
    """Estimated endpoint cost since it was created, and what the next hour costs now.

    SageMaker reports no instance-hours, so they are added up from the endpoint's creation:
    the initial instance count, then each capacity change in Application Auto Scaling's
    scaling activities, at list prices. When that history is incomplete, the figure counts
    only what is certain and says "at least". Cost Explorer has the billed figure.
    """
    absent = ep.get("state") in (None, "absent")
    price = HOURLY_USD.get(ep.get("instance_type") or "")
    instances = int(ep.get("instances") or 0)
    if absent or price is None:
        return {"so_far_usd": 0.0 if absent else None,
                "next_hour_usd": 0.0 if absent else None,
                "complete": absent,
                "note": labelled("no endpoint" if absent
                                  else f"no price recorded for {ep.get('instance_type')}")}
    found = aws.sagemaker.describe_endpoint(EndpointName=cfg.endpoint_name)
    created = found["CreationTime"]
    config = aws.sagemaker.describe_endpoint_config(
        EndpointConfigName=found["EndpointConfigName"])
    variant = (config.get("ProductionVariants") or [{}])[0]
    is_async = bool(config.get("AsyncInferenceConfig"))
    local = bool(getattr(aws, "is_local", False))
    activities = None if local else _activities(aws, cfg)  # moto has no scaling history
    now = datetime.now(UTC)
    hours, complete = instance_hours(
        created=created, modified=found.get("LastModifiedTime"),
        initial=int(variant.get("InitialInstanceCount") or instances), current=instances,
        changes=None if activities is None else capacity_changes(activities),
        floor=0 if is_async else 1, now=now, tracks_changes=not local,
    )
    so_far = round(price * hours, 2)
    age = (now - created).total_seconds() / 3600
    how = (f"{hours:.1f} instance-hours of {ep.get('instance_type')} over the endpoint's "
           f"{age:.1f} h")
    if complete:
        note = (f"estimate from list prices: {how}, from its initial count and its scaling "
                "history; Cost Explorer has the billed figure")
    else:
        why = ("local mode keeps no scaling history" if local else
               "the scaling history cannot be read" if activities is None else
               "some capacity changes are not in the scaling history (wake, sleep, an update, "
               "or older than six weeks)")
        note = (f"estimate from list prices, at least ${so_far:.2f}: {how} counted where "
                f"certain ({why}); Cost Explorer has the billed figure")
    return {
        "so_far_usd": so_far,
        "complete": complete,
        "instance_hours": round(hours, 3),
        "next_hour_usd": round(price * instances, 2),
        "since": created.isoformat(timespec="seconds"),
        "note": labelled(note),
    }
