"""CloudFormation: the whole stack as one template (infra/template.yaml), packaged, deployed
and deleted (on the command line: `visual-tourism infra`, visual_tourism/cli/infra.py).

The template is static and reviewable; every parameter value comes from the same ``Config``
and helper functions that ``visual-tourism up`` uses, and tests/test_infra.py proves that the
resolved template carries the same policies, settings and names as those helpers.

Three steps:

- ``package``: build the Lambda zip, upload it to a separate artifacts bucket (the stack's own
  bucket cannot hold its code before it exists) under a content-hash key, and write the
  template and its parameter values under ``build/``.
- ``deploy``: create or update the stack, print its events as they come, report each failed
  resource with its reason, then upload the example photo into the stack's bucket.
- ``delete``: delete the stack. The bucket has ``DeletionPolicy: Retain`` (photos and answers
  outlive the stack, as with ``down``); ``--delete-bucket`` empties and removes it afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from . import bucket, lambda_fn, logs, packaging, quotas, web
from .aws import Aws, error_code, error_message
from .config import PROJECT_ROOT, Config
from .errors import (
    BucketTakenError,
    ConfigError,
    DeployError,
    NotDeployedError,
    StackFailedError,
)

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

TEMPLATE = PROJECT_ROOT / "infra" / "template.yaml"
PACKAGED_TEMPLATE = "packaged.yaml"
PARAMETERS_FILE = "parameters.json"
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]  # the roles have fixed names

# Lambda variables that are template parameters (function_environment is the source of the
# values). BUCKET_NAME and ENDPOINT_NAME are computed inside the template.
LAMBDA_ENV_PARAMETERS = {
    "INPUT_PREFIX": "InputPrefix",
    "OUTPUT_PREFIX": "OutputPrefix",
    "EXAMPLE_KEY": "ExampleKey",
    "EXAMPLE_ANSWER": "ExampleAnswer",
    "INSTRUCTION": "Instruction",
    "REQUEST_STYLE": "RequestStyle",
    "GENERATION_PARAMETERS": "GenerationParameters",
    "IMAGE_TRANSPORT": "ImageTransport",
    "MODEL_PROFILE": "ModelProfile",
    "MODEL_ID": "ModelId",
    "INFERENCE_MODE": "InferenceMode",
    "ASYNC_PREFIX": "AsyncPrefix",
    "ASYNC_TTL_SECONDS": "AsyncTtlSeconds",
    "ASYNC_INVOCATION_TIMEOUT_SECONDS": "AsyncInvocationTimeoutSeconds",
    "CONTAINER_LIMITS": "ContainerLimits",
    "PLACES": "Places",
    "PLACES_RADIUS_METERS": "PlacesRadiusMeters",
    "PLACES_MAX_RESULTS": "PlacesMaxResults",
    "MODEL_KIND": "ModelKind",
    "MODEL_PRICES": "ModelPrices",
    "STRUCTURED_OUTPUT": "StructuredOutput",
}
LAMBDA_ENV_COMPUTED = frozenset({"BUCKET_NAME", "ENDPOINT_NAME", "PRESETS_TABLE",
                                 "THUMBNAIL_PREFIX"})  # the last: from WebPage
# Container variables the template can set (CloudFormation maps cannot have parameter keys,
# so each variable a profile may use has its own optional parameter).
MODEL_ENV_PARAMETERS = {
    "HF_MODEL_ID": "ModelId",
    "SM_NUM_GPUS": "NumGpus",
    "MAX_INPUT_LENGTH": "MaxInputLength",
    "MAX_INPUT_TOKENS": "MaxInputTokens",
    "MAX_TOTAL_TOKENS": "MaxTotalTokens",
    "PAYLOAD_LIMIT": "PayloadLimit",
    "REVISION": "Revision",
    "OPTION_REVISION": "OptionRevision",
    "OPTION_MAX_MODEL_LEN": "OptionMaxModelLen",
    "OPTION_LIMIT_MM_PER_PROMPT": "OptionLimitMmPerPrompt",
}
_BUSY_SUFFIX = "_IN_PROGRESS"


def _quiet(message: str) -> None:
    log.info("%s", message)


# -- names and parameters (pure) ------------------------------------------------------------
def stack_name(cfg: Config) -> str:
    return f"{cfg.prefix}-stack"


def artifacts_bucket_name(cfg: Config, account_id: str) -> str:
    name = f"{cfg.prefix}-artifacts-{account_id}-{cfg.region}"
    if len(name) > 63:
        raise ConfigError(
            f"The artifacts bucket name {name!r} is longer than S3's 63 characters. "
            "Use a shorter prefix (VT_PREFIX)."
        )
    return name


def code_key(zip_bytes: bytes) -> str:
    """New code, new key: CloudFormation updates the function only when the key changes."""
    return f"lambda/{hashlib.sha256(zip_bytes).hexdigest()}.zip"


def _studio_bucket(cfg: Config, account: str) -> str:
    """The default bucket name when it is not the template's computed one, else ''."""
    name = cfg.bucket_name(account)
    return "" if name == f"{cfg.prefix}-{account}-{cfg.region}" else name


def template_parameters(
    cfg: Config, *, image_uri: str, code_bucket: str, code_key: str, account: str = ""
) -> dict[str, str]:
    """Every template parameter's value, derived from the configuration and the helpers.
    ``account``: the deploying account, needed only where the bucket's default name is not
    the template's own (inside SageMaker Studio: see Config.bucket_name)."""
    profile = cfg.profile
    environment = lambda_fn.function_environment(cfg, bucket="")
    unknown = set(environment) - set(LAMBDA_ENV_PARAMETERS) - LAMBDA_ENV_COMPUTED
    # A managed model (Amazon Bedrock): no container, no endpoint (the Hosted condition).
    container = {} if profile.managed else profile.container_env()
    unknown |= set(container) - set(MODEL_ENV_PARAMETERS)
    if unknown:
        raise ConfigError(
            f"infra/template.yaml has no parameter for {', '.join(sorted(unknown))}. Add "
            "one (and its mapping in visual_tourism/infra.py), or deploy with 'visual-tourism up'."
        )
    params = {param: environment[var] for var, param in LAMBDA_ENV_PARAMETERS.items()}
    for var, param in MODEL_ENV_PARAMETERS.items():  # ModelId is MODEL_ID's already
        params.setdefault(param, container.get(var, ""))
    params.update(
        {
            "Prefix": cfg.prefix,
            # Empty: the template computes {prefix}-{account}-{region}, as bucket_name does
            # outside Studio; inside it the name differs, so it is passed.
            "BucketName": cfg.bucket or (_studio_bucket(cfg, account) if account else ""),
            "ExamplePrefix": cfg.example_prefix,
            "ImageUri": image_uri,
            "InstanceType": cfg.effective_instance_type,
            "StartupHealthCheckTimeout": str(cfg.profile.startup_timeout_s),
            "MinInstances": str(cfg.min_instances),
            "MaxInstances": str(cfg.max_instances),
            "TargetInvocations": f"{cfg.target_invocations:g}",
            "ScaleInCooldown": str(cfg.scale_in_cooldown),
            "ScaleOutCooldown": str(cfg.scale_out_cooldown),
            "LambdaRuntime": cfg.lambda_runtime,
            "LambdaTimeout": str(cfg.lambda_timeout),
            "LambdaMemory": str(cfg.lambda_memory),
            "ReservedConcurrency": str(cfg.reserved_concurrency),
            "MaxEventAge": str(cfg.max_event_age),
            "RetryAttempts": str(cfg.retry_attempts),
            "LogRetentionDays": str(logs.RETENTION_DAYS),
            "AsyncMaxConcurrency": str(cfg.async_max_concurrency),
            "AsyncBacklogTarget": f"{cfg.async_backlog_target:g}",
            # A managed model has nothing to stop: no deadline (as `up` arms none).
            "StopAt": "" if profile.managed else stop_at(cfg),
            "BedrockModelId": profile.model_id if profile.managed else "",
            "BedrockInferenceProfile": (profile.invoke_id(cfg.region)
                                        if profile.managed and profile.inference_profile
                                        else ""),
            "Presets": cfg.presets,
            "CodeS3Bucket": code_bucket,
            "CodeS3Key": code_key,
            **web_parameters(cfg),
        }
    )
    return params


def web_parameters(cfg: Config) -> dict[str, str]:
    """The web page's parameters (visual_tourism/web.py); its zip's key is its content hash."""
    return {
        "WebPage": cfg.web_api,
        "WebRateLimit": f"{cfg.web_rate_limit:g}",
        "WebBurstLimit": str(cfg.web_burst_limit),
        "WebUploadRateLimit": f"{cfg.web_upload_rate_limit:g}",
        "WebUploadBurstLimit": str(cfg.web_upload_burst_limit),
        "WebMaxPhotoBytes": str(cfg.web_max_photo_bytes),
        "WebCodeS3Key": code_key(packaging.build_zip("web")),
    }


def stop_at(cfg: Config, now: datetime | None = None) -> str:
    """The deadline's UTC time, ``stop_after`` from now (package time); "" for none."""
    if not cfg.stop_after:
        return ""
    when = (now or datetime.now(UTC)) + timedelta(seconds=cfg.stop_after_seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


# -- package --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Packaged:
    template: Path
    parameters: Path
    code_bucket: str
    code_key: str


def ensure_artifacts_bucket(aws: Aws, cfg: Config) -> str:
    """A private, encrypted, TLS-only bucket of ours for the Lambda zips."""
    name = artifacts_bucket_name(cfg, aws.account_id)
    bucket.ensure_private_bucket(aws, cfg, name)
    return name


def package(
    cfg: Config, aws: Aws | None = None, out_dir: Path = Path("build"),
    progress: Progress = _quiet,
) -> Packaged:
    """Upload the Lambda zip and write ``packaged.yaml`` + ``parameters.json`` to ``out_dir``."""
    aws = aws or Aws(cfg.region)
    # Pillow when it may resize (locally: the one that imports in local mode's Lambda).
    zip_bytes = packaging.build_zip("photo", packaging.vendor_dir(cfg, local=aws.is_local))
    code_bucket = ensure_artifacts_bucket(aws, cfg)
    key = code_key(zip_bytes)
    if bucket.object_exists(aws, code_bucket, key):  # same key, same bytes
        progress(f"code s3://{code_bucket}/{key} already uploaded")
    else:
        aws.s3.put_object(
            Bucket=code_bucket, Key=key, Body=zip_bytes, ContentType="application/zip"
        )
        progress(f"uploaded code to s3://{code_bucket}/{key}")
    web_zip = packaging.build_zip("web")
    if not bucket.object_exists(aws, code_bucket, code_key(web_zip)):
        aws.s3.put_object(Bucket=code_bucket, Key=code_key(web_zip), Body=web_zip,
                          ContentType="application/zip")
    params = template_parameters(
        cfg, image_uri="" if cfg.profile.managed else cfg.profile.image_uri(cfg.region),
        code_bucket=code_bucket, code_key=key,
        account=aws.account_id,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    template = out_dir / PACKAGED_TEMPLATE
    shutil.copyfile(TEMPLATE, template)
    parameters = out_dir / PARAMETERS_FILE
    # The AWS CLI's format: also usable with `aws cloudformation create-stack --parameters`.
    parameters.write_text(
        json.dumps(
            [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(params.items())],
            indent=2,
        )
        + "\n"
    )
    progress(f"wrote {template} and {parameters}")
    return Packaged(template, parameters, code_bucket, key)


def read_packaged(cfg: Config, account_id: str, out_dir: Path) -> tuple[str, dict[str, str]]:
    template, parameters = out_dir / PACKAGED_TEMPLATE, out_dir / PARAMETERS_FILE
    if not (template.is_file() and parameters.is_file()):
        raise NotDeployedError(
            f"No packaged template in {out_dir}. Run 'visual-tourism infra package' first."
        )
    params = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(parameters.read_text())}
    expected = artifacts_bucket_name(cfg, account_id)
    if params.get("Prefix") != cfg.prefix or params.get("CodeS3Bucket") != expected:
        raise ConfigError(
            f"{parameters} was packaged for prefix {params.get('Prefix')!r} and artifacts "
            f"bucket {params.get('CodeS3Bucket')!r}, not for {cfg.prefix!r} in this account "
            f"and region ({expected}). Run 'visual-tourism infra package' again."
        )
    return template.read_text(), params


# -- stack status and events ----------------------------------------------------------------
def describe_stack(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        return aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as exc:
        # CloudFormation answers "Stack with id X does not exist" as a ValidationError.
        if error_code(exc) == "ValidationError" and "does not exist" in error_message(exc):
            return None
        raise


def outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


class _EventLog:
    """The stack events of one operation, oldest first; each new one is printed once."""

    def __init__(self, aws: Aws, stack_id: str, progress: Progress, *, new_stack: bool) -> None:
        self.client = aws.client("cloudformation")
        self.stack_id = stack_id
        self.progress = progress
        self.events: list[dict[str, Any]] = []
        # Events up to the newest one now belong to earlier operations (none on a new stack).
        self._last_seen = None if new_stack else next(
            (e["EventId"] for e in self._newest_first()), None
        )

    def _newest_first(self) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("describe_stack_events")
        try:
            for page in paginator.paginate(StackName=self.stack_id):
                yield from page["StackEvents"]
        except ClientError as exc:
            if error_code(exc) != "ValidationError":  # the stack is gone
                raise

    def poll(self) -> None:
        new: list[dict[str, Any]] = []
        for event in self._newest_first():
            if event["EventId"] == self._last_seen:
                break
            new.append(event)
        if new:
            self._last_seen = new[0]["EventId"]
        for event in reversed(new):
            self.events.append(event)
            self.progress(format_event(event))


def format_event(event: dict[str, Any]) -> str:
    when = event.get("Timestamp")
    stamp = when.strftime("%H:%M:%S") if hasattr(when, "strftime") else str(when or "")
    reason = event.get("ResourceStatusReason")
    line = f"{stamp} {event['LogicalResourceId']} {event['ResourceStatus']}"
    return f"{line}: {reason}" if reason else line


def failure_report(stack: str, status: str, events: list[dict[str, Any]]) -> str:
    """Each failed resource of this operation with its reason, the first (the cause) first."""
    failed = [
        e
        for e in events
        if e.get("ResourceStatus", "").endswith("_FAILED")
        and e.get("ResourceType") != "AWS::CloudFormation::Stack"
    ]
    lines = [f"CloudFormation stack {stack} failed: it is now {status}."]
    if failed:
        lines.append("Failed resources (the first is usually the cause):")
        lines += [
            f"  - {e['LogicalResourceId']} ({e.get('ResourceType', '?')}) "
            f"{e['ResourceStatus']}: {e.get('ResourceStatusReason') or 'no reason given'}"
            for e in failed
        ]
    else:
        reasons = [e.get("ResourceStatusReason") for e in events if e.get("ResourceStatusReason")]
        lines.append(f"No resource failed; last reason: {reasons[-1] if reasons else 'none'}.")
    return "\n".join(lines)


def _wait(
    aws: Aws, stack_id: str, waiter: str, events: _EventLog, poll: float, timeout: float
) -> dict[str, Any]:
    """Print events until the waiter's success or failure state; return the final stack.

    The botocore waiter decides what counts as done and failed; it is asked once per poll
    (MaxAttempts=1) so that events can be printed in between.
    """
    deadline = time.monotonic() + timeout
    while True:
        events.poll()
        try:
            aws.wait("cloudformation", waiter, delay=1, max_attempts=1, StackName=stack_id)
        except WaiterError as exc:
            if not str(exc.kwargs.get("reason", "")).startswith("Max attempts exceeded"):
                events.poll()
                stack = describe_stack(aws, stack_id) or {}
                raise StackFailedError(
                    failure_report(
                        stack.get("StackName", stack_id),
                        stack.get("StackStatus", "gone"),
                        events.events,
                    )
                    + "\n"
                    + _what_next(stack.get("StackStatus", ""))
                ) from None
        else:
            events.poll()
            return describe_stack(aws, stack_id) or {}
        if time.monotonic() > deadline:
            raise DeployError(
                f"Stack {stack_id} still not done after {timeout:.0f} s; follow it with "
                "'aws cloudformation describe-stack-events' or in the console."
            )
        aws.sleep(poll)


def _what_next(status: str) -> str:
    if status == "ROLLBACK_COMPLETE":
        return ("Fix the cause, then run 'visual-tourism infra deploy' again: it deletes the "
                "failed stack and creates it anew.")
    if status == "UPDATE_ROLLBACK_COMPLETE":
        return ("The stack is back to its previous state. Fix the cause, then run "
                "'visual-tourism infra deploy' again.")
    if status == "DELETE_FAILED":
        return ("Fix the cause (often a resource changed outside the stack), then run "
                "'visual-tourism infra delete' again.")
    if status.endswith("_FAILED"):
        return ("The stack is stuck: fix the cause, then continue the rollback in the "
                "CloudFormation console, or run 'visual-tourism infra delete'.")
    return "Fix the cause above, then run 'visual-tourism infra deploy' again."


# -- deploy ---------------------------------------------------------------------------------
def _check_names_free(aws: Aws, cfg: Config, bucket_name: str) -> None:
    """Before a create: names that only another deployment could hold fail early, clearly."""
    state = bucket.bucket_state(aws, bucket_name)
    if state == "taken":
        raise BucketTakenError(
            f"The bucket name {bucket_name!r} belongs to another AWS account. Set "
            "VT_BUCKET (or --bucket) to a unique name, then run 'infra package' and 'deploy'."
        )
    if state == "exists":
        raise DeployError(
            f"The bucket {bucket_name} already exists, so CloudFormation cannot create it: it "
            "was kept by an earlier 'visual-tourism infra delete' or made by 'visual-tourism "
            "up'. Remove it ('visual-tourism infra delete --delete-bucket' or "
            "'visual-tourism down --delete-bucket'), or choose another bucket name (VT_BUCKET)."
        )
    if lambda_fn.get_function(aws, cfg.function_name) is not None:
        raise DeployError(
            f"A Lambda function {cfg.function_name} already exists (made by 'visual-tourism "
            "up'?). Use one way of deploying per prefix: 'visual-tourism down' first, or "
            "choose another prefix (VT_PREFIX)."
        )


def deploy(
    cfg: Config,
    aws: Aws | None = None,
    out_dir: Path = Path("build"),
    progress: Progress = _quiet,
    poll: float = 10.0,
    timeout: float = 3600.0,
) -> dict[str, str]:
    """Create or update the stack from the packaged template; returns the stack's outputs."""
    aws = aws or Aws(cfg.region)
    body, params = read_packaged(cfg, aws.account_id, out_dir)
    cfn = aws.client("cloudformation")
    name = stack_name(cfg)
    parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()]
    current = describe_stack(aws, name)
    if current and current["StackStatus"].endswith(_BUSY_SUFFIX):
        raise DeployError(
            f"Stack {name} is busy ({current['StackStatus']}). Wait until it settles, then "
            "run 'visual-tourism infra deploy' again."
        )
    if current and current["StackStatus"] == "ROLLBACK_COMPLETE":
        # A stack whose creation failed cannot be updated, only deleted and created again.
        progress(f"stack {name} is ROLLBACK_COMPLETE after a failed creation: deleting it")
        events = _EventLog(aws, current["StackId"], progress, new_stack=False)
        cfn.delete_stack(StackName=current["StackId"])
        _wait(aws, current["StackId"], "stack_delete_complete", events, poll, timeout)
        current = None

    if current is None:
        _check_names_free(aws, cfg, cfg.bucket_name(aws.account_id))
        # The account's room first: a quota met mid-stack rolls back 15 minutes of work.
        quotas.require(cfg, aws, progress)
        progress(f"creating stack {name} (on AWS 15-25 minutes: the GPU endpoint is most of it)")
        try:
            stack_id = cfn.create_stack(
                StackName=name, TemplateBody=body, Parameters=parameters,
                Capabilities=CAPABILITIES,
            )["StackId"]
        except ClientError as exc:
            raise DeployError(f"CloudFormation refused the stack: {error_message(exc)}") from exc
        waiter = "stack_create_complete"
        events = _EventLog(aws, stack_id, progress, new_stack=True)
    else:
        stack_id = current["StackId"]
        events = _EventLog(aws, stack_id, progress, new_stack=False)
        try:
            cfn.update_stack(
                StackName=name, TemplateBody=body, Parameters=parameters,
                Capabilities=CAPABILITIES,
            )
        except ClientError as exc:
            if "No updates are to be performed" in error_message(exc):
                progress(f"stack {name} is already up to date")
                after_deploy(aws, cfg, outputs(current), progress)
                return outputs(current)
            raise DeployError(
                f"CloudFormation refused the update: {error_message(exc)}"
            ) from exc
        progress(f"updating stack {name}")
        waiter = "stack_update_complete"
    stack = _wait(aws, stack_id, waiter, events, poll, timeout)
    result = outputs(stack)
    after_deploy(aws, cfg, result, progress)
    progress(f"stack {name}: {stack.get('StackStatus')}")
    return result


def after_deploy(aws: Aws, cfg: Config, result: dict[str, str], progress: Progress) -> None:
    """What a template cannot do: the folder markers and the in-context example photo."""
    name = result.get("BucketName")
    if not name:
        return
    for prefix in (cfg.input_prefix, cfg.example_prefix, cfg.output_prefix):
        if not bucket.object_exists(aws, name, prefix):
            aws.s3.put_object(Bucket=name, Key=prefix, Body=b"")
    bucket.upload_if_changed(aws, name, cfg.example_key, Path(cfg.example_image))
    progress(f"bucket {name}: folders and example photo ready; upload photos to "
             f"s3://{name}/{cfg.input_prefix}")
    if result.get("PresetsTableName"):  # the seeds (never over an edit) and their photos
        from . import presets

        presets.seed(aws, cfg, name, progress)
        presets.upload_examples(aws, cfg, name, presets.list_presets(aws, cfg))
        progress(f"presets table {result['PresetsTableName']}: seeded")
    if result.get("WebUrl"):  # the access code: an SSM SecureString, never in the template
        web.ensure_code(aws, cfg)
        progress(f"web page {result['WebUrl']}: 'visual-tourism web' prints its link")


# -- delete ---------------------------------------------------------------------------------
def delete(
    cfg: Config,
    aws: Aws | None = None,
    delete_bucket: bool = False,
    delete_artifacts: bool = False,
    progress: Progress = _quiet,
    poll: float = 10.0,
    timeout: float = 3600.0,
) -> list[str]:
    """Delete the stack (safe to run twice); optionally the kept bucket and the artifacts."""
    aws = aws or Aws(cfg.region)
    name = stack_name(cfg)
    removed: list[str] = []
    current = describe_stack(aws, name)
    result = outputs(current) if current else {}
    bucket_name = result.get("BucketName") or cfg.bucket_name(aws.account_id)
    if current is None:
        progress(f"no stack {name}")
    else:
        events = _EventLog(aws, current["StackId"], progress, new_stack=False)
        progress(f"deleting stack {name} (on AWS a few minutes)")
        aws.client("cloudformation").delete_stack(StackName=current["StackId"])
        _wait(aws, current["StackId"], "stack_delete_complete", events, poll, timeout)
        removed.append(f"stack {name}")
    if web.delete_code(aws, cfg):  # created by after_deploy, outside the stack
        removed.append("access code parameter")
    if delete_bucket:
        if bucket.delete_bucket(aws, cfg, bucket_name):
            removed.append(f"bucket {bucket_name}")
            progress(f"removed bucket {bucket_name} and its objects")
    elif bucket.bucket_state(aws, bucket_name) == "exists":
        if result.get("FunctionArn"):
            # A kept bucket must not point at the deleted function: S3 would refuse any later
            # change to its notifications ("Unable to validate ... destination").
            arn = result["FunctionArn"]
            lambda_fn.drop_notifications(
                aws, bucket_name, lambda c: c.get("LambdaFunctionArn") == arn
            )
        progress(f"kept bucket {bucket_name} (DeletionPolicy: Retain); pass --delete-bucket "
                 "to empty and remove it")
    if delete_artifacts:
        artifacts = artifacts_bucket_name(cfg, aws.account_id)
        if bucket.delete_bucket(aws, cfg, artifacts):
            removed.append(f"bucket {artifacts}")
            progress(f"removed artifacts bucket {artifacts}")
    return removed


# -- lint -----------------------------------------------------------------------------------
def lint(template: Path = TEMPLATE, regions: list[str] | None = None) -> list[str]:
    """cfn-lint's findings (errors and warnings), one line each; empty when clean."""
    try:
        from cfnlint.api import lint_file
        from cfnlint.config import ManualArgs
    except ImportError:
        raise ConfigError(
            "cfn-lint is not installed: pip install cfn-lint (it comes with '.[dev]')."
        ) from None
    matches = lint_file(template, config=ManualArgs(regions=regions or ["us-east-1"]))
    return [
        f"{m.filename}:{m.linenumber}:{m.columnnumber}: {m.rule.id} {m.message}"
        for m in matches
    ]
