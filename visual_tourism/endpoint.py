"""SageMaker: the model, its endpoint configuration and the real-time endpoint.

Models and endpoint configurations are immutable in SageMaker, so their names carry a short
hash of what they contain: a changed profile or instance type makes new ones, the endpoint is
updated to them in place, and the old ones are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from .aws import Aws, error_code, error_message, ignore_not_found, is_not_found, tags_dict
from .config import STACK_TAG, Config
from .errors import DeployError, EndpointFailedError, NotOwnedError

log = logging.getLogger(__name__)

VARIANT = "AllTraffic"
Progress = Callable[[str], None]


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def model_name(cfg: Config, image_uri: str, role_arn: str) -> str:
    return f"{cfg.prefix}-model-{_digest(image_uri, cfg.profile.container_env(), role_arn)}"


def config_name(cfg: Config, model: str, extras: dict[str, Any] | None = None) -> str:
    digest = _digest(
        model, cfg.effective_instance_type, cfg.min_instances, cfg.profile.startup_timeout_s,
        *([extras] if extras else []),  # async mode's AsyncInferenceConfig
    )
    return f"{cfg.prefix}-config-{digest}"


def _tags(cfg: Config) -> list[dict[str, str]]:
    return [{"Key": STACK_TAG, "Value": cfg.prefix}]


def _exists(describe: Callable[[], Any]) -> bool:
    try:
        describe()
        return True
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise


def _role_not_ready(exc: BaseException) -> bool:
    return error_code(exc) == "ValidationException" and "assume" in error_message(exc).lower()


def ensure_model(aws: Aws, cfg: Config, image_uri: str, role_arn: str) -> str:
    name = model_name(cfg, image_uri, role_arn)
    if _exists(lambda: aws.sagemaker.describe_model(ModelName=name)):
        return name
    aws.retry(
        lambda: aws.sagemaker.create_model(
            ModelName=name,
            PrimaryContainer={"Image": image_uri, "Environment": cfg.profile.container_env()},
            ExecutionRoleArn=role_arn,
            Tags=_tags(cfg),
        ),
        retry_if=_role_not_ready,
        what=f"create model {name}",
    )
    log.info("Created SageMaker model %s", name)
    return name


def ensure_endpoint_config(
    aws: Aws, cfg: Config, model: str, extras: dict[str, Any] | None = None
) -> str:
    """``extras``: more CreateEndpointConfig fields (async_inference.endpoint_config_extras)."""
    name = config_name(cfg, model, extras)
    if _exists(lambda: aws.sagemaker.describe_endpoint_config(EndpointConfigName=name)):
        return name
    aws.sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": VARIANT,
                "ModelName": model,
                "InstanceType": cfg.effective_instance_type,
                # Async endpoints start with one instance and scale in to zero when idle.
                "InitialInstanceCount": 1 if extras else cfg.min_instances,
                # Downloading 9B parameters and sharding them takes minutes.
                "ContainerStartupHealthCheckTimeoutInSeconds": cfg.profile.startup_timeout_s,
            }
        ],
        Tags=_tags(cfg),
        **(extras or {}),
    )
    log.info("Created endpoint configuration %s", name)
    return name


def describe_endpoint(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        return aws.sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def _owned(aws: Aws, cfg: Config, arn: str) -> bool:
    tags = aws.sagemaker.list_tags(ResourceArn=arn).get("Tags", [])
    return tags_dict(tags).get(STACK_TAG) == cfg.prefix


def ensure_endpoint(
    aws: Aws, cfg: Config, endpoint_config: str, before_update: Callable[[], Any] | None = None
) -> None:
    """Create the endpoint, or point it at ``endpoint_config``. Does not wait (see wait_...).

    ``before_update`` runs before an update that changes the instance type: SageMaker refuses
    that for a variant registered for autoscaling, so the caller deregisters it there.
    """
    name = cfg.endpoint_name
    current = describe_endpoint(aws, name)
    if current is None:
        aws.sagemaker.create_endpoint(
            EndpointName=name, EndpointConfigName=endpoint_config, Tags=_tags(cfg)
        )
        log.info("Creating endpoint %s (10-15 minutes on AWS)", name)
        return
    if not _owned(aws, cfg, current["EndpointArn"]):
        raise NotOwnedError(
            f"A SageMaker endpoint named {name} exists but was not created by visual-tourism. "
            "Choose another prefix (VT_PREFIX) or delete that endpoint."
        )
    status = current["EndpointStatus"]
    if status == "Failed":
        # A failed endpoint cannot be updated: remove it and start again.
        log.info("Endpoint %s had failed; deleting it to create it again", name)
        aws.sagemaker.delete_endpoint(EndpointName=name)
        aws.wait("sagemaker", "endpoint_deleted", delay=10, EndpointName=name)
        aws.sagemaker.create_endpoint(
            EndpointName=name, EndpointConfigName=endpoint_config, Tags=_tags(cfg)
        )
        return
    if current["EndpointConfigName"] == endpoint_config:
        return
    if status != "InService":
        current = wait_for_endpoint(aws, name)
    old_type = variant_of(aws, current["EndpointConfigName"]).get("InstanceType")
    same_type = old_type == cfg.effective_instance_type
    if same_type:
        # Keep the instance count autoscaling has reached instead of dropping to the minimum
        # for the 10-15 minutes of the update.
        aws.sagemaker.update_endpoint(
            EndpointName=name, EndpointConfigName=endpoint_config,
            RetainAllVariantProperties=True,
        )
    else:
        if before_update:
            before_update()
        aws.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=endpoint_config)
    log.info("Updating endpoint %s to %s", name, endpoint_config)


def wait_for_endpoint(
    aws: Aws,
    name: str,
    progress: Progress | None = None,
    poll: float = 15.0,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    """Wait for InService, reporting each status change and the time spent.

    A waiter with progress: botocore's ``endpoint_in_service`` waiter is silent for the
    10-15 minutes a GPU endpoint takes, which looks like a hang in a notebook.
    """
    start = time.monotonic()
    last = None
    while True:
        current = describe_endpoint(aws, name)
        if current is None:
            raise DeployError(f"Endpoint {name} disappeared while waiting for it.")
        status = current["EndpointStatus"]
        elapsed = time.monotonic() - start
        if progress and (status != last or int(elapsed) % 60 < poll):
            progress(f"endpoint {name}: {status} ({elapsed:.0f} s)")
        last = status
        if status == "InService":
            return current
        if status == "Failed":
            raise EndpointFailedError(
                f"Endpoint {name} failed to start: {current.get('FailureReason', 'no reason')}. "
                f"Its container logs are in CloudWatch under /aws/sagemaker/Endpoints/{name}. "
                "Fix the cause (often the instance type's GPU memory or a service quota: "
                "'Service Quotas > SageMaker > <instance> for endpoint usage'), then run "
                "'visual-tourism up' again."
            )
        if elapsed > timeout:
            raise DeployError(f"Endpoint {name} still {status} after {elapsed:.0f} s.")
        aws.sleep(poll)


def _ours_by_prefix(aws: Aws, cfg: Config, lister: str, key: str, name_key: str) -> list[str]:
    names: list[str] = []
    paginator = aws.sagemaker.get_paginator(lister)
    for page in paginator.paginate(NameContains=cfg.prefix):
        for item in page[key]:
            name = item[name_key]
            if name.startswith(f"{cfg.prefix}-") and _owned(aws, cfg, item[_arn_key(name_key)]):
                names.append(name)
    return names


def _arn_key(name_key: str) -> str:
    return name_key.replace("Name", "Arn")


def our_models(aws: Aws, cfg: Config) -> list[str]:
    return _ours_by_prefix(aws, cfg, "list_models", "Models", "ModelName")


def our_configs(aws: Aws, cfg: Config) -> list[str]:
    return _ours_by_prefix(aws, cfg, "list_endpoint_configs", "EndpointConfigs",
                           "EndpointConfigName")


def variant_of(aws: Aws, config: str) -> dict[str, Any]:
    """The production variant of one of our endpoint configurations ({} if it is gone)."""
    try:
        conf = aws.sagemaker.describe_endpoint_config(EndpointConfigName=config)
    except ClientError as exc:
        if is_not_found(exc):
            return {}
        raise
    return conf["ProductionVariants"][0]


def prune(aws: Aws, cfg: Config, keep_configs: set[str]) -> list[str]:
    """Delete our configurations not in ``keep_configs``, and models none of those use."""
    keep_models = {variant_of(aws, name).get("ModelName") for name in keep_configs}
    removed = []
    for name in our_configs(aws, cfg):
        if name not in keep_configs and ignore_not_found(
            lambda n=name: aws.sagemaker.delete_endpoint_config(EndpointConfigName=n), name
        ):
            removed.append(name)
    for name in our_models(aws, cfg):
        if name not in keep_models and ignore_not_found(
            lambda n=name: aws.sagemaker.delete_model(ModelName=n), name
        ):
            removed.append(name)
    return removed


def ours_or_absent(aws: Aws, cfg: Config) -> bool:
    current = describe_endpoint(aws, cfg.endpoint_name)
    return current is None or _owned(aws, cfg, current["EndpointArn"])


def require_ours_or_absent(aws: Aws, cfg: Config) -> None:
    """Refuse, before anything is touched, an endpoint of our name that is not ours."""
    if not ours_or_absent(aws, cfg):
        raise NotOwnedError(
            f"A SageMaker endpoint named {cfg.endpoint_name} exists but was not created by "
            "visual-tourism. Choose another prefix (VT_PREFIX) or delete that endpoint."
        )


def delete_endpoint(aws: Aws, cfg: Config) -> bool:
    current = describe_endpoint(aws, cfg.endpoint_name)
    if current is None:
        return False
    if not _owned(aws, cfg, current["EndpointArn"]):
        log.warning("Endpoint %s was not created by visual-tourism: left alone", cfg.endpoint_name)
        return False
    aws.sagemaker.delete_endpoint(EndpointName=cfg.endpoint_name)
    aws.wait("sagemaker", "endpoint_deleted", delay=10, EndpointName=cfg.endpoint_name)
    return True


def delete_models_and_configs(aws: Aws, cfg: Config) -> list[str]:
    return prune(aws, cfg, keep_configs=set())


def describe(aws: Aws, cfg: Config) -> dict[str, Any]:
    current = describe_endpoint(aws, cfg.endpoint_name)
    if current is None:
        return {"name": cfg.endpoint_name, "state": "absent", "instances": 0}
    variants = current.get("ProductionVariants") or [{}]
    return {
        "name": cfg.endpoint_name,
        "state": current["EndpointStatus"],
        "config": current["EndpointConfigName"],
        "instance_type": variant_of(aws, current["EndpointConfigName"]).get("InstanceType"),
        "instances": variants[0].get("CurrentInstanceCount", 0),
        "failure_reason": current.get("FailureReason"),
    }
