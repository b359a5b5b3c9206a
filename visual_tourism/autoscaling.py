"""Application Auto Scaling: the endpoint variant's instance count follows its traffic."""

from __future__ import annotations

import logging
from typing import Any

from .aws import Aws, ignore_not_found
from .config import Config
from .endpoint import VARIANT

log = logging.getLogger(__name__)

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"


def resource_id(cfg: Config) -> str:
    return f"endpoint/{cfg.endpoint_name}/variant/{VARIANT}"


def policy_name(cfg: Config) -> str:
    return f"{cfg.prefix}-invocations-per-instance"


def target_tracking(cfg: Config) -> dict[str, Any]:
    return {
        "TargetValue": float(cfg.target_invocations),
        "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
        # Slow to remove a GPU instance (model load takes minutes), quicker to add one.
        "ScaleInCooldown": cfg.scale_in_cooldown,
        "ScaleOutCooldown": cfg.scale_out_cooldown,
    }


def _current(aws: Aws, cfg: Config) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    targets = aws.autoscaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[resource_id(cfg)], ScalableDimension=DIMENSION
    )["ScalableTargets"]
    policies = aws.autoscaling.describe_scaling_policies(
        ServiceNamespace=NAMESPACE, ResourceId=resource_id(cfg), ScalableDimension=DIMENSION,
        PolicyNames=[policy_name(cfg)],
    )["ScalingPolicies"]
    return (targets[0] if targets else None), (policies[0] if policies else None)


def ensure_autoscaling(aws: Aws, cfg: Config) -> None:
    """Register the target and put the policy, unless both are already as configured."""
    target, policy = _current(aws, cfg)
    if (
        target
        and (target["MinCapacity"], target["MaxCapacity"]) == (cfg.min_instances,
                                                               cfg.max_instances)
        and policy
        and {k: policy["TargetTrackingScalingPolicyConfiguration"].get(k)
             for k in target_tracking(cfg)} == target_tracking(cfg)
    ):
        return
    aws.autoscaling.register_scalable_target(
        ServiceNamespace=NAMESPACE,
        ResourceId=resource_id(cfg),
        ScalableDimension=DIMENSION,
        MinCapacity=cfg.min_instances,
        MaxCapacity=cfg.max_instances,
    )
    aws.autoscaling.put_scaling_policy(
        PolicyName=policy_name(cfg),
        ServiceNamespace=NAMESPACE,
        ResourceId=resource_id(cfg),
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration=target_tracking(cfg),
    )


def remove_autoscaling(aws: Aws, cfg: Config) -> bool:
    policy = ignore_not_found(
        lambda: aws.autoscaling.delete_scaling_policy(
            PolicyName=policy_name(cfg), ServiceNamespace=NAMESPACE,
            ResourceId=resource_id(cfg), ScalableDimension=DIMENSION,
        ),
        "scaling policy",
    )
    target = ignore_not_found(
        lambda: aws.autoscaling.deregister_scalable_target(
            ServiceNamespace=NAMESPACE, ResourceId=resource_id(cfg), ScalableDimension=DIMENSION,
        ),
        "scalable target",
    )
    return policy or target


def describe(aws: Aws, cfg: Config) -> dict[str, Any]:
    target, policy = _current(aws, cfg)
    if not target:
        return {"state": "absent"}
    return {
        "state": "configured" if policy else "target only",
        "min": target["MinCapacity"],
        "max": target["MaxCapacity"],
        "target": policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]
        if policy else None,
    }
