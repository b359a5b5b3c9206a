"""The whole stack: `up`, `status`, `down` and `ask`, in the order each resource needs.

Each step is idempotent (create, or find and update), so `up` can be re-run after a failure at
any point and simply carries on. `down` walks the steps backwards, treats "already gone" as
success, and only removes what carries this stack's tag.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from photo_handler import records

from . import (
    async_inference,
    autoscaling,
    bedrock,
    bucket,
    costs,
    delivery,
    endpoint,
    iam,
    lambda_fn,
    logs,
    packaging,
    permissions,
    places,
    presets,
    prices,
    quotas,
    schedule,
    web,
    where,
)
from .aws import Aws
from .bucket import bucket_name
from .config import Config, load_config
from .errors import AskTimeoutError, ConfigError, EndpointFailedError, NotDeployedError
from .state import State

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    log.info("%s", message)


def _context(cfg: Config | None, aws: Aws | None) -> tuple[Config, Aws]:
    cfg = cfg or load_config()
    return cfg, aws or Aws(cfg.region)


# -- the steps of `up`, each idempotent, each usable alone (the notebooks call them) --------


def create_bucket(cfg: Config, aws: Aws, progress: Progress = _quiet) -> str:
    name = bucket.ensure_bucket(aws, cfg)
    State(cfg.state_path).record("bucket", name=name)
    progress(f"bucket {name}: private, encrypted, TLS only, folders and example photo ready")
    return name


def create_roles(cfg: Config, aws: Aws, progress: Progress = _quiet) -> dict[str, str]:
    if cfg.profile.managed:  # no endpoint: no SageMaker role
        roles = {"lambda": iam.ensure_lambda_role(aws, cfg, bucket_name(cfg, aws))}
        State(cfg.state_path).record("roles", **roles)
        progress(f"IAM role ready (least privilege: bedrock:InvokeModel on "
                 f"{cfg.profile.invoke_id(cfg.region)} only); no SageMaker role (no endpoint)")
        return roles
    image_uri = cfg.profile.image_uri(cfg.region)
    roles = {
        "lambda": iam.ensure_lambda_role(aws, cfg, bucket_name(cfg, aws)),
        "sagemaker": iam.ensure_sagemaker_role(aws, cfg, image_uri, bucket_name(cfg, aws)),
    }
    State(cfg.state_path).record("roles", **roles)
    progress("IAM roles ready (least privilege)")
    return roles


def create_presets(cfg: Config, aws: Aws, progress: Progress = _quiet) -> dict[str, Any]:
    """The answer presets table, its seeds (never over an edit) and their example photos."""
    if not cfg.presets_table:
        return {}
    info = presets.ensure(aws, cfg, bucket_name(cfg, aws), progress)
    State(cfg.state_path).record("presets", table=info["table"])
    seeded = f"; seeded {', '.join(info['seeded'])}" if info["seeded"] else ""
    progress(f"presets table {info['table']}: {len(info['presets'])} presets "
             f"({', '.join(info['presets'])}){seeded}")
    return info


def start_endpoint(cfg: Config, aws: Aws, progress: Progress = _quiet) -> dict[str, str]:
    """Model, endpoint configuration and endpoint; returns without waiting for InService.

    A managed model (Amazon Bedrock) has none: an endpoint an earlier `up` of this stack left
    (another profile) is removed, since it would bill by the hour for nothing."""
    if cfg.profile.managed:
        return _no_endpoint(cfg, aws, progress)
    endpoint.require_ours_or_absent(aws, cfg)  # before its log group is touched
    logs.ensure_log_group(aws, cfg, logs.endpoint_log_group(cfg))
    image_uri = cfg.profile.image_uri(cfg.region)
    name = bucket_name(cfg, aws)
    role = iam.ensure_sagemaker_role(aws, cfg, image_uri, name)
    model = endpoint.ensure_model(aws, cfg, image_uri, role)
    extras = async_inference.endpoint_config_extras(cfg, name)
    config = endpoint.ensure_endpoint_config(aws, cfg, model, extras)
    # Autoscaling is attached again by attach_autoscaling once the update is in service.
    with quotas.explained(aws, cfg, f"Creating or updating endpoint {cfg.endpoint_name}"):
        endpoint.ensure_endpoint(aws, cfg, config,
                                 before_update=lambda: _remove_scaling(cfg, aws))
    State(cfg.state_path).record("endpoint", model=model, config=config, image=image_uri)
    progress(f"endpoint {cfg.endpoint_name} requested ({config})")
    return {"model": model, "endpoint_config": config}


def _no_endpoint(cfg: Config, aws: Aws, progress: Progress) -> dict[str, str]:
    if endpoint.ours_or_absent(aws, cfg) and endpoint.describe(aws, cfg).get("state") not in (
            None, "absent"):
        _remove_scaling(cfg, aws)
        endpoint.delete_endpoint(aws, cfg)
        endpoint.delete_models_and_configs(aws, cfg)
        progress(f"removed endpoint {cfg.endpoint_name} of an earlier deployment: the "
                 f"managed model {cfg.profile.name} needs none")
    State(cfg.state_path).forget("endpoint")
    progress(f"no SageMaker model, endpoint, autoscaling or async configuration: "
             f"{cfg.profile.name} is a managed model (Amazon Bedrock, "
             f"{cfg.profile.invoke_id(cfg.region)})")
    return {}


def wait_for_endpoint(
    cfg: Config, aws: Aws, progress: Progress = _quiet, poll: float = 15.0
) -> None:
    """Wait for InService (10-15 minutes on AWS), then drop superseded models and configs."""
    if cfg.profile.managed:  # nothing to wait for (the cost was said before `up` began)
        return
    progress("waiting for the endpoint: 10-15 minutes on AWS for a GPU model")
    current = endpoint.wait_for_endpoint(aws, cfg.endpoint_name, progress, poll=poll)
    wanted = State(cfg.state_path).get("endpoint", "config", "")
    in_use = current["EndpointConfigName"]
    # Never delete the configuration the endpoint serves from, whatever the record says.
    endpoint.prune(aws, cfg, keep_configs={in_use, wanted} - {""})
    if wanted and in_use != wanted:
        # The old variant serves again; give it back the autoscaling removed for the update.
        autoscaling.ensure_autoscaling(aws, cfg)
        raise EndpointFailedError(
            f"Updating endpoint {cfg.endpoint_name} to {wanted} failed and SageMaker rolled "
            f"it back to {in_use}: {current.get('FailureReason') or 'no reason given'}. It "
            "still serves the previous model. Fix the cause (often a service quota for the "
            "instance type), then run 'visual-tourism up' again."
        )
    progress("cost: " + prices.describe_plan(cfg))


def deploy_model(
    cfg: Config, aws: Aws, progress: Progress = _quiet, poll: float = 15.0
) -> dict[str, str]:
    names = start_endpoint(cfg, aws, progress)
    wait_for_endpoint(cfg, aws, progress, poll)
    return names


def _remove_scaling(cfg: Config, aws: Aws) -> bool:
    return any([async_inference.remove_scaling(aws, cfg), autoscaling.remove_autoscaling(aws, cfg)])


def attach_autoscaling(cfg: Config, aws: Aws, progress: Progress = _quiet) -> None:
    if cfg.profile.managed:
        progress("autoscaling: none to attach (Amazon Bedrock scales the managed model)")
        return
    State(cfg.state_path).record("autoscaling", resource_id=autoscaling.resource_id(cfg))
    with quotas.explained(aws, cfg, "Attaching autoscaling"):
        _attach_autoscaling(cfg, aws, progress)


def _attach_autoscaling(cfg: Config, aws: Aws, progress: Progress) -> None:
    if cfg.is_async:
        async_inference.ensure_scaling(aws, cfg)
        if async_inference.describe(aws, cfg).get("stopped"):  # a fired deadline holds it
            progress("autoscaling held at 0 instances: the stop deadline fired; "
                     "'visual-tourism wake' resumes")
            return
        progress(
            f"autoscaling 0-{cfg.max_instances} instances: scales out from zero when a photo "
            f"waits, target {cfg.async_backlog_target:g} queued photos per instance"
        )
        return
    async_inference.remove_scaling(aws, cfg)  # left from an earlier `up` in async mode
    autoscaling.ensure_autoscaling(aws, cfg)
    progress(
        f"autoscaling {cfg.min_instances}-{cfg.max_instances} instances, target "
        f"{cfg.target_invocations:g} invocations/instance/minute"
    )


def deploy_function(cfg: Config, aws: Aws, progress: Progress = _quiet) -> str:
    """Zip the photo function (lambda_code.py and photo_handler/), create or update it and
    its log group."""
    name = bucket_name(cfg, aws)
    role = iam.ensure_lambda_role(aws, cfg, name)
    # Pillow when the handler may resize images (locally: the one that imports here).
    vendor = packaging.vendor_dir(cfg, local=aws.is_local)
    zip_bytes = packaging.build_zip("photo", vendor)
    lambda_fn.require_ours_or_absent(aws, cfg)  # before its log group is touched
    logs.ensure_log_group(aws, cfg, logs.function_log_group(cfg))
    arn = lambda_fn.ensure_function(aws, cfg, role, name, zip_bytes)
    State(cfg.state_path).record(
        "function", arn=arn, code_sha256=packaging.code_sha256(zip_bytes)
    )
    progress(f"Lambda {cfg.function_name} ready ({len(zip_bytes):,} byte zip)")
    return arn


def configure_delivery(cfg: Config, aws: Aws, progress: Progress = _quiet) -> dict[str, Any]:
    """Bursts and failures: reserved concurrency, retries, event age, on-failure records."""
    name = bucket_name(cfg, aws)
    with quotas.explained(aws, cfg, f"Reserving concurrency for {cfg.function_name}"):
        settings = delivery.ensure_delivery(aws, cfg, name)
    State(cfg.state_path).record("delivery", reserved_concurrency=cfg.reserved_concurrency)
    progress(
        f"at most {cfg.reserved_concurrency} photos in flight ({cfg.max_instances} instances x "
        f"{cfg.requests_per_instance}); failed events kept under "
        f"s3://{name}/{delivery.destination_prefix(cfg)} for 'visual-tourism replay'"
    )
    return settings


def connect_trigger(cfg: Config, aws: Aws, progress: Progress = _quiet) -> None:
    """Permission for S3 first, then the input/ notification: the trigger goes live."""
    name = bucket_name(cfg, aws)
    function = lambda_fn.get_function(aws, cfg.function_name)
    if function is None:
        raise NotDeployedError("The Lambda function does not exist yet: deploy it first.")
    lambda_fn.ensure_permission(aws, cfg, name)
    lambda_fn.ensure_notification(aws, cfg, name, function["Configuration"]["FunctionArn"])
    if cfg.is_async:  # outputs and failures of queued requests come back to the handler
        async_inference.ensure_notifications(
            aws, cfg, name, function["Configuration"]["FunctionArn"]
        )
    else:
        async_inference.remove_notifications(aws, cfg, name)
    State(cfg.state_path).record("trigger", prefix=cfg.input_prefix)
    progress(f"trigger live: photos uploaded to s3://{name}/{cfg.input_prefix} get answers")


def arm_deadline(cfg: Config, aws: Aws, progress: Progress = _quiet) -> None:
    """With stop_after: a one-time schedule stops the endpoint then (schedule.py)."""
    if not cfg.stop_after:
        return
    if cfg.profile.managed:
        schedule.remove_deadline(aws, cfg)  # one an earlier hosted deployment armed
        State(cfg.state_path).forget("deadline")
        progress(f"stop deadline ({cfg.stop_after}) not armed: a managed model has nothing "
                 "to stop and bills nothing while idle")
        return
    when = schedule.ensure_deadline(aws, cfg)
    State(cfg.state_path).record("deadline", fires_at=when.isoformat())
    action = "scale the endpoint to zero" if cfg.is_async else "delete the endpoint"
    progress(f"stop deadline: at {when:%Y-%m-%d %H:%M} UTC a schedule will {action}")


def open_web_api(cfg: Config, aws: Aws, progress: Progress = _quiet) -> dict[str, str]:
    """The web page and its API (visual_tourism/web.py); 'visual-tourism web' prints the link."""
    api = web.deploy(aws, cfg, bucket_name(cfg, aws))
    # In local mode the API's own address answers nowhere: the served page's, if any.
    url = web.page_url(aws, cfg) or ("(served by 'visual-tourism local serve --web')"
                                     if aws.is_local else api["url"])
    progress(f"web page {url} (behind the access code: 'visual-tourism web' prints the "
             "link and its QR code)")
    return api


def up(
    cfg: Config | None = None,
    aws: Aws | None = None,
    progress: Progress = _quiet,
    endpoint_poll: float = 15.0,
) -> dict[str, Any]:
    """Create or update every resource, in order. Returns the names of what exists."""
    cfg, aws = _context(cfg, aws)
    permissions.require(cfg, aws, progress)  # refuses before anything is created
    quotas.require(cfg, aws, progress)  # ... and so when the account lacks room
    bedrock.require_access(aws, cfg, progress)  # a managed model: may it be invoked here?
    profile = cfg.profile
    serving = ("managed by Amazon Bedrock (no endpoint)" if profile.managed else
               f"on {cfg.effective_instance_type}, {cfg.inference_mode} inference")
    progress(f"Stack {cfg.prefix!r} in {cfg.region}: model {profile.model_id} "
             f"({profile.licence}) {serving}")
    progress("cost: " + prices.describe_plan(cfg))
    progress("cost: " + prices.describe_places(cfg))
    name = create_bucket(cfg, aws, progress)
    create_roles(cfg, aws, progress)
    create_presets(cfg, aws, progress)  # before the function reads it
    names = start_endpoint(cfg, aws, progress)
    deploy_function(cfg, aws, progress)  # built while the endpoint starts
    wait_for_endpoint(cfg, aws, progress, endpoint_poll)
    attach_autoscaling(cfg, aws, progress)
    configure_delivery(cfg, aws, progress)
    connect_trigger(cfg, aws, progress)  # live only once everything behind it works
    arm_deadline(cfg, aws, progress)
    extra = {}
    if cfg.web_api == "on":  # the page is useful only once photos get answers
        extra["web_url"] = open_web_api(cfg, aws, progress)["url"]
    served = ({"model": profile.invoke_id(cfg.region)} if profile.managed
              else {"endpoint": cfg.endpoint_name})
    return {"bucket": name, **served, "function": cfg.function_name, **names, **extra}


def down(
    cfg: Config | None = None,
    aws: Aws | None = None,
    delete_bucket: bool = False,
    progress: Progress = _quiet,
    keep_presets: bool | None = None,
) -> list[str]:
    """Remove what `up` created, newest first. Safe to run twice. Returns what was removed.

    ``keep_presets`` (default: the keep_presets setting) keeps the presets table and its edits.
    """
    cfg, aws = _context(cfg, aws)
    state = State(cfg.state_path)
    name = bucket_name(cfg, aws)
    removed: list[str] = []

    def step(label: str, done: bool | list[str]) -> None:
        if done:
            removed.append(label)
            progress(f"removed {label}")

    for label in web.remove(aws, cfg, name):
        step(label, True)
    state.forget("web")  # web.remove forgets it in its own copy; this one is saved below
    step("stop deadline", schedule.remove_deadline(aws, cfg))
    state.forget("deadline")
    step("trigger", lambda_fn.remove_notification(aws, cfg, name))
    step("async result triggers", async_inference.remove_notifications(aws, cfg, name))
    step("S3 invoke permission", lambda_fn.remove_permission(aws, cfg))
    step("Lambda concurrency and asynchronous settings", delivery.remove_delivery(aws, cfg))
    state.forget("delivery")
    step(f"Lambda {cfg.function_name}", lambda_fn.delete_function(aws, cfg))
    step("Lambda log group", logs.delete_log_group(aws, cfg, logs.function_log_group(cfg)))
    state.forget("trigger")
    state.forget("function")
    # The scaling target is named after the endpoint: leave it with an endpoint not ours.
    if endpoint.ours_or_absent(aws, cfg):
        step("autoscaling", _remove_scaling(cfg, aws))
    state.forget("autoscaling")
    step(f"endpoint {cfg.endpoint_name}", endpoint.delete_endpoint(aws, cfg))
    for gone in endpoint.delete_models_and_configs(aws, cfg):
        step(gone, True)
    step(
        "endpoint log group",
        logs.delete_log_group(aws, cfg, logs.endpoint_log_group(cfg)),
    )
    state.forget("endpoint")
    step(f"IAM role {cfg.lambda_role_name}", iam.delete_role(aws, cfg, cfg.lambda_role_name))
    step(f"IAM role {cfg.sagemaker_role_name}", iam.delete_role(aws, cfg, cfg.sagemaker_role_name))
    state.forget("roles")
    keep = cfg.keep_presets if keep_presets is None else keep_presets
    if not keep:
        step(f"presets table {cfg.presets_table}", presets.delete_table(aws, cfg))
        state.forget("presets")
    elif cfg.presets_table and presets.describe_table(aws, cfg.presets_table) is not None:
        progress(f"kept presets table {cfg.presets_table} with its edits (to remove it too: "
                 "'visual-tourism down' without --keep-presets)")
    if delete_bucket:
        step(f"bucket {name} and its objects", bucket.delete_bucket(aws, cfg, name))
        state.clear()
    elif bucket.bucket_state(aws, name) == "exists":
        progress(f"kept bucket {name} with its photos and results (to remove it too: "
                 "'visual-tourism down --delete-bucket')")
    return removed


def status(cfg: Config | None = None, aws: Aws | None = None) -> dict[str, Any]:
    """What exists, its state, and what the endpoint costs per hour."""
    cfg, aws = _context(cfg, aws)
    name = bucket_name(cfg, aws)
    bucket_info = bucket.describe(aws, cfg, name)
    ep = endpoint.describe(aws, cfg)
    instances = ep.get("instances") or 0
    return {
        "region": cfg.region,
        "profile": cfg.model_profile,
        "bucket": bucket_info,
        "roles": {
            "lambda": iam.role_status(aws, cfg.lambda_role_name),
            "sagemaker": "studio role" if where.in_studio()
            else iam.role_status(aws, cfg.sagemaker_role_name),
        },
        "endpoint": ep,
        "inference": async_inference.describe(aws, cfg),
        "deadline": schedule.describe(aws, cfg),
        "autoscaling": autoscaling.describe(aws, cfg),
        "function": lambda_fn.describe(aws, cfg, name),  # trigger: False without the bucket
        "web": web.describe(aws, cfg),
        "presets": presets.describe(aws, cfg),
        "delivery": delivery.describe(aws, cfg, name if bucket_info["state"] == "exists"
                                      else None),
        "model": _model_status(cfg),
        "cost_per_hour_usd": prices.hourly_cost(ep.get("instance_type"), instances),
        "cost": prices.describe_cost(ep.get("instance_type"), instances, cfg.region,
                                      local=aws.is_local)
        if instances else _idle_cost_line(cfg),
        "cost_so_far": costs.cost_so_far(aws, cfg, ep),
        "places_cost": prices.describe_places(cfg),
    }


def _model_status(cfg: Config) -> dict[str, Any]:
    profile = cfg.profile
    if profile.managed:
        return {"kind": profile.kind, "model_id": profile.invoke_id(cfg.region),
                "endpoint": "none (managed by Amazon Bedrock)",
                "cost": prices.describe_managed(profile.model_id, cfg.region)}
    return {"kind": profile.kind, "model_id": profile.model_id,
            "endpoint": cfg.endpoint_name}


def _idle_cost_line(cfg: Config) -> str:
    if cfg.profile.managed:
        return ("nothing billed by the hour: a managed model (Amazon Bedrock) is billed per "
                "photo's tokens")
    return "nothing billed by the hour (no endpoint instance running)"


def replay(
    cfg: Config | None = None, aws: Aws | None = None, errors: bool = False,
    dry_run: bool = False,
) -> dict[str, int]:
    """Re-drive the events Lambda gave up on (see visual_tourism/delivery.py)."""
    cfg, aws = _context(cfg, aws)
    return delivery.replay(aws, cfg, bucket_name(cfg, aws), errors=errors, dry_run=dry_run)


def result_key(cfg: Config, input_key: str) -> str:
    """Where the handler writes the result for ``input_key`` (its own rule, not a copy)."""
    key = records.result_key(input_key, cfg.input_prefix, cfg.output_prefix)
    if key is None:
        raise ConfigError(
            f"{input_key!r} is not a photo key under {cfg.input_prefix!r}: the trigger would "
            "ignore it. Use a key such as "
            f"{cfg.input_prefix}photo.jpg."
        )
    return key


def ask(
    image: str | Path,
    cfg: Config | None = None,
    aws: Aws | None = None,
    timeout: float | None = None,
    progress: Progress = _quiet,
    poll: float = 0.2,
    key: str | None = None,
    preset: str | None = None,
    language: str | None = None,
    near: str | tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Upload a photo under input/ and wait for its result under output/; return the record.

    ``preset`` and ``language`` (checked to exist first) travel as the object's metadata
    (x-amz-meta-preset, x-amz-meta-language); None: the handler's defaults. ``near``: where
    the photo was taken ("LAT,LON" or a pair), sent rounded as x-amz-meta-near for the
    nearby places (places.py); without ``key``, each position gets a key of its own
    (places.near_key), as the function answers bytes it answered before from its record.

    Waiting polls one HEAD request every ``poll`` seconds (cheap, and a result is seen within
    that time of being written) rather than sleeping a fixed time and hoping.
    """
    cfg, aws = _context(cfg, aws)
    # A queued photo may wait for an instance to start: wait as long as it may be queued.
    timeout = timeout or (cfg.async_request_ttl + 60.0 if cfg.is_async else 300.0)
    path = Path(image)
    if not path.is_file():
        raise ConfigError(f"No such photo: {path}")
    name = bucket_name(cfg, aws)
    if bucket.bucket_state(aws, name) != "exists":
        raise NotDeployedError(f"Bucket {name} does not exist: run 'visual-tourism up' first.")
    near_meta = places.near_metadata(near)  # checked before anything else
    input_key = key or places.near_key(cfg.input_prefix + path.name, near_meta)
    out_key = result_key(cfg, input_key)
    problem = lambda_fn.trigger_problem(aws, cfg, name, input_key)
    if problem:
        raise NotDeployedError(
            f"Nothing would answer this photo: {problem}. Run 'visual-tourism up' (it wires "
            "the trigger last), then ask again. Nothing was uploaded."
        )
    metadata = {**presets.check_choice(aws, cfg, preset, language),  # before any upload
                **near_meta}
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    earlier = bucket.head(aws, name, out_key)  # a result of an earlier upload of this key
    etag = aws.s3.put_object(
        Bucket=name, Key=input_key, Body=path.read_bytes(), ContentType=content_type,
        **({"Metadata": metadata} if metadata else {}),
    )["ETag"].strip('"')
    progress(f"uploaded s3://{name}/{input_key}; waiting for {out_key}")
    waking = async_inference.waiting_note(aws, cfg)
    if waking:
        progress(waking)
    start = time.monotonic()
    next_report = 5.0
    while True:
        head = bucket.head(aws, name, out_key)
        if head and _answers(head, etag, earlier):
            body = aws.s3.get_object(Bucket=name, Key=out_key)["Body"].read()
            record = json.loads(body)
            record["result_key"] = out_key
            record["seen_after_seconds"] = round(time.monotonic() - start, 3)
            return record
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            raise AskTimeoutError(
                f"No result at s3://{name}/{out_key} after {timeout:.0f} s. Check the function's "
                f"logs (/aws/lambda/{cfg.function_name}) and 'visual-tourism status'."
            )
        if elapsed >= next_report:
            progress(f"still waiting for {out_key} ({elapsed:.0f} s)")
            next_report += 5.0
        aws.sleep(poll)


def _answers(head: dict[str, Any], etag: str, earlier: dict[str, Any] | None) -> bool:
    """Is this result the answer to the upload with ``etag``?

    The handler records the photo's ETag in the result's metadata. Re-uploading the same bytes
    leaves a final result as it is (the handler does not ask the model twice), so a final
    result for these bytes is the answer; a non-final one (a model failure) is retried by the
    handler, so only a newly written result counts.
    """
    meta = head.get("Metadata", {})
    if meta.get("input-etag") != etag:
        return False
    rewritten = earlier is None or head["ETag"] != earlier["ETag"] or (
        head["LastModified"] != earlier["LastModified"]
    )
    return rewritten or meta.get("final") != "false"
