"""The AWS-call recorder (visual_tourism/calls.py): what it records, what it masks, and the
boto3 code it writes, in-process against moto and for a real `up` in local mode."""

from __future__ import annotations

import ast
import json
import re

import pytest

from visual_tourism import calls, cli, stack
from visual_tourism.aws import Aws
from visual_tourism.config import load_config

ACCOUNT = "123456789012"  # moto's
TWELVE_DIGITS = re.compile(r"(?<!\d)\d{12}(?!\d)")


def _assert_python(snippet: str) -> ast.Module:
    tree = ast.parse(snippet)  # valid Python, whatever it holds
    assert not TWELVE_DIGITS.search(snippet), snippet
    return tree


def _methods(snippet: str) -> list[str]:
    """The boto3 methods called in the snippet, in order."""
    tree = ast.parse(snippet)
    return [stmt.value.func.attr for stmt in tree.body
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Attribute)]


def test_records_service_operation_and_parameters_in_order(mocked_aws):
    aws = Aws("us-east-1")
    aws.s3.list_buckets()  # a client made before the recording: still recorded
    with calls.record(aws) as recording:
        aws.s3.create_bucket(Bucket="b-one")
        aws.s3.put_object(Bucket="b-one", Key="input/x.jpeg", Body=b"\xff\xd8" * 50)
        aws.iam.create_role(RoleName="r", AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": []}))
        aws.s3.head_bucket(Bucket="b-one")
    aws.s3.delete_object(Bucket="b-one", Key="input/x.jpeg")  # after the block: not recorded

    assert [(c.service, c.operation) for c in recording.calls] == [
        ("s3", "CreateBucket"), ("s3", "PutObject"), ("iam", "CreateRole"), ("s3", "HeadBucket")]
    assert recording.calls[0].params == {"Bucket": "b-one"}
    assert [c.read_only for c in recording.calls] == [False, False, False, True]
    assert recording.calls[1].params["Body"] == calls.Placeholder("<100 bytes>")

    full = recording.snippet(reads=True)
    _assert_python(full)
    assert _methods(full) == ["create_bucket", "put_object", "create_role", "head_bucket"]
    assert full.index('s3 = boto3.client("s3"') < full.index("s3.create_bucket(")
    assert full.index('iam = boto3.client("iam"') < full.index("iam.create_role(")
    assert "json.dumps(" in full and full.startswith("import json\nimport boto3")
    assert "# read-only\ns3.head_bucket(" in full
    assert _methods(recording.snippet()) == ["create_bucket", "put_object", "create_role"]
    assert "s3.head_bucket(" not in recording.text()  # the text names it among the checks
    assert "read-only checks, not shown: head_bucket" in recording.text()


def test_masks_accounts_secrets_and_blobs(mocked_aws):
    aws = Aws("us-east-1")
    signed = ("https://b.s3.amazonaws.com/k.jpeg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
              "&X-Amz-Credential=AKIAABCDEFGHIJKLMNOP%2F20250101&X-Amz-Signature=abc123")
    with calls.record(aws) as recording:
        aws.client("ssm").put_parameter(Name="/vt/code", Value="s3cret-code",
                                        Type="SecureString")
        aws.client("ssm").put_parameter(Name="/vt/plain", Value="visible", Type="String")
        aws.client("secretsmanager").create_secret(Name="s", SecretString="hunter2")
        aws.s3.create_bucket(Bucket=f"vt-{ACCOUNT}-us-east-1")
        aws.client("sqs").create_queue(QueueName="q", Attributes={
            "Policy": json.dumps({"Resource": f"arn:aws:sqs:us-east-1:{ACCOUNT}:q",
                                  "Other": "arn:aws:ecr:us-east-1:763104351884:repository/x"}),
            "RedriveAllowPolicy": signed})
    text = recording.snippet(reads=True)
    tree = _assert_python(text)
    for secret in ("s3cret-code", "hunter2", "abc123", "AKIAABCDEFGHIJKLMNOP", ACCOUNT,
                   "763104351884"):
        assert secret not in text, secret
    assert 'Value="<secret>"' in text and 'SecretString="<secret>"' in text
    assert 'Value="visible"' in text  # a plain String parameter is not a secret
    assert 'account = boto3.client("sts").get_caller_identity()["Account"]' in text
    assert 'Bucket=f"vt-{account}-us-east-1"' in text
    assert '"Resource": f"arn:aws:sqs:us-east-1:{account}:q"' in text
    assert "********1884" in text  # another account's ID: masked, not taken for yours
    assert "https://b.s3.amazonaws.com/k.jpeg?<signed query removed>" in text
    # The f-strings evaluate to the real names once `account` is known.
    bucket = next(n for n in ast.walk(tree) if isinstance(n, ast.keyword) and n.arg == "Bucket")
    assert eval(compile(ast.Expression(bucket.value), "<s>", "eval"),
                {"account": ACCOUNT}) == f"vt-{ACCOUNT}-us-east-1"


def test_blob_and_environment_placeholders():
    scrubbed = calls.scrub({
        "Code": {"ZipFile": b"PK" + b"\0" * 998},
        "Environment": {"Variables": {"HF_TOKEN": "hf_abc", "BUCKET_NAME": "b",
                                      "API_KEY": "k"}},
        "SessionToken": "tok", "Body": bytearray(b"abc"),
    })
    assert scrubbed["Code"]["ZipFile"] == calls.Placeholder("<zip, 1,000 bytes>")
    assert scrubbed["Body"] == calls.Placeholder("<3 bytes>")
    assert scrubbed["SessionToken"] == calls.Placeholder("<secret>")
    variables = scrubbed["Environment"]["Variables"]
    assert variables == {"HF_TOKEN": calls.Placeholder("<secret>"), "BUCKET_NAME": "b",
                         "API_KEY": calls.Placeholder("<secret>")}


def test_polling_collapses_and_failures_are_noted(mocked_aws):
    aws = Aws("us-east-1")
    assert aws.account_id == ACCOUNT  # looked up once, before
    with calls.record(aws) as recording:
        for _ in range(3):
            stack.bucket.bucket_state(aws, "never-made")  # HeadBucket, 404 each time
        aws.s3.create_bucket(Bucket="never-made")
    assert [c.operation for c in recording.calls][-1] == "CreateBucket"
    head = recording.calls[0]
    assert head.operation == "HeadBucket" and head.times == 3 and head.error == "404"
    assert "# read-only, 3 times (polled); failed: 404" in recording.snippet(reads=True)


def test_html_is_collapsed_with_the_reads_inside(mocked_aws):
    aws = Aws("us-east-1")
    with calls.record(aws) as recording:
        aws.s3.create_bucket(Bucket="b-html")
        aws.s3.head_bucket(Bucket="b-html")
    page = recording._repr_html_()
    assert page.startswith('<details class="vt-calls"><summary>AWS calls made by this cell: '
                           "1 change, 1 read-only check")
    assert "<details open" not in page and page.count("<details") == 2
    assert "s3.create_bucket(Bucket=&quot;b-html&quot;)" in page


@pytest.mark.timeout(180)
def test_up_in_local_mode_is_recorded_and_printed_by_the_cli(tmp_path, capsys):
    from visual_tourism.local.stack import LocalStack, environment

    with LocalStack(model="stand-in", work_dir=tmp_path / "local") as local, \
            environment(local.env):
        cfg = load_config(region="us-east-1", state_dir=str(tmp_path / "state"),
                          prefix="vt-calls")
        try:
            assert cli.main(["up", "--show-calls", "--prefix", "vt-calls", "--region",
                             "us-east-1"]) == 0
        finally:
            local.runtime.wait_idle(30)
            stack.down(cfg, Aws(cfg.region), delete_bucket=True)
    out = capsys.readouterr().out
    snippet = out[out.index("import json\nimport boto3"):]
    _assert_python(snippet)
    methods = _methods(snippet)
    order = ["create_bucket", "put_bucket_policy", "create_role", "put_role_policy",
             "create_model", "create_endpoint_config", "create_endpoint", "create_function",
             "register_scalable_target", "put_scaling_policy", "add_permission",
             "put_bucket_notification_configuration"]
    positions = [methods.index(m) for m in order]
    assert positions == sorted(positions), methods  # in the order `up` makes them
    assert 'Code={"ZipFile": "<zip, ' in snippet
    assert "describe_endpoint" in snippet and "# read-only" in snippet
    assert "changes" in out and "read-only checks" in out
