"""IAM enforced in local mode: the local Lambda runs with its execution role's temporary
credentials, moto authorizes what that role signs, and the model server checks
sagemaker:InvokeEndpoint. An action missing from the role's policy fails here as on AWS.

Each test that removes an action counts what the role's calls were refused; the totals are the
"security" lines of the test summary (IAM actions exercised locally, and denied when removed).
"""

from __future__ import annotations

import io
import json
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from visual_tourism import iam, stack
from visual_tourism.aws import Aws
from visual_tourism.config import load_config
from visual_tourism.local import iam_enforcement
from visual_tourism.local.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
PHOTO = sorted((ROOT / "images").glob("*.jpeg"))[0]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("iam")) as running:
        assert running.enforce_iam and iam_enforcement.enabled()
        yield running


@pytest.fixture
def deployed(env, tmp_path):
    """`up` under enforcement, with the stack's own (root-like) credentials: it must work."""
    cfg = load_config(prefix="i" + os.urandom(3).hex(), state_dir=str(tmp_path / "state"))
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)
    yield cfg, aws
    env.runtime.wait_idle(60)
    stack.down(cfg, aws, delete_bucket=True)


def without(aws: Aws, cfg, action: str) -> None:
    """Take ``action`` out of every statement of the Lambda role's policy."""
    doc = aws.iam.get_role_policy(
        RoleName=cfg.lambda_role_name, PolicyName=iam.LAMBDA_POLICY_NAME)["PolicyDocument"]
    assert any(action in s["Action"] for s in doc["Statement"]), action
    for statement in doc["Statement"]:
        statement["Action"] = [a for a in statement["Action"] if a != action]
    doc["Statement"] = [s for s in doc["Statement"] if s["Action"]]
    aws.iam.put_role_policy(RoleName=cfg.lambda_role_name, PolicyName=iam.LAMBDA_POLICY_NAME,
                            PolicyDocument=json.dumps(doc))


def decisions(role: str) -> dict[str, dict[str, int]]:
    return {action: dict(counts) for (who, action), counts in
            iam_enforcement.decisions.items() if who == f"role/{role}"}


def run_one(env, cfg, aws, key: str) -> dict | None:
    """Upload one photo through the trigger; the record written, or None (after retries)."""
    bucket = cfg.bucket_name(aws.account_id)
    aws.s3.put_object(Bucket=bucket, Key=f"input/{key}", Body=PHOTO.read_bytes(),
                      ContentType="image/jpeg")
    assert env.runtime.wait_idle(90)
    try:
        body = aws.s3.get_object(Bucket=bucket, Key=f"output/{key}.json")["Body"].read()
    except ClientError:
        return None
    return json.loads(body)


def test_with_the_full_policy_every_call_is_authorized_and_answered(env, deployed,
                                                                    security_tally):
    cfg, aws = deployed
    record = run_one(env, cfg, aws, "full.jpeg")
    assert record and record["status"] == "ok"
    seen = decisions(cfg.lambda_role_name)
    # The handler's calls, each authorized against the role (the presigned photo URL the
    # model server fetches included: S3 authorizes it for the signer).
    assert set(seen) == {"s3:GetObject", "s3:PutObject", "s3:ListBucket",
                         "sagemaker:InvokeEndpoint", "dynamodb:GetItem"}  # the default preset
    assert all(c["denied"] == 0 and c["allowed"] > 0 for c in seen.values()), seen
    security_tally["exercised"] = sorted(seen)


# What each missing action does to one photo, as it would on AWS.
REMOVED = {
    # No result can be written: the invocation fails, is retried twice, and no record exists.
    "s3:PutObject": "no record",
    # The photo cannot be read: an error record says so.
    "s3:GetObject": "input_unreadable",
    # The endpoint refuses the role: an error record carries the AccessDenied reason.
    "sagemaker:InvokeEndpoint": "model_request_failed",
    # The "already answered?" HEAD gets 403 instead of 404; the handler carries on.
    "s3:ListBucket": "ok",
    # The preset cannot be read: answered with the function's built-in prompt, and a note.
    "dynamodb:GetItem": "ok",
}


@pytest.mark.parametrize("action", sorted(REMOVED))
def test_an_action_missing_from_the_role_fails_locally(env, deployed, action, security_tally):
    cfg, aws = deployed
    without(aws, cfg, action)
    failures = env.runtime.failures
    record = run_one(env, cfg, aws, "denied.jpeg")
    outcome = "no record" if record is None else (
        record["status"] if record["status"] == "ok" else record["error"]["code"])
    assert outcome == REMOVED[action]
    denied = decisions(cfg.lambda_role_name)[action]["denied"]
    assert denied >= 1
    if record is None:
        assert env.runtime.failures == failures + 1  # after Lambda's two retries
    if action == "sagemaker:InvokeEndpoint":
        assert "not authorized to perform: sagemaker:InvokeEndpoint" in record["error"]["message"]
    if action == "dynamodb:GetItem":
        assert "presets table could not be read" in record["preset"]["note"]
    security_tally["denied"][action] = outcome


def test_enforcement_is_a_switch(env, deployed):
    cfg, aws = deployed
    without(aws, cfg, "s3:PutObject")
    iam_enforcement.disable()
    try:
        record = run_one(env, cfg, aws, "unenforced.jpeg")
    finally:
        iam_enforcement.enable()
    assert record and record["status"] == "ok"  # moto alone would never have noticed


# -- the mechanism, for any role -----------------------------------------------------------
def _root(env, service: str):
    return boto3.client(service, endpoint_url=env.moto_url, region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local")


def _role(env, name: str, statements: list[dict]) -> str:
    iam_client = _root(env, "iam")
    arn = iam_client.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(iam.trust_policy("lambda.amazonaws.com")),
    )["Role"]["Arn"]
    iam_client.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": statements}))
    return arn


def _as(env, creds: dict[str, str], service: str, **config):
    return boto3.client(
        service, endpoint_url=env.moto_url, region_name="us-east-1",
        config=botocore.config.Config(**config),
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=creds["AWS_SESSION_TOKEN"],
    )


def test_any_functions_role_is_enforced_with_resource_arns(env):
    """Another function with its own role (as the other rooms add): same enforcement."""
    s3 = _root(env, "s3")
    bucket = "iam-generic-" + os.urandom(3).hex()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/a.txt", Body=b"a")
    arn = _role(env, "generic-" + bucket[-6:], [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{bucket}/in/*"},
        {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": f"arn:aws:s3:::{bucket}/out/*"},
    ])
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("copier.py", (
            "import boto3\n"
            "def handler(event, context):\n"
            "    s3 = boto3.client('s3')\n"
            "    body = s3.get_object(Bucket=event['bucket'], Key=event['src'])['Body'].read()\n"
            "    s3.put_object(Bucket=event['bucket'], Key=event['dst'], Body=body)\n"
        ))
    name = "generic-copy-" + bucket[-6:]
    _root(env, "lambda").create_function(
        FunctionName=name, Role=arn, Runtime="python3.12", Handler="copier.handler",
        Code={"ZipFile": code.getvalue()}, Timeout=30,
    )
    for dst in ("out/b.txt", "elsewhere/b.txt"):
        _root(env, "lambda").invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(
            {"bucket": bucket, "src": "in/a.txt", "dst": dst}))
    assert env.runtime.wait_idle(60)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"in/a.txt", "out/b.txt"}  # the write outside out/ was refused
    assert "AccessDenied" in env.log_path(name).read_text()


def test_presigned_urls_and_missing_objects_follow_the_signers_role(env):
    s3 = _root(env, "s3")
    bucket = "iam-presign-" + os.urandom(3).hex()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/a.txt", Body=b"a")
    reader = _role(env, "reader-" + bucket[-6:], [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{bucket}/*"},
    ])
    creds = env.credentials.for_role(reader, "test")
    as_reader = _as(env, creds, "s3")
    # Query-string signatures of both kinds (the handler signs SigV4).
    signers = [_as(env, creds, "s3", signature_version=v) for v in ("s3v4", "s3")]

    def fetch(key: str) -> int:
        codes = set()
        for signer in signers:
            url = signer.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=60)
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    codes.add(response.status)
            except urllib.error.HTTPError as error:
                codes.add(error.code)
        assert len(codes) == 1, codes
        return codes.pop()

    assert fetch("in/a.txt") == 200
    # Missing object, no s3:ListBucket: S3 answers 403, not 404.
    assert fetch("in/missing.txt") == 403
    with pytest.raises(ClientError) as caught:
        as_reader.head_object(Bucket=bucket, Key="in/missing.txt")
    assert caught.value.response["Error"]["Code"] == "403"
    _root(env, "iam").put_role_policy(
        RoleName=reader.rsplit("/", 1)[-1], PolicyName="list", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket",
                                                   "Resource": f"arn:aws:s3:::{bucket}"}]}))
    with pytest.raises(ClientError) as caught:
        as_reader.head_object(Bucket=bucket, Key="in/missing.txt")
    assert caught.value.response["Error"]["Code"] == "404"
    # The grant gone, so is the presigned URL's power.
    _root(env, "iam").delete_role_policy(RoleName=reader.rsplit("/", 1)[-1], PolicyName="p")
    assert fetch("in/a.txt") == 403


def test_unknown_or_forged_session_credentials_are_refused(env):
    creds = env.credentials.for_role(
        _role(env, "forged-" + os.urandom(3).hex(), [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]), "test")
    forged = {**creds, "AWS_SESSION_TOKEN": "not-the-token"}
    with pytest.raises(ClientError) as caught:
        _as(env, forged, "s3").list_buckets()
    assert caught.value.response["Error"]["Code"] in ("InvalidToken", "InvalidAccessKeyId")
    assert _as(env, creds, "s3").list_buckets()["Buckets"] is not None


def test_model_server_checks_invoke_endpoint_before_the_endpoint_exists(env):
    denier = _role(env, "no-invoke-" + os.urandom(3).hex(), [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}])
    runtime = boto3.client(
        "sagemaker-runtime", endpoint_url=env.model_server.url, region_name="us-east-1",
        aws_access_key_id=(c := env.credentials.for_role(denier, "test"))["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=c["AWS_SECRET_ACCESS_KEY"], aws_session_token=c["AWS_SESSION_TOKEN"],
    )
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"{}",
                                ContentType="application/json")
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # The stack's own credentials are not a role's: only the endpoint's existence is checked.
    root = boto3.client("sagemaker-runtime", endpoint_url=env.model_server.url,
                        region_name="us-east-1", aws_access_key_id="local",
                        aws_secret_access_key="local")
    with pytest.raises(ClientError) as caught:
        root.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"{}",
                             ContentType="application/json")
    assert caught.value.response["Error"]["Code"] == "ValidationError"


def test_the_local_model_server_fetches_from_the_local_s3_only(env):
    assert env.model_server.fetch_origins == [env.moto_url]


def test_a_list_grant_limited_to_prefixes_does_not_tell_missing_objects_apart(env):
    """S3 evaluates s3:ListBucket for a missing object's 403-or-404 with no s3:prefix in the
    request: a ListBucket limited by an s3:prefix condition (the web role's) does not apply,
    so a missing object is 403 AccessDenied. A listing is allowed only under those prefixes."""
    s3 = _root(env, "s3")
    bucket = "iam-prefix-" + os.urandom(3).hex()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="out/web/a.json", Body=b"{}")
    lister = _role(env, "prefix-" + bucket[-6:], [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{bucket}/*"},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": ["out/web/*", "in/web/*"]}}},
    ])
    as_lister = _as(env, env.credentials.for_role(lister, "test"), "s3")
    assert as_lister.get_object(Bucket=bucket, Key="out/web/a.json")["Body"].read() == b"{}"
    for call in (as_lister.get_object, as_lister.head_object):
        with pytest.raises(ClientError) as caught:
            call(Bucket=bucket, Key="out/web/missing.json")
        assert caught.value.response["Error"]["Code"] in ("AccessDenied", "403")
    listed = as_lister.list_objects_v2(Bucket=bucket, Prefix="out/web/a")
    assert [o["Key"] for o in listed["Contents"]] == ["out/web/a.json"]
    for prefix in ("out/", None):  # outside the condition's prefixes, or none at all
        with pytest.raises(ClientError) as caught:
            as_lister.list_objects_v2(Bucket=bucket, **({"Prefix": prefix} if prefix else {}))
        assert caught.value.response["Error"]["Code"] == "AccessDenied"


def test_the_web_function_runs_with_its_role_and_pending_or_unknown_photos_are_not_500(
        env, deployed):
    """Local mode's front calls the web function with its execution role's temporary
    credentials (as Lambda would): under that role a result that does not exist yet reads 403,
    and the API still answers `pending` for an uploaded photo and 404 for an unknown id."""
    import requests

    from visual_tourism import web
    from visual_tourism.local.web_front import serve_local

    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    front, link = serve_local(cfg, env)
    try:
        code = {"x-access-code": link.split("#code=")[1]}
        unknown = requests.get(f"{front.url}results/20260101T000000Z-{'0' * 20}.jpg",
                               headers=code, timeout=10)
        assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_id")
        # The trigger held back, so that the photo stays pending while we look.
        wiring = aws.s3.get_bucket_notification_configuration(Bucket=bucket)
        wiring.pop("ResponseMetadata", None)
        aws.s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={})
        try:
            form = requests.post(front.url + "uploads", headers=code, timeout=10, json={
                "content_type": "image/jpeg", "size": PHOTO.stat().st_size}).json()
            sent = requests.post(form["upload"]["url"], data=form["upload"]["fields"],
                                 files={"file": ("a.jpg", PHOTO.read_bytes())}, timeout=10)
            assert sent.status_code == 204, sent.text
            pending = requests.get(front.url + form["result"].lstrip("/"), headers=code,
                                   timeout=10)
            assert pending.status_code == 200, pending.text
            assert pending.json() == {"id": form["id"], "status": "pending"}
        finally:
            aws.s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration=wiring)
    finally:
        front.stop()
    web_role = decisions(web.role_name(cfg))
    # The result not there yet: no list right without a prefix, so 403 (as on AWS) ...
    assert web_role["s3:ListBucket"]["denied"] >= 1
    # ... and the photo found by a listing under input/web/; the code read with the role.
    assert web_role["s3:ListBucket"]["allowed"] >= 1
    assert web_role["ssm:GetParameter"]["allowed"] >= 1
    assert web_role["s3:PutObject"]["allowed"] >= 1  # the upload form, signed by the role
