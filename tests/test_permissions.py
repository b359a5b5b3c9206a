"""Permissions as data (visual_tourism/permissions.py), checked against the calls the code
really makes in local mode, and a Studio-like principal with IAM enforced.

The principal tests authorize every call of the principal on the client, with
``permissions.evaluate`` over the principal's policies as moto stores them and the resource
ARNs ``needs_of_call`` derives. moto's own request check is switched off for that one key: it
passes "*" as the resource of every non-S3 call (so no ARN-scoped Allow ever matches), names
several S3 actions differently from IAM, and cannot verify apigatewayv2/scheduler signatures.
The handler's role stays enforced by moto as everywhere in local mode.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from photo_handler import presets_schema
from visual_tourism import permissions, presets, stack
from visual_tourism.aws import Aws
from visual_tourism.cli import presets as presets_cli
from visual_tourism.config import load_config
from visual_tourism.local import iam_enforcement
from visual_tourism.local.stack import CREDENTIALS, LocalStack

ROOT = Path(__file__).resolve().parent.parent
PHOTO = sorted((ROOT / "images").glob("*.jpeg"))[0]
ACCOUNT = "123456789012"


def moto_managed() -> dict:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.loads(aws_managed_policies_data)[permissions.MANAGED_POLICY]["Document"]


# -- pure parts ------------------------------------------------------------------------------
def test_the_managed_policy_snapshot_is_moto_s_copy():
    statements = {s["Sid"]: s for s in moto_managed()["Statement"]}
    for ours in permissions.SAGEMAKER_FULL_ACCESS["Statement"]:
        theirs = statements[ours["Sid"]]
        assert set(ours["Action"]) <= set(permissions._listed(theirs["Action"]))
        assert {k: v for k, v in ours.items() if k != "Action"} == {
            k: v for k, v in theirs.items() if k != "Action"}


def test_the_evaluator_follows_iam():
    ev = permissions.evaluate
    allow = {"Statement": [{"Effect": "Allow", "Action": "s3:Get*",
                            "Resource": "arn:aws:s3:::b/in/*"}]}
    assert ev([allow], "s3:getobject", "arn:aws:s3:::b/in/x") == "allowed"
    assert ev([allow], "s3:GetObject", "arn:aws:s3:::b/out/x") == "implicitDeny"
    deny = {"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}
    assert ev([allow, deny], "s3:GetObject", "arn:aws:s3:::b/in/x") == "explicitDeny"
    managed = [moto_managed()]
    role = "arn:aws:iam::1:role/r"
    assert ev(managed, "iam:PassRole", role, {"iam:PassedToService": "sagemaker.amazonaws.com"}
              ) == "allowed"
    assert ev(managed, "iam:PassRole", role, {"iam:PassedToService": "lambda.amazonaws.com"}
              ) == "implicitDeny"
    assert ev(managed, "sagemaker:CreateEndpoint", "arn:aws:sagemaker:us-east-1:1:endpoint/e"
              ) == "allowed"
    assert ev(managed, "sagemaker:CreateDomain", "arn:aws:sagemaker:us-east-1:1:domain/d"
              ) == "implicitDeny"
    assert ev(managed, "s3:PutObject", "arn:aws:s3:::sagemaker-x/k") == "allowed"
    assert ev(managed, "s3:PutObject", "arn:aws:s3:::vt-x/k") == "implicitDeny"
    assert ev(managed, "s3:PutBucketPolicy", "arn:aws:s3:::sagemaker-x") == "implicitDeny"


def test_operation_names_map_to_iam_actions():
    arns = permissions.Arns("aws", "us-east-1", ACCOUNT)

    def actions(service, op, **params):
        return [n.action for n in permissions.needs_of_call(service, op, params, arns)]

    assert actions("s3", "ListObjectsV2", Bucket="b") == ["s3:ListBucket"]
    assert actions("s3", "HeadObject", Bucket="b", Key="k") == ["s3:GetObject"]
    assert actions("s3", "PutBucketNotificationConfiguration", Bucket="b") == [
        "s3:PutBucketNotification"]
    assert actions("s3", "PutPublicAccessBlock", Bucket="b") == [
        "s3:PutBucketPublicAccessBlock"]
    assert actions("sts", "GetCallerIdentity") == []
    assert actions("lambda", "CreateFunction", FunctionName="f",
                   Role=f"arn:aws:iam::{ACCOUNT}:role/r") == ["lambda:CreateFunction",
                                                              "iam:PassRole"]
    assert actions("sagemaker", "CreateModel", ModelName="m",
                   ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/r") == [
        "sagemaker:CreateModel", "iam:PassRole"]
    assert actions("lambda", "Invoke", FunctionName="f") == ["lambda:InvokeFunction"]


def test_dynamodb_calls_name_the_table():
    arns = permissions.Arns("aws", "eu-west-1", ACCOUNT)
    table = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/vtx-presets"

    def needs(op, **params):
        return [(n.action, n.resource)
                for n in permissions.needs_of_call("dynamodb", op, params, arns)]

    assert needs("GetItem", TableName="vtx-presets", Key={}) == [("dynamodb:GetItem", table)]
    assert needs("Scan", TableName=table) == [("dynamodb:Scan", table)]  # an ARN as the name
    assert needs("ListTagsOfResource", ResourceArn=table) == [
        ("dynamodb:ListTagsOfResource", table)]
    assert needs("CreateTable", TableName="vtx-presets", Tags=[{"Key": "k", "Value": "v"}]) == [
        ("dynamodb:CreateTable", table), ("dynamodb:TagResource", table)]
    assert needs("CreateTable", TableName="vtx-presets") == [("dynamodb:CreateTable", table)]
    assert needs("BatchGetItem", RequestItems={"vtx-presets": {}}) == [
        ("dynamodb:BatchGetItem", table)]
    assert needs("ListTables") == [("dynamodb:ListTables", "*")]
    cfg = load_config(region="eu-west-1", prefix="vtx")
    assert presets.table_arn(cfg, ACCOUNT) == table


def test_presets_needs_follow_the_setting():
    cfg = load_config(region="us-east-1", prefix="vtx")
    bucket = cfg.bucket_name(ACCOUNT)
    table = presets.table_arn(cfg, ACCOUNT)
    by_name = {s.name: s for s in permissions.steps(cfg, ACCOUNT, bucket)}
    assert {"up: presets", "presets: list", "presets: show", "presets: set",
            "presets: delete"} <= set(by_name)
    assert {s.command for s in by_name.values()} == set(permissions.COMMANDS)
    creation = {n.action: n.when for n in by_name["up: presets"].needs if n.resource == table}
    assert creation["dynamodb:CreateTable"] and creation["dynamodb:UpdateTable"]
    assert not creation["dynamodb:DescribeTable"] and not creation["dynamodb:PutItem"]
    ask = {n.action: n.when for n in by_name["ask"].needs if n.action.startswith("dynamodb:")}
    assert ask and all(ask.values())  # an ask without a preset touches no table
    # The preflight of up/down leaves the presets commands out; the admin policy has them.
    assert "dynamodb:UpdateItem" not in {n.action for n in permissions.needs(cfg, ACCOUNT,
                                                                           bucket)}
    policy = permissions.admin_policy(cfg, ACCOUNT, bucket)
    granted = {(a, r) for st in policy["Statement"] for a in st["Action"]
               for r in permissions._listed(st["Resource"])}
    for action in ("CreateTable", "TagResource", "DescribeTable", "ListTagsOfResource",
                   "DescribeContinuousBackups", "UpdateContinuousBackups", "UpdateTable",
                   "PutItem", "GetItem", "UpdateItem", "DeleteItem", "Scan", "DeleteTable"):
        assert (f"dynamodb:{action}", table) in granted, action
    assert not any(a.startswith("dynamodb:") and r != table for a, r in granted)
    off = cfg.replace(presets="off")
    assert not [n for n in permissions.needs(off, ACCOUNT, bucket, commands=permissions.COMMANDS)
                if n.action.startswith("dynamodb:")]
    assert "up: presets" not in {s.name for s in permissions.steps(off, ACCOUNT, bucket)}


def test_the_limits_reads_are_listed_granted_by_the_admin_policies_and_never_block():
    cfg = load_config(region="us-east-1")
    preflight = next(s for s in permissions.steps(cfg, ACCOUNT, cfg.bucket_name(ACCOUNT))
                     if s.name == permissions.PREFLIGHT_STEP)
    reads = {"servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas",
             "lambda:GetAccountSettings"}
    assert reads | {"sagemaker:ListEndpoints"} <= {n.action for n in preflight.needs}
    policy = permissions.admin_policy(cfg, ACCOUNT, cfg.bucket_name(ACCOUNT))
    assert reads <= {a for s in policy["Statement"] for a in s["Action"]}
    # AmazonSageMakerFullAccess already lets a Studio role read other endpoints.
    assert permissions.evaluate([moto_managed()], "sagemaker:ListEndpoints", "*") == "allowed"
    admin_yaml = (ROOT / "infra" / "admin.yaml").read_text()
    assert all(f"- {action}" in admin_yaml for action in reads)
    # Missing only these: the preflight says so, and `up` is not refused for it.
    report = permissions.Report("arn:aws:iam::123456789012:user/u", True, steps=[
        (preflight, [n for n in preflight.needs if n.action in reads])])
    assert report.missing and not report.blocking
    assert "cannot tell whether the account has room" in report.text()


def test_the_managed_policy_excerpt_decides_as_the_whole_policy():
    """Every need AmazonSageMakerFullAccess may grant is decided by the excerpt alone (it
    grants nothing in DynamoDB: the admin policy carries every presets action)."""
    cfg = load_config(region="us-east-1", prefix="vtx")
    bucket = cfg.bucket_name(ACCOUNT)
    assert permissions.admin_policy(cfg, ACCOUNT, bucket) == permissions.admin_policy(
        cfg, ACCOUNT, bucket, managed=moto_managed())


def test_in_studio_the_default_bucket_name_fits_the_managed_policy(monkeypatch):
    cfg = load_config(region="us-east-1")
    assert cfg.bucket_name(ACCOUNT) == f"visual-tourism-{ACCOUNT}-us-east-1"
    monkeypatch.setenv("SAGEMAKER_INTERNAL_IMAGE_URI", "studio")
    assert cfg.bucket_name(ACCOUNT) == f"sagemaker-visual-tourism-{ACCOUNT}-us-east-1"
    name = cfg.bucket_name(ACCOUNT)
    assert permissions.evaluate([moto_managed()], "s3:PutObject",
                                f"arn:aws:s3:::{name}/input/x.jpeg") == "allowed"
    assert cfg.replace(bucket="my-own-bucket").bucket_name(ACCOUNT) == "my-own-bucket"
    long = cfg.replace(prefix="a" * 32)  # the Studio name would pass 63 characters
    assert long.bucket_name(ACCOUNT) == f"{'a' * 32}-{ACCOUNT}-us-east-1"
    # The CloudFormation path names the same bucket (the template computes only the plain one).
    from visual_tourism import infra

    values = infra.template_parameters(cfg, image_uri="uri", code_bucket="b", code_key="k",
                                       account=ACCOUNT)
    assert values["BucketName"] == name
    monkeypatch.delenv("SAGEMAKER_INTERNAL_IMAGE_URI")
    values = infra.template_parameters(cfg, image_uri="uri", code_bucket="b", code_key="k",
                                       account=ACCOUNT)
    assert values["BucketName"] == ""  # the template's own {prefix}-{account}-{region}


# -- against the local stack ---------------------------------------------------------------
@pytest.fixture(scope="module")
def local(tmp_path_factory):
    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("perm")) as running:
        yield running


UP_STEPS = {"create_bucket": "up: bucket", "create_roles": "up: roles",
            "start_endpoint": "up: endpoint", "deploy_function": "up: function",
            "wait_for_endpoint": "up: wait", "attach_autoscaling": "up: autoscaling",
            "configure_delivery": "up: delivery", "connect_trigger": "up: trigger",
            "arm_deadline": "up: deadline", "open_web_api": "up: web",
            "create_presets": "up: presets"}


def _record(aws: Aws, into: dict, step: list[str]) -> None:
    arns = permissions.Arns(aws.partition, aws.region, aws.account_id)

    def hook(params, model, **_):
        for need in permissions.needs_of_call(model.service_model.service_name, model.name,
                                              params, arns, model.http):
            into[step[0]].add(need)

    aws.session.events.register("before-parameter-build", hook)


@pytest.mark.parametrize("mode", ["realtime", "async", "managed"])
def test_every_call_made_is_listed_and_every_listed_need_is_made(env, tmp_path, monkeypatch,
                                                                  mode):
    # "managed": a Bedrock profile, no endpoint (its deadline step removes, never arms)
    profile = {"model_profile": "nova-lite"} if mode == "managed" else {}
    cfg = load_config(prefix="pr" + mode[:2] + os.urandom(2).hex(),
                      inference_mode="realtime" if mode == "managed" else mode,
                      stop_after="2h", web_api="on", state_dir=str(tmp_path / "state"),
                      **profile)
    aws = Aws(cfg.region)
    seen: dict[str, set] = collections.defaultdict(set)
    step = ["up: preflight"]
    for function, name in UP_STEPS.items():
        original = getattr(stack, function)

        def wrapped(*args, _original=original, _name=name, **kwargs):
            before, step[0] = step[0], _name
            try:
                return _original(*args, **kwargs)
            finally:
                step[0] = before
        monkeypatch.setattr(stack, function, wrapped)
    _record(aws, seen, step)
    stack.up(cfg, aws, endpoint_poll=0.1)
    step[0] = "status"
    stack.status(cfg, aws)
    step[0] = "ask"
    assert stack.ask(PHOTO, cfg, aws)["status"] == "ok"
    assert stack.ask(PHOTO, cfg, aws, key=f"{cfg.input_prefix}preset-{PHOTO.name}",
                     preset="default", language=presets_schema.PROMPT_LANGUAGE)["status"] == "ok"
    with pytest.raises(presets.PresetError, match="No preset named"):
        stack.ask(PHOTO, cfg, aws, preset="no-such-preset")
    _presets_commands(cfg, aws, step, monkeypatch)
    step[0] = "down"
    env.runtime.wait_idle(60)
    stack.down(cfg, aws, delete_bucket=True)

    listed = {s.name: s.needs for s in permissions.steps(
        cfg, aws.account_id, cfg.bucket_name(aws.account_id), aws.partition)}
    unlisted = {name: sorted((n.action, n.resource) for n in made
                             if not any(need.covers(n) for need in listed[name]))
                for name, made in seen.items()}
    assert not any(unlisted.values()), unlisted
    never = {name: sorted((n.action, n.resource) for n in needs
                          if not n.when and not any(n.covers(m) for m in seen[name]))
             for name, needs in listed.items()}
    assert not any(never.values()), never
    made = {name: {n.action for n in needs} for name, needs in seen.items()}
    # The conditional presets needs were met too: a preset chosen, an unknown one, an edit.
    assert {"dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:Scan"} <= made["ask"]
    assert {"dynamodb:CreateTable", "dynamodb:TagResource"} <= made["up: presets"]
    assert {"dynamodb:PutItem", "dynamodb:UpdateItem"} <= made["presets: set"]
    assert {"dynamodb:DeleteItem", "dynamodb:Scan"} <= made["presets: delete"]
    assert {"dynamodb:ListTagsOfResource", "dynamodb:DeleteTable"} <= made["down"]


def _presets_commands(cfg, aws: Aws, step: list[str], monkeypatch) -> None:
    """Every `visual-tourism presets` subcommand, each as its own step, with ``aws``."""
    monkeypatch.setattr(presets_cli, "Aws", lambda region: aws)

    def run(subcommand: str, command, **args) -> None:
        step[0] = f"presets: {subcommand}"
        command(argparse.Namespace(**args), lambda _args: cfg)

    new = "perm-" + os.urandom(2).hex()
    run("list", presets_cli.cmd_list, json=False, wide=False)
    run("show", presets_cli.cmd_show, name="default")
    run("set", presets_cli.cmd_set, name=new, from_file=None, field=["max_new_tokens=200"])
    run("set", presets_cli.cmd_set, name=new, from_file=None, field=["title=Edited"])
    with pytest.raises(presets.PresetError, match="No preset named"):
        run("show", presets_cli.cmd_show, name="no-such-preset")
    run("delete", presets_cli.cmd_delete, name=new, version=None)
    with pytest.raises(presets.PresetError, match="No preset named"):
        run("delete", presets_cli.cmd_delete, name=new, version=None)


# -- a Studio-like principal, IAM enforced --------------------------------------------------
def _root(env, service):
    return boto3.client(service, endpoint_url=env.moto_url, region_name="us-east-1",
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def _student(env, monkeypatch, *documents: dict) -> Aws:
    """An IAM user with exactly these policies; an Aws whose every call is authorized."""
    iam = _root(env, "iam")
    name = "student-" + os.urandom(3).hex()
    iam.create_user(UserName=name)
    for i, doc in enumerate(documents):
        arn = iam.create_policy(PolicyName=f"{name}-{i}", PolicyDocument=json.dumps(doc))[
            "Policy"]["Arn"]
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    real = iam_enforcement.is_principal
    monkeypatch.setattr(iam_enforcement, "is_principal",
                        lambda k, t: k != key["AccessKeyId"] and real(k, t))
    session = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                    aws_secret_access_key=key["SecretAccessKey"],
                                    region_name="us-east-1")
    aws = Aws("us-east-1", session=session)
    principal = f"arn:aws:iam::{ACCOUNT}:user/{name}"
    arns = permissions.Arns("aws", "us-east-1", ACCOUNT)

    def authorize(params, model, **_):
        policies = permissions._local_policies(aws, principal)
        for need in permissions.needs_of_call(model.service_model.service_name, model.name,
                                              params, arns, model.http):
            if permissions.evaluate(policies, need.action, need.resource,
                                    dict(need.context)) != "allowed":
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": (
                    f"User: {principal} is not authorized to perform: {need.action} on "
                    f"resource: {need.resource}")}}, model.name)

    session.events.register("before-parameter-build", authorize)
    aws.principal = principal  # type: ignore[attr-defined]
    return aws


def _nothing_of(env, cfg) -> None:
    buckets = [b["Name"] for b in _root(env, "s3").list_buckets()["Buckets"]]
    assert not [b for b in buckets if cfg.prefix in b]
    roles = [r["RoleName"] for r in _root(env, "iam").list_roles()["Roles"]]
    assert not [r for r in roles if r.startswith(cfg.prefix)]
    assert not _root(env, "sagemaker").list_endpoints(NameContains=cfg.prefix)["Endpoints"]
    functions = [f["FunctionName"] for f in _root(env, "lambda").list_functions()["Functions"]]
    assert not [f for f in functions if f.startswith(cfg.prefix)]


def _quickstart_cfg(tmp_path):
    return load_config(prefix="st" + os.urandom(3).hex(), state_dir=str(tmp_path / "state"))


def test_full_access_and_the_admin_policy_run_the_quickstart(env, tmp_path, monkeypatch):
    cfg = _quickstart_cfg(tmp_path)
    name = "student-policy"
    principal_hint = f"arn:aws:iam::{ACCOUNT}:user/*"
    policy = permissions.admin_policy(cfg, ACCOUNT, cfg.bucket_name(ACCOUNT),
                                      principal_arn=principal_hint)
    aws = _student(env, monkeypatch, moto_managed(), policy)
    assert name and aws.identity["Arn"] == aws.principal
    report = permissions.preflight(cfg, aws)
    assert report.known and not report.missing, report.text()
    lines: list[str] = []
    stack.up(cfg, aws, progress=lines.append, endpoint_poll=0.1)
    assert any("may run every step" in line for line in lines), lines
    assert stack.ask(PHOTO, cfg, aws)["status"] == "ok"
    # A preset and a language: checked by the principal, read by the function's role.
    record = stack.ask(PHOTO, cfg, aws, key=f"{cfg.input_prefix}preset-{PHOTO.name}",
                       preset="default", language=presets_schema.PROMPT_LANGUAGE)
    assert record["status"] == "ok"
    with pytest.raises(presets.PresetError, match="No preset named"):
        stack.ask(PHOTO, cfg, aws, preset="no-such-preset")
    _presets_commands(cfg, aws, ["presets"], monkeypatch)
    env.runtime.wait_idle(60)
    stack.down(cfg, aws, delete_bucket=True)
    _nothing_of(env, cfg)


def test_full_access_alone_cannot_tell_and_with_self_check_names_all_missing(
        env, tmp_path, monkeypatch, capsys):
    cfg = _quickstart_cfg(tmp_path)
    alone = _student(env, monkeypatch, moto_managed())
    report = permissions.preflight(cfg, alone)
    assert not report.known and "iam:SimulatePrincipalPolicy" in report.reason

    self_check = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "iam:SimulatePrincipalPolicy",
        "Resource": f"arn:aws:iam::{ACCOUNT}:user/*"}]}
    aws = _student(env, monkeypatch, moto_managed(), self_check)
    report = permissions.preflight(cfg, aws)
    assert report.known
    wanted = {a for s in permissions.admin_policy(cfg, ACCOUNT, cfg.bucket_name(ACCOUNT))[
        "Statement"] for a in s["Action"]} - {"iam:SimulatePrincipalPolicy"}
    # Updates and hand-attached policies are in the admin policy, not in a first `up`.
    assert {n.action for n in report.missing} <= wanted
    assert {"iam:CreateRole", "iam:PassRole", "lambda:CreateFunction", "s3:PutBucketPolicy",
            "s3:PutBucketNotification", "s3:PutBucketPublicAccessBlock",
            "s3:PutEncryptionConfiguration", "s3:PutObject"} <= {n.action for n in report.missing}
    text = report.text()
    for need in report.missing:
        assert need.action in text
    with pytest.raises(permissions.PermissionsMissingError, match="Nothing was created"):
        stack.up(cfg, aws, endpoint_poll=0.1)
    _nothing_of(env, cfg)


def test_check_and_admin_policy_commands(env, tmp_path, capsys):
    from visual_tourism import cli

    # local serve's own credentials: the stand-in's administrator, real answers (issue 24)
    assert cli.main(["check", "--prefix", "cli" + os.urandom(2).hex()]) == 0
    out = capsys.readouterr().out
    assert "cannot tell" not in out and "local mode's administrator credentials" in out
    assert "ok      up: endpoint" in out and "Limits for profile" in out
    assert cli.main(["admin-policy"]) == 0
    policy = json.loads(capsys.readouterr().out)
    assert {"iam:CreateRole", "lambda:CreateFunction"} <= {
        a for s in policy["Statement"] for a in s["Action"]}
    args = cli.build_parser().parse_args(["up", "--skip-check"])
    assert args.skip_check
