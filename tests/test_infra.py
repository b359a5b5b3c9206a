"""The CloudFormation template (infra/template.yaml) and `visual-tourism infra`.

- cfn-lint passes on the template and fails on broken copies of it.
- One source of truth: the template, resolved with the parameters `infra package` derives from
  a Config, carries exactly the policies, settings and names of the helpers behind
  `visual-tourism up` (iam.py, bucket.py, lambda_fn.py, endpoint.py, autoscaling.py).
- A real create, update and delete of the default configuration on moto's CloudFormation as
  local mode extends it (visual_tourism/local/cfn_resources.py) through deploy() / delete();
  a failed creation rolls back, and delete after it is clean.
- The failure report, from CloudFormation events scripted with botocore's Stubber (moto
  raises instead of recording CREATE_FAILED events).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from cfnlint.decode import cfn_yaml
from moto.core import DEFAULT_ACCOUNT_ID

from visual_tourism import (
    async_inference,
    autoscaling,
    bucket,
    delivery,
    endpoint,
    iam,
    infra,
    lambda_fn,
    logs,
    packaging,
    presets,
    schedule,
    web,
)
from visual_tourism.aws import Aws
from visual_tourism.cli import main
from visual_tourism.config import STACK_TAG, Config, load_config
from visual_tourism.errors import ConfigError, DeployError, NotDeployedError, StackFailedError
from visual_tourism.local import moto_patches
from visual_tourism.profiles import PROFILES
from web_function import app

TEMPLATE_TEXT = infra.TEMPLATE.read_text()
# Template parameters that only `infra package` can know: no defaults in the template.
PACKAGE_ONLY = {"ImageUri", "CodeS3Bucket", "CodeS3Key", "WebCodeS3Key"}

# What moto 5.2.5's CloudFormation lacks (resource types it skips with a warning, bucket
# properties it ignores) local mode teaches it (visual_tourism/local/cfn_resources.py, applied
# by moto_patches.patch_cloudformation, as `local serve` does); the deploy tests here run with
# it. What stays moto's own: Lambda Tags are ignored.
def created_resources(cfg: Config) -> set[str]:
    """The template's resources whose condition holds for ``cfg``: what a deploy creates."""
    res, _ = rendered(cfg)
    return {name for name, resource in res.resources.items()
            if "Condition" not in resource or res.condition(resource["Condition"])}


def no_sleep(_: float) -> None:
    pass


@functools.cache
def image_uri(profile: str, region: str) -> str:
    return PROFILES[profile].image_uri(region)  # the SageMaker SDK's table: offline, slow import


# -- a small CloudFormation resolver ------------------------------------------------------
# Enough of CloudFormation's semantics for this template: parameters, pseudo parameters,
# conditions, Ref / GetAtt with each resource type's documented return values, Sub, If,
# Select, Split, Join and AWS::NoValue.
NO_VALUE = object()
NAME_PROPERTY = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::SageMaker::Endpoint": "EndpointName",
    "AWS::Scheduler::ScheduleGroup": "Name",
    "AWS::DynamoDB::Table": "TableName",
}
ARN_FORMAT = {
    "AWS::S3::Bucket": "arn:{p}:s3:::{name}",
    "AWS::IAM::Role": "arn:{p}:iam::{a}:role/{name}",
    "AWS::Lambda::Function": "arn:{p}:lambda:{r}:{a}:function:{name}",
    # SageMaker ARNs carry the name in lower case.
    "AWS::SageMaker::Model": "arn:{p}:sagemaker:{r}:{a}:model/{lower}",
    "AWS::SageMaker::EndpointConfig": "arn:{p}:sagemaker:{r}:{a}:endpoint-config/{lower}",
    "AWS::SageMaker::Endpoint": "arn:{p}:sagemaker:{r}:{a}:endpoint/{lower}",
    "AWS::DynamoDB::Table": "arn:{p}:dynamodb:{r}:{a}:table/{name}",
}
REF_RETURNS_ARN = {"AWS::SageMaker::Model", "AWS::SageMaker::EndpointConfig",
                   "AWS::SageMaker::Endpoint"}
NAME_ATTRIBUTES = {"ModelName", "EndpointConfigName", "EndpointName"}


class Resolver:
    def __init__(self, template: dict[str, Any], values: dict[str, str], *, account: str,
                 region: str) -> None:
        self.template = template
        self.resources = template["Resources"]
        self.pseudo = {
            "AWS::AccountId": account, "AWS::Region": region, "AWS::Partition": "aws",
            "AWS::StackName": "stack", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": NO_VALUE,
        }
        self.params: dict[str, Any] = {}
        for name, spec in template["Parameters"].items():
            raw = values.get(name, spec.get("Default"))
            assert raw is not None, f"no value for parameter {name}"
            raw = str(raw)
            if spec["Type"] == "Number":
                number = float(raw)
                self.params[name] = int(number) if number.is_integer() else number
            else:
                self.params[name] = raw
            if "AllowedPattern" in spec:
                assert re.fullmatch(spec["AllowedPattern"], raw), (name, raw)
            if "AllowedValues" in spec:
                assert raw in [str(v) for v in spec["AllowedValues"]], (name, raw)

    def condition(self, name: str) -> bool:
        return self._test(self.template["Conditions"][name])

    def _test(self, node: Any) -> bool:
        (fn, args), = node.items()
        if fn == "Fn::Equals":
            return self.resolve(args[0]) == self.resolve(args[1])
        if fn == "Fn::Not":
            return not self._test(args[0])
        if fn == "Fn::And":
            return all(self._test(a) for a in args)
        if fn == "Fn::Or":
            return any(self._test(a) for a in args)
        if fn == "Condition":
            return self.condition(args)
        raise AssertionError(f"unsupported condition {fn}")

    def name(self, logical: str) -> str:
        resource = self.resources[logical]
        prop = NAME_PROPERTY.get(resource["Type"])
        if prop and prop in resource.get("Properties", {}):
            return self.resolve(resource["Properties"][prop])
        return f"stack-{logical}-generated"  # CloudFormation makes up a name

    def arn(self, logical: str) -> str:
        name = self.name(logical)
        return ARN_FORMAT[self.resources[logical]["Type"]].format(
            p="aws", r=self.pseudo["AWS::Region"], a=self.pseudo["AWS::AccountId"], name=name,
            lower=name.lower(),
        )

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        kind = self.resources[name]["Type"]
        if kind in REF_RETURNS_ARN:
            return self.arn(name)
        if kind in NAME_PROPERTY:
            return self.name(name)
        return f"ref:{name}"  # e.g. a scalable target's id

    def get_att(self, logical: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(logical)
        if attribute == "ApiEndpoint":  # AWS::ApiGatewayV2::Api
            return f"https://{self.ref(logical)}.execute-api.{self.pseudo['AWS::Region']}.amazonaws.com"
        assert attribute in NAME_ATTRIBUTES, attribute
        return self.name(logical)

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def value(match: re.Match[str]) -> str:
            key = match.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in variables:
                return str(self.resolve(variables[key]))
            if "." in key:
                return self.get_att(*key.split(".", 1))
            return str(self.ref(key))

        return re.sub(r"\$\{([^}]+)\}", value, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1:
                (key, args), = node.items()
                if key == "Ref":
                    return self.ref(args)
                if key == "Fn::GetAtt":
                    logical, attribute = args if isinstance(args, list) else args.split(".", 1)
                    return self.get_att(logical, attribute)
                if key == "Fn::Sub":
                    text, variables = (args, {}) if isinstance(args, str) else args
                    return self.sub(text, variables)
                if key == "Fn::If":
                    return self.resolve(args[1] if self.condition(args[0]) else args[2])
                if key == "Fn::Select":
                    return self.resolve(args[1])[int(self.resolve(args[0]))]
                if key == "Fn::Split":
                    return self.resolve(args[1]).split(args[0])
                if key == "Fn::Join":
                    return args[0].join(str(self.resolve(a)) for a in args[1])
                assert not key.startswith("Fn::"), f"unsupported {key}"
            out = {k: self.resolve(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not NO_VALUE}
        if isinstance(node, list):
            return [v for v in (self.resolve(v) for v in node) if v is not NO_VALUE]
        return node

    def properties(self, logical: str) -> dict[str, Any]:
        return self.resolve(self.resources[logical].get("Properties", {}))

    def outputs(self) -> dict[str, Any]:
        return {k: self.resolve(v["Value"]) for k, v in self.template["Outputs"].items()
                if "Condition" not in v or self.condition(v["Condition"])}


def template() -> dict[str, Any]:
    return cfn_yaml.loads(TEMPLATE_TEXT)


def rendered(cfg: Config) -> tuple[Resolver, dict[str, str]]:
    values = infra.template_parameters(
        cfg, image_uri="" if cfg.profile.managed else image_uri(cfg.model_profile, cfg.region),
        code_bucket="artifacts-bucket", code_key="lambda/0123.zip",
    )
    return Resolver(template(), values, account=DEFAULT_ACCOUNT_ID, region=cfg.region), values


CONFIGS = {
    "default": {},
    "custom": {
        "prefix": "my-tour",
        "bucket": "my-tour-photos",
        "model_profile": "qwen2.5-vl-7b-instruct",
        "min_instances": 2,
        "max_instances": 3,
        "target_invocations": 7.5,
        "scale_in_cooldown": 900,
        "scale_out_cooldown": 120,
        "lambda_timeout": 120,
        "lambda_memory": 1024,
        "input_prefix": "uploads/",
        "output_prefix": "answers/",
        "image_transport": "data-uri",
        "generation": {"max_new_tokens": 128, "temperature": 0.1},
    },
}


# -- cfn-lint -------------------------------------------------------------------------------
def test_template_passes_cfn_lint():
    assert infra.lint() == []


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("RetentionInDays: !Ref", "RetentionDays: !Ref", "E3002"),  # no such property
        ("!GetAtt Endpoint.EndpointName, \"\"]", "!GetAtt Endpoint.Name, \"\"]",
         "E1010"),  # no such attribute
        # The cycle the template avoids: the function naming its bucket through the resource.
        ("BUCKET_NAME: !If [HasBucketName, !Ref BucketName, !Sub \"${Prefix}-${AWS::AccountId}"
         "-${AWS::Region}\"]", "BUCKET_NAME: !Ref Bucket", "E3004"),
    ],
    ids=["property", "getatt", "cycle"],
)
def test_cfn_lint_fails_on_a_broken_template(tmp_path, old, new, rule):
    assert old in TEMPLATE_TEXT
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE_TEXT.replace(old, new, 1))
    findings = infra.lint(broken)
    assert findings and any(f" {rule} " in line for line in findings), findings


def test_lint_command(tmp_path, capsys):
    assert main(["infra", "lint"]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE_TEXT.replace("Handler: lambda_code", "Handlr: lambda_code"))
    assert main(["infra", "lint", "--template", str(broken)]) == 1
    assert "E3002" in capsys.readouterr().out


# -- one source of truth --------------------------------------------------------------------
def test_parameters_cover_the_template_and_defaults_equal_the_default_config():
    params = template()["Parameters"]
    values = infra.template_parameters(
        load_config(), image_uri="uri", code_bucket="artifacts", code_key="key"
    )
    assert set(values) == set(params)
    assert {name for name, spec in params.items() if "Default" not in spec} == PACKAGE_ONLY
    defaults = {name: str(spec["Default"]) for name, spec in params.items() if "Default" in spec}
    assert defaults == {name: values[name] for name in defaults}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_resolved_template_equals_the_helpers(case):
    cfg = load_config(**CONFIGS[case])
    res, values = rendered(cfg)
    account, uri = DEFAULT_ACCOUNT_ID, values["ImageUri"]
    name = cfg.bucket_name(account)
    tag = [{"Key": STACK_TAG, "Value": cfg.prefix}]

    # Bucket: private, encrypted, owner-enforced, TLS only, tagged; its input/ trigger.
    b = res.properties("Bucket")
    assert b["BucketName"] == name
    assert b["PublicAccessBlockConfiguration"] == bucket.PUBLIC_ACCESS_BLOCK
    api_rules = [
        {"ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"],
         "BucketKeyEnabled": r["BucketKeyEnabled"]}
        for r in b["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    ]
    assert {"Rules": api_rules} == bucket.encryption_configuration()
    assert b["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert b["Tags"] == tag
    function_arn = f"arn:aws:lambda:{cfg.region}:{account}:function:{cfg.function_name}"
    assert b["NotificationConfiguration"] == {
        "LambdaConfigurations": [{
            "Event": "s3:ObjectCreated:*",
            "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": cfg.input_prefix}]}},
            "Function": function_arn,
        }]
    }
    assert res.resources["Bucket"]["DependsOn"] == "BucketInvokePermission"
    policy = res.properties("BucketPolicy")
    assert policy["Bucket"] == name
    assert policy["PolicyDocument"] == bucket.bucket_policy(name)

    # Roles: the same trust and least-privilege statements as iam.py.
    lam = res.properties("LambdaRole")
    assert lam["RoleName"] == cfg.lambda_role_name
    assert lam["AssumeRolePolicyDocument"] == iam.trust_policy("lambda.amazonaws.com")
    assert lam["Policies"] == [{
        "PolicyName": iam.LAMBDA_POLICY_NAME,
        "PolicyDocument": iam.lambda_policy(cfg, account=account, bucket=name),
    }]
    sm = res.properties("SageMakerRole")
    assert sm["RoleName"] == cfg.sagemaker_role_name
    assert sm["AssumeRolePolicyDocument"] == iam.trust_policy(
        "sagemaker.amazonaws.com", source_account=account)
    # Confused-deputy guard on SageMaker's role; its logs scoped to this endpoint's group.
    assert sm["AssumeRolePolicyDocument"]["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": account}}
    log_resources = [
        r for s in sm["Policies"][0]["PolicyDocument"]["Statement"]
        if any(a.startswith("logs:") for a in s["Action"])
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]
    group_arn = (f"arn:aws:logs:{cfg.region}:{account}:log-group:"
                 f"{logs.endpoint_log_group(cfg)}")
    assert sorted(log_resources) == [group_arn, f"{group_arn}:*"]
    assert sm["Policies"] == [{
        "PolicyName": iam.SAGEMAKER_POLICY_NAME,
        "PolicyDocument": iam.sagemaker_policy(cfg, account=account, image_uri=uri),
    }]
    assert lam["Tags"] == sm["Tags"] == tag

    # Lambda: settings, environment, log group, and S3's permission to invoke it.
    fn = res.properties("Function")
    lambda_role_arn = f"arn:aws:iam::{account}:role/{cfg.lambda_role_name}"
    settings = lambda_fn._function_settings(cfg, lambda_role_arn, name)
    assert {k: fn[k] for k in settings} == settings
    assert fn["Environment"]["Variables"] == lambda_fn.function_environment(cfg, name)
    assert fn["FunctionName"] == cfg.function_name
    assert fn["Code"] == {"S3Bucket": "artifacts-bucket", "S3Key": "lambda/0123.zip"}
    assert fn["ReservedConcurrentExecutions"] == cfg.reserved_concurrency
    assert res.properties("EventInvokeConfig") == {
        "FunctionName": cfg.function_name, "Qualifier": "$LATEST",
        **delivery.event_invoke_settings(cfg, f"arn:aws:s3:::{name}"),
    }
    assert res.resources["Function"]["DependsOn"] == "LogGroup"
    assert res.properties("LogGroup") == {
        "LogGroupName": logs.function_log_group(cfg),
        "RetentionInDays": logs.RETENTION_DAYS,
        "Tags": tag,
    }
    assert res.resources["Endpoint"]["DependsOn"] == "EndpointLogGroup"
    assert res.properties("EndpointLogGroup") == {
        "LogGroupName": logs.endpoint_log_group(cfg),
        "RetentionInDays": logs.RETENTION_DAYS,
        "Tags": tag,
    }
    assert res.properties("BucketInvokePermission") == {
        "FunctionName": function_arn,
        "Action": "lambda:InvokeFunction",
        "Principal": "s3.amazonaws.com",
        "SourceArn": f"arn:aws:s3:::{name}",
        "SourceAccount": account,
    }

    # SageMaker: model, configuration, endpoint.
    model = res.properties("Model")
    assert model["PrimaryContainer"] == {"Image": uri, "Environment": cfg.profile.container_env()}
    assert model["ExecutionRoleArn"] == f"arn:aws:iam::{account}:role/{cfg.sagemaker_role_name}"
    assert res.properties("EndpointConfig")["ProductionVariants"] == [{
        "VariantName": endpoint.VARIANT,
        "ModelName": res.name("Model"),
        "InstanceType": cfg.effective_instance_type,
        "InitialInstanceCount": cfg.min_instances,
        "ContainerStartupHealthCheckTimeoutInSeconds": cfg.profile.startup_timeout_s,
    }]
    ep = res.properties("Endpoint")
    assert ep["EndpointName"] == cfg.endpoint_name
    assert ep["EndpointConfigName"] == res.name("EndpointConfig")
    for logical in ("Model", "EndpointConfig", "Endpoint", "LogGroup", "Function"):
        assert res.properties(logical)["Tags"] == tag, logical

    # Autoscaling: the same target and policy as autoscaling.py.
    assert res.properties("ScalableTarget") == {
        "ServiceNamespace": autoscaling.NAMESPACE,
        "ResourceId": autoscaling.resource_id(cfg),
        "ScalableDimension": autoscaling.DIMENSION,
        "MinCapacity": cfg.min_instances,
        "MaxCapacity": cfg.max_instances,
    }
    assert res.properties("ScalingPolicy") == {
        "PolicyName": autoscaling.policy_name(cfg),
        "PolicyType": "TargetTrackingScaling",
        "ScalingTargetId": "ref:ScalableTarget",
        "TargetTrackingScalingPolicyConfiguration": autoscaling.target_tracking(cfg),
    }

    # (The web page's outputs: test_resolved_web_resources_equal_the_web_helpers.)
    assert {k: v for k, v in res.outputs().items() if not k.startswith("Web")} == {
        "BucketName": name,
        "BucketArn": f"arn:aws:s3:::{name}",
        "FunctionName": cfg.function_name,
        "FunctionArn": function_arn,
        "EndpointName": cfg.endpoint_name,
        "EndpointArn": f"arn:aws:sagemaker:{cfg.region}:{account}:endpoint/{cfg.endpoint_name}",
        "LambdaRoleArn": lambda_role_arn,
        "SageMakerRoleArn": model["ExecutionRoleArn"],
        "PresetsTableName": cfg.presets_table,
    }

    # The presets table: the settings presets.py creates it with, and its one GetItem grant.
    assert res.condition("PresetsEnabled")
    table = res.properties("PresetsTable")
    want = presets.table_settings(cfg)
    assert {k: table[k] for k in ("TableName", "KeySchema", "AttributeDefinitions",
                                  "BillingMode", "Tags")} == {
        k: want[k] for k in ("TableName", "KeySchema", "AttributeDefinitions", "BillingMode",
                             "Tags")}
    assert table["SSESpecification"] == {"SSEEnabled": want["SSESpecification"]["Enabled"]}
    assert table["PointInTimeRecoverySpecification"] == presets.POINT_IN_TIME_RECOVERY
    (read,) = [s for s in lam["Policies"][0]["PolicyDocument"]["Statement"]
               if s["Sid"] == "ReadPresets"]
    assert read["Action"] == ["dynamodb:GetItem"]
    assert read["Resource"] == presets.table_arn(cfg, account)


def _present(res: Resolver, logical: str) -> bool:
    condition = res.resources[logical].get("Condition")
    return condition is None or res.condition(condition)


@pytest.mark.parametrize("mode", ["realtime", "async"])
def test_resolved_template_equals_the_helpers_for_each_mode_and_the_deadline(mode):
    cfg = load_config(inference_mode=mode, stop_after="3h", prefix="class-a",
                      max_instances=3, async_backlog_target=2.5, async_request_ttl=600)
    res, values = rendered(cfg)
    account = DEFAULT_ACCOUNT_ID
    name = cfg.bucket_name(account)
    tag = [{"Key": STACK_TAG, "Value": cfg.prefix}]
    function_arn = f"arn:aws:lambda:{cfg.region}:{account}:function:{cfg.function_name}"
    is_async = mode == "async"

    # The handler's variables and both roles' statements, as the helpers make them.
    fn = res.properties("Function")
    assert fn["Environment"]["Variables"] == lambda_fn.function_environment(cfg, name)
    assert res.properties("LambdaRole")["Policies"][0]["PolicyDocument"] == iam.lambda_policy(
        cfg, account=account, bucket=name)
    assert res.properties("SageMakerRole")["Policies"][0]["PolicyDocument"] == (
        iam.sagemaker_policy(cfg, account=account, image_uri=values["ImageUri"], bucket=name))

    # Notifications: input/, plus SageMaker's outputs and failures in async mode.
    configs = res.properties("Bucket")["NotificationConfiguration"]["LambdaConfigurations"]
    wanted = [cfg.input_prefix] + (list(async_inference.notification_ids(cfg).values())
                                   if is_async else [])
    assert [c["Filter"]["S3Key"]["Rules"] for c in configs] == [
        [{"Name": "prefix", "Value": prefix}] for prefix in wanted]
    assert {c["Function"] for c in configs} == {function_arn}

    # Async mode: the queue's folders expire, as the helper's lifecycle rules say.
    lifecycle = res.properties("Bucket").get("LifecycleConfiguration")
    if is_async:
        assert [{
            "ID": rule["Id"], "Filter": {"Prefix": rule["Prefix"]}, "Status": rule["Status"],
            "Expiration": {"Days": rule["ExpirationInDays"]},
            "AbortIncompleteMultipartUpload": rule["AbortIncompleteMultipartUpload"],
        } for rule in lifecycle["Rules"]] == async_inference.lifecycle_rules(cfg)
    else:
        assert lifecycle is None

    # Endpoint configuration and scaling.
    conf = res.properties("EndpointConfig")
    extras = async_inference.endpoint_config_extras(cfg, name)
    assert {k: v for k, v in conf.items() if k == "AsyncInferenceConfig"} == extras
    assert conf["ProductionVariants"][0]["InitialInstanceCount"] == (
        1 if is_async else cfg.min_instances)
    target = res.properties("ScalableTarget")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (
        0 if is_async else cfg.min_instances, cfg.max_instances)
    assert _present(res, "ScalingPolicy") is not is_async
    for logical in ("BacklogScalingPolicy", "ScaleOutFromZeroPolicy",
                    "BacklogWithoutCapacityAlarm"):
        assert _present(res, logical) is is_async, logical
    if is_async:
        tracking = res.properties("BacklogScalingPolicy")
        assert tracking["PolicyName"] == async_inference.tracking_policy_name(cfg)
        assert tracking["TargetTrackingScalingPolicyConfiguration"] == (
            async_inference.target_tracking(cfg))
        step = res.properties("ScaleOutFromZeroPolicy")
        assert step["PolicyName"] == async_inference.step_policy_name(cfg)
        assert step["StepScalingPolicyConfiguration"] == async_inference.step_scaling()
        assert res.properties("BacklogWithoutCapacityAlarm") == {
            **async_inference.alarm(cfg, "ref:ScaleOutFromZeroPolicy"), "Tags": tag}

    # The deadline: same role policy, group, target and input as schedule.py.
    for logical in ("DeadlineRole", "DeadlineGroup", "Deadline"):
        assert _present(res, logical), logical
    role = res.properties("DeadlineRole")
    assert role["RoleName"] == cfg.scheduler_role_name
    assert role["AssumeRolePolicyDocument"] == iam.trust_policy("scheduler.amazonaws.com")
    assert role["Policies"] == [{"PolicyName": schedule.POLICY_NAME,
                                 "PolicyDocument": schedule.role_policy(cfg, account=account)}]
    assert res.properties("DeadlineGroup") == {"Name": schedule.group_name(cfg), "Tags": tag}
    deadline = res.properties("Deadline")
    assert deadline["Name"] == cfg.schedule_name
    assert deadline["GroupName"] == schedule.group_name(cfg)
    fires = schedule.parse_expression(deadline["ScheduleExpression"])
    assert fires is not None
    assert abs((fires - datetime.now(UTC)).total_seconds() - 3 * 3600) < 120
    assert deadline["Target"] == {
        "Arn": schedule.target_arn(cfg),
        "RoleArn": f"arn:aws:iam::{account}:role/{cfg.scheduler_role_name}",
        "Input": json.dumps(schedule.target_input(cfg), sort_keys=True),
    }
    # Without stop_after there is no deadline in the template.
    plain, _ = rendered(cfg.replace(stop_after=""))
    assert not any(_present(plain, logical) for logical in ("DeadlineRole", "Deadline"))


@pytest.mark.parametrize("case", list(CONFIGS))
def test_resolved_web_resources_equal_the_web_helpers(case):
    """The web page's part of the template against visual_tourism/web.py."""
    cfg = load_config(**CONFIGS[case], web_rate_limit=12.5, web_upload_burst_limit=4)
    res, values = rendered(cfg)
    account = DEFAULT_ACCOUNT_ID
    name = cfg.bucket_name(account)
    tag = [{"Key": STACK_TAG, "Value": cfg.prefix}]
    assert res.condition("WebEnabled")
    role = res.properties("WebRole")
    assert role["RoleName"] == web.role_name(cfg)
    assert role["AssumeRolePolicyDocument"] == iam.trust_policy("lambda.amazonaws.com")
    assert role["Policies"] == [{"PolicyName": web.POLICY_NAME, "PolicyDocument":
                                 web.web_policy(cfg, account=account, bucket=name,
                                                table=cfg.presets_table)}]
    assert role["Tags"] == tag
    fn = res.properties("WebFunction")
    role_arn = f"arn:aws:iam::{account}:role/{web.role_name(cfg)}"
    settings = web.function_settings(cfg, role_arn, name, cfg.presets_table)
    # (CloudFormation passes a Number parameter to an environment variable as its text.)
    fn["Environment"]["Variables"] = {k: str(v) for k, v in fn["Environment"]["Variables"].items()}
    assert {k: fn[k] for k in settings} == settings
    assert fn["FunctionName"] == web.function_name(cfg) and fn["Tags"] == tag
    assert fn["Code"] == {"S3Bucket": "artifacts-bucket",
                          "S3Key": infra.code_key(packaging.build_zip("web"))}
    assert res.properties("WebLogGroup") == {"LogGroupName": web.log_group(cfg),
                                             "RetentionInDays": logs.RETENTION_DAYS,
                                             "Tags": tag}
    api = res.properties("WebApi")
    assert api["Name"] == web.api_name(cfg) and api["ProtocolType"] == "HTTP"
    assert api["Tags"] == {STACK_TAG: cfg.prefix}
    integration = res.properties("WebIntegration")
    function_arn = f"arn:aws:lambda:{cfg.region}:{account}:function:{web.function_name(cfg)}"
    assert (integration["IntegrationType"], integration["IntegrationUri"],
            integration["PayloadFormatVersion"]) == ("AWS_PROXY", function_arn, "2.0")
    routes = [res.properties(k) for k, v in res.resources.items()
              if v["Type"] == "AWS::ApiGatewayV2::Route"]
    assert sorted(r["RouteKey"] for r in routes) == sorted(app.ROUTES)
    stage = res.properties("WebStage")
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"] == web.throttling(cfg)
    assert stage["RouteSettings"] == web.route_throttling(cfg)
    permission = res.properties("WebInvokePermission")
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert permission["SourceArn"].endswith(":ref:WebApi/*/*")
    endpoint_url = res.get_att("WebApi", "ApiEndpoint")
    (rule,) = res.properties("Bucket")["CorsConfiguration"]["CorsRules"]
    want = web.cors_rule(web.origin_of(endpoint_url))
    assert rule == {"Id": want["ID"], "AllowedOrigins": want["AllowedOrigins"],
                    "AllowedMethods": want["AllowedMethods"],
                    "AllowedHeaders": want["AllowedHeaders"], "MaxAge": want["MaxAgeSeconds"]}
    assert res.outputs()["WebUrl"] == endpoint_url + "/"
    # No access code anywhere in the template or its parameters.
    assert "AWS::SSM::Parameter" not in TEMPLATE_TEXT
    assert not any("code" in k.lower() and "S3" not in k for k in values)


def test_the_presets_table_can_be_left_out_of_the_template():
    cfg = load_config(presets="off")
    res, values = rendered(cfg)
    assert values["Presets"] == "off" and not res.condition("PresetsEnabled")
    assert res.resources["PresetsTable"]["Condition"] == "PresetsEnabled"
    account, name = DEFAULT_ACCOUNT_ID, cfg.bucket_name(DEFAULT_ACCOUNT_ID)
    assert res.properties("Function")["Environment"]["Variables"] == (
        lambda_fn.function_environment(cfg, name))
    assert res.properties("Function")["Environment"]["Variables"]["PRESETS_TABLE"] == ""
    assert res.properties("LambdaRole")["Policies"][0]["PolicyDocument"] == iam.lambda_policy(
        cfg, account=account, bucket=name)
    assert res.properties("WebRole")["Policies"][0]["PolicyDocument"] == web.web_policy(
        cfg, account=account, bucket=name)
    assert "PresetsTableName" not in res.outputs()


def test_the_web_page_can_be_left_out_of_the_template():
    res, _ = rendered(load_config(web_api="off"))
    assert not res.condition("WebEnabled")
    web_resources = [k for k in res.resources if k.startswith("Web")]
    assert web_resources and all(res.resources[k]["Condition"] == "WebEnabled"
                                 for k in web_resources)
    assert "CorsConfiguration" not in res.properties("Bucket")


@pytest.mark.parametrize("profile", sorted(p.name for p in PROFILES.values() if not p.managed))
def test_every_profile_container_env_fits_the_template(profile):
    cfg = load_config(model_profile=profile, instance_type="ml.g4dn.12xlarge")
    res, _ = rendered(cfg)
    assert res.properties("Model")["PrimaryContainer"]["Environment"] == (
        PROFILES[profile].container_env()
    )


# -- package, deploy, delete on moto ----------------------------------------------------------
@pytest.fixture
def cfg() -> Config:
    return load_config()  # the default configuration: the web page and the presets included


@pytest.fixture
def aws(mocked_aws, cfg) -> Aws:
    # Local mode's CloudFormation (the resource types moto lacks, rollback on failure);
    # mocked_aws's moto_patches.restore() removes it again.
    moto_patches.patch_cloudformation()
    return Aws(cfg.region, sleep=no_sleep)


def test_package_uploads_the_code_once_to_a_private_artifacts_bucket(cfg, aws, tmp_path):
    first = infra.package(cfg, aws, tmp_path)
    zip_bytes = packaging.build_zip("photo", packaging.vendor_dir(cfg))  # Pillow: web copies
    assert first.code_key == infra.code_key(zip_bytes)
    assert re.fullmatch(r"lambda/[0-9a-f]{64}\.zip", first.code_key)
    art = first.code_bucket
    assert art == f"{cfg.prefix}-artifacts-{aws.account_id}-{cfg.region}"
    assert aws.s3.get_object(Bucket=art, Key=first.code_key)["Body"].read() == zip_bytes
    block = aws.s3.get_public_access_block(Bucket=art)["PublicAccessBlockConfiguration"]
    assert block == bucket.PUBLIC_ACCESS_BLOCK
    encryption = aws.s3.get_bucket_encryption(Bucket=art)["ServerSideEncryptionConfiguration"]
    assert encryption == bucket.encryption_configuration()
    assert json.loads(aws.s3.get_bucket_policy(Bucket=art)["Policy"]) == bucket.bucket_policy(art)
    assert bucket.is_ours(aws, cfg, art)

    second = infra.package(cfg, aws, tmp_path)
    assert second == first  # deterministic zip: same key, nothing new uploaded
    web_key = infra.code_key(packaging.build_zip("web"))  # the web page's zip, beside the handler's
    assert sorted(o["Key"] for o in aws.s3.list_objects_v2(Bucket=art)["Contents"]) == sorted(
        [first.code_key, web_key])
    assert first.template.read_text() == TEMPLATE_TEXT
    written = {p["ParameterKey"]: p["ParameterValue"]
               for p in json.loads(first.parameters.read_text())}
    assert written == infra.template_parameters(
        cfg, image_uri=image_uri(cfg.model_profile, cfg.region), code_bucket=art,
        code_key=first.code_key,
    )


def _role_policy(aws: Aws, role: str, policy: str) -> Any:
    # Local mode stores a template's inline policy as JSON without the !Ref AWS::NoValue
    # items, as CloudFormation does (moto alone keeps a Python repr with nulls).
    return aws.iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]


def _stack_resources(aws: Aws, name: str) -> dict[str, str]:
    summaries = aws.client("cloudformation").list_stack_resources(StackName=name)
    return {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in summaries["StackResourceSummaries"]
        if r["LogicalResourceId"]  # moto lists skipped resource types with an empty id
    }


def test_deploy_creates_updates_and_delete_removes_everything(cfg, aws, tmp_path):
    infra.package(cfg, aws, tmp_path)
    said: list[str] = []
    out = infra.deploy(cfg, aws, tmp_path, progress=said.append, poll=0)
    account = aws.account_id
    name = cfg.bucket_name(account)
    stack = infra.describe_stack(aws, infra.stack_name(cfg))
    assert stack and stack["StackStatus"] == "CREATE_COMPLETE"
    assert any("CREATE_COMPLETE" in line for line in said)  # events were printed
    physical = _stack_resources(aws, infra.stack_name(cfg))
    assert set(physical) == created_resources(cfg)  # every part, the web page included
    assert out["BucketName"] == name
    assert out["FunctionName"] == cfg.function_name

    # Bucket: encryption, tag, public access block, ownership, TLS-only policy, the trigger.
    encryption = aws.s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    tags = aws.s3.get_bucket_tagging(Bucket=name)["TagSet"]
    assert tags == [{"Key": STACK_TAG, "Value": cfg.prefix}]
    assert aws.s3.get_public_access_block(Bucket=name)[
        "PublicAccessBlockConfiguration"] == bucket.PUBLIC_ACCESS_BLOCK
    assert aws.s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"][
        "Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert json.loads(aws.s3.get_bucket_policy(Bucket=name)["Policy"]) == (
        bucket.bucket_policy(name))
    (trigger,) = aws.s3.get_bucket_notification_configuration(Bucket=name)[
        "LambdaFunctionConfigurations"]
    assert trigger["LambdaFunctionArn"] == out["FunctionArn"]
    assert trigger["Events"] == ["s3:ObjectCreated:*"]
    assert trigger["Filter"]["Key"]["FilterRules"] == [
        {"Name": "prefix", "Value": cfg.input_prefix}]
    keys = {o["Key"] for o in aws.s3.list_objects_v2(Bucket=name)["Contents"]}
    photos = set(presets.example_photos(cfg, presets.seeds(cfg)))
    assert keys == {cfg.input_prefix, cfg.example_prefix, cfg.output_prefix, cfg.example_key,
                    *photos}
    # The presets table, seeded after the stack (never over an edit) by after_deploy.
    assert out["PresetsTableName"] == cfg.presets_table
    assert [i["name"] for i in presets.list_presets(aws, cfg)] == [
        "default", "family", "food", "history"]

    # Roles with iam.py's statements, naming the endpoint `up` names.
    assert out["EndpointName"] == cfg.endpoint_name
    uri = image_uri(cfg.model_profile, cfg.region)
    expected = iam.lambda_policy(cfg, account=account, bucket=name)
    assert _role_policy(aws, cfg.lambda_role_name, iam.LAMBDA_POLICY_NAME) == expected
    assert _role_policy(aws, cfg.sagemaker_role_name, iam.SAGEMAKER_POLICY_NAME) == (
        iam.sagemaker_policy(cfg, account=account, image_uri=uri)
    )
    role = aws.iam.get_role(RoleName=cfg.lambda_role_name)["Role"]
    assert role["AssumeRolePolicyDocument"] == iam.trust_policy("lambda.amazonaws.com")

    # Function: code from the artifact, settings and environment of the helpers.
    fn = aws.lambda_.get_function(FunctionName=cfg.function_name)["Configuration"]
    assert fn["CodeSha256"] == packaging.code_sha256(packaging.build_zip("photo",
        packaging.vendor_dir(cfg)))
    assert (fn["Handler"], fn["Runtime"], fn["Timeout"], fn["MemorySize"], fn["Role"]) == (
        lambda_fn.HANDLER, cfg.lambda_runtime, cfg.lambda_timeout, cfg.lambda_memory,
        role["Arn"],
    )
    assert fn["Environment"]["Variables"] == {
        **lambda_fn.function_environment(cfg, name), "ENDPOINT_NAME": out["EndpointName"]
    }
    (statement,) = json.loads(aws.lambda_.get_policy(FunctionName=cfg.function_name)["Policy"])[
        "Statement"
    ]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Condition"] == {
        "ArnLike": {"AWS:SourceArn": f"arn:aws:s3:::{name}"},
        "StringEquals": {"AWS:SourceAccount": account},
    }
    (group,) = aws.client("logs").describe_log_groups(
        logGroupNamePrefix=f"/aws/lambda/{cfg.function_name}"
    )["logGroups"]
    assert group["retentionInDays"] == logs.RETENTION_DAYS
    # Retries, event age and the on-failure destination (what the local runtime obeys).
    invoke_config = aws.lambda_.get_function_event_invoke_config(
        FunctionName=cfg.function_name)
    assert (invoke_config["MaximumRetryAttempts"],
            invoke_config["MaximumEventAgeInSeconds"]) == (cfg.retry_attempts,
                                                           cfg.max_event_age)
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"] == (
        f"arn:aws:s3:::{name}")

    # The web page: HTTP API, its routes to the web function, the throttled stage.
    apigw = aws.client("apigatewayv2")
    (api,) = apigw.get_apis()["Items"]
    assert api["Name"] == web.api_name(cfg) and out["WebUrl"] == api["ApiEndpoint"] + "/"
    assert api["Tags"] == {STACK_TAG: cfg.prefix}
    (integration,) = apigw.get_integrations(ApiId=api["ApiId"])["Items"]
    web_arn = aws.lambda_.get_function(FunctionName=web.function_name(cfg))[
        "Configuration"]["FunctionArn"]
    assert (integration["IntegrationUri"], integration["PayloadFormatVersion"]) == (
        web_arn, "2.0")
    routes = apigw.get_routes(ApiId=api["ApiId"])["Items"]
    assert sorted(r["RouteKey"] for r in routes) == sorted(app.ROUTES)
    assert {r["Target"] for r in routes} == {f"integrations/{integration['IntegrationId']}"}
    (stage,) = apigw.get_stages(ApiId=api["ApiId"])["Items"]
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    assert {k: stage["DefaultRouteSettings"][k] for k in web.throttling(cfg)} == (
        web.throttling(cfg))
    assert stage["RouteSettings"] == {
        route: {**settings} for route, settings in web.route_throttling(cfg).items()}
    # CORS for the page's origin, as web.ensure_cors sets it for `up`.
    (cors,) = aws.s3.get_bucket_cors(Bucket=name)["CORSRules"]
    assert cors == web.cors_rule(web.origin_of(out["WebUrl"]))

    # SageMaker: model, configuration and endpoint wired to each other.
    model = aws.sagemaker.describe_model(ModelName=physical["Model"].split("/")[-1])
    assert model["PrimaryContainer"]["Image"] == uri
    assert model["PrimaryContainer"]["Environment"] == cfg.profile.container_env()
    assert model["ExecutionRoleArn"] == out["SageMakerRoleArn"]
    ep = aws.sagemaker.describe_endpoint(EndpointName=out["EndpointName"])
    assert ep["EndpointStatus"] == "InService"
    (variant,) = aws.sagemaker.describe_endpoint_config(
        EndpointConfigName=ep["EndpointConfigName"]
    )["ProductionVariants"]
    assert variant["VariantName"] == endpoint.VARIANT
    assert variant["ModelName"] == model["ModelName"]
    assert variant["InstanceType"] == cfg.effective_instance_type
    assert variant["InitialInstanceCount"] == cfg.min_instances
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    # Autoscaling: the scalable target and the target-tracking policy of autoscaling.py.
    scaling = aws.client("application-autoscaling")
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"]
    assert target["ResourceId"] == autoscaling.resource_id(cfg)
    assert (target["MinCapacity"], target["MaxCapacity"]) == (cfg.min_instances,
                                                              cfg.max_instances)
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
        "ScalingPolicies"]
    assert policy["PolicyName"] == autoscaling.policy_name(cfg)
    assert policy["TargetTrackingScalingPolicyConfiguration"] == autoscaling.target_tracking(
        cfg)

    # A second deploy is an update (moto performs one even when nothing changed).
    assert infra.deploy(cfg, aws, tmp_path, poll=0) == out
    assert infra.describe_stack(aws, infra.stack_name(cfg))["StackStatus"] == "UPDATE_COMPLETE"

    removed = infra.delete(cfg, aws, delete_bucket=True, delete_artifacts=True, poll=0)
    assert removed == [
        f"stack {infra.stack_name(cfg)}", "access code parameter", f"bucket {name}",
        f"bucket {infra.artifacts_bucket_name(cfg, account)}",
    ]
    assert aws.client("ssm").describe_parameters()["Parameters"] == []
    assert infra.describe_stack(aws, infra.stack_name(cfg)) is None
    assert aws.s3.list_buckets()["Buckets"] == []
    assert aws.iam.list_roles()["Roles"] == []
    assert aws.lambda_.list_functions()["Functions"] == []
    assert aws.client("logs").describe_log_groups()["logGroups"] == []
    assert aws.sagemaker.list_endpoints()["Endpoints"] == []
    assert aws.sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert aws.sagemaker.list_models()["Models"] == []
    assert aws.client("apigatewayv2").get_apis()["Items"] == []
    assert aws.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert aws.client("dynamodb").list_tables()["TableNames"] == []
    assert infra.delete(cfg, aws, poll=0) == []  # safe to run twice


def test_async_mode_with_a_deadline_deploys_every_part_and_delete_removes_it(aws, tmp_path):
    """The parts only async mode and the stop deadline add: the backlog policies and their
    alarm, the schedule in its group with its role, the lifecycle rules and the notifications
    on SageMaker's output and failure folders."""
    cfg = load_config(inference_mode="async", stop_after="3h")
    infra.package(cfg, aws, tmp_path)
    out = infra.deploy(cfg, aws, tmp_path, poll=0)
    assert set(_stack_resources(aws, infra.stack_name(cfg))) == created_resources(cfg)
    scaling = aws.client("application-autoscaling")
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, cfg.max_instances)
    policies = {p["PolicyName"]: p for p in scaling.describe_scaling_policies(
        ServiceNamespace="sagemaker")["ScalingPolicies"]}
    assert sorted(policies) == [f"{cfg.prefix}-backlog-per-instance",
                                f"{cfg.prefix}-scale-out-from-zero"]
    (alarm,) = aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [policies[f"{cfg.prefix}-scale-out-from-zero"]["PolicyARN"]]
    scheduler = aws.client("scheduler")
    (deadline,) = scheduler.list_schedules(GroupName=cfg.prefix)["Schedules"]
    assert deadline["Name"] == f"{cfg.prefix}-stop-deadline"
    assert scheduler.get_schedule(GroupName=cfg.prefix, Name=deadline["Name"])[
        "ScheduleExpression"].startswith("at(")
    name = out["BucketName"]
    rules = aws.s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    assert {r["ID"] for r in rules} == {f"{cfg.prefix}-async-{kind}-expiry" for kind in
                                        ("requests", "pending", "outputs", "failures")}
    triggers = aws.s3.get_bucket_notification_configuration(Bucket=name)[
        "LambdaFunctionConfigurations"]
    assert sorted(t["Filter"]["Key"]["FilterRules"][0]["Value"] for t in triggers) == sorted(
        [cfg.input_prefix, f"{cfg.async_prefix}outputs/", f"{cfg.async_prefix}failures/"])

    infra.delete(cfg, aws, delete_bucket=True, delete_artifacts=True, poll=0)
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"] == []
    assert aws.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    assert [g["Name"] for g in scheduler.list_schedule_groups()["ScheduleGroups"]] == [
        "default"]
    assert aws.iam.list_roles()["Roles"] == [] and aws.s3.list_buckets()["Buckets"] == []


def test_delete_keeps_the_bucket_unless_asked_through_the_cli(cfg, aws, tmp_path, capsys):
    out_dir = str(tmp_path / "build")
    assert main(["infra", "package", "--out-dir", out_dir]) == 0
    assert main(["infra", "deploy", "--out-dir", out_dir, "--poll", "0"]) == 0
    name = cfg.bucket_name(aws.account_id)
    function_arn = aws.lambda_.get_function(FunctionName=cfg.function_name)[
        "Configuration"]["FunctionArn"]
    # What CloudFormation sets, plus another notification of the user's that must survive.
    other = {"Id": "theirs", "LambdaFunctionArn": function_arn + "-other",
             "Events": ["s3:ObjectCreated:*"]}
    ours = {"Id": "cfn-generated", "LambdaFunctionArn": function_arn,
            "Events": ["s3:ObjectCreated:*"]}
    aws.s3.put_bucket_notification_configuration(
        Bucket=name, NotificationConfiguration={"LambdaFunctionConfigurations": [ours, other]}
    )
    aws.s3.put_object(Bucket=name, Key=f"{cfg.output_prefix}answer.json", Body=b"{}")

    assert main(["infra", "delete", "--poll", "0"]) == 0
    assert "kept bucket" in capsys.readouterr().out
    assert bucket.object_exists(aws, name, f"{cfg.output_prefix}answer.json")
    conf = aws.s3.get_bucket_notification_configuration(Bucket=name)
    assert [c["Id"] for c in conf["LambdaFunctionConfigurations"]] == ["theirs"]

    # CloudFormation cannot adopt the kept bucket: deploy says what to do instead of failing
    # half-way.
    with pytest.raises(DeployError, match="--delete-bucket"):
        infra.deploy(cfg, aws, Path(out_dir), poll=0)
    assert main(["infra", "delete", "--delete-bucket", "--delete-artifacts", "--poll", "0"]) == 0
    assert aws.s3.list_buckets()["Buckets"] == []


def test_a_failed_creation_rolls_back_and_delete_after_it_is_clean(cfg, aws, tmp_path, capsys):
    """A resource that cannot be created: CloudFormation's report of it, nothing left
    half-built (ROLLBACK_COMPLETE), and `infra delete` afterwards is one clear message."""
    out_dir = tmp_path / "build"
    infra.package(cfg, aws, out_dir)
    # A role of that name exists already (made by hand, or by half an `up`): CreateRole fails.
    aws.iam.create_role(RoleName=cfg.lambda_role_name, AssumeRolePolicyDocument=json.dumps(
        iam.trust_policy("lambda.amazonaws.com")))
    with pytest.raises(StackFailedError) as failure:
        infra.deploy(cfg, aws, out_dir, poll=0)
    report = str(failure.value)
    assert f"{infra.stack_name(cfg)} failed: it is now ROLLBACK_COMPLETE" in report
    assert "LambdaRole (AWS::IAM::Role) CREATE_FAILED" in report and "already exists" in report
    assert "deletes the failed stack" in report
    stack = infra.describe_stack(aws, infra.stack_name(cfg))
    assert stack["StackStatus"] == "ROLLBACK_COMPLETE" and not stack.get("Outputs")
    # Rolled back: what the stack had created is gone again.
    assert aws.lambda_.list_functions()["Functions"] == []
    assert [r["RoleName"] for r in aws.iam.list_roles()["Roles"]] == [cfg.lambda_role_name]
    assert aws.client("logs").describe_log_groups()["logGroups"] == []
    assert aws.client("apigatewayv2").get_apis()["Items"] == []
    assert aws.client("dynamodb").list_tables()["TableNames"] == []
    assert aws.sagemaker.list_models()["Models"] == []
    artifacts = infra.artifacts_bucket_name(cfg, aws.account_id)
    assert [b["Name"] for b in aws.s3.list_buckets()["Buckets"]] == [artifacts]

    assert main(["infra", "delete", "--delete-artifacts", "--poll", "0"]) == 0
    said = capsys.readouterr()
    assert "Traceback" not in said.err and "Error" not in said.out
    assert f"delete: removed stack {infra.stack_name(cfg)}, bucket {artifacts}" in said.out
    assert infra.describe_stack(aws, infra.stack_name(cfg)) is None
    assert aws.s3.list_buckets()["Buckets"] == []
    assert [r["RoleName"] for r in aws.iam.list_roles()["Roles"]] == [cfg.lambda_role_name]


def test_deploy_needs_a_package_for_this_prefix(cfg, aws, tmp_path):
    with pytest.raises(NotDeployedError, match="infra package"):
        infra.deploy(cfg, aws, tmp_path)
    infra.package(cfg, aws, tmp_path)
    with pytest.raises(ConfigError, match="packaged for prefix 'visual-tourism'"):
        infra.deploy(cfg.replace(prefix="other-tour"), aws, tmp_path)


# -- failures, scripted with Stubber ---------------------------------------------------------
STACK_ID = "arn:aws:cloudformation:us-east-1:{account}:stack/visual-tourism-stack/1"


def _event(n: int, logical: str, kind: str, status: str, reason: str = "") -> dict[str, Any]:
    event = {
        "StackId": "id", "EventId": f"e{n}", "StackName": "visual-tourism-stack",
        "LogicalResourceId": logical, "ResourceType": kind, "ResourceStatus": status,
        "Timestamp": datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC),
    }
    if reason:
        event["ResourceStatusReason"] = reason
    return event


def _stack(status: str, stack_id: str, outputs: dict[str, str] | None = None) -> dict[str, Any]:
    stack = {"StackName": "visual-tourism-stack", "StackId": stack_id,
             "CreationTime": datetime(2026, 1, 1, tzinfo=UTC), "StackStatus": status}
    if outputs:
        stack["Outputs"] = [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]
    return {"Stacks": [stack]}


def test_failed_create_reports_each_failed_resource_and_its_reason(cfg, aws, tmp_path):
    infra.package(cfg, aws, tmp_path)
    stack_id = STACK_ID.format(account=aws.account_id)
    stack_type = "AWS::CloudFormation::Stack"
    reason = ("Resource handler returned message: \"The account-level service limit "
              "'ml.g4dn.12xlarge for endpoint usage' is 0 Instances\"")
    first = [
        _event(2, "SageMakerRole", "AWS::IAM::Role", "CREATE_IN_PROGRESS"),
        _event(1, "visual-tourism-stack", stack_type, "CREATE_IN_PROGRESS", "User Initiated"),
    ]
    later = [
        _event(7, "visual-tourism-stack", stack_type, "ROLLBACK_COMPLETE"),
        _event(6, "visual-tourism-stack", stack_type, "ROLLBACK_IN_PROGRESS",
               "The following resource(s) failed to create: [Endpoint, LambdaRole]."),
        _event(5, "LambdaRole", "AWS::IAM::Role", "CREATE_FAILED",
               "Resource creation cancelled"),
        _event(4, "Endpoint", "AWS::SageMaker::Endpoint", "CREATE_FAILED", reason),
        _event(3, "SageMakerRole", "AWS::IAM::Role", "CREATE_COMPLETE"),
    ]
    cfn = aws.client("cloudformation")
    said: list[str] = []
    with Stubber(cfn) as stub:
        stub.add_client_error("describe_stacks", "ValidationError",
                              f"Stack with id {infra.stack_name(cfg)} does not exist")
        stub.add_response(
            "create_stack", {"StackId": stack_id},
            {"StackName": infra.stack_name(cfg), "TemplateBody": TEMPLATE_TEXT,
             "Parameters": json.loads((tmp_path / infra.PARAMETERS_FILE).read_text()),
             "Capabilities": ["CAPABILITY_NAMED_IAM"]},
        )
        stub.add_response("describe_stack_events", {"StackEvents": first})
        stub.add_response("describe_stacks", _stack("CREATE_IN_PROGRESS", stack_id))
        stub.add_response("describe_stack_events", {"StackEvents": later + first})
        stub.add_response("describe_stacks", _stack("ROLLBACK_COMPLETE", stack_id))
        stub.add_response("describe_stack_events", {"StackEvents": later + first})
        stub.add_response("describe_stacks", _stack("ROLLBACK_COMPLETE", stack_id))
        with pytest.raises(StackFailedError) as failure:
            infra.deploy(cfg, aws, tmp_path, progress=said.append, poll=0)
        stub.assert_no_pending_responses()
    report = str(failure.value)
    assert "visual-tourism-stack failed: it is now ROLLBACK_COMPLETE" in report
    assert f"Endpoint (AWS::SageMaker::Endpoint) CREATE_FAILED: {reason}" in report
    assert "LambdaRole (AWS::IAM::Role) CREATE_FAILED: Resource creation cancelled" in report
    assert report.index("Endpoint (") < report.index("LambdaRole (")  # the cause first
    assert "deletes the failed stack" in report
    # Every event printed once, oldest first, as it arrived.
    events = [line for line in said if line.startswith("00:00:")]
    assert [line.split()[1] for line in events] == [
        "visual-tourism-stack", "SageMakerRole", "SageMakerRole", "Endpoint", "LambdaRole",
        "visual-tourism-stack", "visual-tourism-stack",
    ]


def test_no_updates_to_perform_is_success(cfg, aws, tmp_path):
    infra.package(cfg, aws, tmp_path)
    name = cfg.bucket_name(aws.account_id)
    aws.s3.create_bucket(Bucket=name)  # the stack's bucket, as a previous deploy left it
    stack_id = STACK_ID.format(account=aws.account_id)
    outputs = {"BucketName": name, "EndpointName": cfg.endpoint_name}
    with Stubber(aws.client("cloudformation")) as stub:
        stub.add_response("describe_stacks", _stack("UPDATE_COMPLETE", stack_id, outputs))
        stub.add_response("describe_stack_events", {"StackEvents": [
            _event(1, "visual-tourism-stack", "AWS::CloudFormation::Stack", "UPDATE_COMPLETE")
        ]})
        stub.add_client_error("update_stack", "ValidationError",
                              "No updates are to be performed.")
        said: list[str] = []
        assert infra.deploy(cfg, aws, tmp_path, progress=said.append, poll=0) == outputs
    assert any("already up to date" in line for line in said)
    assert bucket.object_exists(aws, name, cfg.example_key)


def test_a_refused_update_is_an_error_not_success(cfg, aws, tmp_path):
    infra.package(cfg, aws, tmp_path)
    stack_id = STACK_ID.format(account=aws.account_id)
    with Stubber(aws.client("cloudformation")) as stub:
        stub.add_response("describe_stacks", _stack("UPDATE_ROLLBACK_FAILED", stack_id))
        stub.add_response("describe_stack_events", {"StackEvents": []})
        stub.add_client_error("update_stack", "ValidationError",
                              "Stack is in UPDATE_ROLLBACK_FAILED state and can not be updated.")
        with pytest.raises(DeployError, match="UPDATE_ROLLBACK_FAILED"):
            infra.deploy(cfg, aws, tmp_path, poll=0)


def test_describe_stack_passes_other_errors_through(cfg, aws):
    with Stubber(aws.client("cloudformation")) as stub:
        stub.add_client_error("describe_stacks", "AccessDenied", "not allowed")
        with pytest.raises(ClientError):
            infra.describe_stack(aws, "x")


def test_a_stack_whose_creation_failed_is_deleted_and_created_again(cfg, aws, tmp_path):
    infra.package(cfg, aws, tmp_path)
    old_id = STACK_ID.format(account=aws.account_id)
    new_id = old_id[:-1] + "2"
    stack_type = "AWS::CloudFormation::Stack"
    outputs = {"FunctionName": cfg.function_name}
    said: list[str] = []
    with Stubber(aws.client("cloudformation")) as stub:
        stub.add_response("describe_stacks", _stack("ROLLBACK_COMPLETE", old_id))
        stub.add_response("describe_stack_events", {"StackEvents": [
            _event(1, "visual-tourism-stack", stack_type, "ROLLBACK_COMPLETE")
        ]})
        stub.add_response("delete_stack", {}, {"StackName": old_id})
        stub.add_response("describe_stack_events", {"StackEvents": [
            _event(2, "visual-tourism-stack", stack_type, "DELETE_COMPLETE"),
            _event(1, "visual-tourism-stack", stack_type, "ROLLBACK_COMPLETE"),
        ]})
        stub.add_response("describe_stacks", _stack("DELETE_COMPLETE", old_id))
        stub.add_response("describe_stack_events", {"StackEvents": []})
        stub.add_response("describe_stacks", _stack("DELETE_COMPLETE", old_id))
        stub.add_response("create_stack", {"StackId": new_id}, {
            "StackName": infra.stack_name(cfg), "TemplateBody": TEMPLATE_TEXT,
            "Parameters": json.loads((tmp_path / infra.PARAMETERS_FILE).read_text()),
            "Capabilities": ["CAPABILITY_NAMED_IAM"],
        })
        stub.add_response("describe_stack_events", {"StackEvents": [
            _event(3, "visual-tourism-stack", stack_type, "CREATE_COMPLETE")
        ]})
        stub.add_response("describe_stacks", _stack("CREATE_COMPLETE", new_id, outputs))
        stub.add_response("describe_stack_events", {"StackEvents": [
            _event(3, "visual-tourism-stack", stack_type, "CREATE_COMPLETE")
        ]})
        stub.add_response("describe_stacks", _stack("CREATE_COMPLETE", new_id, outputs))
        assert infra.deploy(cfg, aws, tmp_path, progress=said.append, poll=0) == outputs
        stub.assert_no_pending_responses()
    assert any("after a failed creation: deleting it" in line for line in said)
    assert [line.split()[-1] for line in said if line.startswith("00:00:")] == [
        "DELETE_COMPLETE", "CREATE_COMPLETE"
    ]


def test_a_container_variable_the_template_cannot_set_is_refused(monkeypatch):
    cfg = load_config()
    profile = PROFILES[cfg.model_profile]
    monkeypatch.setitem(PROFILES, cfg.model_profile, dataclasses.replace(
        profile, env={**profile.env, "HF_MODEL_QUANTIZE": "bitsandbytes"}
    ))
    with pytest.raises(ConfigError, match="no parameter for HF_MODEL_QUANTIZE"):
        infra.template_parameters(cfg, image_uri="uri", code_bucket="b", code_key="k")


@pytest.mark.parametrize("profile", sorted(p.name for p in PROFILES.values() if p.managed))
def test_a_managed_profile_resolves_without_an_endpoint_and_invokes_its_model_only(profile):
    """A managed model (Amazon Bedrock) in the template: no SageMaker role, model, endpoint,
    autoscaling or deadline; the function's role and environment are the helpers' own."""
    cfg = load_config(model_profile=profile, stop_after="3h")
    res, values = rendered(cfg)
    account, name = DEFAULT_ACCOUNT_ID, cfg.bucket_name(DEFAULT_ACCOUNT_ID)
    assert values["ImageUri"] == "" and values["StopAt"] == ""
    hosted_only = {"SageMakerRole", "Model", "EndpointConfig", "EndpointLogGroup", "Endpoint",
                   "ScalableTarget", "ScalingPolicy", "DeadlineRole", "DeadlineGroup",
                   "Deadline"}
    created = created_resources(cfg)
    assert not created & hosted_only
    assert {"Bucket", "LambdaRole", "Function", "LogGroup", "BucketInvokePermission"} <= created
    lam = res.properties("LambdaRole")
    assert lam["Policies"] == [{
        "PolicyName": iam.LAMBDA_POLICY_NAME,
        "PolicyDocument": iam.lambda_policy(cfg, account=account, bucket=name),
    }]
    (invoke,) = [s for s in lam["Policies"][0]["PolicyDocument"]["Statement"]
                 if s["Sid"] == "InvokeThisManagedModel"]
    assert invoke["Resource"] == PROFILES[profile].invoke_arns(cfg.region, account)
    fn = res.properties("Function")
    assert fn["Environment"]["Variables"] == lambda_fn.function_environment(cfg, name)
    assert fn["Environment"]["Variables"]["ENDPOINT_NAME"] == ""
    assert not {"EndpointName", "EndpointArn", "SageMakerRoleArn"} & set(res.outputs())


def test_a_managed_profile_deploys_without_sagemaker_and_deletes_cleanly(aws, tmp_path):
    """`infra package` and `deploy` with nova-lite on moto's CloudFormation: the function and
    its role limited to the model; no SageMaker role, model, endpoint or scaling target."""
    cfg = load_config(model_profile="nova-lite", web_api="off", presets="off")
    infra.package(cfg, aws, tmp_path)
    out = infra.deploy(cfg, aws, tmp_path, poll=0)
    name = cfg.bucket_name(aws.account_id)
    assert set(_stack_resources(aws, infra.stack_name(cfg))) == created_resources(cfg)
    assert "EndpointName" not in out
    assert aws.sagemaker.list_endpoints()["Endpoints"] == []
    assert aws.sagemaker.list_models()["Models"] == []
    with pytest.raises(ClientError):
        aws.iam.get_role(RoleName=cfg.sagemaker_role_name)
    assert _role_policy(aws, cfg.lambda_role_name, iam.LAMBDA_POLICY_NAME) == (
        iam.lambda_policy(cfg, account=aws.account_id, bucket=name))
    fn = aws.lambda_.get_function(FunctionName=cfg.function_name)["Configuration"]
    assert fn["Environment"]["Variables"] == lambda_fn.function_environment(cfg, name)
    infra.delete(cfg, aws, delete_bucket=True, poll=0)
    assert infra.describe_stack(aws, infra.stack_name(cfg)) is None
    with pytest.raises(ClientError):
        aws.lambda_.get_function(FunctionName=cfg.function_name)
