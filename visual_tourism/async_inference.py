"""SageMaker Asynchronous Inference: an endpoint that queues requests and scales to zero.

With ``inference_mode = "async"`` the endpoint configuration carries an ``AsyncInferenceConfig``
that writes outputs and failures into private prefixes of the stack's own bucket; the photo
handler submits each request (``InvokeEndpointAsync``) and returns, and the output or failure
object triggers it again (S3 notifications on those two prefixes, wired here).

Scaling (AWS, "Autoscale an asynchronous endpoint"): a scalable target with a minimum of 0
instances, target tracking on ``ApproximateBacklogSizePerInstance``, and a step policy on a
CloudWatch alarm on ``HasBacklogWithoutCapacity``, so the first request after idle starts an
instance instead of waiting for the backlog to exceed the tracking target.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from . import autoscaling
from .aws import Aws, ignore_not_found
from .config import STACK_TAG, Config
from .endpoint import VARIANT, describe_endpoint

log = logging.getLogger(__name__)

NAMESPACE = autoscaling.NAMESPACE
DIMENSION = autoscaling.DIMENSION
BACKLOG_METRIC = "ApproximateBacklogSizePerInstance"
WAKE_METRIC = "HasBacklogWithoutCapacity"
SCALE_OUT_COOLDOWN = 300  # seconds: a GPU instance takes minutes to load the model
# Documented start-up of a GPU async endpoint from zero (instance launch + model load); what
# `ask`, `status` and the figures quote. Not measured here: no AWS from this machine.
WAKE_MINUTES = "5-10"


# -- names and paths ------------------------------------------------------------------------


def requests_prefix(cfg: Config) -> str:
    return f"{cfg.async_prefix}requests/"


def outputs_prefix(cfg: Config) -> str:
    return f"{cfg.async_prefix}outputs/"


def failures_prefix(cfg: Config) -> str:
    return f"{cfg.async_prefix}failures/"


def tracking_policy_name(cfg: Config) -> str:
    return f"{cfg.prefix}-backlog-per-instance"


def step_policy_name(cfg: Config) -> str:
    return f"{cfg.prefix}-scale-out-from-zero"


def alarm_name(cfg: Config) -> str:
    return f"{cfg.prefix}-backlog-without-capacity"


def notification_ids(cfg: Config) -> dict[str, str]:
    """Notification id -> the prefix it watches (outputs and failures of queued requests)."""
    return {
        f"{cfg.prefix}-async-output-trigger": outputs_prefix(cfg),
        f"{cfg.prefix}-async-failure-trigger": failures_prefix(cfg),
    }


# -- the endpoint configuration -------------------------------------------------------------


def endpoint_config_extras(cfg: Config, bucket: str) -> dict[str, Any]:
    """What CreateEndpointConfig adds for async mode ({} in real-time mode)."""
    if not cfg.is_async:
        return {}
    return {
        "AsyncInferenceConfig": {
            "OutputConfig": {
                "S3OutputPath": f"s3://{bucket}/{outputs_prefix(cfg)}",
                "S3FailurePath": f"s3://{bucket}/{failures_prefix(cfg)}",
            },
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": cfg.async_max_concurrency},
        }
    }


# -- scaling ----------------------------------------------------------------------------------


def target_tracking(cfg: Config) -> dict[str, Any]:
    return {
        "TargetValue": float(cfg.async_backlog_target),
        "CustomizedMetricSpecification": {
            "MetricName": BACKLOG_METRIC,
            "Namespace": "AWS/SageMaker",
            "Dimensions": [{"Name": "EndpointName", "Value": cfg.endpoint_name}],
            "Statistic": "Average",
        },
        "ScaleInCooldown": cfg.scale_in_cooldown,
        "ScaleOutCooldown": cfg.scale_out_cooldown,
    }


def step_scaling() -> dict[str, Any]:
    """+1 instance whenever the alarm says requests wait with no instance to run them."""
    return {
        "AdjustmentType": "ChangeInCapacity",
        "MetricAggregationType": "Average",
        "Cooldown": SCALE_OUT_COOLDOWN,
        "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
    }


def alarm(cfg: Config, policy_arn: str) -> dict[str, Any]:
    return {
        "AlarmName": alarm_name(cfg),
        "AlarmDescription": f"Visual Tourism ({cfg.prefix}): photos wait with no instance",
        "MetricName": WAKE_METRIC,
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": cfg.endpoint_name}],
        "Statistic": "Average",
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
        "AlarmActions": [policy_arn],
    }


def _register(aws: Aws, cfg: Config, low: int, high: int) -> None:
    aws.autoscaling.register_scalable_target(
        ServiceNamespace=NAMESPACE, ResourceId=autoscaling.resource_id(cfg),
        ScalableDimension=DIMENSION, MinCapacity=low, MaxCapacity=high,
    )


def _target(aws: Aws, cfg: Config) -> dict[str, Any] | None:
    targets = aws.autoscaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[autoscaling.resource_id(cfg)],
        ScalableDimension=DIMENSION,
    )["ScalableTargets"]
    return targets[0] if targets else None


def is_stopped(target: dict[str, Any] | None) -> bool:
    """A maximum of 0: the async stop deadline has fired (only `wake` lifts it)."""
    return bool(target) and target["MaxCapacity"] == 0


def ensure_scaling(aws: Aws, cfg: Config) -> None:
    """Min 0, max ``max_instances``; backlog target tracking; step policy + alarm from zero.

    A stop deadline that has fired (maximum 0) stays in force: re-running `up` does not
    restart a GPU the deadline stopped; `visual-tourism wake` does, on purpose.
    """
    stopped = is_stopped(_target(aws, cfg))
    _register(aws, cfg, 0, 0 if stopped else cfg.max_instances)
    if stopped:
        log.warning("%s stays stopped (its stop deadline fired): run 'visual-tourism wake' to "
                    "serve photos again", cfg.endpoint_name)
    common = {
        "ServiceNamespace": NAMESPACE, "ResourceId": autoscaling.resource_id(cfg),
        "ScalableDimension": DIMENSION,
    }
    aws.autoscaling.put_scaling_policy(
        PolicyName=tracking_policy_name(cfg), PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration=target_tracking(cfg), **common,
    )
    arn = aws.autoscaling.put_scaling_policy(
        PolicyName=step_policy_name(cfg), PolicyType="StepScaling",
        StepScalingPolicyConfiguration=step_scaling(), **common,
    )["PolicyARN"]
    aws.client("cloudwatch").put_metric_alarm(
        **alarm(cfg, arn), Tags=[{"Key": STACK_TAG, "Value": cfg.prefix}]
    )
    # A real-time policy left from an earlier `up` in the other mode must not fight these.
    _delete_policies(aws, cfg, [autoscaling.policy_name(cfg)])


def _delete_policies(aws: Aws, cfg: Config, names: list[str]) -> bool:
    """Delete those of ``names`` that exist (a re-run of `up` changes nothing)."""
    common = {
        "ServiceNamespace": NAMESPACE, "ResourceId": autoscaling.resource_id(cfg),
        "ScalableDimension": DIMENSION,
    }
    present = {p["PolicyName"] for p in aws.autoscaling.describe_scaling_policies(
        PolicyNames=names, **common)["ScalingPolicies"]}
    return any([
        ignore_not_found(
            lambda n=name: aws.autoscaling.delete_scaling_policy(PolicyName=n, **common), name
        )
        for name in names if name in present
    ])


def remove_scaling(aws: Aws, cfg: Config) -> bool:
    """The alarm and both policies (the scalable target goes with autoscaling's removal)."""
    cloudwatch = aws.client("cloudwatch")
    had_alarm = bool(cloudwatch.describe_alarms(AlarmNames=[alarm_name(cfg)])["MetricAlarms"])
    if had_alarm:
        cloudwatch.delete_alarms(AlarmNames=[alarm_name(cfg)])
    policies = _delete_policies(aws, cfg, [step_policy_name(cfg), tracking_policy_name(cfg)])
    return had_alarm or policies


# -- waking and sleeping ---------------------------------------------------------------------


def _set_instances(aws: Aws, cfg: Config, count: int) -> None:
    aws.sagemaker.update_endpoint_weights_and_capacities(
        EndpointName=cfg.endpoint_name,
        DesiredWeightsAndCapacities=[{"VariantName": VARIANT, "DesiredInstanceCount": count}],
    )


def _require_async_endpoint(aws: Aws, cfg: Config) -> None:
    from .errors import ConfigError, NotDeployedError

    if cfg.profile.managed:
        raise ConfigError(f"{cfg.profile.name} is a managed model (Amazon Bedrock): there is "
                          "no endpoint to wake or put to sleep, and nothing is billed while "
                          "idle.")
    current = describe_endpoint(aws, cfg.endpoint_name)
    if current is None:
        raise NotDeployedError(
            f"Endpoint {cfg.endpoint_name} does not exist: run 'visual-tourism up "
            "--inference-mode async' (or set inference_mode = \"async\") first."
        )
    config = aws.sagemaker.describe_endpoint_config(
        EndpointConfigName=current["EndpointConfigName"])
    if not config.get("AsyncInferenceConfig"):
        raise NotDeployedError(
            f"Endpoint {cfg.endpoint_name} is a real-time endpoint: only an asynchronous one "
            "can sleep at zero instances. Deploy with inference_mode = \"async\", or use "
            "'visual-tourism down' (or 'up --stop-after') to stop paying for it."
        )


def wake(aws: Aws, cfg: Config, instances: int = 1) -> None:
    """Hold ``instances`` running (ahead of a class): the scaling floor rises, capacity now.

    The one call that lifts a fired stop deadline: the maximum returns to ``max_instances``.
    """
    if not 1 <= instances <= cfg.max_instances:
        from .errors import ConfigError

        raise ConfigError(f"wake: use 1-{cfg.max_instances} instances (max_instances)")
    _require_async_endpoint(aws, cfg)
    _register(aws, cfg, instances, cfg.max_instances)
    _set_instances(aws, cfg, instances)


def sleep(aws: Aws, cfg: Config) -> None:
    """Floor back to 0 and capacity to 0 now; queued photos still wake it (the step policy).

    The maximum stays as it is: sleeping never lifts a stop deadline that has fired.
    """
    _require_async_endpoint(aws, cfg)
    target = _target(aws, cfg)
    _register(aws, cfg, 0, target["MaxCapacity"] if target else cfg.max_instances)
    _set_instances(aws, cfg, 0)


# -- what status and ask show ------------------------------------------------------------------


def backlog(aws: Aws, cfg: Config, minutes: int = 5) -> float | None:
    """Latest ApproximateBacklogSize (requests queued), or None when no datapoint is recent."""
    now = datetime.now(UTC)
    try:
        points = aws.client("cloudwatch").get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName="ApproximateBacklogSize",
            Dimensions=[{"Name": "EndpointName", "Value": cfg.endpoint_name}],
            StartTime=now - timedelta(minutes=minutes), EndTime=now + timedelta(minutes=1),
            Period=60, Statistics=["Maximum"],
        )["Datapoints"]
    except ClientError as exc:  # status must still answer
        log.info("No backlog metric: %s", exc)
        return None
    if not points:
        return None
    return max(points, key=lambda p: p["Timestamp"])["Maximum"]


def instances_now(aws: Aws, cfg: Config) -> int | None:
    current = describe_endpoint(aws, cfg.endpoint_name)
    if current is None:
        return None
    variants = current.get("ProductionVariants") or [{}]
    return int(variants[0].get("CurrentInstanceCount") or 0)


def describe(aws: Aws, cfg: Config) -> dict[str, Any]:
    target = _target(aws, cfg)
    return {
        "mode": cfg.inference_mode,
        "instances": instances_now(aws, cfg),
        "min": target["MinCapacity"] if target else None,
        "max": target["MaxCapacity"] if target else None,
        "backlog": backlog(aws, cfg),
        "stopped": is_stopped(target),
    }


def waiting_note(aws: Aws, cfg: Config) -> str | None:
    """What `ask` and the notebooks say while a photo waits for an endpoint at zero."""
    if not cfg.is_async:
        return None
    count = instances_now(aws, cfg)
    if count:
        return None
    if is_stopped(_target(aws, cfg)):
        return (
            "the stop deadline has stopped the endpoint (0 instances, maximum 0): the photo "
            f"waits in the queue, up to {cfg.async_request_ttl} s, until "
            "'visual-tourism wake'"
        )
    return (
        f"the endpoint has 0 instances: it wakes now that a photo is queued (on AWS a GPU "
        f"instance takes about {WAKE_MINUTES} minutes to start and load the model; run "
        "'visual-tourism wake' before a class to skip this wait)"
    )


# -- the S3 notifications that bring outputs and failures back to the handler -----------------


def ensure_notifications(aws: Aws, cfg: Config, bucket: str, function_arn: str) -> None:
    """Merge the outputs/ and failures/ triggers into the bucket's notifications, and the
    lifecycle rules that expire what a queued request leaves behind (ensure_lifecycle)."""
    from . import lambda_fn

    ensure_lifecycle(aws, cfg, bucket)
    conf = lambda_fn._get_notifications(aws, bucket)
    ids = notification_ids(cfg)
    wanted = [
        {
            "Id": nid,
            "LambdaFunctionArn": function_arn,
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
        }
        for nid, prefix in ids.items()
    ]
    current = conf.get("LambdaFunctionConfigurations", [])
    if all(any(lambda_fn._same_trigger(c, w) for c in current) for w in wanted):
        return
    conf["LambdaFunctionConfigurations"] = [
        c for c in current if c.get("Id") not in ids
    ] + wanted
    aws.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=conf)


def remove_notifications(aws: Aws, cfg: Config, bucket: str) -> bool:
    from . import lambda_fn

    ids = notification_ids(cfg)
    return lambda_fn.drop_notifications(aws, bucket, lambda c: c.get("Id") in ids)


# -- the lifecycle rules that expire what queued requests leave behind --------------------------

# Subfolders of async_prefix a request writes to: its payload (the photo, as a data URI), the
# pending marker, and SageMaker's output or failure object. The handler deletes each once the
# request ends; these rules expire those orphaned by `down`, a kept bucket or a lost event.
ASYNC_FOLDERS = ("requests", "pending", "outputs", "failures")


def expiry_days(cfg: Config) -> int:
    """Whole days (what S3 lifecycle counts) covering the request TTL plus one day."""
    return 1 + -(-cfg.async_request_ttl // 86400)


def lifecycle_rules(cfg: Config) -> list[dict[str, Any]]:
    return [
        {
            "ID": f"{cfg.prefix}-async-{folder}-expiry",
            "Filter": {"Prefix": f"{cfg.async_prefix}{folder}/"},
            "Status": "Enabled",
            "Expiration": {"Days": expiry_days(cfg)},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        for folder in ASYNC_FOLDERS
    ]


def _lifecycle(aws: Aws, bucket: str) -> list[dict[str, Any]]:
    try:
        return aws.s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as exc:
        if "NoSuchLifecycleConfiguration" in str(exc):
            return []
        raise


def ensure_lifecycle(aws: Aws, cfg: Config, bucket: str) -> bool:
    """Merge our expiry rules into the bucket's lifecycle configuration (others' rules are
    kept as they are). Returns whether anything changed. `down` leaves them: they are what
    expires photos a deleted stack left queued in a kept bucket."""
    current = _lifecycle(aws, bucket)
    wanted = lifecycle_rules(cfg)
    ids = {rule["ID"] for rule in wanted}
    if all(rule in current for rule in wanted):
        return False
    rules = [rule for rule in current if rule.get("ID") not in ids] + wanted
    aws.s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    return True
