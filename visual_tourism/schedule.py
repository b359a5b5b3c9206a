"""The stop deadline: an EventBridge Scheduler one-time schedule that stops the endpoint.

``stop_after = "3h"`` (or ``up --stop-after 3h``) creates ``at(...)`` with
``ActionAfterCompletion = DELETE`` in a schedule group of our own (schedules cannot carry
tags; the group does, so `down` removes only what is ours). Its universal target makes one
SDK call with a role that may make exactly that call:

- real-time: ``sagemaker:DeleteEndpoint`` on this endpoint (billing stops; `up` recreates it);
- async: ``application-autoscaling:RegisterScalableTarget`` with min 0 and max 0, so the
  endpoint scales in to zero instances and stays there, queued photos included, until
  `visual-tourism wake` sets the maximum again (`sleep` and a re-run of `up` keep it at 0).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from . import autoscaling, iam
from .aws import Aws, ignore_not_found, is_not_found, tags_dict
from .config import STACK_TAG, Config

log = logging.getLogger(__name__)

POLICY_NAME = "visual-tourism-stop-deadline"
DELETE_ENDPOINT = "arn:aws:scheduler:::aws-sdk:sagemaker:deleteEndpoint"
REGISTER_TARGET = "arn:aws:scheduler:::aws-sdk:applicationautoscaling:registerScalableTarget"


def group_name(cfg: Config) -> str:
    return cfg.prefix


def target_arn(cfg: Config) -> str:
    return REGISTER_TARGET if cfg.is_async else DELETE_ENDPOINT


def target_input(cfg: Config) -> dict[str, Any]:
    """The API call's parameters, as the universal target passes them."""
    if cfg.is_async:
        return {
            "ServiceNamespace": autoscaling.NAMESPACE,
            "ResourceId": autoscaling.resource_id(cfg),
            "ScalableDimension": autoscaling.DIMENSION,
            "MinCapacity": 0,
            "MaxCapacity": 0,
        }
    return {"EndpointName": cfg.endpoint_name}


def role_policy(cfg: Config, *, account: str, partition: str = "aws") -> dict[str, Any]:
    """The scheduler's role may make the one call its target makes, on this endpoint only."""
    endpoint_arn = (
        f"arn:{partition}:sagemaker:{cfg.region}:{account}:endpoint/{cfg.endpoint_name.lower()}"
    )
    if not cfg.is_async:
        statements = [{
            "Sid": "DeleteThisEndpoint", "Effect": "Allow",
            "Action": ["sagemaker:DeleteEndpoint"], "Resource": endpoint_arn,
        }]
    else:
        statements = [
            {
                # Scalable targets have no ARN before they exist and no resource-level
                # permission for RegisterScalableTarget: "*" is the narrowest AWS allows.
                "Sid": "SetCapacityFloorAndCeiling", "Effect": "Allow",
                "Action": ["application-autoscaling:RegisterScalableTarget"], "Resource": "*",
            },
            {
                # What Application Auto Scaling checks the caller may do to the variant.
                "Sid": "ScaleThisEndpoint", "Effect": "Allow",
                "Action": ["sagemaker:DescribeEndpoint",
                           "sagemaker:UpdateEndpointWeightsAndCapacities"],
                "Resource": endpoint_arn,
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def deadline_expression(when: datetime) -> str:
    return f"at({when.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S')})"


def parse_expression(expression: str) -> datetime | None:
    if not expression.startswith("at(") or not expression.endswith(")"):
        return None
    return datetime.strptime(expression[3:-1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def _ensure_group(aws: Aws, cfg: Config) -> None:
    scheduler = aws.client("scheduler")
    try:
        group = scheduler.get_schedule_group(Name=group_name(cfg))
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        scheduler.create_schedule_group(
            Name=group_name(cfg), Tags=[{"Key": STACK_TAG, "Value": cfg.prefix}]
        )
        return
    if not _group_is_ours(aws, cfg, group["Arn"]):
        from .errors import NotOwnedError

        raise NotOwnedError(
            f"A schedule group named {group_name(cfg)} exists but was not created by "
            "visual-tourism. Choose another prefix (VT_PREFIX) or delete that group."
        )


def _group_is_ours(aws: Aws, cfg: Config, arn: str) -> bool:
    tags = aws.client("scheduler").list_tags_for_resource(ResourceArn=arn).get("Tags", [])
    return tags_dict(tags).get(STACK_TAG) == cfg.prefix


def ensure_deadline(aws: Aws, cfg: Config, now: datetime | None = None) -> datetime:
    """Create (or move) the one-time schedule ``stop_after`` from now; returns when it fires."""
    when = (now or datetime.now(UTC)) + timedelta(seconds=cfg.stop_after_seconds)
    when = when.replace(microsecond=0)
    role = iam.ensure_role(
        aws, cfg, cfg.scheduler_role_name, "scheduler.amazonaws.com", POLICY_NAME,
        role_policy(cfg, account=aws.account_id, partition=aws.partition),
    )
    _ensure_group(aws, cfg)
    spec = {
        "Name": cfg.schedule_name,
        "GroupName": group_name(cfg),
        "ScheduleExpression": deadline_expression(when),
        "ScheduleExpressionTimezone": "UTC",
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "ActionAfterCompletion": "DELETE",
        "Description": f"Visual Tourism ({cfg.prefix}): stop the endpoint "
                       f"({cfg.inference_mode}) at the deadline",
        "Target": {"Arn": target_arn(cfg), "RoleArn": role,
                   "Input": json.dumps(target_input(cfg), sort_keys=True)},
    }
    scheduler = aws.client("scheduler")
    # A new IAM role takes seconds to be usable by the scheduler.
    call = scheduler.update_schedule if describe(aws, cfg) else scheduler.create_schedule
    aws.retry(lambda: call(**spec), what="create the stop deadline",
              retry_if=lambda exc: "role" in str(exc).lower())
    return when


def describe(aws: Aws, cfg: Config) -> dict[str, Any] | None:
    """The deadline's time and target, or None when there is none."""
    try:
        found = aws.client("scheduler").get_schedule(
            Name=cfg.schedule_name, GroupName=group_name(cfg)
        )
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    fires = parse_expression(found["ScheduleExpression"])
    return {
        "fires_at": fires.isoformat() if fires else found["ScheduleExpression"],
        "in_minutes": round((fires - datetime.now(UTC)).total_seconds() / 60, 1) if fires
        else None,
        "action": "delete the endpoint" if found["Target"]["Arn"] == DELETE_ENDPOINT
        else "scale the endpoint to zero",
    }


def remove_deadline(aws: Aws, cfg: Config) -> bool:
    """The schedule, its group (if ours) and its role; safe to run twice."""
    scheduler = aws.client("scheduler")
    removed = ignore_not_found(
        lambda: scheduler.delete_schedule(Name=cfg.schedule_name, GroupName=group_name(cfg)),
        "stop deadline",
    )
    try:
        group = scheduler.get_schedule_group(Name=group_name(cfg))
    except ClientError as exc:
        if not is_not_found(exc):
            raise
    else:
        if _group_is_ours(aws, cfg, group["Arn"]):
            removed |= ignore_not_found(
                lambda: scheduler.delete_schedule_group(Name=group_name(cfg)), "schedule group"
            )
    return iam.delete_role(aws, cfg, cfg.scheduler_role_name) or removed
