"""S3: the private, encrypted bucket with its three folders and the in-context example photo."""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from .aws import Aws, error_code, error_message, ignore_not_found, tags_dict
from .config import STACK_TAG, Config
from .errors import BucketTakenError, DeployError, NotOwnedError
from .state import State

log = logging.getLogger(__name__)

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def bucket_policy(bucket: str, partition: str = "aws") -> dict[str, Any]:
    """Refuse every request that does not use TLS."""
    arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def encryption_configuration() -> dict[str, Any]:
    """Default encryption at rest (SSE-S3), as PutBucketEncryption takes it."""
    return {
        "Rules": [
            {
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                "BucketKeyEnabled": True,
            }
        ]
    }


def bucket_state(aws: Aws, bucket: str) -> str:
    """'exists' (200), 'taken' (403: another account owns it) or 'absent' (404)."""
    try:
        aws.s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=aws.account_id)
        return "exists"
    except ClientError as exc:
        code = error_code(exc)
        if code in ("403", "AccessDenied", "Forbidden"):
            return "taken"
        if code in ("404", "NoSuchBucket", "NotFound"):
            return "absent"
        raise


def is_ours(aws: Aws, cfg: Config, bucket: str) -> bool:
    try:
        tags = aws.s3.get_bucket_tagging(Bucket=bucket, ExpectedBucketOwner=aws.account_id)
    except ClientError as exc:
        if error_code(exc) in ("NoSuchTagSet", "NoSuchTagSetError", "AccessDenied", "403"):
            return False
        raise
    return tags_dict(tags["TagSet"]).get(STACK_TAG) == cfg.prefix


def in_account(aws: Aws, bucket: str) -> bool:
    return any(b["Name"] == bucket for b in aws.s3.list_buckets().get("Buckets", []))


def bucket_name(cfg: Config, aws: Aws) -> str:
    """The bucket this stack uses: the one recorded by `up`, else the default name."""
    return State(cfg.state_path).get("bucket", "name") or cfg.bucket_name(aws.account_id)


def ensure_bucket(aws: Aws, cfg: Config) -> str:
    """Create or update the stack's bucket, its folders and the example; returns its name."""
    name = cfg.bucket_name(aws.account_id)
    ensure_private_bucket(aws, cfg, name)
    _ensure_folders(aws, cfg, name)
    upload_if_changed(aws, name, cfg.example_key, Path(cfg.example_image))
    return name


def ensure_private_bucket(aws: Aws, cfg: Config, bucket: str) -> None:
    """Create ``bucket`` (or find it, if it is ours): private, encrypted, TLS only, tagged."""
    state = bucket_state(aws, bucket)
    ours = state == "exists" and is_ours(aws, cfg, bucket)
    if state == "exists" and not ours and not in_account(aws, bucket):
        state = "taken"
    if state == "taken":
        raise BucketTakenError(
            f"The bucket name {bucket!r} is taken by another AWS account (names are global). "
            "Choose another one: set VT_BUCKET=<a-unique-name> or pass --bucket "
            "(for the artifacts bucket, another VT_PREFIX)."
        )
    if state == "exists" and not ours:
        raise NotOwnedError(
            f"The bucket {bucket!r} exists in your account but was not created by "
            f"visual-tourism. Choose another name (VT_BUCKET), or tag it {STACK_TAG}="
            f"{cfg.prefix} if you really want this stack to use (and be able to delete) it."
        )
    if state == "absent":
        tags = [{"Key": STACK_TAG, "Value": cfg.prefix}]
        # Tagged in the same call, so an interruption cannot leave an untagged bucket that
        # the next `up` would refuse as not ours (the separate put below is for emulators).
        where: dict[str, Any] = {"Tags": tags}
        if aws.region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            where["LocationConstraint"] = aws.region
        kwargs: dict[str, Any] = {
            "Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced",
            "CreateBucketConfiguration": where,
        }
        try:
            aws.s3.create_bucket(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "BucketAlreadyExists":
                raise BucketTakenError(
                    f"The bucket name {bucket!r} was just taken by another account. "
                    "Set VT_BUCKET to another name."
                ) from None
            raise DeployError(f"Could not create bucket {bucket}: {error_message(exc)}") from exc
        aws.wait("s3", "bucket_exists", delay=2, max_attempts=30, Bucket=bucket)
        aws.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})
        log.info("Created bucket %s", bucket)
    _secure(aws, bucket)


def _secure(aws: Aws, bucket: str) -> None:
    """Private (all four public-access blocks), encrypted at rest, TLS only. Idempotent puts."""
    aws.s3.put_public_access_block(
        Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK
    )
    aws.s3.put_bucket_encryption(
        Bucket=bucket, ServerSideEncryptionConfiguration=encryption_configuration()
    )
    merge_policy_statements(aws, bucket, bucket_policy(bucket, aws.partition))


def _current_policy(aws: Aws, bucket: str) -> dict[str, Any] | None:
    try:
        return json.loads(aws.s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucketPolicy":
            return None
        raise


def _statements(policy: dict[str, Any] | None) -> list[dict[str, Any]]:
    statements = (policy or {}).get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def merge_policy_statements(aws: Aws, bucket: str, ours: dict[str, Any]) -> bool:
    """Put our statements into the bucket policy by Sid; statements others added are kept.

    PutBucketPolicy replaces the whole document, so writing ours alone would silently drop
    someone's grant (a CloudTrail or replication statement, say). Returns True if it wrote.
    """
    current = _current_policy(aws, bucket)
    sids = {s["Sid"] for s in ours["Statement"]}
    others = [s for s in _statements(current) if s.get("Sid") not in sids]
    wanted = {**(current or {}), "Version": ours["Version"],
              "Statement": others + ours["Statement"]}
    if current == wanted:
        return False
    aws.s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(wanted))
    return True


def _ensure_folders(aws: Aws, cfg: Config, bucket: str) -> None:
    # S3 has no folders; empty "name/" objects make them visible in the console.
    for prefix in (cfg.input_prefix, cfg.example_prefix, cfg.output_prefix):
        if not object_exists(aws, bucket, prefix):
            aws.s3.put_object(Bucket=bucket, Key=prefix, Body=b"")


def object_exists(aws: Aws, bucket: str, key: str) -> bool:
    return head(aws, bucket, key) is not None


def head(aws: Aws, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return aws.s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def upload_if_changed(aws: Aws, bucket: str, key: str, path: Path) -> str:
    """Upload unless the same bytes are already there (single-part ETag is the MD5)."""
    data = path.read_bytes()
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    current = head(aws, bucket, key)
    if current and current["ETag"].strip('"') == md5:
        return md5
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return aws.s3.put_object(
        Bucket=bucket, Key=key, Body=data, ContentType=content_type
    )["ETag"].strip('"')


def delete_bucket(aws: Aws, cfg: Config, bucket: str) -> bool:
    """Empty and delete the bucket, only if this stack created it."""
    if bucket_state(aws, bucket) != "exists":
        return False
    if not is_ours(aws, cfg, bucket):
        log.warning("Bucket %s was not created by visual-tourism: left alone", bucket)
        return False
    # List everything first: deleting while paginating made moto's next page come back empty
    # (over 1,000 objects, a bucket after a burst), leaving the bucket not empty.
    paginator = aws.s3.get_paginator("list_object_versions")
    doomed = [
        {"Key": v["Key"], "VersionId": v["VersionId"]}
        for page in paginator.paginate(Bucket=bucket)
        for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
    ]
    for start in range(0, len(doomed), 1000):
        aws.s3.delete_objects(
            Bucket=bucket, Delete={"Objects": doomed[start : start + 1000], "Quiet": True}
        )
    deleted = ignore_not_found(lambda: aws.s3.delete_bucket(Bucket=bucket), f"bucket {bucket}")
    if deleted:
        aws.wait("s3", "bucket_not_exists", delay=2, max_attempts=30, Bucket=bucket)
    return deleted


def count_objects(aws: Aws, bucket: str, prefix: str) -> int:
    paginator = aws.s3.get_paginator("list_objects_v2")
    return sum(
        sum(1 for o in page.get("Contents", []) if o["Key"] != prefix)
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
    )


def describe(aws: Aws, cfg: Config, bucket: str) -> dict[str, Any]:
    state = bucket_state(aws, bucket)
    if state != "exists":
        return {"name": bucket, "state": state}
    try:
        block = aws.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        block = {}  # removed by someone: report the bucket as not private
    return {
        "name": bucket,
        "state": "exists",
        "private": all(block.get(k) for k in PUBLIC_ACCESS_BLOCK),
        "photos": count_objects(aws, bucket, cfg.input_prefix),
        "results": count_objects(aws, bucket, cfg.output_prefix),
    }
