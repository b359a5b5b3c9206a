"""Lambda: the photo function, its log group, and the S3 trigger (permission + bucket
notification). Its zip (``lambda_code.py`` and ``photo_handler/``) is
``packaging.build_zip("photo")``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from . import packaging
from .aws import Aws, error_code, error_message, ignore_not_found, is_not_found, tags_dict
from .config import STACK_TAG, THUMBNAIL_PREFIX, Config
from .errors import NotOwnedError

log = logging.getLogger(__name__)

HANDLER = "lambda_code.lambda_handler"
PERMISSION_ID = "visual-tourism-s3-invoke"


def function_environment(cfg: Config, bucket: str) -> dict[str, str]:
    """The variables lambda_code.py reads; every value comes from the configuration."""
    profile = cfg.profile
    hosted = {"MODEL_KIND": "sagemaker", "MODEL_PRICES": "", "STRUCTURED_OUTPUT": "text"}
    return {**_environment(cfg, bucket), **(_managed_environment(cfg) if profile.managed
                                           else hosted)}


def _managed_environment(cfg: Config) -> dict[str, str]:
    """A managed model (Amazon Bedrock): no endpoint; the modelId to call (the inference
    profile's where it needs one), its list prices for each record's cost, and how it
    answers in structure (photo_handler/converse.py)."""
    from . import prices

    profile = cfg.profile
    price = prices.TOKEN_USD.get(profile.model_id)
    return {
        "MODEL_KIND": "bedrock",
        "ENDPOINT_NAME": "",
        "MODEL_ID": profile.invoke_id(cfg.region),
        "MODEL_PRICES": json.dumps({
            "input_per_million": price.input_per_million,
            "output_per_million": price.output_per_million,
            "basis": f"list price as of {price.date}",
        }) if price else "",
        "STRUCTURED_OUTPUT": "tool" if profile.forced_tool else "text",
    }


def _environment(cfg: Config, bucket: str) -> dict[str, str]:
    profile = cfg.profile
    return {
        "BUCKET_NAME": bucket,
        "ENDPOINT_NAME": cfg.endpoint_name,
        "INPUT_PREFIX": cfg.input_prefix,
        "OUTPUT_PREFIX": cfg.output_prefix,
        "EXAMPLE_KEY": cfg.example_key,
        "EXAMPLE_ANSWER": cfg.example_answer,
        "INSTRUCTION": cfg.instruction,
        "REQUEST_STYLE": profile.request_style,
        "GENERATION_PARAMETERS": json.dumps(cfg.generation, sort_keys=True),
        "IMAGE_TRANSPORT": cfg.effective_image_transport,
        "MODEL_PROFILE": profile.name,
        "MODEL_ID": profile.model_id,
        "INFERENCE_MODE": cfg.inference_mode,
        "ASYNC_PREFIX": cfg.async_prefix,
        "ASYNC_TTL_SECONDS": str(cfg.async_request_ttl),
        "ASYNC_INVOCATION_TIMEOUT_SECONDS": str(cfg.async_invocation_timeout),
        # The container's limits: the handler sizes images and checks settings with them.
        "CONTAINER_LIMITS": profile.limits.to_env(),
        # The answer presets (photo_handler/presets.py): one GetItem per photo; empty when off.
        "PRESETS_TABLE": cfg.presets_table,
        # With the web page: the gallery's small copies of web photos (empty: none made).
        "THUMBNAIL_PREFIX": web_thumbnail_prefix(cfg),
        # Nearby places to eat (photo_handler/places.py): one SearchNearby per located photo.
        "PLACES": cfg.places,
        "PLACES_RADIUS_METERS": str(cfg.places_radius),
        "PLACES_MAX_RESULTS": str(cfg.places_max_results),
    }


def web_thumbnail_prefix(cfg: Config) -> str:
    return THUMBNAIL_PREFIX if cfg.web_api == "on" else ""


def _function_settings(cfg: Config, role_arn: str, bucket: str) -> dict[str, Any]:
    return {
        "Role": role_arn,
        "Handler": HANDLER,
        "Runtime": cfg.lambda_runtime,
        "Timeout": cfg.lambda_timeout,
        "MemorySize": cfg.lambda_memory,
        "Environment": {"Variables": function_environment(cfg, bucket)},
        "Description": f"Visual Tourism ({cfg.prefix}): photo in input/, advice in output/",
    }


def get_function(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        return aws.lambda_.get_function(FunctionName=name)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def is_ours(aws: Aws, cfg: Config, function: dict[str, Any]) -> bool:
    # GetFunction returns Tags only to callers also allowed lambda:ListTags; ask explicitly
    # then, so a missing permission is an error rather than "not ours".
    tags = function.get("Tags")
    if tags is None:
        arn = function["Configuration"]["FunctionArn"]
        tags = aws.lambda_.list_tags(Resource=arn).get("Tags", {})
    return tags_dict(tags).get(STACK_TAG) == cfg.prefix


def _role_not_ready(exc: BaseException) -> bool:
    # IAM is eventually consistent: a new role "cannot be assumed" for a few seconds.
    return error_code(exc) == "InvalidParameterValueException" and "role" in error_message(
        exc
    ).lower()


def require_ours_or_absent(aws: Aws, cfg: Config) -> None:
    """Refuse, before anything is touched, a function of our name that is not ours."""
    current = get_function(aws, cfg.function_name)
    if current is not None and not is_ours(aws, cfg, current):
        raise NotOwnedError(
            f"A Lambda function named {cfg.function_name} exists but was not created by "
            "visual-tourism. Choose another prefix (VT_PREFIX) or remove that function."
        )


def ensure_function(aws: Aws, cfg: Config, role_arn: str, bucket: str, zip_bytes: bytes) -> str:
    """Create the function, or update its code and settings where they differ. Returns its ARN."""
    return ensure_code_and_settings(aws, cfg, cfg.function_name,
                                    _function_settings(cfg, role_arn, bucket), zip_bytes)


def ensure_code_and_settings(aws: Aws, cfg: Config, name: str, settings: dict[str, Any],
                             zip_bytes: bytes) -> str:
    """Function ``name`` with this code and these settings (both functions' step): created,
    or updated where it differs. A function of that name without our tag is refused."""
    current = get_function(aws, name)
    if current is None:
        arn = aws.retry(
            lambda: aws.lambda_.create_function(
                FunctionName=name, Code={"ZipFile": zip_bytes}, Publish=False,
                Tags={STACK_TAG: cfg.prefix}, **settings,
            )["FunctionArn"],
            retry_if=_role_not_ready,
            what=f"create Lambda {name}",
        )
        aws.wait("lambda", "function_active_v2", delay=2, FunctionName=name)
        log.info("Created Lambda %s", name)
        return arn
    if not is_ours(aws, cfg, current):
        raise NotOwnedError(
            f"A Lambda function named {name} exists but was not created by visual-tourism. "
            "Choose another prefix (VT_PREFIX) or remove that function."
        )
    conf = current["Configuration"]
    if conf["CodeSha256"] != packaging.code_sha256(zip_bytes):
        aws.lambda_.update_function_code(FunctionName=name, ZipFile=zip_bytes)
        aws.wait("lambda", "function_updated_v2", delay=2, FunctionName=name)
        log.info("Updated the code of Lambda %s", name)
    have = {k: conf.get(k) for k in settings}
    have["Environment"] = {"Variables": conf.get("Environment", {}).get("Variables", {})}
    if have != settings:
        aws.retry(
            lambda: aws.lambda_.update_function_configuration(FunctionName=name, **settings),
            retry_if=_role_not_ready,
            what=f"update Lambda {name}",
        )
        aws.wait("lambda", "function_updated_v2", delay=2, FunctionName=name)
        log.info("Updated the configuration of Lambda %s", name)
    return conf["FunctionArn"]


def _permission_statement(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        policy = json.loads(aws.lambda_.get_policy(FunctionName=name)["Policy"])
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    return next((s for s in policy["Statement"] if s.get("Sid") == PERMISSION_ID), None)


def ensure_permission(aws: Aws, cfg: Config, bucket: str) -> None:
    """Let S3 invoke the function, only for this bucket in this account (checked first, so a
    re-run adds no duplicate statement)."""
    source_arn = f"arn:{aws.partition}:s3:::{bucket}"
    statement = _permission_statement(aws, cfg.function_name)
    if statement and source_arn in json.dumps(statement.get("Condition", {})):
        return
    if statement:
        aws.lambda_.remove_permission(FunctionName=cfg.function_name, StatementId=PERMISSION_ID)
    aws.lambda_.add_permission(
        FunctionName=cfg.function_name,
        StatementId=PERMISSION_ID,
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn=source_arn,
        SourceAccount=aws.account_id,
    )


def notification_id(cfg: Config) -> str:
    return f"{cfg.prefix}-input-trigger"


def _get_notifications(aws: Aws, bucket: str) -> dict[str, Any]:
    conf = aws.s3.get_bucket_notification_configuration(Bucket=bucket)
    conf.pop("ResponseMetadata", None)
    return conf


def ensure_notification(aws: Aws, cfg: Config, bucket: str, function_arn: str) -> None:
    """Merge our input/ trigger into the bucket's notifications; others are kept as they are."""
    conf = _get_notifications(aws, bucket)
    ours = {
        "Id": notification_id(cfg),
        "LambdaFunctionArn": function_arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": cfg.input_prefix}]}},
    }
    current = conf.get("LambdaFunctionConfigurations", [])
    others = [c for c in current if c.get("Id") != ours["Id"]]
    if any(_same_trigger(c, ours) for c in current):
        return  # already wired exactly like this
    conf["LambdaFunctionConfigurations"] = others + [ours]
    aws.s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration=conf
    )


def _same_trigger(have: dict[str, Any], want: dict[str, Any]) -> bool:
    # S3 answers the filter rule name as "Prefix" whatever case it was sent in.
    def norm(c: dict[str, Any]) -> tuple[Any, ...]:
        rules = c.get("Filter", {}).get("Key", {}).get("FilterRules", [])
        return (
            c.get("Id"), c.get("LambdaFunctionArn"), sorted(c.get("Events", [])),
            sorted((r["Name"].lower(), r["Value"]) for r in rules),
        )

    return norm(have) == norm(want)


def remove_notification(aws: Aws, cfg: Config, bucket: str) -> bool:
    """Take our input/ trigger out of the bucket's notifications; the others stay."""
    return drop_notifications(aws, bucket, lambda c: c.get("Id") == notification_id(cfg))


def drop_notifications(
    aws: Aws, bucket: str, matches: Callable[[dict[str, Any]], bool]
) -> bool:
    """Remove the Lambda notifications that ``matches``; True if any was removed."""
    try:
        conf = _get_notifications(aws, bucket)
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    current = conf.get("LambdaFunctionConfigurations", [])
    kept = [c for c in current if not matches(c)]
    if len(kept) == len(current):
        return False
    conf["LambdaFunctionConfigurations"] = kept
    aws.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=conf)
    return True


def remove_permission(aws: Aws, cfg: Config) -> bool:
    """Remove our S3 statement, only from our own function (a foreign one keeps its policy)."""
    current = get_function(aws, cfg.function_name)
    if current is None:
        return False
    if not is_ours(aws, cfg, current):
        log.warning("Lambda %s was not created by visual-tourism: its permissions are left "
                    "alone", cfg.function_name)
        return False
    return ignore_not_found(
        lambda: aws.lambda_.remove_permission(
            FunctionName=cfg.function_name, StatementId=PERMISSION_ID
        ),
        "the S3 invoke permission",
    )


def delete_function(aws: Aws, cfg: Config) -> bool:
    current = get_function(aws, cfg.function_name)
    if current is None:
        return False
    if not is_ours(aws, cfg, current):
        log.warning("Lambda %s was not created by visual-tourism: left alone", cfg.function_name)
        return False
    return ignore_not_found(
        lambda: aws.lambda_.delete_function(FunctionName=cfg.function_name),
        f"Lambda {cfg.function_name}",
    )


def _sends(rule: dict[str, Any], function_name: str, key: str) -> bool:
    """Does this bucket notification send an upload of ``key`` to the function?"""
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]; the template's Ids differ
    # from ours, so the target and the filter are compared, not the Id.
    parts = str(rule.get("LambdaFunctionArn", "")).split(":")
    if len(parts) < 7 or parts[6] != function_name:
        return False
    if not any(e in ("s3:ObjectCreated:*", "s3:ObjectCreated:Put") for e in rule.get("Events", [])):
        return False
    rules = rule.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    for item in rules:
        name, value = str(item.get("Name", "")).lower(), str(item.get("Value", ""))
        if (name == "prefix" and not key.startswith(value)) or (
                name == "suffix" and not key.endswith(value)):
            return False
    return True


def trigger_problem(aws: Aws, cfg: Config, bucket: str, key: str) -> str | None:
    """Why an upload of ``key`` would not run the function now, or None when it would.

    Checked by ``ask`` before it uploads, so a missing trigger is said at once instead of
    after the whole wait for a result that can never come.
    """
    if get_function(aws, cfg.function_name) is None:
        return f"the function {cfg.function_name} does not exist"
    try:
        rules = _get_notifications(aws, bucket).get("LambdaFunctionConfigurations", [])
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        rules = []
    if not any(_sends(rule, cfg.function_name, key) for rule in rules):
        return f"bucket {bucket} has no notification that sends {key} to {cfg.function_name}"
    return None


def describe(aws: Aws, cfg: Config, bucket: str) -> dict[str, Any]:
    current = get_function(aws, cfg.function_name)
    if current is None:
        return {"name": cfg.function_name, "state": "absent", "trigger": False}
    try:
        conf = _get_notifications(aws, bucket)
        trigger = any(
            c.get("Id") == notification_id(cfg)
            for c in conf.get("LambdaFunctionConfigurations", [])
        )
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        trigger = False
    return {
        "name": cfg.function_name,
        "state": current["Configuration"].get("State", "Active"),
        "trigger": trigger and _permission_statement(aws, cfg.function_name) is not None,
    }

