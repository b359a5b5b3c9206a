"""IAM: the Lambda's role and the SageMaker execution role, each with least privilege.

The policy documents are pure functions of the configuration so that the CloudFormation
template (infra/) is checked against exactly the same statements.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from botocore.exceptions import ClientError

from . import where
from .aws import Aws, ignore_not_found, is_not_found, tags_dict
from .config import STACK_TAG, THUMBNAIL_PREFIX, WEB_FOLDER, Config
from .errors import NotOwnedError

log = logging.getLogger(__name__)

LAMBDA_POLICY_NAME = "visual-tourism-lambda"
SAGEMAKER_POLICY_NAME = "visual-tourism-sagemaker"


def trust_policy(service: str, source_account: str | None = None) -> dict[str, Any]:
    """Who may assume the role. ``source_account`` adds SageMaker's confused-deputy guard:
    the service may assume it only on behalf of this account's own resources."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    }
    if source_account:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": source_account}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def lambda_policy(
    cfg: Config, *, account: str, bucket: str, partition: str = "aws"
) -> dict[str, Any]:
    """What the handler needs, and nothing more."""
    log_group = (
        f"arn:{partition}:logs:{cfg.region}:{account}:log-group:/aws/lambda/{cfg.function_name}"
    )
    objects = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OwnLogGroup",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup"],
                "Resource": log_group,
            },
            {
                "Sid": "OwnLogStreams",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{log_group}:*",
            },
            {
                "Sid": "ReadPhotosAndExample",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [
                    f"{objects}/{cfg.input_prefix}*",
                    f"{objects}/{cfg.example_prefix}*",
                ],
            },
            {
                "Sid": "ReadWriteResults",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"{objects}/{cfg.output_prefix}*",
            },
            {
                # Without ListBucket a missing result answers 403 instead of 404, and the
                # handler's "already answered?" check could not tell the two apart. (A prefix
                # condition would not help: HeadObject carries no s3:prefix key.)
                "Sid": "TellMissingResultsApart",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": objects,
            },
            {
                # Lambda writes the events it gives up on with the function's role, to this
                # prefix of the bucket (its S3 on-failure destination; see delivery.py).
                "Sid": "RecordFailedEvents",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": f"{objects}/aws/lambda/async/{cfg.function_name}/*",
            },
            _invoke_statement(cfg, account, partition),
            *_lambda_presets_statements(cfg, account, partition),
            *_lambda_async_statements(cfg, objects),
            *_lambda_web_statements(cfg, objects),
            *places_statements(cfg, partition),
        ],
    }


PLACES_ACTIONS = ("geo-places:SearchNearby", "geo-places:Geocode")  # photo_handler/places.py


def places_provider_arn(region: str, partition: str = "aws") -> str:
    """Places API v2's one resource: AWS's provider, no account id in it."""
    return f"arn:{partition}:geo-places:{region}::provider/default"


def places_statements(cfg: Config, partition: str = "aws") -> list[dict[str, Any]]:
    """With nearby places: the two Places calls the handler makes, nothing else."""
    if cfg.places != "on":
        return []
    return [{
        "Sid": "FindNearbyPlaces",
        "Effect": "Allow",
        "Action": list(PLACES_ACTIONS),
        "Resource": places_provider_arn(cfg.region, partition),
    }]
def _invoke_statement(cfg: Config, account: str, partition: str) -> dict[str, Any]:
    """The model call: this stack's endpoint, or with a managed model (Amazon Bedrock) that
    model only. Converse is authorized as bedrock:InvokeModel; a cross-region inference
    profile needs its own ARN and the model's in the regions it routes to."""
    profile = cfg.profile
    if profile.managed:
        return {
            "Sid": "InvokeThisManagedModel",
            "Effect": "Allow",
            "Action": ["bedrock:InvokeModel"],
            "Resource": profile.invoke_arns(cfg.region, account, partition),
        }
    return {
        "Sid": "InvokeThisEndpoint",
        "Effect": "Allow",
        "Action": [
            "sagemaker:InvokeEndpointAsync" if cfg.is_async else "sagemaker:InvokeEndpoint"
        ],
        "Resource": (
            f"arn:{partition}:sagemaker:{cfg.region}:{account}:"
            f"endpoint/{cfg.endpoint_name.lower()}"
        ),
    }


def _lambda_web_statements(cfg: Config, objects: str) -> list[dict[str, Any]]:
    """With the web page: the small copy of each web photo (the gallery's, without metadata),
    written once per upload form; GetObject for the HEAD that finds an earlier one."""
    if cfg.web_api != "on":
        return []
    return [{
        "Sid": "WriteWebPhotoCopies",
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:PutObject"],
        "Resource": f"{objects}/{THUMBNAIL_PREFIX}{WEB_FOLDER}*",
    }]


def _lambda_presets_statements(cfg: Config, account: str, partition: str) -> list[dict[str, Any]]:
    """With presets: read one preset (GetItem) from this stack's table, nothing else."""
    if not cfg.presets_table:
        return []
    return [{
        "Sid": "ReadPresets",
        "Effect": "Allow",
        "Action": ["dynamodb:GetItem"],
        "Resource": f"arn:{partition}:dynamodb:{cfg.region}:{account}:table/{cfg.presets_table}",
    }]


def _lambda_async_statements(cfg: Config, objects: str) -> list[dict[str, Any]]:
    """Async mode: write queued requests and their markers, read what SageMaker wrote, tidy."""
    if not cfg.is_async:
        return []
    base = f"{objects}/{cfg.async_prefix}"
    return [
        {
            "Sid": "QueueRequests",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
            "Resource": [f"{base}requests/*", f"{base}pending/*"],
        },
        {
            "Sid": "ReadAndTidyAsyncResults",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:DeleteObject"],
            "Resource": [f"{base}outputs/*", f"{base}failures/*"],
        },
    ]


def _sagemaker_async_statements(cfg: Config, bucket: str, partition: str) -> list[dict[str, Any]]:
    """Async mode: SageMaker reads queued requests and writes outputs and failures."""
    if not cfg.is_async or not bucket:
        return []
    base = f"arn:{partition}:s3:::{bucket}/{cfg.async_prefix}"
    return [
        {
            "Sid": "ReadQueuedRequests",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": f"{base}requests/*",
        },
        {
            "Sid": "WriteAsyncResults",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": [f"{base}outputs/*", f"{base}failures/*"],
        },
    ]


def sagemaker_policy(
    cfg: Config, *, account: str, image_uri: str, partition: str = "aws", bucket: str = ""
) -> dict[str, Any]:
    """What the model container needs: pull its image, write its logs and metrics."""
    registry, _, repo_and_tag = image_uri.partition("/")
    ecr_account = registry.split(".")[0]
    ecr_region = registry.split(".")[3]
    repository = repo_and_tag.split(":")[0]
    log_group = (
        f"arn:{partition}:logs:{cfg.region}:{account}:"
        f"log-group:/aws/sagemaker/Endpoints/{cfg.endpoint_name}"
    )
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PullContainerImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                ],
                "Resource": (
                    f"arn:{partition}:ecr:{ecr_region}:{ecr_account}:repository/{repository}"
                ),
            },
            {
                # GetAuthorizationToken has no resource-level permissions.
                "Sid": "EcrLogin",
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken"],
                "Resource": "*",
            },
            {
                # This endpoint's log group only, not every endpoint's in the account.
                "Sid": "EndpointLogGroup",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:DescribeLogStreams"],
                "Resource": log_group,
            },
            {
                "Sid": "EndpointLogStreams",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{log_group}:*",
            },
            {
                "Sid": "EndpointMetrics",
                "Effect": "Allow",
                "Action": ["cloudwatch:PutMetricData"],
                "Resource": "*",
                "Condition": {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*"]}},
            },
            *_sagemaker_async_statements(cfg, bucket, partition),
        ],
    }


def studio_role_arn() -> str | None:
    """The Studio user's execution role, when running inside SageMaker Studio."""
    if not where.in_studio():
        return None
    from sagemaker.core.helper.session_helper import get_execution_role

    return get_execution_role()


def _tags(cfg: Config) -> list[dict[str, str]]:
    return [{"Key": STACK_TAG, "Value": cfg.prefix}]


def get_role(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        return aws.iam.get_role(RoleName=name)["Role"]
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def ensure_role(
    aws: Aws, cfg: Config, name: str, service: str, policy_name: str, policy: dict[str, Any],
    trust: dict[str, Any] | None = None,
) -> str:
    """Create the role or bring an existing one of ours up to date. Returns its ARN."""
    trust = trust or trust_policy(service)
    role = get_role(aws, name)
    if role is None:
        role = aws.iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=f"Visual Tourism ({cfg.prefix}): {service}",
            Tags=_tags(cfg),
        )["Role"]
        log.info("Created IAM role %s", name)
    elif tags_dict(role.get("Tags")).get(STACK_TAG) != cfg.prefix:
        raise NotOwnedError(
            f"IAM role {name} exists but was not created by visual-tourism (no "
            f"{STACK_TAG}={cfg.prefix} tag). Choose another prefix (VT_PREFIX) or remove it."
        )
    elif role["AssumeRolePolicyDocument"] != trust:
        aws.iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
    if _inline_policy(aws, name, policy_name) != policy:
        aws.iam.put_role_policy(
            RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(policy)
        )
    return role["Arn"]


def _inline_policy(aws: Aws, role: str, policy_name: str) -> dict[str, Any] | None:
    try:
        return aws.iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def ensure_lambda_role(aws: Aws, cfg: Config, bucket: str) -> str:
    policy = lambda_policy(cfg, account=aws.account_id, bucket=bucket, partition=aws.partition)
    return ensure_role(
        aws, cfg, cfg.lambda_role_name, "lambda.amazonaws.com", LAMBDA_POLICY_NAME, policy
    )


def ensure_sagemaker_role(aws: Aws, cfg: Config, image_uri: str, bucket: str = "") -> str:
    """The Studio role inside Studio (never modified), else a role of our own."""
    studio = studio_role_arn()
    if studio:
        log.info("Using the SageMaker Studio execution role")
        return studio
    policy = sagemaker_policy(
        cfg, account=aws.account_id, image_uri=image_uri, partition=aws.partition,
        bucket=bucket,
    )
    service = "sagemaker.amazonaws.com"
    return ensure_role(
        aws, cfg, cfg.sagemaker_role_name, service, SAGEMAKER_POLICY_NAME, policy,
        trust_policy(service, source_account=aws.account_id),
    )


def delete_role(aws: Aws, cfg: Config, name: str) -> bool:
    """Delete one of our roles with its inline policies; untagged roles are left alone."""
    role = get_role(aws, name)
    if role is None:
        return False
    if tags_dict(role.get("Tags")).get(STACK_TAG) != cfg.prefix:
        log.warning("IAM role %s was not created by visual-tourism: left alone", name)
        return False
    for policy in aws.iam.list_role_policies(RoleName=name)["PolicyNames"]:
        aws.iam.delete_role_policy(RoleName=name, PolicyName=policy)
    for attached in aws.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        aws.iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
    return ignore_not_found(lambda: aws.iam.delete_role(RoleName=name), f"IAM role {name}")


def role_status(aws: Aws, name: str) -> str:
    return "absent" if get_role(aws, name) is None else "exists"
