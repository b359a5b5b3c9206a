"""Limits: does the account have room for this plan? Checked before `up` creates anything.

IAM (permissions.py) answers "may this identity make these calls?". The next thing a new
account meets is its limits, which otherwise surface halfway through `up`:

- **Endpoint instances.** SageMaker counts endpoint instances per instance type against a
  quota named "<instance type> for endpoint usage" (Service Quotas, service code
  ``sagemaker``; each has its own ``L-...`` code, found here by name with
  ListServiceQuotas). Every endpoint of the account in the region counts, not only ours. A
  new account often has 0 of a GPU type; an increase is reviewed by AWS and can take days.
  The plan needs its starting count (``min_instances``; 1 for an asynchronous endpoint) to be
  created, and ``max_instances`` for autoscaling to reach full scale.
- **Lambda concurrency.** The stack reserves ``max_instances x requests_per_instance``
  concurrent executions for its function. Lambda refuses a reservation that would leave the
  account fewer than 100 unreserved (PutFunctionConcurrency's documentation); a new account's
  total ("Concurrent executions", L-B99A9384, from GetAccountSettings) can be far below the
  default 1,000, and AWS raises it automatically with use.
- **Region.** Every service the plan uses is offered there (botocore's endpoint data) and the
  profile's container image resolves there (the SageMaker SDK's image list). A region that
  does not offer the instance type for endpoints shows as a quota Service Quotas does not list.

A managed profile (Amazon Bedrock) runs no endpoint: its endpoint line says none is needed, the
region line leaves SageMaker and the container image out, and whether the model may be invoked
in the region is bedrock.py's model-access line.

Each item is one line: ok, short or cannot tell, with the figures. Short lines say what to do:
the exact ``aws service-quotas request-service-quota-increase`` command with the quota code
found, a smaller plan that fits now, another model profile that fits, another region. What
cannot be read (AccessDenied on servicequotas:ListServiceQuotas or lambda:GetAccountSettings,
a service error) is "cannot tell" with the reason, never a failure: `up` then goes ahead.

``explained`` turns a limit error that happens anyway (the quota changed, another stack took
the room) into one message naming the quota and what to do.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from . import permissions
from .aws import Aws, error_code, error_message, is_not_found
from .config import Config
from .errors import ConfigError, DeployError, VisualTourismError
from .profiles import PROFILES

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

OK, SHORT, UNKNOWN = "ok", "short", "cannot tell"
SAGEMAKER = "sagemaker"
LAMBDA = "lambda"
# Lambda's account concurrency in Service Quotas (AWS's documented code).
CONCURRENCY_NAME = "Concurrent executions"
CONCURRENCY_CODE = "L-B99A9384"
# Lambda keeps this many executions unreserved (fewer when the account's total is lower).
MIN_UNRESERVED = 100
# Endpoint statuses that hold no instances.
_NOT_HOLDING = ("Deleting", "Failed")


class LimitsShortError(VisualTourismError):
    """The account lacks room for the plan (a quota, the region): nothing was created."""


class QuotaExceededError(DeployError):
    """AWS refused a request for lack of a quota while `up` ran; the message names it."""


def endpoint_quota_name(instance_type: str) -> str:
    return f"{instance_type} for endpoint usage"


def increase_command(service: str, code: str, value: int, region: str) -> str:
    return (f"aws service-quotas request-service-quota-increase --service-code {service} "
            f"--quota-code {code} --desired-value {value} --region {region}")


def console_url(service: str, code: str, region: str) -> str:
    return (f"https://{region}.console.aws.amazon.com/servicequotas/home/services/{service}/"
            f"quotas/{code}")


# -- what was read ----------------------------------------------------------------------------
class CannotRead(Exception):
    """A figure could not be read; the message says why."""


def _why(exc: BaseException, action: str) -> str:
    if isinstance(exc, ClientError) and (
            error_code(exc) in ("AccessDenied", "AccessDeniedException", "AccessDeniedError")
            # A denial whose body the client could not parse (moto answers JSON services
            # with an XML one) still carries HTTP 403.
            or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403
            and "AccessDenied" in error_message(exc)):
        return f"may not call {action} (AccessDenied)"
    if isinstance(exc, ClientError):
        code, message = error_code(exc), error_message(exc)
        raw = re.search(r"<Code>(.*?)</Code>.*?<Message>(.*?)</Message>", message, re.DOTALL)
        if raw:  # an XML error body the client could not parse
            code, message = raw.groups()
        return f"{action} answered {code}: {message}"
    return f"{action} failed: {exc}"


@dataclass(frozen=True)
class Quota:
    service: str
    code: str
    name: str
    value: float
    adjustable: bool = True
    applied: bool = True  # False: only AWS's default value could be read

    @property
    def count(self) -> int:
        return int(self.value)


def service_quotas(aws: Aws, service: str) -> dict[str, Quota]:
    """The applied quotas of ``service`` by lower-case name, as ListServiceQuotas gives them;
    quotas it leaves out (no applied value) from ListAWSDefaultServiceQuotas."""
    client = aws.client("service-quotas")
    found: dict[str, Quota] = {}
    for operation, applied in (("list_service_quotas", True),
                               ("list_aws_default_service_quotas", False)):
        action = "servicequotas:" + ("ListServiceQuotas" if applied
                                     else "ListAWSDefaultServiceQuotas")
        try:
            for page in client.get_paginator(operation).paginate(ServiceCode=service):
                for q in page.get("Quotas", []):
                    if q.get("ErrorReason") or "Value" not in q:
                        continue  # no value to compare with
                    key = str(q["QuotaName"]).lower()
                    found.setdefault(key, Quota(service, q["QuotaCode"], q["QuotaName"],
                                                float(q["Value"]), bool(q.get("Adjustable",
                                                                              True)), applied))
        except Exception as exc:  # noqa: BLE001 - a read that fails: cannot tell, never a failure
            if applied or not found:
                raise CannotRead(_why(exc, action)) from None
            log.info("AWS default quotas of %s not read: %s", service, exc)
    return found


def endpoint_usage(aws: Aws, cfg: Config) -> dict[str, int]:
    """Instances per instance type held by the account's other endpoints in the region."""
    used: dict[str, int] = {}
    configs: dict[str, dict[str, str]] = {}
    try:
        for page in aws.sagemaker.get_paginator("list_endpoints").paginate():
            for summary in page["Endpoints"]:
                name = summary["EndpointName"]
                if name == cfg.endpoint_name or summary["EndpointStatus"] in _NOT_HOLDING:
                    continue
                try:
                    ep = aws.sagemaker.describe_endpoint(EndpointName=name)
                    config = ep["EndpointConfigName"]
                    if config not in configs:
                        variants = aws.sagemaker.describe_endpoint_config(
                            EndpointConfigName=config)["ProductionVariants"]
                        configs[config] = {v["VariantName"]: v.get("InstanceType", "")
                                           for v in variants}
                except ClientError as exc:
                    if is_not_found(exc):  # deleted since it was listed
                        continue
                    raise
                for variant in ep.get("ProductionVariants", []):
                    kind = configs[config].get(variant["VariantName"], "")
                    count = variant.get("CurrentInstanceCount",
                                        variant.get("DesiredInstanceCount", 0))
                    if kind:
                        used[kind] = used.get(kind, 0) + int(count or 0)
    except Exception as exc:  # noqa: BLE001 - a read that fails: cannot tell, never a failure
        raise CannotRead(_why(exc, "sagemaker:ListEndpoints/DescribeEndpoint")) from None
    return used


@dataclass(frozen=True)
class Concurrency:
    total: int
    unreserved: int
    own: int  # what our function reserves already (counted back: it is replaced)

    @property
    def minimum(self) -> int:
        return min(MIN_UNRESERVED, self.total)

    @property
    def reserved_by_others(self) -> int:
        return max(0, self.total - self.unreserved - self.own)

    @property
    def reservable(self) -> int:
        """The most our function may reserve: what is unreserved (ours given back) less the
        minimum Lambda keeps unreserved."""
        return max(0, self.unreserved + self.own - self.minimum)


def lambda_concurrency(aws: Aws, cfg: Config) -> Concurrency:
    try:
        limit = aws.lambda_.get_account_settings()["AccountLimit"]
    except Exception as exc:  # noqa: BLE001 - a read that fails: cannot tell, never a failure
        raise CannotRead(_why(exc, "lambda:GetAccountSettings")) from None
    own = 0
    try:
        own = int(aws.lambda_.get_function_concurrency(FunctionName=cfg.function_name).get(
            "ReservedConcurrentExecutions") or 0)
    except ClientError as exc:
        if not is_not_found(exc):
            raise CannotRead(_why(exc, "lambda:GetFunctionConcurrency")) from None
    return Concurrency(int(limit["ConcurrentExecutions"]),
                       int(limit["UnreservedConcurrentExecutions"]), own)


# -- the report --------------------------------------------------------------------------------
@dataclass
class Line:
    item: str  # "region", "endpoint instances", "Lambda concurrency"
    verdict: str  # OK, SHORT or UNKNOWN
    figure: str  # the figures, one sentence
    todo: list[str] = field(default_factory=list)  # what to do, when short
    quota_code: str = ""

    def row(self) -> dict[str, Any]:
        return {"item": self.item, "verdict": self.verdict, "figure": self.figure,
                "todo": list(self.todo), "quota_code": self.quota_code}


_MARK = {OK: "ok         ", SHORT: "SHORT      ", UNKNOWN: "cannot tell"}


@dataclass
class Limits:
    plan: str
    lines: list[Line] = field(default_factory=list)
    note: str = ""

    @property
    def short(self) -> list[Line]:
        return [line for line in self.lines if line.verdict == SHORT]

    @property
    def unknown(self) -> list[Line]:
        return [line for line in self.lines if line.verdict == UNKNOWN]

    def rows(self) -> list[dict[str, Any]]:
        return [line.row() for line in self.lines]

    def text(self) -> str:
        out = [f"Limits for {self.plan}" + (f" ({self.note})" if self.note else "") + ":"]
        for line in self.lines:
            out.append(f"  {_MARK[line.verdict]} {line.item}: {line.figure}")
            out.extend(f"                {step}" for step in line.todo)
        return "\n".join(out)


def plan_text(cfg: Config) -> str:
    start = _start_count(cfg)
    return (f"profile {cfg.model_profile} in {cfg.region}: {cfg.effective_instance_type}, "
            f"{start} to {cfg.max_instances} instance(s) ({cfg.inference_mode}), "
            f"{cfg.reserved_concurrency} reserved Lambda executions")


def _start_count(cfg: Config) -> int:
    """Instances the endpoint is created with (endpoint.py: 1 for an async endpoint)."""
    return 1 if cfg.is_async else cfg.min_instances


def _services(cfg: Config) -> list[str]:
    """The regional services `up` uses with this configuration."""
    if cfg.profile.managed:  # no endpoint; where Bedrock offers the model: bedrock.py's line
        used = ["s3", "lambda", "logs"]
    else:
        used = ["s3", "lambda", "sagemaker", "sagemaker-runtime", "application-autoscaling",
                "logs"]
    if cfg.is_async and not cfg.profile.managed:
        used.append("cloudwatch")
    if cfg.presets_table:
        used.append("dynamodb")
    if cfg.stop_after:
        used.append("scheduler")
    if cfg.web_api == "on":
        used += ["apigatewayv2", "ssm"]
    return used


def region_line(cfg: Config, aws: Aws) -> Line:
    region = cfg.region
    services = _services(cfg)
    offered = {s: set(aws.session.get_available_regions(s)) for s in services}
    lacking = [s for s in services if region not in offered[s]]
    managed = cfg.profile.managed
    try:
        image, image_problem = ("", "") if managed else (cfg.profile.image_uri(region), "")
    except ConfigError as exc:
        image, image_problem = "", str(exc)
    if not lacking and not image_problem:
        served = ("the managed model's regions are model access's answer" if managed else
                  f"the container image resolves there ({image.rsplit('/', 1)[-1]})")
        return Line("region", OK, f"{region} offers every service the plan uses "
                    f"({', '.join(services)}); {served}")
    problems = ([f"{region} does not offer {', '.join(lacking)}"] if lacking else []) + (
        [f"the container image does not resolve there: {image_problem}"]
        if image_problem else [])
    fits = [r for r in sorted(set.intersection(*offered.values())) if _image_resolves(cfg, r)]
    preferred = [r for r in ("us-east-1", "us-west-2", "eu-west-1") if r in fits] or fits[:3]
    todo = ([f"use a region that offers it all, e.g. AWS_REGION={preferred[0]} "
             f"(also: {', '.join(preferred[1:]) or 'none listed'})"] if preferred else
            ["no region offers all of it with this profile: choose another profile "
             "('visual-tourism profiles')"])
    return Line("region", SHORT, "; ".join(problems), todo)


def _image_resolves(cfg: Config, region: str) -> bool:
    if cfg.profile.managed:
        return True
    try:
        cfg.profile.image_uri(region)
    except ConfigError:
        return False
    return True


def _room(quotas: dict[str, Quota], used: dict[str, int], instance_type: str) -> int | None:
    quota = quotas.get(endpoint_quota_name(instance_type).lower())
    return None if quota is None else quota.count - used.get(instance_type, 0)


def _other_profiles(cfg: Config, quotas: dict[str, Quota], used: dict[str, int]) -> list[str]:
    """Profiles whose instance type has room now, whole plan first."""
    if cfg.instance_type:  # an explicit type overrides every profile's: nothing to offer
        return []
    start, peak = _start_count(cfg), cfg.max_instances
    whole, part = [], []
    for name, profile in PROFILES.items():
        if name == cfg.model_profile or profile.instance_type == cfg.effective_instance_type:
            continue
        try:
            profile.image_uri(cfg.region)
        except ConfigError:
            continue
        room = _room(quotas, used, profile.instance_type)
        if room is None or room < start:
            continue
        if room >= peak:
            whole.append(f"or another profile that fits: 'visual-tourism up --model-profile "
                         f"{name}' ({profile.instance_type}: room for {room})")
        elif room >= cfg.min_instances:
            part.append(f"or another profile with fewer instances: 'VT_MAX_INSTANCES={room} "
                        f"visual-tourism up --model-profile {name}' ({profile.instance_type}: "
                        f"room for {room})")
    return whole + part


def endpoint_line(cfg: Config, aws: Aws, quotas: dict[str, Quota] | CannotRead,
                  used: dict[str, int] | CannotRead) -> Line:
    item = "endpoint instances"
    itype, start, peak = cfg.effective_instance_type, _start_count(cfg), cfg.max_instances
    name = endpoint_quota_name(itype)
    if isinstance(quotas, CannotRead):
        return Line(item, UNKNOWN, f"'{name}': {quotas} (the plan needs {start} to start, "
                    f"{peak} at full scale)")
    quota = quotas.get(name.lower())
    if quota is None:
        return Line(item, SHORT, f"Service Quotas lists no '{name}' in {cfg.region}: "
                    f"SageMaker does not offer {itype} for endpoints there",
                    ["use another region, or another profile ('visual-tourism profiles')"]
                    + _other_profiles(cfg, quotas, used if isinstance(used, dict) else {}))
    others = used.get(itype, 0) if isinstance(used, dict) else 0
    use_text = (f"{others} in use by other endpoints" if isinstance(used, dict)
                else f"other endpoints' use: cannot tell ({used})")
    default = "" if quota.applied else " (AWS's default; no applied value listed)"
    figure = (f"'{quota.name}' ({quota.code}) is {quota.count}{default}, {use_text}; the plan "
              f"needs {start} to start and {peak} at full scale")
    room = quota.count - others
    if room >= peak:
        return Line(item, OK, figure, quota_code=quota.code)
    wanted = others + peak
    todo = []
    if quota.adjustable:
        todo += [f"to raise it: {increase_command(SAGEMAKER, quota.code, wanted, cfg.region)}",
                 f"  (or the console: {console_url(SAGEMAKER, quota.code, cfg.region)}; AWS "
                 "reviews GPU increases, which can take days: ask a week ahead)"]
    else:
        todo.append("this quota cannot be raised through Service Quotas: ask AWS Support")
    lower = cfg.min_instances
    if room >= max(start, lower):
        todo.append(f"or a smaller plan that fits now: 'VT_MAX_INSTANCES={room} visual-tourism "
                    f"up' (autoscaling up to {room} instance(s))")
    todo += _other_profiles(cfg, quotas, used if isinstance(used, dict) else {})
    what = (f"room for {max(room, 0)}: autoscaling could not go past {max(room, 0)}"
            if room >= start else f"room for {max(room, 0)}: the endpoint cannot even start")
    return Line(item, SHORT, f"{figure}; {what}", todo, quota.code)


def concurrency_line(cfg: Config, got: Concurrency | CannotRead) -> Line:
    item = "Lambda concurrency"
    need = cfg.reserved_concurrency
    if isinstance(got, CannotRead):
        return Line(item, UNKNOWN, f"{got} (the stack reserves {need})")
    figure = (f"'{CONCURRENCY_NAME}' ({CONCURRENCY_CODE}) is {got.total}, {got.unreserved} "
              f"unreserved{f' ({got.own} already ours)' if got.own else ''}; the stack "
              f"reserves {need} ({cfg.max_instances} instances x {cfg.requests_per_instance}) "
              f"and Lambda keeps {got.minimum} unreserved")
    if got.reservable >= need:
        return Line(item, OK, figure, quota_code=CONCURRENCY_CODE)
    # The total that leaves room: this reservation, the minimum, and what others reserve.
    wanted = need + MIN_UNRESERVED + got.reserved_by_others
    todo = [f"to raise it: {increase_command(LAMBDA, CONCURRENCY_CODE, wanted, cfg.region)}",
            f"  (or the console: {console_url(LAMBDA, CONCURRENCY_CODE, cfg.region)}; a new "
            "account's total also rises on its own with use)"]
    fewer = got.reservable // cfg.requests_per_instance
    if fewer >= cfg.min_instances:
        todo.append(f"or a smaller plan that fits now: 'VT_MAX_INSTANCES={fewer} "
                    f"visual-tourism up' (reserves {fewer * cfg.requests_per_instance})")
    per = got.reservable // cfg.max_instances
    if per >= 1:
        todo.append(f"or fewer photos in flight per instance: 'VT_REQUESTS_PER_INSTANCE={per} "
                    f"visual-tourism up' (reserves {per * cfg.max_instances})")
    return Line(item, SHORT, f"{figure}: room for {got.reservable}", todo, CONCURRENCY_CODE)


def check(cfg: Config, aws: Aws) -> Limits:
    """Every limit line for this configuration; reads only, creates nothing."""
    limits = Limits(plan_text(cfg))
    if aws.is_local:
        limits.note = ("local mode: the stand-in's quotas, set with VT_LOCAL_QUOTAS; its "
                       "SageMaker quota codes are local ones")
    limits.lines.append(region_line(cfg, aws))
    if cfg.profile.managed:
        limits.lines.append(Line("endpoint instances", OK, (
            "none needed: a managed model (Amazon Bedrock) runs no endpoint of ours; its "
            "requests and tokens per minute have quotas of their own (Service Quotas, service "
            "code bedrock)")))
    else:
        limits.lines.append(_endpoint_line(cfg, aws))
    try:
        concurrency: Concurrency | CannotRead = lambda_concurrency(aws, cfg)
    except CannotRead as exc:
        concurrency = exc
    limits.lines.append(concurrency_line(cfg, concurrency))
    return limits


def _endpoint_line(cfg: Config, aws: Aws) -> Line:
    quotas: dict[str, Quota] | CannotRead
    used: dict[str, int] | CannotRead
    try:
        quotas = service_quotas(aws, SAGEMAKER)
    except CannotRead as exc:
        quotas = exc
    try:
        used = endpoint_usage(aws, cfg)
    except CannotRead as exc:
        used = exc
    return endpoint_line(cfg, aws, quotas, used)


def require(cfg: Config, aws: Aws, progress: Progress) -> Limits | None:
    """`up`'s second act, after the permissions: refuse, creating nothing, when a limit is
    short. Goes ahead (saying so) where it cannot tell. Skipped with --skip-check."""
    if permissions.skipping():
        return None
    limits = check(cfg, aws)
    if limits.short:
        raise LimitsShortError(
            "Nothing was created: the account lacks room for this plan.\n" + limits.text()
            + f"\n('visual-tourism check' shows these lines again; to try anyway: "
            f"'visual-tourism up --skip-check' or {permissions.SKIP_ENV}=1.)")
    for line in limits.unknown:
        progress(f"limits: {line.item}: cannot tell: {line.figure}. Going ahead.")
    known = [line.item for line in limits.lines if line.verdict == OK]
    if known:
        progress(f"limits: room for the plan ({', '.join(known)}: ok)")
    return limits


# -- a limit met anyway ---------------------------------------------------------------------
_QUOTA_IN_MESSAGE = re.compile(r"service limit '([^']+)' is (\d+)")


def _lambda_reservation_refused(exc: ClientError) -> bool:
    return (error_code(exc) == "InvalidParameterValueException"
            and "UnreservedConcurrentExecution" in error_message(exc))


def limit_error(aws: Aws, cfg: Config, exc: BaseException, what: str) -> QuotaExceededError | None:
    """The clear error for a limit AWS met while ``what`` ran; None for any other error."""
    if not isinstance(exc, ClientError):
        return None
    code, message = error_code(exc), error_message(exc)
    after = ("Whatever 'up' created before this step stays; once there is room run "
             "'visual-tourism up' again (it carries on), or 'visual-tourism down' removes it. "
             "'visual-tourism check' shows the account's room.")
    if code == "ResourceLimitExceeded":
        found = _QUOTA_IN_MESSAGE.search(message)
        name = found.group(1) if found else endpoint_quota_name(cfg.effective_instance_type)
        raise_with = ""
        try:
            quota = service_quotas(aws, SAGEMAKER).get(name.lower())
        except CannotRead as why:
            quota, raise_with = None, f" (its code could not be read: {why})"
        if quota is not None:
            try:  # room for the whole plan beside what the other endpoints hold
                wanted = endpoint_usage(aws, cfg).get(cfg.effective_instance_type,
                                                      0) + cfg.max_instances
            except CannotRead:
                wanted = max(quota.count + 1, cfg.max_instances)
            raise_with = (f" To raise it: "
                          f"{increase_command(SAGEMAKER, quota.code, wanted, cfg.region)}")
        return QuotaExceededError(
            f"{what}: SageMaker refused it for lack of quota '{name}' ({message}).{raise_with} "
            f"{after}")
    if _lambda_reservation_refused(exc):
        try:
            got = lambda_concurrency(aws, cfg)
            wanted = cfg.reserved_concurrency + MIN_UNRESERVED + got.reserved_by_others
            figures = f"it is {got.total}, {got.unreserved} unreserved"
        except CannotRead as why:
            wanted, figures = cfg.reserved_concurrency + MIN_UNRESERVED, f"not read: {why}"
        return QuotaExceededError(
            f"{what}: Lambda refused to reserve {cfg.reserved_concurrency} concurrent "
            f"executions for lack of quota '{CONCURRENCY_NAME}' ({CONCURRENCY_CODE}; "
            f"{figures}): {message} To raise it: "
            f"{increase_command(LAMBDA, CONCURRENCY_CODE, wanted, cfg.region)} Or reserve "
            f"less: fewer instances (VT_MAX_INSTANCES) or photos in flight per instance "
            f"(VT_REQUESTS_PER_INSTANCE). {after}")
    if code == "LimitExceededException":  # Application Auto Scaling's per-account quotas
        return QuotaExceededError(
            f"{what}: Application Auto Scaling refused it for lack of quota ({message}). "
            f"{after}")
    return None


@contextlib.contextmanager
def explained(aws: Aws, cfg: Config, what: str) -> Iterator[None]:
    """Within this block a limit error becomes one QuotaExceededError naming the quota."""
    try:
        yield
    except ClientError as exc:
        clear = limit_error(aws, cfg, exc, what)
        if clear is None:
            raise
        raise clear from None
