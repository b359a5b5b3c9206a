"""Security review, infrastructure part: `up` and `down` touch only what this stack owns, and
the roles trust and allow no more than they need (moto in-process)."""

from __future__ import annotations

import json

import pytest

from visual_tourism import bucket, iam, lambda_fn, logs, packaging, stack
from visual_tourism.aws import Aws
from visual_tourism.config import STACK_TAG, load_config
from visual_tourism.errors import NotOwnedError

pytestmark = pytest.mark.usefixtures("mocked_aws")


def no_sleep(_: float) -> None:
    pass


@pytest.fixture
def cfg():
    return load_config()


@pytest.fixture
def aws(cfg) -> Aws:
    return Aws(cfg.region, sleep=no_sleep)


def _retention(aws: Aws, name: str) -> int | None | str:
    groups = aws.client("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    group = next((g for g in groups if g["logGroupName"] == name), None)
    return "absent" if group is None else group.get("retentionInDays")


def _foreign_log_group(aws: Aws, name: str, days: int) -> None:
    aws.client("logs").create_log_group(logGroupName=name, tags={"team": "theirs"})
    aws.client("logs").put_retention_policy(logGroupName=name, retentionInDays=days)


def _foreign_function(cfg, aws: Aws) -> None:
    role = aws.iam.create_role(
        RoleName="their-role",
        AssumeRolePolicyDocument=json.dumps(iam.trust_policy("lambda.amazonaws.com")),
    )["Role"]["Arn"]
    aws.lambda_.create_function(
        FunctionName=cfg.function_name, Role=role, Runtime="python3.12", Handler="x.handler",
        Code={"ZipFile": packaging.build_zip("photo")}, Tags={"team": "theirs"},
    )


def _foreign_endpoint(cfg, aws: Aws) -> None:
    aws.sagemaker.create_model(
        ModelName="theirs", ExecutionRoleArn="arn:aws:iam::000000000000:role/theirs",
        PrimaryContainer={"Image": "000000000000.dkr.ecr.us-east-1.amazonaws.com/x:1"},
    )
    aws.sagemaker.create_endpoint_config(EndpointConfigName="theirs", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "theirs", "InstanceType": "ml.g4dn.xlarge",
        "InitialInstanceCount": 1}])
    aws.sagemaker.create_endpoint(EndpointName=cfg.endpoint_name, EndpointConfigName="theirs")


# -- log groups: retention only on ours, and only after the owner checks ---------------------
def test_up_refuses_a_foreign_function_before_touching_its_log_group(cfg, aws):
    group = logs.function_log_group(cfg)
    _foreign_log_group(aws, group, 90)
    _foreign_function(cfg, aws)
    stack.create_bucket(cfg, aws)
    stack.create_roles(cfg, aws)
    with pytest.raises(NotOwnedError, match="Lambda function"):
        stack.deploy_function(cfg, aws)
    assert _retention(aws, group) == 90  # a 14-day retention would delete their older logs


def test_up_refuses_a_foreign_endpoint_before_touching_its_log_group(cfg, aws):
    group = logs.endpoint_log_group(cfg)
    _foreign_log_group(aws, group, 30)
    _foreign_endpoint(cfg, aws)
    with pytest.raises(NotOwnedError, match="SageMaker endpoint"):
        stack.start_endpoint(cfg, aws)
    assert _retention(aws, group) == 30


def test_a_foreign_log_group_keeps_its_retention_and_survives_down(cfg, aws):
    """Our function, but a group of its name someone else made (say, before our first up)."""
    group = logs.function_log_group(cfg)
    _foreign_log_group(aws, group, 365)
    stack.up(cfg, aws, endpoint_poll=0)
    assert _retention(aws, group) == 365
    stack.down(cfg, aws)
    assert _retention(aws, group) == 365
    # Our own group is created with, and brought back to, our retention.
    ours = logs.endpoint_log_group(cfg)
    assert _retention(aws, ours) == "absent"  # down removed it
    logs.ensure_log_group(aws, cfg, ours)
    assert _retention(aws, ours) == logs.RETENTION_DAYS
    aws.client("logs").put_retention_policy(logGroupName=ours, retentionInDays=1)
    logs.ensure_log_group(aws, cfg, ours)
    assert _retention(aws, ours) == logs.RETENTION_DAYS


# -- the function's permission statement ---------------------------------------------------
def test_down_leaves_the_statement_of_a_foreign_function_with_our_sid(cfg, aws):
    _foreign_function(cfg, aws)
    aws.lambda_.add_permission(
        FunctionName=cfg.function_name, StatementId=lambda_fn.PERMISSION_ID,
        Action="lambda:InvokeFunction", Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::their-bucket",
    )
    stack.down(cfg, aws, delete_bucket=True)
    policy = json.loads(aws.lambda_.get_policy(FunctionName=cfg.function_name)["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == [lambda_fn.PERMISSION_ID]


def test_down_removes_the_statement_of_our_function(cfg, aws):
    stack.up(cfg, aws, endpoint_poll=0)
    assert lambda_fn.remove_permission(aws, cfg)
    assert not lambda_fn.remove_permission(aws, cfg)  # already gone: no error


# -- the bucket policy: ours merged by Sid, theirs kept --------------------------------------
def test_up_merges_its_bucket_policy_statements_and_keeps_others(cfg, aws):
    stack.up(cfg, aws, endpoint_poll=0)
    name = cfg.bucket_name(aws.account_id)
    theirs = {
        "Sid": "AuditorsMayList", "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{aws.account_id}:root"},
        "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{name}",
    }
    policy = json.loads(aws.s3.get_bucket_policy(Bucket=name)["Policy"])
    policy["Statement"].append(theirs)
    aws.s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))

    stack.up(cfg, aws, endpoint_poll=0)

    after = json.loads(aws.s3.get_bucket_policy(Bucket=name)["Policy"])
    assert theirs in after["Statement"]
    ours = bucket.bucket_policy(name)["Statement"]
    assert [s for s in after["Statement"] if s.get("Sid") != "AuditorsMayList"] == ours
    # A statement of ours that someone edited is put back, without duplicating it.
    edited = [dict(s, Action="s3:GetObject") if s.get("Sid") == ours[0]["Sid"] else s
              for s in after["Statement"]]
    aws.s3.put_bucket_policy(Bucket=name, Policy=json.dumps({**after, "Statement": edited}))
    assert bucket.merge_policy_statements(aws, name, bucket.bucket_policy(name))
    assert not bucket.merge_policy_statements(aws, name, bucket.bucket_policy(name))
    final = json.loads(aws.s3.get_bucket_policy(Bucket=name)["Policy"])["Statement"]
    assert sorted(s["Sid"] for s in final) == sorted(["AuditorsMayList", ours[0]["Sid"]])
    assert ours[0] in final


# -- the SageMaker role: confused-deputy guard, logs of this endpoint only ------------------
def test_sagemaker_role_trusts_the_service_only_for_this_account(cfg, aws):
    stack.create_roles(cfg, aws)
    trust = aws.iam.get_role(RoleName=cfg.sagemaker_role_name)["Role"][
        "AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert trust["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": aws.account_id}}


def test_an_older_role_of_ours_gets_the_guarded_trust_policy(cfg, aws):
    aws.iam.create_role(
        RoleName=cfg.sagemaker_role_name,
        AssumeRolePolicyDocument=json.dumps(iam.trust_policy("sagemaker.amazonaws.com")),
        Tags=[{"Key": STACK_TAG, "Value": cfg.prefix}],
    )
    stack.create_roles(cfg, aws)
    trust = aws.iam.get_role(RoleName=cfg.sagemaker_role_name)["Role"][
        "AssumeRolePolicyDocument"]
    assert "Condition" in trust["Statement"][0]


def test_sagemaker_log_permissions_name_this_endpoints_group_only(cfg):
    doc = iam.sagemaker_policy(
        cfg, account="111122223333",
        image_uri="763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-"
                  "inference:2.4.0-tgi3.3.6-gpu-py311-cu124-ubuntu22.04",
    )
    group = f"arn:aws:logs:{cfg.region}:111122223333:log-group:{logs.endpoint_log_group(cfg)}"
    log_statements = [s for s in doc["Statement"]
                      if any(a.startswith("logs:") for a in s["Action"])]
    assert {s["Resource"] for s in log_statements} == {group, f"{group}:*"}
    other = cfg.replace(prefix="other")
    assert logs.endpoint_log_group(other) not in json.dumps(log_statements)
