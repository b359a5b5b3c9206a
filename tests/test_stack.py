"""The stack helpers against moto's emulated account: wiring, idempotency, ownership, errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from visual_tourism import (
    autoscaling,
    bucket,
    delivery,
    endpoint,
    iam,
    lambda_fn,
    logs,
    packaging,
    stack,
)
from visual_tourism.aws import Aws
from visual_tourism.config import STACK_TAG, load_config
from visual_tourism.errors import (
    BucketTakenError,
    ConfigError,
    CredentialsError,
    EndpointFailedError,
    NotOwnedError,
    RegionError,
    UnknownProfileError,
)

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("mocked_aws")


def no_sleep(_: float) -> None:
    pass


@pytest.fixture
def cfg():
    return load_config()


@pytest.fixture
def aws(cfg) -> Aws:
    return Aws(cfg.region, sleep=no_sleep)


def up(cfg, aws) -> dict[str, Any]:
    return stack.up(cfg, aws, endpoint_poll=0)


def snapshot(cfg, aws) -> dict[str, Any]:
    """Everything `up` sets, in a form that changes whenever any of it is modified."""
    name = cfg.bucket_name(aws.account_id)
    fn = aws.lambda_.get_function(FunctionName=cfg.function_name)["Configuration"]
    notif = aws.s3.get_bucket_notification_configuration(Bucket=name)
    notif.pop("ResponseMetadata")
    return {
        "objects": sorted(
            (o["Key"], o["ETag"], o["LastModified"].isoformat())
            for o in aws.s3.list_objects_v2(Bucket=name)["Contents"]
        ),
        "function": (fn["CodeSha256"], fn["LastModified"], fn["Environment"]),
        "policy": aws.lambda_.get_policy(FunctionName=cfg.function_name)["Policy"],
        "notification": notif,
        "roles": [
            aws.iam.get_role_policy(RoleName=r, PolicyName=p)["PolicyDocument"]
            for r, p in (
                (cfg.lambda_role_name, iam.LAMBDA_POLICY_NAME),
                (cfg.sagemaker_role_name, iam.SAGEMAKER_POLICY_NAME),
            )
        ],
        "models": endpoint.our_models(aws, cfg),
        "configs": endpoint.our_configs(aws, cfg),
        "endpoint": aws.sagemaker.describe_endpoint(EndpointName=cfg.endpoint_name)[
            "EndpointConfigName"
        ],
        "scaling": aws.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
            "ScalingPolicies"
        ],
    }


def test_up_wires_every_resource_as_designed(cfg, aws):
    names = up(cfg, aws)
    account = aws.account_id
    name = names["bucket"]
    assert name == f"visual-tourism-{account}-us-east-1"

    # Bucket: private, encrypted, TLS only, three folders and the example photo.
    block = aws.s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    assert block == bucket.PUBLIC_ACCESS_BLOCK
    rule = aws.s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]
    assert rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    policy = json.loads(aws.s3.get_bucket_policy(Bucket=name)["Policy"])
    assert policy["Statement"][0]["Effect"] == "Deny"
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    keys = {o["Key"] for o in aws.s3.list_objects_v2(Bucket=name)["Contents"]}
    # The folders, the in-context example, and the photos the seeded presets show the model.
    assert keys == {"input/", "example/", "output/", "example/trevi.jpeg",
                    "example/neuschwanstein.jpeg", "example/santiago_cathedral.jpeg",
                    "example/no_landmark.jpg"}

    # IAM: exactly the least-privilege statements.
    lambda_doc = aws.iam.get_role_policy(
        RoleName=cfg.lambda_role_name, PolicyName=iam.LAMBDA_POLICY_NAME
    )["PolicyDocument"]
    assert lambda_doc == iam.lambda_policy(cfg, account=account, bucket=name)
    resources = {s["Sid"]: s["Resource"] for s in lambda_doc["Statement"]}
    assert resources["InvokeThisEndpoint"].endswith(":endpoint/visual-tourism-endpoint")
    assert resources["ReadPhotosAndExample"] == [
        f"arn:aws:s3:::{name}/input/*", f"arn:aws:s3:::{name}/example/*"
    ]
    assert resources["ReadWriteResults"] == f"arn:aws:s3:::{name}/output/*"
    trust = aws.iam.get_role(RoleName=cfg.lambda_role_name)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    sm_trust = aws.iam.get_role(RoleName=cfg.sagemaker_role_name)["Role"][
        "AssumeRolePolicyDocument"
    ]
    assert sm_trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}

    # Lambda: settings, environment, and the trigger (permission + notification).
    fn = aws.lambda_.get_function(FunctionName=cfg.function_name)["Configuration"]
    assert fn["Handler"] == "lambda_code.lambda_handler"
    assert fn["Runtime"] == "python3.12"
    assert (fn["Timeout"], fn["MemorySize"]) == (300, 512)
    assert fn["Environment"]["Variables"] == lambda_fn.function_environment(cfg, name)
    assert fn["Environment"]["Variables"]["ENDPOINT_NAME"] == cfg.endpoint_name
    statement = json.loads(aws.lambda_.get_policy(FunctionName=cfg.function_name)["Policy"])[
        "Statement"
    ]
    assert len(statement) == 1
    assert statement[0]["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement[0]["Condition"]["ArnLike"]["AWS:SourceArn"] == f"arn:aws:s3:::{name}"
    assert statement[0]["Condition"]["StringEquals"]["AWS:SourceAccount"] == account
    notif = aws.s3.get_bucket_notification_configuration(Bucket=name)
    [trigger] = notif["LambdaFunctionConfigurations"]
    assert trigger["LambdaFunctionArn"] == fn["FunctionArn"]
    assert trigger["Events"] == ["s3:ObjectCreated:*"]
    [rule] = trigger["Filter"]["Key"]["FilterRules"]
    assert (rule["Name"].lower(), rule["Value"]) == ("prefix", "input/")
    # Both log groups exist before Lambda or SageMaker would make them, with a retention.
    for group in (logs.function_log_group(cfg), logs.endpoint_log_group(cfg)):
        [found] = aws.client("logs").describe_log_groups(logGroupNamePrefix=group)["logGroups"]
        assert found["retentionInDays"] == logs.RETENTION_DAYS

    # SageMaker: model in the profile's container, config, endpoint in service.
    ep = aws.sagemaker.describe_endpoint(EndpointName=cfg.endpoint_name)
    assert ep["EndpointStatus"] == "InService"
    conf = aws.sagemaker.describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
    variant = conf["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.g4dn.12xlarge"
    assert variant["VariantName"] == "AllTraffic"
    model = aws.sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Environment"]["HF_MODEL_ID"] == (
        "HuggingFaceM4/idefics-9b-instruct"
    )
    assert model["PrimaryContainer"]["Environment"]["SM_NUM_GPUS"] == "4"
    assert "huggingface-pytorch-tgi-inference" in model["PrimaryContainer"]["Image"]
    assert "tgi1.4.5" in model["PrimaryContainer"]["Image"]

    # Autoscaling on the variant.
    [target] = aws.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"
    ]
    assert target["ResourceId"] == "endpoint/visual-tourism-endpoint/variant/AllTraffic"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 5)
    [scaling] = aws.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
        "ScalingPolicies"
    ]
    tracking = scaling["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )
    assert (tracking["TargetValue"], tracking["ScaleInCooldown"],
            tracking["ScaleOutCooldown"]) == (5.0, 600, 300)


def test_up_twice_changes_nothing(cfg, aws):
    up(cfg, aws)
    before = snapshot(cfg, aws)
    calls: list[str] = []
    for service in ("s3", "iam", "lambda", "sagemaker", "application-autoscaling", "logs"):
        aws.client(service).meta.events.register(
            "before-call", lambda model, **_: calls.append(model.name)
        )
    up(cfg, aws)
    assert snapshot(cfg, aws) == before
    # Nothing is created, updated, added or deleted the second time; what remains are reads
    # and the declarative "set to this value" calls (Put*, Register*), which are no-ops here.
    changing = [c for c in calls if c.startswith(("Create", "Update", "Add", "Delete", "Remove"))]
    assert changing == []
    assert "PutObject" not in calls  # the example photo is not uploaded again


def test_up_after_a_failure_half_way_completes(cfg, aws, monkeypatch):
    real = lambda_fn.ensure_function

    def broken(*args, **kwargs):
        raise RuntimeError("network dropped")

    monkeypatch.setattr(lambda_fn, "ensure_function", broken)
    with pytest.raises(RuntimeError):
        up(cfg, aws)
    assert aws.sagemaker.list_endpoints()["Endpoints"]  # got that far
    monkeypatch.setattr(lambda_fn, "ensure_function", real)
    up(cfg, aws)
    assert stack.status(cfg, aws)["function"]["trigger"] is True


class UpdateRecorder:
    """moto has no UpdateEndpoint: answer it here, recording the request and (unless told to
    roll back) applying it to moto's endpoint. Also records every call made."""

    def __init__(self, cfg, aws, roll_back: str = "") -> None:
        from moto.sagemaker.models import sagemaker_backends

        self.backend = sagemaker_backends[aws.account_id][cfg.region]
        self.roll_back = roll_back
        self.requested: list[dict[str, Any]] = []
        self.events: list[str] = []
        for service in ("sagemaker", "application-autoscaling"):
            aws.client(service).meta.events.register(
                "before-call", lambda model, **_: self.events.append(model.name)
            )
        aws.sagemaker.meta.events.register("before-call.sagemaker.UpdateEndpoint", self.update)
        if roll_back:
            aws.sagemaker.meta.events.register(
                "after-call.sagemaker.DescribeEndpoint", self.reason
            )

    def update(self, params, **_):
        params = json.loads(params["body"])
        self.requested.append(params)
        self.events.append("UpdateEndpoint")  # answered here: the generic hook never sees it
        ep = self.backend.endpoints[params["EndpointName"]]
        if not self.roll_back:
            ep.endpoint_config_name = params["EndpointConfigName"]
        http = type("Http", (), {"status_code": 200})()
        return http, {"EndpointArn": ep.arn}  # (http response, parsed response)

    def reason(self, parsed, **_):
        parsed["FailureReason"] = self.roll_back


def test_changed_instance_type_updates_the_endpoint_and_prunes_the_old_config(cfg, aws):
    up(cfg, aws)
    calls = UpdateRecorder(cfg, aws)
    old = snapshot(cfg, aws)["configs"]
    bigger = cfg.replace(instance_type="ml.g4dn.16xlarge")
    up(bigger, aws)
    configs = endpoint.our_configs(aws, bigger)
    assert len(configs) == 1 and configs != old
    assert len(endpoint.our_models(aws, bigger)) == 1
    assert calls.requested == [
        {"EndpointName": cfg.endpoint_name, "EndpointConfigName": configs[0]}
    ]
    # SageMaker refuses to change the instance type of a variant registered for autoscaling:
    # it was deregistered before the update and registered again afterwards.
    assert calls.events.index("DeregisterScalableTarget") < calls.events.index("UpdateEndpoint")
    assert calls.events.index("UpdateEndpoint") < calls.events.index("RegisterScalableTarget")
    assert endpoint.describe(aws, bigger)["instance_type"] == "ml.g4dn.16xlarge"


def test_update_on_the_same_instance_type_keeps_autoscaling_and_capacity(cfg, aws):
    up(cfg, aws)
    calls = UpdateRecorder(cfg, aws)
    up(cfg.replace(min_instances=2), aws)
    [request] = calls.requested
    assert request["RetainAllVariantProperties"] is True
    assert "DeregisterScalableTarget" not in calls.events
    assert stack.status(cfg, aws)["autoscaling"]["min"] == 2


def test_a_rolled_back_update_is_an_error_and_the_serving_config_survives(cfg, aws):
    up(cfg, aws)
    serving = snapshot(cfg, aws)["endpoint"]
    UpdateRecorder(cfg, aws, roll_back="Insufficient capacity for ml.g4dn.16xlarge")
    with pytest.raises(EndpointFailedError, match="rolled it back.*Insufficient capacity"):
        up(cfg.replace(instance_type="ml.g4dn.16xlarge"), aws)
    assert aws.sagemaker.describe_endpoint(EndpointName=cfg.endpoint_name)[
        "EndpointConfigName"] == serving
    configs = endpoint.our_configs(aws, cfg)
    assert serving in configs and len(configs) == 2  # the failed one is kept to retry
    assert endpoint.variant_of(aws, serving)["ModelName"] in endpoint.our_models(aws, cfg)
    assert stack.status(cfg, aws)["function"]["trigger"] is True  # still wired: it works
    assert stack.status(cfg, aws)["autoscaling"]["state"] == "configured"  # given back


def _leftovers(cfg, aws) -> dict[str, Any]:
    logs = aws.client("logs").describe_log_groups()["logGroups"]
    return {
        "buckets": [b["Name"] for b in aws.s3.list_buckets()["Buckets"]],
        "roles": [r["RoleName"] for r in aws.iam.list_roles()["Roles"]],
        "functions": aws.lambda_.list_functions()["Functions"],
        "endpoints": aws.sagemaker.list_endpoints()["Endpoints"],
        "configs": aws.sagemaker.list_endpoint_configs()["EndpointConfigs"],
        "models": aws.sagemaker.list_models()["Models"],
        "targets": aws.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
            "ScalableTargets"
        ],
        "policies": aws.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")[
            "ScalingPolicies"
        ],
        "log_groups": [g["logGroupName"] for g in logs],
    }


def test_down_removes_everything_and_is_safe_twice(cfg, aws):
    up(cfg, aws)
    removed = stack.down(cfg, aws)
    left = _leftovers(cfg, aws)
    assert left["buckets"] == [cfg.bucket_name(aws.account_id)]  # kept unless asked
    assert {k: v for k, v in left.items() if k != "buckets"} == {
        k: [] for k in left if k != "buckets"
    }
    assert any("endpoint" in r for r in removed)
    assert stack.down(cfg, aws) == []  # nothing left to do, no error
    stack.down(cfg, aws, delete_bucket=True)
    assert _leftovers(cfg, aws)["buckets"] == []
    assert not cfg.state_path.exists()


def test_down_never_touches_what_it_did_not_create(cfg, aws):
    aws.iam.create_role(RoleName=cfg.lambda_role_name,
                        AssumeRolePolicyDocument=json.dumps(iam.trust_policy("lambda.amazonaws.com")))
    with pytest.raises(NotOwnedError, match="not created by visual-tourism"):
        up(cfg, aws)
    stack.down(cfg, aws, delete_bucket=True)
    assert aws.iam.get_role(RoleName=cfg.lambda_role_name)  # still there
    # A foreign bucket with our default name is refused too, and survives down.
    other = cfg.replace(prefix="other-stack")
    aws.s3.create_bucket(Bucket=other.bucket_name(aws.account_id))
    with pytest.raises(NotOwnedError):
        bucket.ensure_bucket(aws, other)
    stack.down(other, aws, delete_bucket=True)
    assert bucket.bucket_state(aws, other.bucket_name(aws.account_id)) == "exists"


def test_down_leaves_a_foreign_endpoint_its_scaling_and_log_groups(cfg, aws):
    """Someone else's endpoint happens to have our name: down must not touch it or what hangs
    off its name (the scalable target, the log groups)."""
    aws.sagemaker.create_model(
        ModelName="theirs", ExecutionRoleArn="arn:aws:iam::000000000000:role/theirs",
        PrimaryContainer={"Image": "000000000000.dkr.ecr.us-east-1.amazonaws.com/x:1"},
    )
    aws.sagemaker.create_endpoint_config(EndpointConfigName="theirs", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "theirs", "InstanceType": "ml.g4dn.xlarge",
        "InitialInstanceCount": 1}])
    aws.sagemaker.create_endpoint(EndpointName=cfg.endpoint_name, EndpointConfigName="theirs")
    aws.autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=autoscaling.resource_id(cfg),
        ScalableDimension=autoscaling.DIMENSION, MinCapacity=1, MaxCapacity=2)
    for group in (logs.function_log_group(cfg), logs.endpoint_log_group(cfg)):
        aws.client("logs").create_log_group(logGroupName=group)

    stack.down(cfg, aws, delete_bucket=True)

    left = _leftovers(cfg, aws)
    assert [e["EndpointName"] for e in left["endpoints"]] == [cfg.endpoint_name]
    assert len(left["targets"]) == 1
    assert sorted(left["log_groups"]) == sorted(
        [logs.function_log_group(cfg), logs.endpoint_log_group(cfg)])


def test_notification_merge_keeps_other_notifications(cfg, aws):
    name = bucket.ensure_bucket(aws, cfg)
    theirs = {
        "Id": "someone-elses",
        "LambdaFunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:other",
        "Events": ["s3:ObjectRemoved:*"],
    }
    aws.s3.put_bucket_notification_configuration(
        Bucket=name, NotificationConfiguration={"LambdaFunctionConfigurations": [theirs]}
    )
    arn = "arn:aws:lambda:us-east-1:000000000000:function:ours"
    lambda_fn.ensure_notification(aws, cfg, name, arn)
    lambda_fn.ensure_notification(aws, cfg, name, arn)
    ids = [c["Id"] for c in aws.s3.get_bucket_notification_configuration(Bucket=name)[
        "LambdaFunctionConfigurations"]]
    assert ids == ["someone-elses", "visual-tourism-input-trigger"]
    assert lambda_fn.remove_notification(aws, cfg, name)
    ids = [c["Id"] for c in aws.s3.get_bucket_notification_configuration(Bucket=name)[
        "LambdaFunctionConfigurations"]]
    assert ids == ["someone-elses"]


def test_permission_request_is_restricted_to_bucket_and_account(cfg):
    """The exact AddPermission call (moto does not evaluate it, so check what is sent)."""
    client = boto3.client("lambda", region_name="us-east-1")
    aws = Aws("us-east-1", sleep=no_sleep)
    aws._clients["lambda"] = client
    aws.identity = {"Account": "000000000000"}
    with Stubber(client) as stub:
        stub.add_client_error("get_policy", "ResourceNotFoundException")
        stub.add_response("add_permission", {"Statement": "{}"}, {
            "FunctionName": cfg.function_name,
            "StatementId": lambda_fn.PERMISSION_ID,
            "Action": "lambda:InvokeFunction",
            "Principal": "s3.amazonaws.com",
            "SourceArn": "arn:aws:s3:::my-bucket",
            "SourceAccount": "000000000000",
        })
        lambda_fn.ensure_permission(aws, cfg, "my-bucket")
        stub.assert_no_pending_responses()


def test_scaling_policy_request(cfg):
    client = boto3.client("application-autoscaling", region_name="us-east-1")
    aws = Aws("us-east-1", sleep=no_sleep)
    aws._clients["application-autoscaling"] = client
    rid = "endpoint/visual-tourism-endpoint/variant/AllTraffic"
    dim = "sagemaker:variant:DesiredInstanceCount"
    with Stubber(client) as stub:
        stub.add_response("describe_scalable_targets", {"ScalableTargets": []})
        stub.add_response("describe_scaling_policies", {"ScalingPolicies": []})
        stub.add_response("register_scalable_target", {}, {
            "ServiceNamespace": "sagemaker", "ResourceId": rid, "ScalableDimension": dim,
            "MinCapacity": 1, "MaxCapacity": 5,
        })
        stub.add_response("put_scaling_policy", {"PolicyARN": "arn:x"}, {
            "PolicyName": "visual-tourism-invocations-per-instance",
            "ServiceNamespace": "sagemaker", "ResourceId": rid, "ScalableDimension": dim,
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": 5.0,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                "ScaleInCooldown": 600,
                "ScaleOutCooldown": 300,
            },
        })
        autoscaling.ensure_autoscaling(aws, cfg)
        stub.assert_no_pending_responses()


def test_failed_endpoint_reports_its_failure_reason_and_up_recovers(cfg, aws):
    """moto's endpoints are InService at once, so the service's answer is made 'Failed'."""
    reason = "CUDA out of memory while loading shard 3"

    def failed(parsed, **_):
        parsed.update(EndpointStatus="Failed", FailureReason=reason)

    aws.sagemaker.meta.events.register("after-call.sagemaker.DescribeEndpoint", failed)
    with pytest.raises(EndpointFailedError, match=reason) as err:
        up(cfg, aws)
    assert "/aws/sagemaker/Endpoints/visual-tourism-endpoint" in str(err.value)
    assert stack.status(cfg, aws)["function"]["trigger"] is False  # never wired to a failure

    aws.sagemaker.meta.events.unregister("after-call.sagemaker.DescribeEndpoint", failed)
    up(cfg, aws)
    assert stack.status(cfg, aws)["endpoint"]["state"] == "InService"


def test_taken_bucket_name_says_how_to_choose_another(cfg, aws, monkeypatch):
    monkeypatch.setenv("MOTO_ACCOUNT_ID", "111122223333")
    boto3.client("s3").create_bucket(Bucket="a-taken-name")
    monkeypatch.delenv("MOTO_ACCOUNT_ID")
    with pytest.raises(BucketTakenError, match="VT_BUCKET"):
        bucket.ensure_bucket(aws, cfg.replace(bucket="a-taken-name"))


def test_missing_credentials_are_a_clear_error(cfg, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CredentialsError, match="aws configure"):
        stack.up(cfg, Aws(cfg.region, session=boto3.session.Session()))


def test_configuration_errors():
    with pytest.raises(RegionError, match="us-east-7"):
        load_config(region="us-east-7")
    with pytest.raises(UnknownProfileError, match="idefics-9b-instruct"):
        load_config(model_profile="gpt-vision")
    with pytest.raises(Exception, match="min=3 max=2"):
        load_config(min_instances=3, max_instances=2)


def test_config_layers(tmp_path, monkeypatch):
    path = tmp_path / "vt.toml"
    path.write_text('prefix = "from-file"\nmax_instances = 3\n')
    monkeypatch.setenv("VT_MAX_INSTANCES", "4")
    cfg = load_config(path)
    assert (cfg.prefix, cfg.max_instances) == ("from-file", 4)
    assert load_config(path, max_instances=2).max_instances == 2
    path.write_text('prefx = "typo"\n')
    with pytest.raises(Exception, match="Unknown setting 'prefx'"):
        load_config(path)


def test_the_handler_imports_the_modules_beside_it_only_where_needed():
    # A cold start compiles lambda_code.py and the photo_handler modules every photo uses:
    # presets, inline images (Pillow) and async inference are imported by the paths that
    # use them.
    code = ("import sys, lambda_code; "
            "print(sorted({'photo_handler.presets', 'photo_handler.presets_schema', "
            "'photo_handler.resize', 'photo_handler.asynchronous', 'PIL'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout.split() == ["[]"]


def test_lambda_zip_is_the_handler_and_its_folder_the_same_bytes_every_time(tmp_path):
    first = packaging.build_zip("photo")
    packaging._built.clear()  # built again, not this process's copy
    second = packaging.build_zip("photo")
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        infos = archive.infolist()
        # The handler, and the folder of modules it calls, zipped whole (no bytecode).
        assert [i.filename for i in infos] == ["lambda_code.py"] + sorted(
            f"photo_handler/{path.name}" for path in (ROOT / "photo_handler").glob("*.py"))
        assert {"photo_handler/serving_limits.py", "photo_handler/presets_schema.py",
                "photo_handler/presets.py", "photo_handler/resize.py",
                "photo_handler/asynchronous.py"} <= {i.filename for i in infos}
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644
            assert archive.read(info) == (ROOT / info.filename).read_bytes()
    (tmp_path / "PIL").mkdir()
    (tmp_path / "PIL" / "__init__.py").write_text("")
    with_vendor = packaging.build_zip("photo", tmp_path)  # vendored packages at the root
    assert zipfile.ZipFile(io.BytesIO(with_vendor)).namelist()[0] == "PIL/__init__.py"


def test_status_reports_state_and_cost(cfg, aws):
    assert stack.status(cfg, aws)["endpoint"]["state"] == "absent"
    up(cfg, aws)
    info = stack.status(cfg, aws)
    assert info["bucket"]["private"] is True
    assert info["endpoint"]["state"] == "InService"
    assert info["cost_per_hour_usd"] == pytest.approx(4.89)
    assert "ml.g4dn.12xlarge" in info["cost"]
    assert info["autoscaling"]["state"] == "configured"
    assert info["function"]["trigger"] is True
    tags = aws.lambda_.list_tags(Resource=aws.lambda_.get_function(
        FunctionName=cfg.function_name)["Configuration"]["FunctionArn"])["Tags"]
    assert tags[STACK_TAG] == cfg.prefix


@pytest.mark.parametrize(
    "failing_step",
    ["create_roles", "start_endpoint", "deploy_function", "wait_for_endpoint",
     "attach_autoscaling", "configure_delivery", "connect_trigger"],
)
def test_down_after_up_failed_at_any_step_leaves_nothing(cfg, aws, monkeypatch, failing_step):
    real = getattr(stack, failing_step)

    def half_done(*args, **kwargs):
        # The step does part of its work, then the connection drops.
        if failing_step not in ("create_roles", "start_endpoint"):
            real(*args, **kwargs)
        raise ConnectionError(f"network dropped during {failing_step}")

    monkeypatch.setattr(stack, failing_step, half_done)
    with pytest.raises(ConnectionError):
        up(cfg, aws)
    stack.down(cfg, aws, delete_bucket=True)
    assert all(not v for v in _leftovers(cfg, aws).values()), _leftovers(cfg, aws)


def test_bucket_is_tagged_in_the_create_call(cfg):
    """An interrupted `up` must not leave an untagged bucket (moto ignores these tags, so the
    request itself is checked)."""
    client = boto3.client("s3", region_name="eu-west-1")
    aws = Aws("eu-west-1", sleep=no_sleep)
    aws._clients["s3"] = client
    aws.identity = {"Account": "000000000000"}
    tags = [{"Key": STACK_TAG, "Value": cfg.prefix}]
    with Stubber(client) as stub:
        stub.add_client_error("head_bucket", "404", http_status_code=404)
        stub.add_response("create_bucket", {}, {
            "Bucket": "my-bucket", "ObjectOwnership": "BucketOwnerEnforced",
            "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1", "Tags": tags},
        })
        # the bucket_exists waiter matches on the HTTP status
        stub.add_response("head_bucket", {"ResponseMetadata": {"HTTPStatusCode": 200}})
        stub.add_response("put_bucket_tagging", {})
        for operation in ("put_public_access_block", "put_bucket_encryption"):
            stub.add_response(operation, {})
        stub.add_client_error("get_bucket_policy", "NoSuchBucketPolicy", http_status_code=404)
        stub.add_response("put_bucket_policy", {})
        bucket.ensure_private_bucket(aws, cfg, "my-bucket")
        stub.assert_no_pending_responses()


def test_function_ownership_without_tags_in_get_function(cfg, aws):
    """GetFunction leaves out Tags for callers without lambda:ListTags: ask ListTags then."""
    up(cfg, aws)

    def without_tags(parsed, **_):
        parsed.pop("Tags", None)

    aws.lambda_.meta.events.register("after-call.lambda.GetFunction", without_tags)
    up(cfg, aws)  # still ours: no NotOwnedError
    assert stack.down(cfg, aws)
    assert aws.lambda_.list_functions()["Functions"] == []


def test_bursts_reserved_concurrency_retries_age_and_destination(cfg, aws):
    """Sized from the endpoint's capacity, updated when the settings change, removed by down."""
    up(cfg, aws)
    name = cfg.bucket_name(aws.account_id)
    fn = cfg.function_name
    assert cfg.reserved_concurrency == cfg.max_instances * cfg.requests_per_instance == 20
    assert aws.lambda_.get_function_concurrency(FunctionName=fn)[
        "ReservedConcurrentExecutions"] == 20
    settings = aws.lambda_.get_function_event_invoke_config(FunctionName=fn)
    assert settings["MaximumRetryAttempts"] == 2
    assert settings["MaximumEventAgeInSeconds"] == 3600
    assert settings["DestinationConfig"]["OnFailure"]["Destination"] == f"arn:aws:s3:::{name}"
    # Lambda writes failed events with the function's role: it may write there, nowhere else.
    policy = iam.lambda_policy(cfg, account=aws.account_id, bucket=name)
    (statement,) = [s for s in policy["Statement"] if s["Sid"] == "RecordFailedEvents"]
    assert statement["Action"] == ["s3:PutObject"]
    assert statement["Resource"] == f"arn:aws:s3:::{name}/{delivery.destination_prefix(cfg)}*"
    assert delivery.destination_prefix(cfg) == f"aws/lambda/async/{fn}/"
    assert not delivery.destination_prefix(cfg).startswith(cfg.input_prefix)

    bigger = cfg.replace(max_instances=3, requests_per_instance=8, max_event_age=600,
                         retry_attempts=1)
    stack.configure_delivery(bigger, aws)
    assert aws.lambda_.get_function_concurrency(FunctionName=fn)[
        "ReservedConcurrentExecutions"] == 24
    settings = aws.lambda_.get_function_event_invoke_config(FunctionName=fn)
    assert (settings["MaximumRetryAttempts"], settings["MaximumEventAgeInSeconds"]) == (1, 600)
    status = stack.status(bigger, aws)["delivery"]
    assert status == {"reserved_concurrency": 24, "retry_attempts": 1, "max_event_age": 600,
                      "on_failure": f"arn:aws:s3:::{name}", "failed_events": 0}

    assert delivery.remove_delivery(aws, bigger) is True
    assert aws.lambda_.get_function_concurrency(FunctionName=fn).get(
        "ReservedConcurrentExecutions") is None
    assert delivery.remove_delivery(aws, bigger) is False


@pytest.mark.parametrize(("setting", "value"), [
    ("requests_per_instance", 0), ("max_event_age", 59), ("max_event_age", 21601),
    ("retry_attempts", 3), ("requests_per_instance", 181)])
def test_burst_settings_are_validated(setting, value):
    with pytest.raises(ConfigError, match=setting if setting != "requests_per_instance"
                       or value == 0 else "at most 900"):
        load_config(**{setting: value})


@pytest.mark.parametrize(("changes", "names"), [
    ({"input_prefix": (same := "x/"), "output_prefix": same}, ("input_prefix", "output_prefix")),
    ({"output_prefix": "input/results/"}, ("input_prefix", "output_prefix")),
    ({"example_prefix": "output/"}, ("example_prefix", "output_prefix")),
])
def test_folders_that_share_a_prefix_are_refused(changes, names):
    # One string object for two settings (as a notebook may save them): compare values.
    with pytest.raises(ConfigError, match=f"{names[0]} .* and {names[1]} .* overlap"):
        load_config(**changes)
