"""Notebook 07's proof: list what of the stack still exists, and fail if anything does."""

from __future__ import annotations

from .. import (
    async_inference,
    autoscaling,
    bucket,
    endpoint,
    iam,
    lambda_fn,
    presets,
    schedule,
)
from ..aws import Aws
from ..config import Config
from ..errors import VisualTourismError
from .display import redact, say
from .steps import bucket_name


class LeftoverError(VisualTourismError):
    """Clean-up finished but some resource of the stack is still there."""


def leftovers(cfg: Config, aws: Aws, keep_bucket: bool = False) -> list[str]:
    """Every resource of this stack that still exists (the bucket only unless kept on purpose)."""
    found: list[str] = []
    ep = endpoint.describe(aws, cfg)
    if ep["state"] != "absent":
        found.append(f"endpoint {ep['name']} ({ep['state']}, {ep['instances']} instance(s), "
                     "billed by the hour)")
    found += [f"SageMaker model {name}" for name in endpoint.our_models(aws, cfg)]
    found += [f"endpoint configuration {name}" for name in endpoint.our_configs(aws, cfg)]
    if autoscaling.describe(aws, cfg)["state"] != "absent":
        found.append(f"autoscaling target {autoscaling.resource_id(cfg)}")
    if lambda_fn.get_function(aws, cfg.function_name) is not None:
        found.append(f"Lambda function {cfg.function_name}")
    for group_name in (f"/aws/lambda/{cfg.function_name}",
                       f"/aws/sagemaker/Endpoints/{cfg.endpoint_name}"):
        groups = aws.client("logs").describe_log_groups(logGroupNamePrefix=group_name)
        found += [f"log group {g['logGroupName']}" for g in groups["logGroups"]
                  if g["logGroupName"] == group_name]
    found += _deadline_and_alarm(cfg, aws)
    for role in (cfg.lambda_role_name, cfg.sagemaker_role_name, cfg.scheduler_role_name):
        if iam.get_role(aws, role) is not None:
            found.append(f"IAM role {role}")
    if (cfg.presets_table and not cfg.keep_presets
            and presets.describe_table(aws, cfg.presets_table) is not None):
        found.append(f"DynamoDB table {cfg.presets_table} (answer presets)")
    name = bucket_name(cfg, aws)
    if not keep_bucket and bucket.bucket_state(aws, name) == "exists":
        found.append(f"bucket {name}")
    return found


def _deadline_and_alarm(cfg: Config, aws: Aws) -> list[str]:
    """The stop deadline's schedule and group, and async mode's wake-from-zero alarm."""
    found: list[str] = []
    if schedule.describe(aws, cfg) is not None:
        found.append(f"stop deadline schedule {cfg.schedule_name} (group "
                     f"{schedule.group_name(cfg)})")
    groups = aws.client("scheduler").list_schedule_groups(
        NamePrefix=schedule.group_name(cfg)).get("ScheduleGroups", [])
    found += [f"schedule group {g['Name']}" for g in groups  # ours only: `down` keeps others'
              if g["Name"] == schedule.group_name(cfg)
              and schedule._group_is_ours(aws, cfg, g["Arn"])]
    alarms = aws.client("cloudwatch").describe_alarms(
        AlarmNames=[async_inference.alarm_name(cfg)])["MetricAlarms"]
    found += [f"CloudWatch alarm {a['AlarmName']}" for a in alarms]
    return found


def confirm_clean(cfg: Config, aws: Aws, keep_bucket: bool = False) -> None:
    """Raise LeftoverError listing what is still there; else say that nothing billable is."""
    left = leftovers(cfg, aws, keep_bucket)
    if left:
        raise LeftoverError(
            redact("Still there after clean-up:\n  - " + "\n  - ".join(left) + "\nRun the "
                   "clean-up again; if something stays, delete it in the AWS console.")
        )
    say(f"Nothing billable is left for stack {cfg.prefix!r} in {cfg.region}: no endpoint, "
        "model, autoscaling target, Lambda function, log group, IAM role, stop deadline, "
        "alarm or presets table.")
    name = bucket_name(cfg, aws)
    if keep_bucket and bucket.bucket_state(aws, name) == "exists":
        say(f"Kept bucket {name} on purpose: its photos and results cost cents per GB-month.")
    elif not keep_bucket:
        say("The bucket and its photos and results are gone too.")
