"""Permissions as data: what each step of the stack needs from IAM, and a preflight.

Three parts, each usable alone:

- ``steps(cfg, account, bucket)``: for every step of `up`, `status`, `ask` and `down` (the
  async, deadline, web and presets parts included when the configuration turns them on), and
  for each `visual-tourism presets` subcommand, the exact IAM actions and resource ARNs it
  needs. ``needs_of_call`` maps one API call (service,
  operation, parameters) to the actions IAM evaluates for it; tests/test_permissions.py records
  every call the code makes in local mode and checks the two against each other, so this list
  cannot drift from the code.
- ``preflight(cfg, aws)``: which steps the current principal can run and what is missing, from
  ``iam:SimulatePrincipalPolicy`` with resource ARNs. Where the principal may not simulate
  (AccessDenied) or is the root user or unknown, it says it cannot tell. moto has no
  SimulatePrincipalPolicy: in local mode the same question is answered by ``evaluate`` (below)
  over the principal's inline and attached policies as moto stores them, read with the local
  stand-in's own administrator credentials; still only when the principal's policies allow it
  ``iam:SimulatePrincipalPolicy``, as on AWS. Those administrator credentials themselves (the
  ones `local serve` prints: neither a user's key nor a role session) may do everything, as
  local mode lets their requests through: the preflight says so, step by step.
  The "up: preflight" step lists the reads of the limits check (quotas.py) too; missing them
  makes that check "cannot tell", so they never make `up` refuse (``Report.blocking``).
- ``admin_policy(cfg, account)``: the least-privilege policy a SageMaker Studio execution role
  needs on top of ``AmazonSageMakerFullAccess``: every step's needs (the presets commands'
  included), minus what that managed policy already grants (evaluated with resources; it
  grants nothing in DynamoDB), grouped into statements.

``evaluate`` models IAM's identity-policy logic: Action/NotAction (case-insensitive, wildcards),
Resource/NotResource (wildcards), the condition operators these policies use, an explicit Deny
winning. A condition it cannot evaluate makes an Allow not apply and a Deny apply (it errs
towards "missing"). Not modelled: resource-based policies, permission boundaries, SCPs,
session policies.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import iam, where
from .bucket import bucket_name
from .config import Config
from .errors import VisualTourismError

Progress = Callable[[str], None]
MANAGED_POLICY = "AmazonSageMakerFullAccess"
SKIP_ENV = "VT_SKIP_CHECK"
PREFLIGHT_STEP = "up: preflight"
_skip = contextvars.ContextVar("vt_skip_check", default=False)


class PermissionsMissingError(VisualTourismError):
    """The preflight found actions the principal may not perform: nothing was created."""


# -- one need: an action on a resource ---------------------------------------------------------
@dataclass(frozen=True)
class Need:
    """``action`` on ``resource`` (an ARN pattern: ``*`` where a name is not known in advance).

    ``context``: condition keys IAM sees with the request (iam:PassedToService for PassRole).
    ``when``: non-empty for a need only some runs meet (the reason), e.g. "only if the role
    exists but its policy differs": the recording test does not demand to see it.
    """

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    when: str = ""

    @property
    def sample(self) -> str:
        """A concrete ARN of the pattern, for simulation (IAM simulates named resources)."""
        return self.resource if self.resource == "*" else self.resource.replace("*", "example")

    def covers(self, other: Need) -> bool:
        """This listed need includes the ``other`` (recorded) one: same action, its resource
        matches this pattern (exact names, or ``*`` for what is not known in advance)."""
        return (self.action.lower() == other.action.lower()
                and _wild(self.resource, other.resource, case=True)
                and dict(other.context).items() <= dict(self.context).items() | dict(
                    other.context).items())


@dataclass(frozen=True)
class Step:
    name: str  # e.g. "up: bucket"
    summary: str
    needs: tuple[Need, ...] = field(default_factory=tuple)

    @property
    def command(self) -> str:
        return self.name.split(":", 1)[0]


# -- ARNs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arns:
    partition: str
    region: str
    account: str

    def s3(self, bucket: str, key: str | None = None) -> str:
        return f"arn:{self.partition}:s3:::{bucket}" + ("" if key is None else f"/{key}")

    def role(self, name: str) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{name}"

    def function(self, name: str) -> str:
        if name.startswith("arn:"):
            return ":".join(name.split(":")[:7])  # without a version or alias qualifier
        return f"arn:{self.partition}:lambda:{self.region}:{self.account}:function:{name}"

    def log_group(self, name: str) -> str:
        return f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:{name}"

    def sagemaker(self, kind: str, name: str) -> str:
        return f"arn:{self.partition}:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    def alarm(self, name: str) -> str:
        return f"arn:{self.partition}:cloudwatch:{self.region}:{self.account}:alarm:{name}"

    def schedule_group(self, name: str) -> str:
        return f"arn:{self.partition}:scheduler:{self.region}:{self.account}:schedule-group/{name}"

    def schedule(self, group: str, name: str) -> str:
        return (f"arn:{self.partition}:scheduler:{self.region}:{self.account}:"
                f"schedule/{group}/{name}")

    def parameter(self, name: str) -> str:
        return (f"arn:{self.partition}:ssm:{self.region}:{self.account}:"
                f"parameter/{name.lstrip('/')}")

    def apigateway(self, path: str) -> str:
        return f"arn:{self.partition}:apigateway:{self.region}::{path}"

    def user(self, name: str) -> str:
        return f"arn:{self.partition}:iam::{self.account}:user/{name}"

    def table(self, name: str) -> str:
        if name.startswith("arn:"):  # DynamoDB takes a table's ARN as its TableName too
            return name
        return f"arn:{self.partition}:dynamodb:{self.region}:{self.account}:table/{name}"


# -- one API call -> what IAM evaluates for it ---------------------------------------------------
# The IAM prefix of each boto3 service whose calls the stack makes.
_PREFIX = {"application-autoscaling": "application-autoscaling", "apigatewayv2": "apigateway",
           "service-quotas": "servicequotas"}
# Operations whose IAM action is not "<prefix>:<Operation>".
_S3_ACTIONS = {
    "HeadBucket": "ListBucket", "ListObjectsV2": "ListBucket", "ListObjects": "ListBucket",
    "ListObjectVersions": "ListBucketVersions", "HeadObject": "GetObject",
    "DeleteObjects": "DeleteObject", "ListBuckets": "ListAllMyBuckets",
    "PutPublicAccessBlock": "PutBucketPublicAccessBlock",
    "GetPublicAccessBlock": "GetBucketPublicAccessBlock",
    "DeletePublicAccessBlock": "PutBucketPublicAccessBlock",
    "PutBucketEncryption": "PutEncryptionConfiguration",
    "GetBucketEncryption": "GetEncryptionConfiguration",
    "DeleteBucketEncryption": "PutEncryptionConfiguration",
    "PutBucketNotificationConfiguration": "PutBucketNotification",
    "GetBucketNotificationConfiguration": "GetBucketNotification",
    "PutBucketLifecycleConfiguration": "PutLifecycleConfiguration",
    "GetBucketLifecycleConfiguration": "GetLifecycleConfiguration",
    "DeleteBucketLifecycle": "PutLifecycleConfiguration",
    "PutBucketCors": "PutBucketCORS", "GetBucketCors": "GetBucketCORS",
    "DeleteBucketCors": "PutBucketCORS", "DeleteBucketTagging": "PutBucketTagging",
    "DeleteBucketPolicy": "DeleteBucketPolicy",
}
_LAMBDA_ACTIONS = {"Invoke": "InvokeFunction"}
# Calls IAM does not authorize at all.
_FREE = {("sts", "GetCallerIdentity")}


def needs_of_call(service: str, operation: str, params: Mapping[str, Any], arns: Arns,
                  http: Mapping[str, str] | None = None) -> list[Need]:
    """The IAM actions (with resources) evaluated for one call of ``service.operation``.

    ``http``: the operation's HTTP method and request URI (botocore's operation model), used
    for API Gateway, whose actions are HTTP verbs on resource paths.
    """
    if (service, operation) in _FREE:
        return []
    prefix = _PREFIX.get(service, service)
    p = params
    if service == "s3":
        return _s3_needs(operation, p, arns)
    if service == "apigatewayv2":
        method = (http or {}).get("method", "GET")
        path = re.sub(r"^/v2", "", (http or {}).get("requestUri", "/apis").split("?")[0])
        lower = {k.lower(): v for k, v in p.items()}
        path = re.sub(r"\{(\w+)\}", lambda m: str(lower.get(m.group(1).lower(), "*")), path)
        return [Need(f"apigateway:{method}", arns.apigateway(path))]
    action = f"{prefix}:{operation}"
    if service == "iam":
        if "RoleName" in p:
            return [Need(action, arns.role(p["RoleName"]))] + (
                [Need("iam:TagRole", arns.role(p["RoleName"]))] if p.get("Tags") else [])
        if operation == "SimulatePrincipalPolicy":
            return [Need(action, p["PolicySourceArn"])]
        if "UserName" in p:
            return [Need(action, arns.user(p["UserName"]))]
        return [Need(action, "*")]
    if service == "lambda":
        action = f"lambda:{_LAMBDA_ACTIONS.get(operation, operation)}"
        name = p.get("FunctionName") or p.get("Resource") or "*"
        needs = [Need(action, arns.function(name))]
        if p.get("Role"):
            needs.append(_pass_role(p["Role"], "lambda.amazonaws.com"))
        if p.get("Tags") and operation == "CreateFunction":
            needs.append(Need("lambda:TagResource", arns.function(name)))
        return needs
    if service == "sagemaker":
        needs = [Need(action, _sagemaker_resource(operation, p, arns))]
        if p.get("ExecutionRoleArn"):
            needs.append(_pass_role(p["ExecutionRoleArn"], "sagemaker.amazonaws.com"))
        if p.get("Tags") and operation.startswith("Create"):
            needs.append(Need("sagemaker:AddTags", needs[0].resource))
        return needs
    if service == "logs":
        name = p.get("logGroupName")
        if p.get("resourceArn"):
            return [Need(action, p["resourceArn"])]
        resource = arns.log_group(name) if name else arns.log_group("*")
        needs = [Need(action, resource)]
        if p.get("tags") and operation == "CreateLogGroup":
            needs.append(Need("logs:TagResource", resource))
        return needs
    if service == "cloudwatch":
        names = p.get("AlarmNames") or ([p["AlarmName"]] if p.get("AlarmName") else [])
        return [Need(action, arns.alarm(n)) for n in names] or [Need(action, "*")]
    if service == "scheduler":
        if operation.endswith("ScheduleGroup"):
            resource = arns.schedule_group(p["Name"])
        elif operation in ("ListTagsForResource", "TagResource", "UntagResource"):
            resource = p["ResourceArn"]
        elif "Name" in p:
            resource = arns.schedule(p.get("GroupName", "default"), p["Name"])
        else:
            resource = "*"
        needs = [Need(action, resource)]
        if operation == "CreateScheduleGroup" and p.get("Tags"):
            needs.append(Need("scheduler:TagResource", resource))
        role = (p.get("Target") or {}).get("RoleArn")
        if role:
            needs.append(_pass_role(role, "scheduler.amazonaws.com"))
        return needs
    if service == "dynamodb":
        return _dynamodb_needs(operation, p, arns)
    if service == "ssm":
        name = p.get("Name") or p.get("ResourceId")
        resource = arns.parameter(name) if name else "*"
        needs = [Need(action, resource)]
        if operation == "PutParameter" and p.get("Tags"):
            needs.append(Need("ssm:AddTagsToResource", resource))
        return needs
    return [Need(action, "*")]  # application-autoscaling and anything without resource ARNs


def _dynamodb_needs(operation: str, p: Mapping[str, Any], arns: Arns) -> list[Need]:
    """A table's ARN from TableName (a name or an ARN) or ResourceArn (the tagging calls);
    batch calls need the action on each table they name; ListTables has no resource."""
    action = f"dynamodb:{operation}"
    if operation.startswith("Batch") and isinstance(p.get("RequestItems"), Mapping):
        return [Need(action, arns.table(name)) for name in p["RequestItems"]]
    if p.get("ResourceArn"):
        resource = str(p["ResourceArn"])
    elif p.get("TableName"):
        resource = arns.table(str(p["TableName"]))
    else:
        resource = "*"
    needs = [Need(action, resource)]
    if operation == "CreateTable" and p.get("Tags"):  # tag-on-create is authorized separately
        needs.append(Need("dynamodb:TagResource", resource))
    return needs


def _pass_role(role_arn: str, service: str) -> Need:
    return Need("iam:PassRole", role_arn, (("iam:PassedToService", service),))


def _s3_needs(operation: str, p: Mapping[str, Any], arns: Arns) -> list[Need]:
    action = "s3:" + _S3_ACTIONS.get(operation, operation)
    bucket = p.get("Bucket")
    if operation == "ListBuckets" or not bucket:
        return [Need(action, "*")]
    if operation == "DeleteObjects":
        keys = [o["Key"] for o in (p.get("Delete") or {}).get("Objects", [])]
        return [Need(action, arns.s3(bucket, k)) for k in keys]
    if "Key" in p:
        return [Need(action, arns.s3(bucket, p["Key"]))]
    return [Need(action, arns.s3(bucket))]


_SAGEMAKER_KINDS = (("EndpointConfig", "endpoint-config", "EndpointConfigName"),
                    ("Endpoint", "endpoint", "EndpointName"), ("Model", "model", "ModelName"))


def _sagemaker_resource(operation: str, p: Mapping[str, Any], arns: Arns) -> str:
    if p.get("ResourceArn"):
        return str(p["ResourceArn"])
    if operation.startswith("List"):
        return "*"
    for word, kind, key in _SAGEMAKER_KINDS:
        if operation.endswith(word) or operation.endswith(word + "WeightsAndCapacities"):
            return arns.sagemaker(kind, p.get(key, "*"))
    return "*"


# -- IAM's evaluation of identity policies ----------------------------------------------------
def _wild(pattern: str, value: str, case: bool) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


_UNKNOWN = object()


def _substitute(pattern: str, context: Mapping[str, str]) -> str | object:
    """Policy variables (``${aws:username}``): _UNKNOWN when the context lacks one."""
    missing = []

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in ("*", "?", "$"):
            return key
        if key not in context:
            missing.append(key)
            return ""
        return context[key]

    text = re.sub(r"\$\{([^}]+)\}", value, pattern)
    return _UNKNOWN if missing else text


def _condition_holds(conditions: Mapping[str, Any], context: Mapping[str, str]) -> bool | None:
    """True, False, or None when an operator is not modelled."""
    for operator, tests in conditions.items():
        if_exists = operator.endswith("IfExists")
        op = operator.removesuffix("IfExists")
        for key, expected in tests.items():
            values = [str(v) for v in _listed(expected)]
            actual = context.get(key)
            if op == "Null":
                if (actual is None) != (values[0].lower() == "true"):
                    return False
                continue
            if actual is None:
                if if_exists:
                    continue
                if op.startswith(("StringNot", "ArnNot")):
                    continue  # a negated test of an absent key holds
                return False
            if op in ("StringEquals", "ArnEquals"):
                ok = actual in values
            elif op == "StringEqualsIgnoreCase":
                ok = actual.lower() in (v.lower() for v in values)
            elif op in ("StringLike", "ArnLike"):
                ok = any(_wild(v, actual, case=True) for v in values)
            elif op in ("StringNotEquals", "ArnNotEquals"):
                ok = actual not in values
            elif op in ("StringNotLike", "ArnNotLike"):
                ok = not any(_wild(v, actual, case=True) for v in values)
            elif op == "Bool":
                ok = actual.lower() in (v.lower() for v in values)
            else:
                return None
            if not ok:
                return False
    return True


def _statement_applies(statement: Mapping[str, Any], action: str, resource: str,
                       context: Mapping[str, str]) -> bool | None:
    if "Action" in statement:
        if not any(_wild(a, action, case=False) for a in _listed(statement["Action"])):
            return False
    elif "NotAction" in statement:
        if any(_wild(a, action, case=False) for a in _listed(statement["NotAction"])):
            return False
    else:
        return False

    def matches(patterns: Any) -> bool | None:
        unknown = False
        for raw in _listed(patterns):
            pattern = _substitute(str(raw), context)
            if pattern is _UNKNOWN:
                unknown = True
            elif _wild(str(pattern), resource, case=True):
                return True
        return None if unknown else False

    if "Resource" in statement:
        hit = matches(statement["Resource"])
    elif "NotResource" in statement:
        inside = matches(statement["NotResource"])
        hit = None if inside is None else not inside
    else:
        hit = False
    if hit is not True:
        return hit
    if "Condition" in statement:
        return _condition_holds(statement["Condition"], context)
    return True


def evaluate(policies: Iterable[Mapping[str, Any]], action: str, resource: str,
             context: Mapping[str, str] | None = None) -> str:
    """``"allowed"``, ``"explicitDeny"`` or ``"implicitDeny"``, as IAM decides for identity
    policies. What is not modelled errs towards denial: an Allow that may not apply does not,
    a Deny that may apply does."""
    context = dict(context or {})
    allowed = False
    for policy in policies:
        for statement in _listed(policy.get("Statement", [])):
            applies = _statement_applies(statement, action, resource, context)
            if statement.get("Effect") == "Deny" and applies is not False:
                return "explicitDeny"
            if statement.get("Effect") == "Allow" and applies is True:
                allowed = True
    return "allowed" if allowed else "implicitDeny"


# -- what each step needs ----------------------------------------------------------------------
def _n(actions: str, *resources: str, when: str = "",
       context: tuple[tuple[str, str], ...] = ()) -> list[Need]:
    return [Need(a, r, context, when) for a in actions.split() for r in resources]


def _passes(role: str, service: str) -> list[Need]:
    return [Need("iam:PassRole", role, (("iam:PassedToService", service),))]


_UPDATE = "only when the resource exists and differs from the configuration"
_EXISTING = "only when an earlier run left one"
_STATE = "depends on what exists (first run, re-run, async or real-time before)"
_EXAMPLE_UPLOAD = "only for an example photo of the project not in the bucket yet (or changed)"
_UNKNOWN_PRESET = "only when no preset of that name exists (to name those that do)"
# The commands whose steps ``steps`` lists; `presets` is the presets CLI (list/show/set/delete).
COMMANDS = ("up", "status", "ask", "down", "presets")


def _managed_model_steps(cfg: Config, a: Arns, ep: str, models: str, configs: str,
                         alarm: str) -> list[Step]:
    """A managed model (Amazon Bedrock): may it be invoked here (bedrock.model_access), and
    no endpoint: one an earlier deployment of another profile left is removed."""
    return [
        Step("up: model access", "whether Amazon Bedrock lets this account invoke the model",
             tuple(_n("bedrock:GetFoundationModelAvailability", "*",
                      when="on AWS (local mode answers it itself)"))),
        Step("up: endpoint", "none for a managed model; one an earlier run left is removed",
             tuple(_n("sagemaker:DescribeEndpoint", ep)
                   + _n("sagemaker:ListTags sagemaker:DeleteEndpoint", ep, when=_EXISTING)
                   + _n("sagemaker:ListEndpointConfigs sagemaker:ListModels", "*",
                        when=_EXISTING)
                   + _n("sagemaker:ListTags sagemaker:DeleteEndpointConfig", configs,
                        when=_EXISTING)
                   + _n("sagemaker:ListTags sagemaker:DeleteModel", models, when=_EXISTING)
                   + _n("application-autoscaling:DescribeScalableTargets "
                        "application-autoscaling:DescribeScalingPolicies "
                        "application-autoscaling:DeleteScalingPolicy "
                        "application-autoscaling:DeregisterScalableTarget", "*",
                        when=_EXISTING)
                   + _n("cloudwatch:DescribeAlarms cloudwatch:DeleteAlarms", alarm,
                        when=_EXISTING))),
    ]


def _endpoint_step(cfg: Config, a: Arns, role_needs: Callable[[str], list[Need]],
                  log_group_needs: Callable[[str], list[Need]], endpoint_role: str, ep: str,
                  models: str, configs: str, alarm: str, studio_role: str | None,
                  sm_role: str, ep_logs: str) -> Step:
    """A hosted profile's endpoint: model, endpoint configuration, endpoint."""
    return Step("up: endpoint", "model, endpoint configuration, endpoint",
             tuple((role_needs(sm_role) if not studio_role else [])
                   + log_group_needs(ep_logs)
                   + _passes(endpoint_role, "sagemaker.amazonaws.com")
                   + _n("sagemaker:DescribeEndpoint sagemaker:CreateEndpoint sagemaker:AddTags", ep)
                   + _n("sagemaker:UpdateEndpoint sagemaker:ListTags", ep, when=_EXISTING)
                   + _n("sagemaker:DescribeModel sagemaker:CreateModel sagemaker:AddTags", models)
                   + _n("sagemaker:DescribeEndpointConfig sagemaker:CreateEndpointConfig "
                        "sagemaker:AddTags", configs)
                   + _n("application-autoscaling:DescribeScalableTargets "
                        "application-autoscaling:DescribeScalingPolicies "
                        "application-autoscaling:DeleteScalingPolicy "
                        "application-autoscaling:DeregisterScalableTarget", "*",
                        when="only when an endpoint of ours is updated")
                   + _n("cloudwatch:DescribeAlarms cloudwatch:DeleteAlarms", alarm,
                        when="only when an endpoint of ours is updated")))


def _endpoint_steps_after(a: Arns, ep: str, models: str, configs: str,
                          alarm: str) -> list[Step]:
    """A hosted profile's endpoint once requested: its wait, then its autoscaling."""
    return [
        Step("up: wait", "wait for InService, remove superseded models and configurations",
             tuple(_n("sagemaker:DescribeEndpoint", ep)
                   + _n("sagemaker:DescribeEndpointConfig sagemaker:ListTags", configs)
                   + _n("sagemaker:ListTags", models)
                   + _n("sagemaker:DeleteEndpointConfig", configs, when="superseded ones only")
                   + _n("sagemaker:DeleteModel", models, when="superseded ones only")
                   + _n("sagemaker:ListEndpointConfigs sagemaker:ListModels", "*")
                   + _n("application-autoscaling:RegisterScalableTarget "
                        "application-autoscaling:PutScalingPolicy", "*",
                        when="only when an update was rolled back"))),
        Step("up: autoscaling", "scaling target and policies",
             tuple(_n("application-autoscaling:DescribeScalableTargets "
                      "application-autoscaling:DescribeScalingPolicies "
                      "application-autoscaling:RegisterScalableTarget "
                      "application-autoscaling:PutScalingPolicy", "*")
                   + _n("application-autoscaling:DeleteScalingPolicy "
                        "application-autoscaling:DeregisterScalableTarget", "*", when=_STATE)
                   + _n("cloudwatch:DescribeAlarms", alarm,
                        when="real-time mode: an alarm left by async mode is removed")
                   + _n("cloudwatch:PutMetricAlarm cloudwatch:DeleteAlarms", alarm, when=_STATE)
                   + _n("cloudwatch:GetMetricStatistics", "*", when="async mode")
                   + _n("sagemaker:DescribeEndpoint sagemaker:DescribeEndpointConfig "
                        "sagemaker:UpdateEndpointWeightsAndCapacities", ep, configs,
                        when="async mode")
                   + _n("iam:CreateServiceLinkedRole", a.role(
                       "aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
                       "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"),
                       when="the account's first SageMaker autoscaling (AWS creates the role)",
                       context=(("iam:AWSServiceName",
                                 "sagemaker.application-autoscaling.amazonaws.com"),)))),
    ]


def steps(cfg: Config, account: str, bucket: str, partition: str = "aws",
          studio_role: str | None = None) -> list[Step]:
    """Every step's needs for this configuration (web, deadline, async as it sets them).

    ``studio_role``: inside Studio the endpoint runs under that role (no SageMaker role of
    ours is created, the Studio role is passed instead).
    """
    from . import async_inference, autoscaling, schedule, web  # noqa: F401 (names only)

    a = Arns(partition, cfg.region, account)
    managed = cfg.profile.managed  # Amazon Bedrock: no endpoint, no SageMaker role
    b, obj = a.s3(bucket), a.s3(bucket, "*")
    lam_role, sm_role = a.role(cfg.lambda_role_name), a.role(cfg.sagemaker_role_name)
    endpoint_role = studio_role or sm_role
    fn = a.function(cfg.function_name)
    fn_logs = a.log_group(f"/aws/lambda/{cfg.function_name}")
    ep_logs = a.log_group(f"/aws/sagemaker/Endpoints/{cfg.endpoint_name}")
    any_logs = a.log_group("*")
    ep = a.sagemaker("endpoint", cfg.endpoint_name)
    models = a.sagemaker("model", f"{cfg.prefix}-model-*")
    configs = a.sagemaker("endpoint-config", f"{cfg.prefix}-config-*")
    alarm = a.alarm(async_inference.alarm_name(cfg))
    role_writes = "iam:CreateRole iam:TagRole iam:PutRolePolicy"
    own_role_reads = "iam:GetRole iam:GetRolePolicy"
    table = a.table(cfg.presets_table) if cfg.presets_table else ""  # "": presets are off
    examples = a.s3(bucket, f"{cfg.example_prefix}*")

    def role_needs(role: str) -> list[Need]:
        return (_n(own_role_reads, role) + _n(role_writes, role, when=_STATE)
                + _n("iam:UpdateAssumeRolePolicy", role, when=_UPDATE))

    def log_group_needs(group: str) -> list[Need]:
        return (_n("logs:DescribeLogGroups", any_logs)
                + _n("logs:CreateLogGroup logs:TagResource logs:PutRetentionPolicy", group,
                     when=_STATE)
                + _n("logs:ListTagsForResource", group, when=_EXISTING))

    result = [
        Step(PREFLIGHT_STEP, "check these permissions first, then the account's limits "
             "(quotas.py; without these reads it cannot tell, and goes ahead)",
             tuple(_n("iam:SimulatePrincipalPolicy", a.role("*"),
                      when="on AWS, for the caller's own role (or user)")
                   + _n("lambda:GetAccountSettings", "*")
                   + _n("lambda:GetFunctionConcurrency", fn)
                   # The endpoint instances' quota and use: a managed model has no endpoint.
                   + ([] if managed else _n(
                       "servicequotas:ListServiceQuotas servicequotas:ListAWSDefaultServiceQuotas "
                       "sagemaker:ListEndpoints", "*")
                      + _n("sagemaker:DescribeEndpoint", a.sagemaker("endpoint", "*"),
                           when="only when the account has other endpoints (their instances)")
                      + _n("sagemaker:DescribeEndpointConfig",
                           a.sagemaker("endpoint-config", "*"),
                           when="only when the account has other endpoints (their instances)")))),
        Step("up: bucket", "private, encrypted, TLS-only bucket with its folders",
             tuple(_n("s3:CreateBucket s3:PutBucketPublicAccessBlock s3:PutEncryptionConfiguration "
                      "s3:PutBucketPolicy s3:PutBucketTagging s3:ListBucket", b)
                   + _n("s3:GetBucketPolicy s3:GetBucketTagging s3:GetBucketPublicAccessBlock "
                        "s3:GetEncryptionConfiguration", b, when=_EXISTING)
                   + _n("s3:GetObject s3:PutObject", obj))),
        Step("up: roles", "the function's role" + ("" if studio_role or managed else
                                                   " and the endpoint's role"),
             tuple(role_needs(lam_role)
                   + ([] if studio_role or managed else role_needs(sm_role)))),
        *([Step("up: presets", "the answer presets table (encrypted, point-in-time recovery), "
                "its seeds and their example photos",
                tuple(_n("dynamodb:DescribeTable "
                         "dynamodb:DescribeContinuousBackups dynamodb:PutItem dynamodb:Scan",
                         table)
                      + _n("dynamodb:ListTagsOfResource", table,
                           when="only when the table exists already (its ownership is checked)")
                      + _n("dynamodb:CreateTable dynamodb:TagResource", table, when=_STATE)
                      + _n("dynamodb:UpdateTable", table,
                           when="only when our table exists without encryption")
                      + _n("dynamodb:UpdateContinuousBackups", table,
                           when="only when point-in-time recovery is off (a new table)")
                      + _n("s3:GetObject", examples)
                      + _n("s3:PutObject", examples, when=_EXAMPLE_UPLOAD)))]
          if table else []),
        *(_managed_model_steps(cfg, a, ep, models, configs, alarm) if managed
          else [_endpoint_step(cfg, a, role_needs, log_group_needs, endpoint_role, ep, models,
                              configs, alarm, studio_role, sm_role, ep_logs)]),
        Step("up: function", "the Lambda function and its log group",
             tuple(role_needs(lam_role) + log_group_needs(fn_logs)
                   + _passes(lam_role, "lambda.amazonaws.com")
                   + _n("lambda:GetFunction", fn)
                   + _n("lambda:CreateFunction lambda:TagResource", fn, when=_STATE)
                   + _n("lambda:UpdateFunctionCode lambda:UpdateFunctionConfiguration "
                        "lambda:ListTags", fn, when=_UPDATE))),
        *([] if managed else _endpoint_steps_after(a, ep, models, configs, alarm)),
        Step("up: delivery", "reserved concurrency, retries, on-failure destination",
             tuple(_n("lambda:GetFunctionConcurrency lambda:GetFunctionEventInvokeConfig", fn)
                   + _n("lambda:PutFunctionConcurrency lambda:PutFunctionEventInvokeConfig", fn,
                        when=_STATE))),
        Step("up: trigger", "S3 may invoke the function; the input/ notification",
             tuple(_n("lambda:GetFunction lambda:GetPolicy", fn)
                   + _n("lambda:AddPermission", fn, when=_STATE)
                   + _n("lambda:RemovePermission", fn, when=_UPDATE)
                   + _n("s3:GetBucketNotification", b)
                   + _n("s3:PutBucketNotification", b, when=_STATE)
                   + _n("s3:GetLifecycleConfiguration s3:PutLifecycleConfiguration", b,
                        when="async mode"))),
    ]
    if cfg.stop_after and managed:  # nothing to stop: a deadline an earlier run armed goes
        group = a.schedule_group(schedule.group_name(cfg))
        result.append(Step(
            "up: deadline", "no deadline for a managed model; an earlier one is removed",
            tuple(_n("scheduler:DeleteSchedule", a.schedule(schedule.group_name(cfg),
                                                            cfg.schedule_name))
                  + _n("scheduler:GetScheduleGroup", group)
                  + _n("scheduler:ListTagsForResource scheduler:DeleteScheduleGroup", group,
                       when=_EXISTING)
                  + _n("iam:GetRole", a.role(cfg.scheduler_role_name))
                  + _n("iam:ListRolePolicies iam:ListAttachedRolePolicies "
                       "iam:DeleteRolePolicy iam:DeleteRole", a.role(cfg.scheduler_role_name),
                       when=_EXISTING))))
    elif cfg.stop_after:
        sched_role = a.role(cfg.scheduler_role_name)
        group = a.schedule_group(schedule.group_name(cfg))
        sched = a.schedule(schedule.group_name(cfg), cfg.schedule_name)
        result.append(Step(
            "up: deadline", "a one-time schedule stops the endpoint",
            tuple(role_needs(sched_role) + _passes(sched_role, "scheduler.amazonaws.com")
                  + _n("scheduler:GetScheduleGroup", group)
                  + _n("scheduler:CreateScheduleGroup scheduler:TagResource", group, when=_STATE)
                  + _n("scheduler:ListTagsForResource", group, when=_EXISTING)
                  + _n("scheduler:GetSchedule scheduler:CreateSchedule", sched)
                  + _n("scheduler:UpdateSchedule", sched, when=_EXISTING))))
    if cfg.web_api == "on":
        web_role = a.role(web.role_name(cfg))
        web_fn = a.function(web.function_name(cfg))
        param = a.parameter(web.code_parameter(cfg))
        result.append(Step(
            "up: web", "the web page's API, its function, role and access code",
            tuple(role_needs(web_role) + log_group_needs(a.log_group(web.log_group(cfg)))
                  + _passes(web_role, "lambda.amazonaws.com")
                  + _n("ssm:PutParameter ssm:AddTagsToResource", param, when=_STATE)
                  + _n("ssm:GetParameter", param, when=_EXISTING)
                  + _n("lambda:GetFunction lambda:GetPolicy lambda:AddPermission", web_fn)
                  + _n("lambda:CreateFunction lambda:TagResource", web_fn, when=_STATE)
                  + _n("lambda:UpdateFunctionCode lambda:UpdateFunctionConfiguration "
                       "lambda:ListTags lambda:RemovePermission", web_fn, when=_UPDATE)
                  + _n("apigateway:GET apigateway:POST", a.apigateway("/apis"))
                  + _n("apigateway:GET apigateway:POST", a.apigateway("/apis/*"))
                  + _n("apigateway:PATCH apigateway:DELETE", a.apigateway("/apis/*"),
                       when=_UPDATE)
                  + _n("s3:GetBucketCORS s3:PutBucketCORS", b))))
    result.append(Step(
        "status", "what exists, its state and cost",
        tuple(_n("s3:ListBucket s3:GetBucketPublicAccessBlock s3:GetBucketNotification", b)
              + _n("s3:GetBucketPolicy s3:GetEncryptionConfiguration s3:GetBucketTagging", b,
                   when=_EXISTING)
              + _n("iam:GetRole", lam_role) + ([] if studio_role else _n("iam:GetRole", sm_role))
              + _n("sagemaker:DescribeEndpoint", ep)
              # A managed model's stack has no endpoint: only one an earlier run left.
              + _n("sagemaker:DescribeEndpointConfig", configs,
                   when=_EXISTING if managed else "")
              + _n("application-autoscaling:DescribeScalableTargets "
                   "application-autoscaling:DescribeScalingPolicies", "*")
              + _n("application-autoscaling:DescribeScalingActivities", "*", when=_EXISTING)
              + _n("cloudwatch:GetMetricStatistics", "*")
              + _n("lambda:GetFunction lambda:GetPolicy lambda:GetFunctionConcurrency "
                   "lambda:GetFunctionEventInvokeConfig", fn)
              + (_n("scheduler:GetSchedule", a.schedule(schedule.group_name(cfg),
                                                         cfg.schedule_name))
                 if cfg.stop_after else [])
              # The page's address only: the access code is read where it is asked for.
              + (_n("apigateway:GET", a.apigateway("/apis")) if cfg.web_api == "on" else [])
              + (_n("dynamodb:DescribeTable", table)
                 + _n("dynamodb:Scan dynamodb:DescribeContinuousBackups", table, when=_EXISTING)
                 if table else []))))
    result.append(Step(
        "ask", "upload a photo, wait for its result",
        tuple(_n("s3:ListBucket s3:GetBucketNotification", b) + _n("lambda:GetFunction", fn)
              + _n("s3:PutObject", a.s3(bucket, f"{cfg.input_prefix}*"))
              + _n("s3:GetObject", a.s3(bucket, f"{cfg.output_prefix}*"))
              + _n("sagemaker:DescribeEndpoint", ep, when="async mode")
              + _n("application-autoscaling:DescribeScalableTargets", "*", when="async mode")
              + (_n("dynamodb:DescribeTable dynamodb:GetItem", table,
                    when="only with a preset or a language (ask --preset/--language)")
                 + _n("dynamodb:Scan", table, when=_UNKNOWN_PRESET)
                 if table else []))))
    roles = [lam_role] + ([] if studio_role else [sm_role]) + (
        [a.role(cfg.scheduler_role_name)] if cfg.stop_after else []) + (
        [a.role(web.role_name(cfg))] if cfg.web_api == "on" else [])
    fns = [fn] + ([a.function(web.function_name(cfg))] if cfg.web_api == "on" else [])
    groups = [fn_logs, ep_logs] + ([a.log_group(web.log_group(cfg))]
                                   if cfg.web_api == "on" else [])
    down = (_n("iam:GetRole", *roles)
            + _n("iam:ListRolePolicies iam:ListAttachedRolePolicies iam:DeleteRolePolicy "
                 "iam:DeleteRole", *roles, when=_EXISTING)
            + _n("iam:DetachRolePolicy", *roles, when="only for a policy attached by hand")
            + _n("lambda:GetFunction", *fns) + _n("lambda:DeleteFunction", *fns, when=_EXISTING)
            + _n("lambda:GetPolicy lambda:RemovePermission lambda:GetFunctionConcurrency "
                 "lambda:DeleteFunctionConcurrency lambda:DeleteFunctionEventInvokeConfig",
                 fn, when=_EXISTING)
            + _n("logs:DescribeLogGroups", any_logs)
            + _n("logs:ListTagsForResource logs:DeleteLogGroup", *groups, when=_EXISTING)
            + _n("s3:GetBucketNotification", b)
            + _n("s3:PutBucketNotification s3:GetBucketCORS s3:PutBucketCORS", b, when=_EXISTING)
            + _n("s3:ListBucket s3:ListBucketVersions s3:GetBucketTagging s3:DeleteBucket", b,
                 when="only with --delete-bucket")
            + _n("s3:DeleteObject", obj, when="only with --delete-bucket")
            + _n("s3:DeleteObjectVersion", obj, when="only with --delete-bucket, versioned")
            + _n("sagemaker:DescribeEndpoint", ep)
            + _n("sagemaker:ListTags sagemaker:DeleteEndpoint", ep, when=_EXISTING)
            + _n("sagemaker:ListEndpointConfigs sagemaker:ListModels", "*")
            + _n("sagemaker:ListTags sagemaker:DeleteEndpointConfig", configs, when=_EXISTING)
            + _n("sagemaker:ListTags sagemaker:DeleteModel", models, when=_EXISTING)
            + _n("application-autoscaling:DescribeScalableTargets "
                 "application-autoscaling:DescribeScalingPolicies "
                 "application-autoscaling:DeleteScalingPolicy "
                 "application-autoscaling:DeregisterScalableTarget", "*", when=_EXISTING)
            + _n("cloudwatch:DescribeAlarms", alarm)
            + _n("cloudwatch:DeleteAlarms", alarm, when="async mode"))
    if cfg.stop_after:
        group = a.schedule_group(schedule.group_name(cfg))
        down += (_n("scheduler:DeleteSchedule", a.schedule(schedule.group_name(cfg),
                                                           cfg.schedule_name))
                 + _n("scheduler:GetScheduleGroup", group)
                 + _n("scheduler:ListTagsForResource scheduler:DeleteScheduleGroup", group,
                      when=_EXISTING))
    if cfg.web_api == "on":
        param = a.parameter(web.code_parameter(cfg))
        down += (_n("apigateway:GET", a.apigateway("/apis"))
                 + _n("apigateway:DELETE", a.apigateway("/apis/*"), when=_EXISTING)
                 + _n("ssm:ListTagsForResource ssm:DeleteParameter", param, when=_EXISTING))
    if table:
        down += (_n("dynamodb:DescribeTable", table)
                 + _n("dynamodb:ListTagsOfResource dynamodb:DeleteTable", table,
                      when="only when the table exists and is not kept (keep_presets)"))
    result.append(Step("down", "remove everything up created", tuple(down)))
    if table:
        result += [
            Step("presets: list", "every preset", tuple(_n("dynamodb:Scan", table))),
            Step("presets: show", "one preset",
                 tuple(_n("dynamodb:GetItem", table)
                       + _n("dynamodb:Scan", table, when=_UNKNOWN_PRESET))),
            Step("presets: set", "create or edit a preset (its example photos in the bucket)",
                 tuple(_n("dynamodb:GetItem dynamodb:DescribeTable", table)
                       + _n("dynamodb:PutItem", table, when="only for a new preset")
                       + _n("dynamodb:UpdateItem", table,
                            when="only when editing an existing preset")
                       + _n("s3:GetObject", examples, when="only for a preset with examples")
                       + _n("s3:PutObject", examples, when=_EXAMPLE_UPLOAD))),
            Step("presets: delete", "delete a preset",
                 tuple(_n("dynamodb:DescribeTable dynamodb:DeleteItem", table)
                       + _n("dynamodb:Scan", table, when=_UNKNOWN_PRESET))),
        ]
    return result


def needs(cfg: Config, account: str, bucket: str, partition: str = "aws",
          commands: Iterable[str] = ("up", "status", "ask", "down"),
          studio_role: str | None = None) -> list[Need]:
    """The needs of these commands, without repeats (order kept)."""
    wanted = set(commands)
    seen: dict[Need, None] = {}
    for step in steps(cfg, account, bucket, partition, studio_role):
        if step.command in wanted:
            seen.update(dict.fromkeys(step.needs))
    return list(seen)


# The statements of AWS's AmazonSageMakerFullAccess that concern the services the stack
# calls (as in moto's copy of the AWS managed policies, updated 2026-02-12);
# tests/test_permissions.py checks each against moto's copy.
SAGEMAKER_FULL_ACCESS: dict[str, Any] = {"Version": "2012-10-17", "Statement": json.loads(r'''
[{"Action":["sagemaker:*"],"Effect":"Allow","NotResource":["arn:aws:sagemaker:*:*:domain/*","arn:aws:sagemaker:*:*:user-profile/*","arn:aws:sagemaker:*:*:app/*","arn:aws:sagemaker:*:*:space/*","arn:aws:sagemaker:*:*:partner-app/*","arn:aws:sagemaker:*:*:flow-definition/*","arn:aws:sagemaker:*:*:training-plan/*","arn:aws:sagemaker:*:*:reserved-capacity/*"],"Sid":"AllowAllNonAdminSageMakerActions"},
{"Action":["sagemaker:AddTags"],"Condition":{"StringEquals":{"sagemaker:TaggingAction":"CreateSpace"}},"Effect":"Allow","Resource":["arn:aws:sagemaker:*:*:space/*"],"Sid":"AllowAddTagsForSpace"},
{"Action":["sagemaker:AddTags"],"Effect":"Allow","Resource":["arn:aws:sagemaker:*:*:app/*"],"Sid":"AllowAddTagsForApp"},
{"Action":["sagemaker:CreateTrainingJob","sagemaker:CreateCluster","sagemaker:UpdateCluster","sagemaker:DescribeTrainingPlan"],"Effect":"Allow","Resource":["arn:aws:sagemaker:*:*:training-plan/*","arn:aws:sagemaker:*:*:reserved-capacity/*"],"Sid":"AllowUseOfTrainingPlanResources"},
{"Action":["sagemaker:CreatePresignedDomainUrl","sagemaker:DescribeDomain","sagemaker:ListDomains","sagemaker:DescribeUserProfile","sagemaker:ListUserProfiles","sagemaker:DescribeSpace","sagemaker:ListSpaces","sagemaker:DescribeApp","sagemaker:ListApps"],"Effect":"Allow","Resource":"*","Sid":"AllowStudioActions"},
{"Action":["sagemaker:CreateApp","sagemaker:DeleteApp"],"Condition":{"Null":{"sagemaker:OwnerUserProfileArn":"true"}},"Effect":"Allow","Resource":"arn:aws:sagemaker:*:*:app/*/*/*/*","Sid":"AllowAppActionsForUserProfile"},
{"Action":["sagemaker:CreateApp","sagemaker:DeleteApp"],"Condition":{"StringEquals":{"sagemaker:SpaceSharingType":["Shared"]}},"Effect":"Allow","Resource":"arn:aws:sagemaker:*:*:app/${sagemaker:DomainId}/*/*/*","Sid":"AllowAppActionsForSharedSpaces"},
{"Action":["sagemaker:CreateSpace","sagemaker:UpdateSpace","sagemaker:DeleteSpace"],"Condition":{"Null":{"sagemaker:OwnerUserProfileArn":"true"}},"Effect":"Allow","Resource":"arn:aws:sagemaker:*:*:space/${sagemaker:DomainId}/*","Sid":"AllowMutatingActionsOnSharedSpacesWithoutOwner"},
{"Action":["sagemaker:CreateSpace","sagemaker:UpdateSpace","sagemaker:DeleteSpace"],"Condition":{"ArnLike":{"sagemaker:OwnerUserProfileArn":"arn:aws:sagemaker:*:*:user-profile/${sagemaker:DomainId}/${sagemaker:UserProfileName}"},"StringEquals":{"sagemaker:SpaceSharingType":["Private","Shared"]}},"Effect":"Allow","Resource":"arn:aws:sagemaker:*:*:space/${sagemaker:DomainId}/*","Sid":"RestrictMutatingActionsOnSpacesToOwnerUserProfile"},
{"Action":["sagemaker:CreateApp","sagemaker:DeleteApp"],"Condition":{"ArnLike":{"sagemaker:OwnerUserProfileArn":"arn:aws:sagemaker:*:*:user-profile/${sagemaker:DomainId}/${sagemaker:UserProfileName}"},"StringEquals":{"sagemaker:SpaceSharingType":["Private"]}},"Effect":"Allow","Resource":"arn:aws:sagemaker:*:*:app/${sagemaker:DomainId}/*/*/*","Sid":"RestrictMutatingActionsOnPrivateSpaceAppsToOwnerUserProfile"},
{"Action":["sagemaker:*"],"Condition":{"StringEqualsIfExists":{"sagemaker:WorkteamType":["private-crowd","vendor-crowd"]}},"Effect":"Allow","Resource":["arn:aws:sagemaker:*:*:flow-definition/*"],"Sid":"AllowFlowDefinitionActions"},
{"Action":["application-autoscaling:DeleteScalingPolicy","application-autoscaling:DeleteScheduledAction","application-autoscaling:DeregisterScalableTarget","application-autoscaling:DescribeScalableTargets","application-autoscaling:DescribeScalingActivities","application-autoscaling:DescribeScalingPolicies","application-autoscaling:DescribeScheduledActions","application-autoscaling:PutScalingPolicy","application-autoscaling:PutScheduledAction","application-autoscaling:RegisterScalableTarget","cloudwatch:DeleteAlarms","cloudwatch:DescribeAlarms","cloudwatch:GetMetricData","cloudwatch:GetMetricStatistics","cloudwatch:ListMetrics","cloudwatch:PutMetricAlarm","cloudwatch:PutMetricData","ecr:BatchCheckLayerAvailability","ecr:BatchGetImage","ecr:CreateRepository","ecr:Describe*","ecr:GetAuthorizationToken","ecr:GetDownloadUrlForLayer","ecr:StartImageScan","iam:ListRoles","lambda:ListFunctions","logs:CreateLogDelivery","logs:CreateLogGroup","logs:CreateLogStream","logs:DeleteLogDelivery","logs:Describe*","logs:GetLogDelivery","logs:GetLogEvents","logs:ListLogDeliveries","logs:PutLogEvents","logs:PutResourcePolicy","logs:UpdateLogDelivery"],"Effect":"Allow","Resource":"*","Sid":"AllowAWSServiceActions"},
{"Action":["ecr:SetRepositoryPolicy","ecr:CompleteLayerUpload","ecr:BatchDeleteImage","ecr:UploadLayerPart","ecr:DeleteRepositoryPolicy","ecr:InitiateLayerUpload","ecr:DeleteRepository","ecr:PutImage"],"Effect":"Allow","Resource":["arn:aws:ecr:*:*:repository/*sagemaker*"],"Sid":"AllowECRActions"},
{"Action":["s3:GetObject","s3:PutObject","s3:DeleteObject","s3:AbortMultipartUpload"],"Effect":"Allow","Resource":["arn:aws:s3:::*SageMaker*","arn:aws:s3:::*Sagemaker*","arn:aws:s3:::*sagemaker*","arn:aws:s3:::*aws-glue*"],"Sid":"AllowS3ObjectActions"},
{"Action":["s3:GetObject"],"Condition":{"StringEqualsIgnoreCase":{"s3:ExistingObjectTag/SageMaker":"true"}},"Effect":"Allow","Resource":["arn:aws:s3:::*"],"Sid":"AllowS3GetObjectWithSageMakerExistingObjectTag"},
{"Action":["s3:GetObject"],"Condition":{"StringEquals":{"s3:ExistingObjectTag/servicecatalog:provisioning":"true"}},"Effect":"Allow","Resource":["arn:aws:s3:::*"],"Sid":"AllowS3GetObjectWithServiceCatalogProvisioningExistingObjectTag"},
{"Action":["s3:CreateBucket","s3:GetBucketLocation","s3:ListBucket","s3:ListAllMyBuckets","s3:GetBucketCors","s3:PutBucketCors"],"Effect":"Allow","Resource":"*","Sid":"AllowS3BucketActions"},
{"Action":["s3:GetBucketAcl","s3:PutObjectAcl"],"Effect":"Allow","Resource":["arn:aws:s3:::*SageMaker*","arn:aws:s3:::*Sagemaker*","arn:aws:s3:::*sagemaker*"],"Sid":"AllowS3BucketACL"},
{"Action":["lambda:InvokeFunction"],"Effect":"Allow","Resource":["arn:aws:lambda:*:*:function:*SageMaker*","arn:aws:lambda:*:*:function:*sagemaker*","arn:aws:lambda:*:*:function:*Sagemaker*","arn:aws:lambda:*:*:function:*LabelingFunction*"],"Sid":"AllowLambdaInvokeFunction"},
{"Action":["iam:CreateServiceLinkedRole"],"Condition":{"StringLike":{"iam:AWSServiceName":"sagemaker.application-autoscaling.amazonaws.com"}},"Effect":"Allow","Resource":"arn:aws:iam::*:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint","Sid":"AllowCreateServiceLinkedRoleForSageMakerApplicationAutoscaling"},
{"Action":["iam:CreateServiceLinkedRole"],"Condition":{"StringEquals":{"iam:AWSServiceName":"robomaker.amazonaws.com"}},"Effect":"Allow","Resource":"*","Sid":"AllowCreateServiceLinkedRoleForRobomaker"},
{"Action":["iam:PassRole"],"Condition":{"StringEquals":{"iam:PassedToService":["glue.amazonaws.com","robomaker.amazonaws.com","states.amazonaws.com"]}},"Effect":"Allow","Resource":"arn:aws:iam::*:role/*AmazonSageMaker*","Sid":"AllowPassRoleForSageMakerRoles"},
{"Action":["iam:PassRole"],"Condition":{"StringEquals":{"iam:PassedToService":"sagemaker.amazonaws.com"}},"Effect":"Allow","Resource":"arn:aws:iam::*:role/*","Sid":"AllowPassRoleToSageMaker"},
{"Action":["sagemaker:ListTags"],"Effect":"Allow","Resource":["arn:aws:sagemaker:*:*:user-profile/*"],"Sid":"AllowListTagsForUserProfile"}]
''')}


# -- the administrator's hand-off ---------------------------------------------------------------
def _compress(items: list[Need]) -> list[dict[str, Any]]:
    """Statements grouping actions that share the same resources (and context)."""
    by_action: dict[tuple[str, tuple[tuple[str, str], ...]], set[str]] = {}
    for need in items:
        by_action.setdefault((need.action, need.context), set()).add(need.resource)
    by_resources: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], list[str]] = {}
    for (action, context), resources in sorted(by_action.items()):
        by_resources.setdefault((tuple(sorted(resources)), context), []).append(action)
    statements = []
    for (resources, context), actions in by_resources.items():
        service = actions[0].split(":")[0]
        sid = re.sub(r"[^A-Za-z0-9]", "", service.title()) + str(len(statements) + 1)
        statement: dict[str, Any] = {
            "Sid": sid, "Effect": "Allow", "Action": sorted(actions),
            "Resource": list(resources) if len(resources) > 1 else resources[0]}
        if context:
            statement["Condition"] = {"StringEquals": dict(context)}
        statements.append(statement)
    return statements


def _widen(need: Need) -> list[Need]:
    """The resource forms a policy must name: a log group's ARN with and without ':*'."""
    if ":log-group:" in need.resource and not need.resource.endswith(":*"):
        return [need, replace(need, resource=need.resource + ":*")]
    return [need]


def admin_policy(cfg: Config, account: str, bucket: str, partition: str = "aws",
                 principal_arn: str | None = None, studio_role: str | None = None,
                 managed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a Studio execution role needs on top of AmazonSageMakerFullAccess to run every
    notebook: the needs of up, status, ask, down and the presets commands in both inference
    modes, with the web page and the stop deadline, minus what the managed policy already
    allows for that resource."""
    managed = SAGEMAKER_FULL_ACCESS if managed is None else managed
    everything: dict[Need, None] = {}
    for mode in ("realtime", "async"):
        variant = replace(cfg, inference_mode=mode, web_api="on", stop_after=cfg.stop_after or "3h")
        for need in needs(variant, account, bucket, partition, commands=COMMANDS,
                          studio_role=studio_role):
            if need.action == "iam:SimulatePrincipalPolicy":
                need = replace(need, resource=principal_arn or need.resource, when="")
            everything[replace(need, when="")] = None
    missing = [n for n in everything
               if evaluate([managed], n.action, n.sample, dict(n.context)) != "allowed"]
    return {"Version": "2012-10-17",
            "Statement": _compress([w for n in missing for w in _widen(n)])}


# -- the preflight ------------------------------------------------------------------------------
@dataclass
class Report:
    """For one principal: per step, what is missing. ``known`` False: cannot tell (``reason``)."""

    principal: str
    known: bool
    reason: str = ""
    steps: list[tuple[Step, list[Need]]] = field(default_factory=list)
    method: str = ""

    @property
    def missing(self) -> list[Need]:
        seen: dict[Need, None] = {}
        for _, lacking in self.steps:
            seen.update(dict.fromkeys(replace(n, when="") for n in lacking))
        return list(seen)

    @property
    def blocking(self) -> list[Need]:
        """What `up` refuses for: the missing needs of every step but the preflight's own
        reads, whose absence only makes the limits check say it cannot tell."""
        seen: dict[Need, None] = {}
        for step, lacking in self.steps:
            if step.name != PREFLIGHT_STEP:
                seen.update(dict.fromkeys(replace(n, when="") for n in lacking))
        return list(seen)

    def rows(self) -> list[dict[str, Any]]:
        return [{"step": step.name, "can_run": not lacking if self.known else None,
                 "missing": sorted({f"{n.action} on {n.resource}" for n in lacking})}
                for step, lacking in self.steps]

    def text(self) -> str:
        if not self.known:
            return (f"Permissions of {self.principal}: cannot tell. {self.reason}")
        lines = [f"Permissions of {self.principal} ({self.method}):"]
        for row in self.rows():
            mark = "ok     " if row["can_run"] else "MISSING"
            lines.append(f"  {mark} {row['step']}")
            lines.extend(f"            {m}" for m in row["missing"])
        if self.missing:
            lines.append("Ask your administrator for these ('visual-tourism admin-policy' "
                         "prints a policy with all of them).")
            if not self.blocking:
                lines.append("Only the limits check's reads are missing: 'up' may run, but "
                             "cannot tell whether the account has room for the plan.")
        return "\n".join(lines)


class CannotTell(Exception):
    pass


def principal_arn(aws: Any) -> str:
    """The caller's IAM identity: a user's ARN, an assumed role's role ARN (its path found
    where the caller may read it), or the root ARN."""
    arn = aws.identity["Arn"]
    if ":assumed-role/" not in arn:
        return arn
    partition, account = arn.split(":")[1], arn.split(":")[4]
    name = arn.split(":assumed-role/")[1].split("/")[0]
    try:
        return str(aws.iam.get_role(RoleName=name)["Role"]["Arn"])
    except Exception:  # noqa: BLE001 - AccessDenied: try the list AmazonSageMakerFullAccess allows
        pass
    try:
        for page in aws.iam.get_paginator("list_roles").paginate():
            for role in page["Roles"]:
                if role["RoleName"] == name:
                    return str(role["Arn"])
    except Exception:  # noqa: BLE001 - no path then: right for most roles
        pass
    return f"arn:{partition}:iam::{account}:role/{name}"


def _is_denied(exc: BaseException) -> bool:
    from .aws import error_code

    return error_code(exc) in ("AccessDenied", "AccessDeniedException", "AccessDeniedError")


def _simulate_aws(aws: Any, principal: str, wanted: list[Need]) -> set[Need]:
    """The needs IAM's simulator does not allow, one call per resource and context."""
    from botocore.exceptions import ClientError

    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Need]] = {}
    for need in wanted:
        groups.setdefault((need.sample, need.context), []).append(need)
    denied: set[Need] = set()
    for (resource, context), group in groups.items():
        args: dict[str, Any] = {"PolicySourceArn": principal,
                                "ActionNames": sorted({n.action for n in group})}
        if resource != "*":
            args["ResourceArns"] = [resource]
        if context:
            args["ContextEntries"] = [{"ContextKeyName": k, "ContextKeyValues": [v],
                                       "ContextKeyType": "string"} for k, v in context]
        try:
            results = []
            for page in aws.iam.get_paginator("simulate_principal_policy").paginate(**args):
                results.extend(page["EvaluationResults"])
        except Exception as exc:  # noqa: BLE001 - whatever the simulator says, we cannot tell
            if isinstance(exc, ClientError) and _is_denied(exc):
                raise CannotTell(f"{principal} may not call iam:SimulatePrincipalPolicy "
                                 "(AccessDenied), so the preflight cannot see its "
                                 "permissions.") from None
            raise CannotTell(f"the IAM simulator answered: {exc}") from None
        verdict = {r["EvalActionName"].lower(): r["EvalDecision"] for r in results}
        denied.update(n for n in group if verdict.get(n.action.lower()) != "allowed")
    return denied


def _local_policies(aws: Any, principal: str) -> list[dict[str, Any]]:
    """The principal's identity policies as the local stand-in stores them, read with its
    own administrator credentials (moto has no SimulatePrincipalPolicy)."""
    import boto3
    from botocore.exceptions import ClientError

    iam = boto3.client("iam", endpoint_url=aws.iam.meta.endpoint_url, region_name=aws.region,
                       aws_access_key_id="local", aws_secret_access_key="local")
    kind, name = principal.split(":", 5)[5].split("/", 1)
    name = name.rsplit("/", 1)[-1]
    docs: list[dict[str, Any]] = []
    try:
        if kind == "role":
            inline = iam.list_role_policies(RoleName=name)["PolicyNames"]
            docs += [iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
                     for p in inline]
            attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        elif kind == "user":
            inline = iam.list_user_policies(UserName=name)["PolicyNames"]
            docs += [iam.get_user_policy(UserName=name, PolicyName=p)["PolicyDocument"]
                     for p in inline]
            attached = iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]
        else:
            raise CannotTell(f"{principal} is neither an IAM user nor a role.")
    except ClientError:
        raise CannotTell(f"{principal} is not a user or role the local stand-in knows (the "
                         "stack's own administrator credentials are).") from None
    for policy in attached:
        version = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]["DefaultVersionId"]
        docs.append(iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=version)[
            "PolicyVersion"]["Document"])
    return [json.loads(d) if isinstance(d, str) else d for d in docs]


# What local mode's own (administrator) credentials may do: local mode lets every request
# not signed by an IAM user or role through (local/iam_enforcement.py), as an administrator's.
LOCAL_ADMINISTRATOR = {"Version": "2012-10-17",
                       "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
LOCAL_ADMINISTRATOR_METHOD = ("local mode's administrator credentials: the stand-in lets "
                              "their every request through, as an administrator's")


def local_administrator(aws: Any) -> bool:
    """In local mode, credentials that are neither an IAM user's key (AKIA...) nor a role
    session (a session token): the stand-in's own, which it authorizes like an administrator
    (the rule of local/iam_enforcement.is_principal)."""
    if not aws.is_local:
        return False
    credentials = aws.session.get_credentials()
    if credentials is None:
        return False
    frozen = credentials.get_frozen_credentials()
    return not (frozen.access_key.startswith("AKIA") or frozen.token)


def _simulate_local(aws: Any, principal: str, wanted: list[Need]) -> set[Need]:
    if local_administrator(aws):
        policies = [LOCAL_ADMINISTRATOR]
        return {n for n in wanted
                if evaluate(policies, n.action, n.sample, dict(n.context)) != "allowed"}
    policies = _local_policies(aws, principal)
    if evaluate(policies, "iam:SimulatePrincipalPolicy", principal) != "allowed":
        raise CannotTell(f"{principal} may not call iam:SimulatePrincipalPolicy (AccessDenied), "
                         "so the preflight cannot see its permissions.")
    return {n for n in wanted
            if evaluate(policies, n.action, n.sample, dict(n.context)) != "allowed"}


def preflight(cfg: Config, aws: Any, commands: Iterable[str] = ("up", "status", "ask", "down"),
              bucket: str | None = None) -> Report:
    """Which steps of ``commands`` the current principal can run, and what each lacks."""
    arn = aws.identity["Arn"]
    if arn.endswith(":root"):
        return Report(arn, False, "This is the account's root user: it may do everything, but "
                      "should not be used day to day; nothing to check.")
    principal = principal_arn(aws)
    studio = iam.studio_role_arn() if where.in_studio() else None
    all_steps = [s for s in steps(cfg, aws.account_id, bucket or bucket_name(cfg, aws),
                                  aws.partition, studio_role=studio)
                 if s.command in set(commands)]
    wanted = list({replace(n, when=""): None for s in all_steps for n in s.needs
                   if n.action != "iam:SimulatePrincipalPolicy"
                   and not n.when.startswith("the account's first")})
    method = ("local evaluation of the principal's policies (moto has no "
              "SimulatePrincipalPolicy)" if aws.is_local else "iam:SimulatePrincipalPolicy")
    if local_administrator(aws):
        method = LOCAL_ADMINISTRATOR_METHOD
    try:
        denied = (_simulate_local if aws.is_local else _simulate_aws)(aws, principal, wanted)
    except CannotTell as exc:
        return Report(principal, False, str(exc) + " Ask your administrator to allow it (it is "
                      "part of 'visual-tourism admin-policy'), or run 'visual-tourism "
                      "admin-policy' and hand them its output.")
    report = Report(principal, True, method=method)
    for step in all_steps:
        lacking = [n for n in step.needs if replace(n, when="") in denied]
        report.steps.append((step, lacking))
    return report


def preflight_report(cfg: Config, aws: Any) -> list[dict[str, Any]]:
    """Rows for a notebook cell: step, can_run (None: cannot tell), missing."""
    report = preflight(cfg, aws)
    if not report.known:
        return [{"step": "(all)", "can_run": None, "missing": [], "note": report.text()}]
    return report.rows()


@contextlib.contextmanager
def skipped() -> Iterator[None]:
    """Within this block `up` runs without the preflight (the CLI's --skip-check)."""
    token = _skip.set(True)
    try:
        yield
    finally:
        _skip.reset(token)


def skipping() -> bool:
    """Whether `up` runs without its preflight (--skip-check, or VT_SKIP_CHECK set)."""
    return _skip.get() or os.environ.get(SKIP_ENV, "").lower() in ("1", "true", "yes", "on")


def require(cfg: Config, aws: Any, progress: Progress) -> None:
    """`up`'s first act: refuse, creating nothing, when the principal lacks a permission that
    up or down needs. Goes ahead (saying so) when the preflight cannot tell."""
    if skipping():
        progress("preflight skipped (--skip-check)")
        return
    report = preflight(cfg, aws, commands=("up", "down"))
    if not report.known:
        progress("preflight: " + report.text() + " Going ahead.")
        return
    if report.blocking:
        raise PermissionsMissingError(
            "Nothing was created: " + report.text() + "\n(To try anyway: 'visual-tourism up "
            f"--skip-check' or {SKIP_ENV}=1.)")
    if report.missing:
        progress(f"preflight: {report.principal} may run every step, but not the limits "
                 f"check's reads ({', '.join(sorted({n.action for n in report.missing}))})")
        return
    progress(f"preflight: {report.principal} may run every step ({report.method})")
