"""What each step of the walkthrough creates, shown before (plans, costs) and after."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import async_inference, autoscaling, bucket, iam, prices, stack, where
from ..aws import Aws
from ..config import Config
from ..profiles import PROFILES
from .display import Table, say, show

bucket_name = stack.bucket_name  # the bucket this stack uses


def show_profiles() -> None:
    """The model profiles to choose from, with their instance and its list price (a managed
    model: its price per token, nothing while idle)."""
    for profile in PROFILES.values():
        if profile.managed:
            token = prices.TOKEN_USD.get(profile.model_id)
            price = (f"${token.input_per_million:g} + ${token.output_per_million:g} per 1M "
                     "tokens in/out, $0 while idle" if token else "price not recorded")
            say(f"{profile.name:24} {profile.model_id}")
            say(f"{'':24} managed by Amazon Bedrock, no endpoint ({price}), licence: "
                f"{profile.licence}")
            continue
        cost = prices.hourly_cost(profile.instance_type, 1)
        price = f"${cost:.2f}/h" if cost is not None else "price not recorded"
        say(f"{profile.name:24} {profile.model_id}")
        say(f"{'':24} {profile.instance_type} ({price}), licence: {profile.licence}")


def plan(cfg: Config, aws: Aws) -> dict[str, Any]:
    """The names and sizes of what the next notebooks create."""
    if cfg.profile.managed:  # Amazon Bedrock: no endpoint, no SageMaker role
        return {
            "bucket": bucket_name(cfg, aws),
            "roles": [cfg.lambda_role_name],
            "model": f"{cfg.profile.model_id} ({cfg.profile.licence})",
            "endpoint": f"none: managed by Amazon Bedrock, called as "
                        f"{cfg.profile.invoke_id(cfg.region)}; nothing billed while idle",
            "function": f"{cfg.function_name} ({cfg.lambda_runtime}, {cfg.lambda_timeout} s, "
                        f"{cfg.lambda_memory} MB)",
            "trigger": f"uploads under {cfg.input_prefix} -> results under {cfg.output_prefix}",
        }
    return {
        "bucket": bucket_name(cfg, aws),
        "roles": [cfg.lambda_role_name, "Studio execution role" if where.in_studio()
                  else cfg.sagemaker_role_name],
        "model": f"{cfg.profile.model_id} ({cfg.profile.licence})",
        "endpoint": f"{cfg.endpoint_name} on {cfg.effective_instance_type}, "
                    f"{cfg.min_instances}-{cfg.max_instances} instance(s)",
        "function": f"{cfg.function_name} ({cfg.lambda_runtime}, {cfg.lambda_timeout} s, "
                    f"{cfg.lambda_memory} MB)",
        "trigger": f"uploads under {cfg.input_prefix} -> results under {cfg.output_prefix}",
    }




def show_bucket(cfg: Config, aws: Aws) -> None:
    """The bucket's privacy settings and what each folder holds."""
    name = bucket_name(cfg, aws)
    show(bucket.describe(aws, cfg, name))
    policy = json.loads(aws.s3.get_bucket_policy(Bucket=name)["Policy"])
    for statement in policy.get("Statement", []):
        say(f"bucket policy: {statement.get('Effect')} {statement.get('Action')} "
            f"({statement.get('Sid', '')})")
    for folder in (cfg.input_prefix, cfg.example_prefix, cfg.output_prefix):
        listing = aws.s3.list_objects_v2(Bucket=name, Prefix=folder, MaxKeys=5)
        keys = [o["Key"] for o in listing.get("Contents", [])]
        say(f"{folder:10} {', '.join(keys) if keys else '(empty)'}")


def show_lambda_policy(cfg: Config, aws: Aws) -> None:
    """What the Lambda's role may do, statement by statement."""
    name = bucket_name(cfg, aws)
    policy = iam.lambda_policy(cfg, account=aws.account_id, bucket=name,
                               partition=aws.partition)
    for statement in policy["Statement"]:
        resources = statement["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        say(f"{statement['Sid']}: {', '.join(statement['Action'])}")
        for resource in resources:
            say(f"    on {resource}")


def show_model(cfg: Config) -> None:
    """The chosen profile: model, container, instance, container settings."""
    profile = cfg.profile
    if profile.managed:
        show({
            "model": profile.model_id,
            "licence": profile.licence,
            "served by": "Amazon Bedrock (managed): no endpoint, no container, no instance",
            "called as": f"{profile.invoke_id(cfg.region)} (Converse API)",
            "cost": prices.describe_managed(profile.model_id, cfg.region),
            "image limits": "png/jpeg/gif/webp, at most 3.75 MB and 8,000 px a side; "
                            f"{profile.limits.max_images} image(s) a request",
            "notes": profile.notes,
        })
        return
    show({
        "model": profile.model_id,
        "licence": profile.licence,
        "container": f"{profile.image_family} {profile.image_version}",
        "instance": cfg.effective_instance_type,
        "request style": profile.request_style,
        "container env": profile.container_env(),
        "notes": profile.notes,
    })


def cost_warning(cfg: Config, env: Mapping[str, str] | None = None) -> str:
    """What starting the endpoint costs and how long it takes, here, for the chosen mode."""
    if cfg.profile.managed:
        return (f"{cfg.profile.name} is a managed model: the next cells create no endpoint, "
                "nothing starts and nothing is billed while idle; each photo costs its tokens ("
                + prices.describe_managed(cfg.profile.model_id, cfg.region) + ").")
    if cfg.is_async:
        hourly = prices.hourly_cost(cfg.effective_instance_type, 1)
        each = f"${hourly:.2f}/hour" if hourly is not None else "see the AWS price list"
        cost = (f"{each} for each running {cfg.effective_instance_type} while photos are "
                f"answered (up to {cfg.max_instances}), nothing while scaled to 0 instances")
        if where.is_local(env):
            return ("Local mode: the endpoint is emulated, starts in seconds and costs nothing. "
                    f"On AWS this step takes 10-15 minutes and bills {cost}.")
        return (f"This starts 1 x {cfg.effective_instance_type} (asynchronous): 10-15 minutes, "
                f"then {cost}. After 04_autoscaling it scales to 0 when idle; the first photo "
                f"after idle waits about {async_inference.WAKE_MINUTES} minutes for an instance. "
                "07_cleanup deletes the endpoint.")
    cost = prices.describe_cost(cfg.effective_instance_type, cfg.min_instances, cfg.region)
    if where.is_local(env):
        return ("Local mode: the endpoint is emulated, starts in seconds and costs nothing. "
                f"On AWS this step takes 10-15 minutes and bills {cost}.")
    return (f"This starts {cfg.min_instances} x {cfg.effective_instance_type}: 10-15 minutes, "
            f"then {cost}. Billing runs until 07_cleanup.ipynb deletes the endpoint.")


def hosted_vs_managed(cfg: Config) -> Table:
    """Every profile's cost per photo at 10, 100 and 1,000 photos a day, idle included (list
    prices; costs.by_volume), to choose between a hosted model and a managed one."""
    from .. import costs

    rows = costs.by_volume(min_instances=cfg.min_instances)

    def usd(value: float | None) -> str:
        if value is None:
            return "-"
        return f"${value:,.5f}" if value < 0.01 else f"${value:,.2f}"

    table = Table({r["profile"]: {
        "kind": "managed (Bedrock)" if r["kind"] == "bedrock" else "hosted (SageMaker)",
        "idle per day": usd(r["idle_usd_per_day"]),
        **{f"per photo at {n:,}/day": usd(r["usd_per_photo"][n]) for n in costs.VOLUMES},
    } for r in rows})
    say("List-price estimates (real-time endpoints with "
        f"{cfg.min_instances} instance(s) all day; managed models per photo's tokens, "
        "third-party per-token figures, unverified). `visual-tourism eval --profiles` measures "
        "recognition, latency and cost on the labelled photos." + (
            f" [{prices.LOCAL_NOTE}]" if where.is_local() else ""))
    return table


def autoscaling_plan(cfg: Config) -> dict[str, Any]:
    """The scaling target and policies ``attach_autoscaling`` will put in place, for the mode."""
    if cfg.profile.managed:
        return {"autoscaling": f"none: {cfg.profile.name} is a managed model; Amazon Bedrock "
                "scales it, and the function's reserved concurrency "
                f"({cfg.reserved_concurrency}) caps the photos in flight"}
    most = prices.hourly_cost(cfg.effective_instance_type, cfg.max_instances)
    most_text = (f"${most:.2f} at {cfg.max_instances} instances" if most is not None
                 else "price not recorded")
    if cfg.is_async:
        return {
            "mode": "async",
            "resource": autoscaling.resource_id(cfg),
            "instances": f"0 to {cfg.max_instances} (0 while nobody uploads: idle costs $0)",
            "policy": {
                async_inference.tracking_policy_name(cfg): async_inference.target_tracking(cfg),
                async_inference.step_policy_name(cfg): async_inference.step_scaling(),
            },
            "alarm": f"{async_inference.alarm_name(cfg)}: {async_inference.WAKE_METRIC} >= 1 "
                     "for 1 minute runs the step policy (+1 instance from zero)",
            "most per hour": most_text,
        }
    return {
        "mode": "realtime",
        "resource": autoscaling.resource_id(cfg),
        "instances": f"{cfg.min_instances} to {cfg.max_instances}",
        "policy": autoscaling.target_tracking(cfg),
        "most per hour": most_text,
    }


# -- 01: the permissions preflight ---------------------------------------------------------------


def limits(cfg: Config, aws: Aws) -> Table:
    """The account's room for this plan (quotas.check), one row per item: ok, SHORT or cannot
    tell with the figures, and under a short one what to do; the lines `visual-tourism check`
    prints and `up` checks first."""
    from .. import quotas

    checked = quotas.check(cfg, aws)
    info: dict[str, Any] = {"plan": checked.plan}
    if checked.note:
        info["quotas"] = checked.note
    for line in checked.lines:
        verdict = {"ok": "ok", "short": "SHORT", "cannot tell": "cannot tell"}[line.verdict]
        info[line.item] = (f"{verdict}: {line.figure}" if not line.todo
                           else {"SHORT": line.figure, "what to do": " ".join(
                               step.strip() for step in line.todo)})
    if checked.short:
        info["before 'up'"] = ("Something is short: 'up' would create nothing. Raise the "
                               "quota (the command above), or choose the smaller plan or "
                               "another profile in 01_setup.")
    return Table(info)


def preflight(cfg: Config, aws: Aws) -> Table:
    """Which steps the current principal may run and what each lacks, then the account's
    limits for the plan (``limits``), as a table (permissions.preflight_report). Where it
    cannot tell (the principal may not simulate its own policies, the root user) it says
    why, and lists the steps it could not check. Local mode's administrator credentials may
    run every step (the stand-in lets them through)."""
    from .. import permissions

    rows = permissions.preflight_report(cfg, aws)
    info: dict[str, Any] = {"principal": permissions.principal_arn(aws)}
    verdicts: dict[str, Any] = {}
    if len(rows) == 1 and rows[0]["step"] == "(all)":  # cannot tell
        note = str(rows[0].get("note", ""))
        if where.is_local():
            note += (" In local mode the stand-in's administrator credentials may do "
                     "everything; IAM is not enforced here.")
        info["checked"] = "cannot tell"
        info["why"] = note
        for step in permissions.steps(cfg, aws.account_id, bucket_name(cfg, aws),
                                      aws.partition):
            if step.command in ("up", "status", "ask", "down"):
                verdicts[step.name] = "cannot tell"
    else:
        for row in rows:
            verdicts[row["step"]] = ("can run" if row["can_run"]
                                     else {"MISSING": row["missing"]})
        lacking = sum(1 for row in rows if not row["can_run"])
        info["checked"] = (f"{len(rows)} steps: all can run" if not lacking else
                           f"{len(rows)} steps: {lacking} cannot run")
    info["steps"] = verdicts
    info["limits"] = limits(cfg, aws).info
    missing = any(isinstance(v, Mapping) for v in verdicts.values())
    if missing or (not where.is_local() and any(v != "can run" for v in verdicts.values())):
        info["what to do"] = ("Hand your administrator the output of 'visual-tourism "
                              "admin-policy' (the policy with every permission these steps "
                              "need), then run this cell again.")
    return Table(info)
