"""CloudWatch Logs: the log groups of the function and the endpoint, created by us.

Lambda and SageMaker would create them on first use, without a retention (kept, and billed,
forever) and without our tag. Creating them first gives them a retention and lets `down`
remove exactly these two.
"""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

from .aws import Aws, ignore_not_found, is_not_found
from .config import STACK_TAG, Config

log = logging.getLogger(__name__)

RETENTION_DAYS = 14


def function_log_group(cfg: Config) -> str:
    return f"/aws/lambda/{cfg.function_name}"


def endpoint_log_group(cfg: Config) -> str:
    return f"/aws/sagemaker/Endpoints/{cfg.endpoint_name}"


def _find(aws: Aws, name: str) -> dict | None:
    groups = aws.client("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    return next((g for g in groups if g["logGroupName"] == name), None)


def ensure_log_group(aws: Aws, cfg: Config, name: str) -> str:
    """Create the group (tagged, with our retention), or keep ours at our retention.

    A group of that name that is not ours is left exactly as it is: a retention set on it
    would delete its owner's older events. Callers check that the function or endpoint the
    group belongs to is ours (or absent) before calling this.
    """
    logs = aws.client("logs")
    found = _find(aws, name)
    if found is None:
        logs.create_log_group(logGroupName=name, tags={STACK_TAG: cfg.prefix})
    elif not is_ours(aws, cfg, found):
        log.warning("Log group %s exists but was not created by visual-tourism: its retention "
                    "and events are left as they are", name)
        return name
    if found is None or found.get("retentionInDays") != RETENTION_DAYS:
        logs.put_retention_policy(logGroupName=name, retentionInDays=RETENTION_DAYS)
    return name


def is_ours(aws: Aws, cfg: Config, group: dict) -> bool:
    arn = group.get("logGroupArn") or group["arn"].removesuffix(":*")
    try:
        tags = aws.client("logs").list_tags_for_resource(resourceArn=arn).get("tags", {})
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    return tags.get(STACK_TAG) == cfg.prefix


def delete_log_group(aws: Aws, cfg: Config, name: str) -> bool:
    """Delete the group if it carries our tag; one Lambda or SageMaker made alone is left."""
    group = _find(aws, name)
    if group is None:
        return False
    if not is_ours(aws, cfg, group):
        log.warning("Log group %s was not created by visual-tourism: left alone", name)
        return False
    logs = aws.client("logs")
    return ignore_not_found(lambda: logs.delete_log_group(logGroupName=name), f"log group {name}")
