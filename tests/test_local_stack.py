"""Local mode end to end: the unchanged stack helpers, the real handler fired by the bucket
notification in its own process, and the local model server."""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from visual_tourism import lambda_fn, stack
from visual_tourism.aws import Aws
from visual_tourism.cli import main
from visual_tourism.config import load_config
from visual_tourism.local.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "images").glob("*.jpeg"))


def test_moto_private_names():
    """Local mode replaces two private moto names; a release that moves them must fail here."""
    from moto.awslambda.models import LambdaFunction
    from moto.s3.models import FakeBucket

    assert version("moto") == "5.2.5", "moto is pinned: re-check moto_patches before bumping"
    from moto.sagemaker.models import FakeEndpointConfig  # moto_patches.patch_instance_types

    assert list(inspect.signature(FakeEndpointConfig.validate_instance_type).parameters) == [
        "self", "instance_type"]
    assert list(inspect.signature(LambdaFunction._invoke_lambda).parameters) == ["self", "event"]
    assert list(inspect.signature(FakeBucket.get_permission).parameters) == [
        "self", "action", "resource"
    ]
    from moto.s3.models import S3Backend  # hooked by moto_patches.hook_put_object

    assert list(inspect.signature(S3Backend.put_object).parameters)[:4] == [
        "self", "bucket_name", "key_name", "value"
    ]
    from moto.s3 import notifications

    # S3's notification path must still end in LambdaFunction.invoke -> _invoke_lambda, with
    # empty headers (how moto_patches tells a service's event from a synchronous API call).
    assert "func.invoke(json.dumps(event_body), {}, {})" in inspect.getsource(
        notifications._invoke_awslambda)
    assert list(inspect.signature(LambdaFunction.invoke).parameters) == [
        "self", "body", "request_headers", "response_headers"]
    assert "self._invoke_lambda(" in inspect.getsource(LambdaFunction.invoke)
    # The runtime reads the stored asynchronous settings and reserved concurrency.
    from moto.awslambda.models import EventInvokeConfig, LambdaBackend

    assert list(inspect.signature(LambdaBackend.put_function_event_invoke_config).parameters) == [
        "self", "function_name", "config"]
    assert list(inspect.signature(EventInvokeConfig).parameters) == [
        "arn", "last_modified", "config"]
    source = inspect.getsource(LambdaFunction.__init__)
    assert "self.event_invoke_config" in source and "self.reserved_concurrency" in source


def test_moto_private_names_of_local_cloudformation():
    """moto_patches.patch_cloudformation and local/cfn_resources.py lean on these."""
    from moto.applicationautoscaling.models import ApplicationAutoscalingBackend
    from moto.cloudformation import parsing
    from moto.cloudformation.models import CloudFormationBackend, Event, Stack

    assert version("moto") == "5.2.5"
    # The parser looks model classes up through these module functions at call time.
    assert "get_model_map()" in inspect.getsource(parsing.resource_class_from_type)
    assert "get_name_type_map()" in inspect.getsource(parsing.resource_name_property_from_type)
    assert "parse_and_create_resource(" in inspect.getsource(parsing.ResourceMap.__getitem__)
    assert list(inspect.signature(parsing.parse_and_create_resource).parameters) == [
        "logical_id", "resource_json", "resources_map", "account_id", "region_name"]
    assert "self.resource_map.create(" in inspect.getsource(Stack.create_resources)
    assert "new_stack.create_resources()" in inspect.getsource(
        CloudFormationBackend.create_stack)
    source = inspect.getsource(parsing.ResourceMap)
    for name in ("self._parsed_resources", "self._resource_json_map", "def _delete_resource"):
        assert name in source
    assert "self.output_map = " in inspect.getsource(Stack.__init__)
    assert list(inspect.signature(parsing.OutputMap).parameters) == [
        "resources", "template", "stack_id"]
    assert list(inspect.signature(Event).parameters) == [
        "stack_id", "stack_name", "logical_resource_id", "physical_resource_id",
        "resource_type", "resource_status", "resource_status_reason", "resource_properties"]
    assert hasattr(ApplicationAutoscalingBackend, "_scalable_target_exists")
    assert "self.policies" in inspect.getsource(ApplicationAutoscalingBackend.__init__)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("local")) as running:
        yield running


@pytest.fixture
def deployed(env, tmp_path):
    """A fresh stack per test (own prefix), removed afterwards."""
    prefix = "t" + os.urandom(3).hex()
    cfg = load_config(prefix=prefix, state_dir=str(tmp_path / "state"))
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)
    yield cfg, aws
    env.runtime.wait_idle(60)
    stack.down(cfg, aws, delete_bucket=True)


def set_function_env(cfg, aws, **extra: str) -> None:
    fn = aws.lambda_.get_function_configuration(FunctionName=cfg.function_name)
    variables = {**fn["Environment"]["Variables"], **extra}
    aws.lambda_.update_function_configuration(
        FunctionName=cfg.function_name, Environment={"Variables": variables}
    )


def results(cfg, aws) -> dict[str, dict]:
    bucket = cfg.bucket_name(aws.account_id)
    found = {}
    pages = aws.s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=cfg.output_prefix
    )
    for page in pages:
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".json"):
                body = aws.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                found[obj["Key"]] = json.loads(body)
    return found


def test_the_notification_not_a_direct_call_runs_the_handler(env, deployed):
    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    before = env.runtime.invocations
    record = stack.ask(PHOTOS[0], cfg, aws, timeout=60)
    assert record["status"] == "ok"
    assert "Offline stand-in" in record["answer"]
    assert env.runtime.wait_idle(30)
    assert env.runtime.invocations == before + 1
    log = env.log_path(cfg.function_name).read_text()
    assert "input/" + PHOTOS[0].name in log and "REPORT RequestId" in log

    # Without the notification, the same upload runs nothing and writes nothing.
    assert lambda_fn.remove_notification(aws, cfg, bucket)
    aws.s3.put_object(Bucket=bucket, Key="input/unwired.jpeg", Body=PHOTOS[1].read_bytes())
    env.runtime.wait_idle(30)
    assert env.runtime.invocations == before + 1
    assert "output/unwired.jpeg.json" not in results(cfg, aws)
    # Keys outside input/ never trigger it either (the filter is S3's, not the handler's).
    lambda_fn.ensure_notification(
        aws, cfg, bucket, aws.lambda_.get_function(FunctionName=cfg.function_name)[
            "Configuration"]["FunctionArn"]
    )
    aws.s3.put_object(Bucket=bucket, Key="elsewhere/photo.jpeg", Body=PHOTOS[1].read_bytes())
    env.runtime.wait_idle(30)
    assert env.runtime.invocations == before + 1


def test_upload_does_not_wait_for_the_model(env, deployed):
    cfg, aws = deployed
    # The model keeps the photo's request until released (or for 120 s): an upload that
    # waited for the function would return only after the model had answered.
    hold = env.model_server.faults.hold(n=1)
    calls = len(env.model_server.calls)
    try:
        aws.s3.put_object(Bucket=cfg.bucket_name(aws.account_id), Key="input/slow.jpeg",
                          Body=PHOTOS[2].read_bytes())
        answered_before_the_upload_returned = len(env.model_server.calls) > calls
        assert hold.arrived.wait(60)  # the function did run, and is waiting for the model
    finally:
        hold.release()
    assert not answered_before_the_upload_returned  # asynchronous, like S3 -> Lambda
    assert env.runtime.wait_idle(60)
    assert results(cfg, aws)["output/slow.jpeg.json"]["status"] == "ok"


def test_twenty_photos_at_once_give_twenty_results(env, deployed):
    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    keys = [f"input/batch/{i:02d} {PHOTOS[i % len(PHOTOS)].name}" for i in range(20)]
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda k: aws.s3.put_object(
            Bucket=bucket, Key=k, Body=PHOTOS[keys.index(k) % len(PHOTOS)].read_bytes()
        ), keys))
    assert env.runtime.wait_idle(240)
    found = results(cfg, aws)
    wanted = {stack.result_key(cfg, k) for k in keys}
    assert wanted <= set(found)
    assert all(found[k]["status"] == "ok" for k in wanted)


def test_model_server_down_or_slow_gives_error_records(env, deployed):
    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    set_function_env(cfg, aws, MODEL_TIMEOUT_SECONDS="1", MAX_ATTEMPTS="2",
                     RETRY_BASE_SECONDS="0.05")
    env.model_server.faults.delay(8.0)  # later than the handler waits (timeout + 5 s)
    aws.s3.put_object(Bucket=bucket, Key="input/slow model.jpeg", Body=PHOTOS[0].read_bytes())
    assert env.runtime.wait_idle(60)
    env.model_server.faults.clear()
    slow = results(cfg, aws)["output/slow model.jpeg.json"]
    assert slow["status"] == "error"
    assert slow["timing"]["attempts"] == 2

    # A model server that is down: connection refused on every attempt (a port of our own,
    # bound but never listening, so nothing else can be there).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        set_function_env(cfg, aws, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=down_url)
        aws.s3.put_object(Bucket=bucket, Key="input/server down.jpeg",
                          Body=PHOTOS[1].read_bytes())
        assert env.runtime.wait_idle(60)
    down = results(cfg, aws)["output/server down.jpeg.json"]
    assert down["status"] == "error"
    assert down["error"]["message"]


def test_cli_up_status_ask_down_against_the_emulated_account(env, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.setenv("VT_STATE_DIR", str(tmp_path / "cli-state"))
    monkeypatch.setenv("VT_PREFIX", "cli-run")
    assert main(["up"]) == 0
    assert main(["status", "--json"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{\n  \"region\""):])
    assert info["endpoint"]["state"] == "InService"
    assert info["function"]["trigger"] is True
    # up and status say what the nearby places cost per photo.
    assert out.count("nearby places $0.004 per photo with a position") == 2
    assert "unverified third-party list prices" in info["places_cost"]
    assert main(["ask", str(PHOTOS[3])]) == 0
    assert "Offline stand-in" in capsys.readouterr().out
    # Where it was taken: the real places nearby (the local stand-in's, labelled as such).
    assert main(["ask", str(PHOTOS[3]), "--near", "48.8584,2.2945"]) == 0
    asked = capsys.readouterr().out
    assert "Places to eat within 800 m (position from the position sent with the photo)" in asked
    assert "Stand-in restaurant 1 (not a real place)" in asked
    assert "(Nearby places: Amazon Location Service and its data providers)" in asked
    assert main(["ask", str(PHOTOS[3]), "--near", "2.2945,248.8584"]) == 2
    assert "latitude first" in capsys.readouterr().err
    env.runtime.wait_idle(30)
    assert main(["down", "--delete-bucket"]) == 0
    assert main(["down"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bucket"]["state"] == "absent"


def test_cli_errors_are_clear(env, monkeypatch, capsys):
    assert main(["up", "--model-profile", "gpt-vision"]) == 2
    assert "Known profiles" in capsys.readouterr().err
    assert main(["up", "--region", "mars-1"]) == 2
    assert "Unknown AWS region" in capsys.readouterr().err
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert main(["status"]) == 2
    assert "No AWS credentials" in capsys.readouterr().err


def _processes_under(folder: Path) -> list[str]:
    """Processes whose working directory is inside ``folder`` (the demo's Lambda workers run
    in the extracted zip under its temporary directory)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        if cwd.is_relative_to(folder):
            found.append(f"{proc.name}: {cwd}")
    return found


def test_demo_command_runs_offline_and_leaves_nothing_behind(tmp_path):
    """The README's main command, as a user runs it: no AWS credentials, no internet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    # How long it takes is benchmarks/local_mode.py's; the timeout only stops a hung run.
    done = subprocess.run(
        [sys.executable, "-m", "visual_tourism.cli", "local", "demo"],
        capture_output=True, text=True, timeout=420, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "answered by:" in out
    # Without weights or internet the default model falls back to the stand-in, and says why.
    if "stand-in" in out.split("answered by:")[1]:
        assert "Offline stand-in, not a model's answer" in out
    assert "local stack stopped" in out
    assert _processes_under(tmp_path / "tmp") == []
    assert list((tmp_path / "tmp").iterdir()) == []  # its work directory was removed too


def test_ask_again_with_the_same_photo(env, deployed):
    """A final answer is reused (no second inference); a failed one is retried and awaited."""
    cfg, aws = deployed
    set_function_env(cfg, aws, MAX_ATTEMPTS="1", RETRY_BASE_SECONDS="0.05")
    env.model_server.faults.fail(n=1, status=424)
    first = stack.ask(PHOTOS[0], cfg, aws, timeout=60)
    assert first["status"] == "error" and first["error"]["code"]
    calls = len(env.model_server.calls)
    second = stack.ask(PHOTOS[0], cfg, aws, timeout=60)  # same bytes, same key
    assert second["status"] == "ok"  # waited for the new result, not the stale error
    assert len(env.model_server.calls) == calls + 1
    assert env.runtime.wait_idle(30)
    third = stack.ask(PHOTOS[0], cfg, aws, timeout=60)
    assert third["answer"] == second["answer"]
    assert env.runtime.wait_idle(30)
    assert len(env.model_server.calls) == calls + 1  # the final answer was reused


def test_local_mode_takes_the_instance_types_the_real_api_takes(env, tmp_path):
    """moto's own allow-list refuses ml.g5 (the Qwen profiles' instance); local mode checks
    against botocore's SageMaker model instead, which still refuses a made-up type."""
    cfg = load_config(prefix="t" + os.urandom(3).hex(), state_dir=str(tmp_path / "state"),
                      model_profile="qwen2.5-vl-7b-instruct")
    assert cfg.effective_instance_type.startswith("ml.g5.")
    aws = Aws(cfg.region)
    client = aws.client("sagemaker")
    model = f"{cfg.prefix}-model"
    client.create_model(ModelName=model, ExecutionRoleArn=f"arn:aws:iam::{aws.account_id}:role/r",
                        PrimaryContainer={"Image": "image:latest"})
    for instance_type, accepted in ((cfg.effective_instance_type, True), ("ml.g5.bogus", False)):
        name = f"{cfg.prefix}-{instance_type.replace('.', '-')}"
        variant = {"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
                   "InstanceType": instance_type}
        if accepted:
            client.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
            client.delete_endpoint_config(EndpointConfigName=name)
        else:
            with pytest.raises(ClientError, match="failed to satisfy constraint"):
                client.create_endpoint_config(EndpointConfigName=name,
                                              ProductionVariants=[variant])
    client.delete_model(ModelName=model)


SYNC_HANDLER = '''
import os
CALLS = 0

def handler(event, context):
    global CALLS
    CALLS += 1
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"echo": event.get("x"), "calls": CALLS, "pid": os.getpid()}
'''


def test_a_synchronous_invoke_returns_the_handlers_result_like_lambda(env, tmp_path):
    """RequestResponse runs now, on a warm worker, and answers the handler's result (or its
    error with X-Amz-Function-Error); at the concurrency limit it is refused with a 429."""
    import io
    import zipfile

    aws = Aws("us-east-1")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fn.py", SYNC_HANDLER)
    name = "t" + os.urandom(3).hex() + "-sync"
    role = aws.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}
                                               ]}))["Role"]["Arn"]
    lam = aws.lambda_
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=role, Handler="fn.handler",
                        Code={"ZipFile": buffer.getvalue()}, Timeout=30)
    try:
        first = lam.invoke(FunctionName=name, Payload=json.dumps({"x": 1}))
        assert first["StatusCode"] == 200 and "FunctionError" not in first
        answer = json.loads(first["Payload"].read())
        assert (answer["echo"], answer["calls"]) == (1, 1)
        second = json.loads(lam.invoke(FunctionName=name, Payload=b'{"x": 2}')["Payload"].read())
        assert (second["echo"], second["calls"], second["pid"]) == (2, 2, answer["pid"])  # warm

        failed = lam.invoke(FunctionName=name, Payload=b'{"fail": true}')
        assert failed["FunctionError"] == "Unhandled"
        error = json.loads(failed["Payload"].read())
        assert "asked to fail" in error["errorMessage"]

        queued = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"x": 3}')
        assert queued["StatusCode"] == 202

        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
        # One attempt: boto3 would otherwise retry the 429 with its back-off (17 s of waiting).
        once = boto3.client("lambda", config=Config(retries={"total_max_attempts": 1}))
        with pytest.raises(ClientError) as refused:
            once.invoke(FunctionName=name, Payload=b'{"x": 4}')
        assert refused.value.response["Error"]["Code"] == "TooManyRequestsException"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    finally:
        env.runtime.wait_idle(30)
        lam.delete_function(FunctionName=name)
        aws.iam.delete_role(RoleName=name)


def test_the_cloudformation_stack_deploys_with_defaults_and_answers_a_photo(
        env, tmp_path, capsys, monkeypatch):
    """infra/README.md's steps against `local serve`, with the default configuration (the
    web page included): package, deploy, a photo answered, the page's API answering through
    the deployed web function, then delete leaves nothing."""
    import urllib.request

    from visual_tourism import infra, web
    from visual_tourism.local import web_front

    prefix = "cfn" + os.urandom(3).hex()
    monkeypatch.setenv("VT_PREFIX", prefix)
    monkeypatch.setenv("VT_STATE_DIR", str(tmp_path / "state"))
    out_dir = str(tmp_path / "build")
    assert main(["infra", "package", "--out-dir", out_dir]) == 0
    assert main(["infra", "deploy", "--out-dir", out_dir, "--poll", "0"]) == 0
    assert "CREATE_COMPLETE" in capsys.readouterr().out
    cfg = load_config()
    aws = Aws(cfg.region)
    assert infra.describe_stack(aws, infra.stack_name(cfg))["StackStatus"] == "CREATE_COMPLETE"

    # The bucket's notification (set by the template) runs the handler the stack deployed.
    record = stack.ask(PHOTOS[0], cfg, aws, timeout=60)
    assert record["status"] == "ok" and "Offline stand-in" in record["answer"]
    assert env.runtime.wait_idle(30)
    assert "REPORT RequestId" in env.log_path(cfg.function_name).read_text()

    # The page's API: the web function and access code the deploy made, behind the local front.
    front, _ = web_front.serve_local(cfg, env)
    try:
        request = urllib.request.Request(front.url + "presets", headers={
            "x-access-code": web.get_code(aws, cfg)})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
            assert "family" in answer.read().decode()
    finally:
        front.stop()

    assert main(["infra", "delete", "--delete-bucket", "--delete-artifacts", "--poll", "0"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert infra.describe_stack(aws, infra.stack_name(cfg)) is None
    assert not [b for b in aws.s3.list_buckets()["Buckets"] if b["Name"].startswith(prefix)]
    assert not [f for f in aws.lambda_.list_functions()["Functions"]
                if f["FunctionName"].startswith(prefix)]
    assert not [r for r in aws.iam.list_roles()["Roles"] if r["RoleName"].startswith(prefix)]
    assert not [a for a in aws.client("apigatewayv2").get_apis()["Items"]
                if a["Name"].startswith(prefix)]


def test_infra_delete_after_a_failed_deploy_is_clean_in_local_mode(env, tmp_path, capsys,
                                                                    monkeypatch):
    """A deploy that fails half-way (a role of that name exists) rolls back as on AWS; the
    delete afterwards is one clear message, not a 500 from the stand-in, and leaves nothing."""
    import json as json_

    from visual_tourism import iam, infra

    prefix = "cff" + os.urandom(3).hex()
    monkeypatch.setenv("VT_PREFIX", prefix)
    monkeypatch.setenv("VT_STATE_DIR", str(tmp_path / "state"))
    out_dir = str(tmp_path / "build")
    cfg = load_config()
    aws = Aws(cfg.region)
    assert main(["infra", "package", "--out-dir", out_dir]) == 0
    aws.iam.create_role(RoleName=cfg.lambda_role_name, AssumeRolePolicyDocument=json_.dumps(
        iam.trust_policy("lambda.amazonaws.com")))
    capsys.readouterr()
    assert main(["infra", "deploy", "--out-dir", out_dir, "--poll", "0"]) != 0
    said = capsys.readouterr()
    assert "ROLLBACK_COMPLETE" in said.err + said.out
    assert "LambdaRole (AWS::IAM::Role) CREATE_FAILED" in said.err + said.out
    assert main(["infra", "delete", "--delete-artifacts", "--poll", "0"]) == 0
    said = capsys.readouterr()
    assert "Traceback" not in said.err and "ResponseParserError" not in said.err + said.out
    assert f"delete: removed stack {infra.stack_name(cfg)}" in said.out
    assert not [b for b in aws.s3.list_buckets()["Buckets"] if b["Name"].startswith(prefix)]
    assert not [f for f in aws.lambda_.list_functions()["Functions"]
                if f["FunctionName"].startswith(prefix)]
    assert [r["RoleName"] for r in aws.iam.list_roles()["Roles"]
            if r["RoleName"].startswith(prefix)] == [cfg.lambda_role_name]
    aws.iam.delete_role(RoleName=cfg.lambda_role_name)
