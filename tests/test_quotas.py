"""The limits room (visual_tourism/quotas.py): the account's quotas checked before `up` creates
anything, in local mode (quotas served by the stand-in, set with VT_LOCAL_QUOTAS) and against
AWS's own response shapes (botocore's Stubber validates every request and response against the
service models of service-quotas, sagemaker and lambda)."""

from __future__ import annotations

import datetime
import json
import os

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from visual_tourism import cli, permissions, quotas, stack
from visual_tourism.aws import Aws
from visual_tourism.config import load_config
from visual_tourism.errors import ConfigError
from visual_tourism.local import quotas as local_quotas
from visual_tourism.local.stack import CREDENTIALS, LocalStack

TYPE = "ml.g4dn.12xlarge"  # the default profile's instance type
QUOTA = f"{TYPE} for endpoint usage"


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("quotas")) as running:
        yield running


def _root(env, service):
    return boto3.client(service, endpoint_url=env.moto_url, region_name="us-east-1",
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def _model(sm, prefix: str) -> str:
    name = prefix + os.urandom(2).hex()
    sm.create_model(ModelName=name, ExecutionRoleArn="arn:aws:iam::123456789012:role/x",
                    PrimaryContainer={"Image": "img"})
    return name


def _endpoint_config(sm, model: str, instances: int, name: str = "") -> str:
    """An endpoint config (named as the model unless ``name``) of ``instances`` x TYPE."""
    sm.create_endpoint_config(EndpointConfigName=name or model, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": model, "InstanceType": TYPE,
        "InitialInstanceCount": instances}])
    return name or model


def _cfg(tmp_path, prefix: str = "", **extra):
    return load_config(prefix=prefix or "q" + os.urandom(3).hex(),
                       state_dir=str(tmp_path / "state"), **extra)


def _line(limits: quotas.Limits, item: str) -> quotas.Line:
    return next(line for line in limits.lines if line.item == item)


def _nothing_of(env, cfg) -> None:
    buckets = [b["Name"] for b in _root(env, "s3").list_buckets()["Buckets"]]
    assert not [b for b in buckets if cfg.prefix in b]
    roles = [r["RoleName"] for r in _root(env, "iam").list_roles()["Roles"]]
    assert not [r for r in roles if r.startswith(cfg.prefix)]
    sagemaker = _root(env, "sagemaker")
    assert not sagemaker.list_endpoints(NameContains=cfg.prefix)["Endpoints"]
    assert not sagemaker.list_models(NameContains=cfg.prefix)["Models"]
    functions = [f["FunctionName"] for f in _root(env, "lambda").list_functions()["Functions"]]
    assert not [f for f in functions if f.startswith(cfg.prefix)]


def _in_use(env) -> tuple[int, int]:
    """(instances of TYPE held by endpoints, executions reserved by functions) already in the
    stand-in: moto's state is the process's, shared with other modules' stacks."""
    cfg = load_config(prefix="nobody")
    used = quotas.endpoint_usage(Aws(cfg.region), cfg).get(TYPE, 0)
    limit = _root(env, "lambda").get_account_settings()["AccountLimit"]
    return used, limit["ConcurrentExecutions"] - limit["UnreservedConcurrentExecutions"]


def _code(env, name: str, service: str = "sagemaker") -> str:
    pages = _root(env, "service-quotas").get_paginator("list_service_quotas").paginate(
        ServiceCode=service)
    return next(q["QuotaCode"] for p in pages for q in p["Quotas"] if q["QuotaName"] == name)


# -- local mode: the stand-in serves and enforces quotas -------------------------------------------
def test_moto_private_names_of_the_local_quotas():
    """moto_patches.patch_quotas leans on these; a moto release that moves them (or adds the
    calls it serves itself) must fail here."""
    import inspect
    from importlib.metadata import version

    from moto.awslambda import urls as lambda_urls
    from moto.awslambda.models import LambdaBackend
    from moto.awslambda.responses import LambdaResponse
    from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend
    from moto.servicequotas.models import ServiceQuotasBackend
    from moto.servicequotas.responses import ServiceQuotasResponse

    assert version("moto") == "5.2.5"
    if not inspect.getattr_static(LambdaResponse, "get_account_settings", None):
        assert not any("account-settings" in path for path in lambda_urls.url_paths)
    assert list(inspect.signature(LambdaBackend.put_function_concurrency).parameters) == [
        "self", "function_name", "reserved_concurrency"]
    assert list(inspect.signature(SageMakerModelBackend.create_endpoint).parameters) == [
        "self", "endpoint_name", "endpoint_config_name", "tags"]
    assert list(inspect.signature(
        SageMakerModelBackend.update_endpoint_weights_and_capacities).parameters) == [
        "self", "endpoint_name", "desired_weights_and_capacities"]
    assert list(inspect.signature(ServiceQuotasBackend.get_service_quota).parameters) == [
        "self", "service_code", "quota_code"]
    assert hasattr(ServiceQuotasResponse, "list_aws_default_service_quotas")
    for name in ("self.endpoint_name", "self.endpoint_config_name", "self.endpoint_status",
                 "self.production_variants"):
        assert name in inspect.getsource(FakeEndpoint.__init__)
    assert "self.endpoints" in inspect.getsource(SageMakerModelBackend.__init__)
    assert "self.endpoint_configs" in inspect.getsource(SageMakerModelBackend.__init__)


def test_local_quotas_are_served_as_service_quotas_and_lambda_serve_them(env, monkeypatch):
    monkeypatch.setenv(local_quotas.ENV, f"{QUOTA.upper()}=3;concurrent EXECUTIONS=250")
    sq = _root(env, "service-quotas")
    pages = list(sq.get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker"))
    assert len(pages) > 1  # paginated as AWS does (100 a page)
    listed = {q["QuotaName"]: q for p in pages for q in p["Quotas"]}
    assert listed[QUOTA]["Value"] == 3.0  # names are case-insensitive in the variable
    assert listed["ml.g5.2xlarge for endpoint usage"]["Value"] == float(
        local_quotas.DEFAULT_ENDPOINT_INSTANCES)  # generous by default
    code = listed[QUOTA]["QuotaCode"]
    assert sq.get_service_quota(ServiceCode="sagemaker", QuotaCode=code)["Quota"]["Value"] == 3
    assert sq.get_service_quota(ServiceCode="lambda", QuotaCode="L-B99A9384")["Quota"][
        "Value"] == 250
    settings = _root(env, "lambda").get_account_settings()["AccountLimit"]
    assert settings["ConcurrentExecutions"] == 250
    assert settings["UnreservedConcurrentExecutions"] <= 250


def test_local_sagemaker_and_lambda_refuse_beyond_their_quotas_as_aws_does(env, monkeypatch):
    used, reserved = _in_use(env)
    monkeypatch.setenv(local_quotas.ENV,
                       f"{QUOTA}={used + 1};Concurrent executions={150 + reserved}")
    sm = _root(env, "sagemaker")
    name = _endpoint_config(sm, _model(sm, "quota-probe-"), 2)
    with pytest.raises(ClientError) as refused:
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    assert refused.value.response["Error"]["Code"] == "ResourceLimitExceeded"
    assert (f"The account-level service limit '{QUOTA}' is {used + 1} Instances, with current "
            f"utilization of {used} Instances and a request delta of 2 Instances"
            ) in refused.value.response["Error"]["Message"]
    assert not sm.list_endpoints(NameContains=name)["Endpoints"]
    # Within the quota it starts; growing past it (autoscaling's call) is refused the same way.
    _endpoint_config(sm, name, 1, name + "-one")
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name + "-one")
    try:
        with pytest.raises(ClientError) as grown:
            sm.update_endpoint_weights_and_capacities(
                EndpointName=name,
                DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic",
                                              "DesiredInstanceCount": 2}])
        assert grown.value.response["Error"]["Code"] == "ResourceLimitExceeded"
        sm.update_endpoint_weights_and_capacities(
            EndpointName=name,
            DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 1}])
    finally:
        sm.delete_endpoint(EndpointName=name)
        sm.delete_endpoint_config(EndpointConfigName=name + "-one")

    role = _root(env, "iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    lam = _root(env, "lambda")
    fn = lam.create_function(FunctionName=name, Runtime="python3.12", Handler="x.h", Role=role,
                             Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18})["FunctionName"]
    try:
        lam.put_function_concurrency(FunctionName=fn, ReservedConcurrentExecutions=50)
        unreserved = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
        assert unreserved <= 100
        with pytest.raises(ClientError, match="below its minimum value of \\[100\\]"):
            lam.put_function_concurrency(FunctionName=fn, ReservedConcurrentExecutions=51)
    finally:
        lam.delete_function(FunctionName=fn)
        _root(env, "iam").delete_role(RoleName=name)
        sm.delete_endpoint_config(EndpointConfigName=name)
        sm.delete_model(ModelName=name)


def test_a_quota_setting_that_names_no_quota_is_refused():
    with pytest.raises(ConfigError, match="'ml.g4dn.12xlarge for endpoint use=0' names no quota"):
        local_quotas.parse("ml.g4dn.12xlarge for endpoint use=0")
    with pytest.raises(ConfigError, match="a number >= 0"):
        local_quotas.parse(f"{QUOTA}=-1")
    assert local_quotas.parse(f" {QUOTA} = 2 ; ") == {QUOTA: 2.0}


def test_a_zero_quota_refuses_up_with_nothing_created(env, tmp_path, monkeypatch):
    used, _ = _in_use(env)
    monkeypatch.setenv(local_quotas.ENV, f"{QUOTA}=0")
    cfg = _cfg(tmp_path)
    lines: list[str] = []
    with pytest.raises(quotas.LimitsShortError, match="Nothing was created") as refused:
        stack.up(cfg, Aws(cfg.region), progress=lines.append, endpoint_poll=0.1)
    _nothing_of(env, cfg)
    text = str(refused.value)
    code = _code(env, QUOTA)
    assert (f"aws service-quotas request-service-quota-increase --service-code sagemaker "
            f"--quota-code {code} --desired-value {used + 5} --region us-east-1") in text
    assert "the endpoint cannot even start" in text
    assert f"servicequotas/home/services/sagemaker/quotas/{code}" in text  # the console path
    # A model whose instance type has room is offered; no smaller plan of this one fits.
    assert "--model-profile smolvlm-instruct" in text and "VT_MAX_INSTANCES" not in text


def test_a_quota_of_two_with_five_max_instances_offers_the_smaller_plan(env, tmp_path,
                                                                         monkeypatch):
    used, _ = _in_use(env)
    monkeypatch.setenv(local_quotas.ENV, f"{QUOTA}={used + 2}")
    cfg = _cfg(tmp_path)
    assert cfg.max_instances == 5
    line = _line(quotas.check(cfg, Aws(cfg.region)), "endpoint instances")
    assert line.verdict == quotas.SHORT
    assert f"is {used + 2}, {used} in use by other endpoints" in line.figure
    assert "needs 1 to start and 5 at full scale" in line.figure
    todo = "\n".join(line.todo)
    assert "'VT_MAX_INSTANCES=2 visual-tourism up'" in todo
    assert f"--quota-code {_code(env, QUOTA)} --desired-value {used + 5}" in todo
    # The smaller plan fits.
    assert _line(quotas.check(cfg.replace(max_instances=2), Aws(cfg.region)),
                 "endpoint instances").verdict == quotas.OK


def test_other_endpoints_use_of_the_type_counts(env, tmp_path, monkeypatch):
    used, _ = _in_use(env)
    monkeypatch.setenv(local_quotas.ENV, f"{QUOTA}={used + 4}")
    sm = _root(env, "sagemaker")
    name = _endpoint_config(sm, _model(sm, "other-team-"), 3)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    try:
        cfg = _cfg(tmp_path)
        line = _line(quotas.check(cfg, Aws(cfg.region)), "endpoint instances")
        assert line.verdict == quotas.SHORT
        assert f"is {used + 4}, {used + 3} in use by other endpoints" in line.figure
        assert "room for 1" in line.figure
        todo = "\n".join(line.todo)
        assert "VT_MAX_INSTANCES=1 " in todo
        assert f"--desired-value {used + 8} " in todo  # what others hold + 5
    finally:
        sm.delete_endpoint(EndpointName=name)
        sm.delete_endpoint_config(EndpointConfigName=name)
        sm.delete_model(ModelName=name)


def test_low_lambda_concurrency_is_caught(env, tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)  # reserves 5 x 4 = 20
    _, reserved = _in_use(env)
    monkeypatch.setenv(local_quotas.ENV, f"Concurrent executions={10 + reserved}")
    line = _line(quotas.check(cfg, Aws(cfg.region)), "Lambda concurrency")
    assert line.verdict == quotas.SHORT and f"is {10 + reserved}, 10 unreserved" in line.figure
    assert "room for 0" in line.figure
    # 20 reserved + the 100 Lambda keeps unreserved + what other functions reserve.
    assert (f"--service-code lambda --quota-code L-B99A9384 --desired-value {120 + reserved}"
            in "\n".join(line.todo))
    assert not any("VT_MAX_INSTANCES" in step for step in line.todo)  # nothing smaller fits
    with pytest.raises(quotas.LimitsShortError, match="Lambda concurrency"):
        stack.up(cfg, Aws(cfg.region), endpoint_poll=0.1)
    _nothing_of(env, cfg)

    monkeypatch.setenv(local_quotas.ENV, f"Concurrent executions={110 + reserved}")  # room 10
    todo = "\n".join(_line(quotas.check(cfg, Aws(cfg.region)), "Lambda concurrency").todo)
    assert "'VT_MAX_INSTANCES=2 visual-tourism up' (reserves 8)" in todo
    assert "'VT_REQUESTS_PER_INSTANCE=2 visual-tourism up' (reserves 10)" in todo


def test_check_in_local_mode_answers_for_local_serves_credentials(env, tmp_path, capsys,
                                                                  monkeypatch):
    prefix = "qc" + os.urandom(2).hex()
    assert cli.main(["check", "--prefix", prefix]) == 0
    out = capsys.readouterr().out
    assert "cannot tell" not in out and "Ask your administrator" not in out
    assert "local mode's administrator credentials" in out
    assert "ok      up: bucket" in out and "ok      down" in out
    assert "ok          endpoint instances: 'ml.g4dn.12xlarge for endpoint usage'" in out
    assert "ok          Lambda concurrency: 'Concurrent executions' (L-B99A9384) is 10000" in out
    assert "ok          region: us-east-1 offers every service the plan uses" in out
    assert "(local mode: the stand-in's quotas, set with VT_LOCAL_QUOTAS" in out

    monkeypatch.setenv(local_quotas.ENV, f"{QUOTA}=2")
    assert cli.main(["check", "--prefix", prefix, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["known"] and all(step["can_run"] for step in report["steps"])
    verdicts = {row["item"]: row["verdict"] for row in report["limits"]}
    assert verdicts == {"region": "ok", "endpoint instances": "short",
                        "Lambda concurrency": "ok"}


def test_a_principal_without_servicequotas_cannot_tell_and_up_goes_ahead(env, tmp_path):
    """Local IAM enforced: an IAM user allowed everything but Service Quotas."""
    iam = _root(env, "iam")
    name = "teacher-" + os.urandom(3).hex()
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="all-but-quotas", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": "servicequotas:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    session = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                    aws_secret_access_key=key["SecretAccessKey"],
                                    region_name="us-east-1")
    aws = Aws("us-east-1", session=session)
    cfg = _cfg(tmp_path)
    limits = quotas.check(cfg, aws)
    line = _line(limits, "endpoint instances")
    assert line.verdict == quotas.UNKNOWN
    assert "may not call servicequotas:ListServiceQuotas (AccessDenied)" in line.figure
    report = permissions.preflight(cfg, aws, commands=("up", "down"))
    assert report.known and not report.blocking
    assert {n.action for n in report.missing} == {"servicequotas:ListServiceQuotas",
                                                  "servicequotas:ListAWSDefaultServiceQuotas"}
    progress: list[str] = []
    permissions.require(cfg, aws, progress.append)  # goes ahead
    quotas.require(cfg, aws, progress.append)  # goes ahead
    assert any("but not the limits check's reads" in p for p in progress), progress
    assert any(p.startswith("limits: endpoint instances: cannot tell") and "Going ahead" in p
               for p in progress), progress


def test_a_limit_met_at_create_time_is_one_clear_message(env, tmp_path, monkeypatch, capsys):
    """The quota changed after the check (here: --skip-check): no traceback, the quota named."""
    used, reserved = _in_use(env)
    monkeypatch.setenv(local_quotas.ENV, f"{QUOTA}=0")
    prefix = "qx" + os.urandom(2).hex()
    assert cli.main(["up", "--skip-check", "--prefix", prefix]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Creating or updating endpoint {prefix}-endpoint: SageMaker "
                          f"refused it for lack of quota '{QUOTA}'")
    assert f"--quota-code {_code(env, QUOTA)} --desired-value {used + 5}" in err
    assert "Traceback" not in err and "visual-tourism down' removes it" in err

    cfg = _cfg(tmp_path, prefix=prefix)
    monkeypatch.setenv(local_quotas.ENV, f"Concurrent executions={110 + reserved}")  # room 10
    monkeypatch.setenv(permissions.SKIP_ENV, "1")
    with pytest.raises(quotas.QuotaExceededError) as refused:
        stack.up(cfg, Aws(cfg.region), endpoint_poll=0.1)
    text = str(refused.value)
    assert text.startswith(f"Reserving concurrency for {prefix}-handler: Lambda refused to "
                           "reserve 20 concurrent executions for lack of quota 'Concurrent "
                           f"executions' (L-B99A9384; it is {110 + reserved}, 110 unreserved)")
    assert f"--quota-code L-B99A9384 --desired-value {120 + reserved}" in text
    env.runtime.wait_idle(30)
    stack.down(cfg, Aws(cfg.region), delete_bucket=True)
    _nothing_of(env, cfg)


# -- against AWS's shapes (Stubber: requests and responses checked against botocore's models) -----
def _stubbed(monkeypatch) -> tuple[Aws, dict[str, Stubber]]:
    session = boto3.session.Session(aws_access_key_id="k", aws_secret_access_key="s",
                                    region_name="eu-west-1")
    aws = Aws("eu-west-1", session=session)
    stubs = {}
    for service in ("service-quotas", "sagemaker", "lambda"):
        stubs[service] = Stubber(aws.client(service))
        stubs[service].activate()
    return aws, stubs


def _quota(name: str, code: str, value: float) -> dict:
    return {"ServiceCode": "sagemaker", "ServiceName": "Amazon SageMaker", "QuotaCode": code,
            "QuotaName": name, "Value": value, "Unit": "None", "Adjustable": True,
            "GlobalQuota": False,
            "QuotaArn": f"arn:aws:servicequotas:eu-west-1:111122223333:sagemaker/{code}"}


def _aws_answers(stubs, quota_pages, endpoints=(), account=(1000, 990), own=None):
    sq = stubs["service-quotas"]
    for i, page in enumerate(quota_pages):
        params = {"ServiceCode": "sagemaker", **({"NextToken": f"t{i}"} if i else {})}
        body = {"Quotas": page, **({"NextToken": f"t{i + 1}"}
                                    if i + 1 < len(quota_pages) else {})}
        sq.add_response("list_service_quotas", body, params)
    sq.add_response("list_aws_default_service_quotas", {"Quotas": []},
                    {"ServiceCode": "sagemaker"})
    sm = stubs["sagemaker"]
    now = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    sm.add_response("list_endpoints", {"Endpoints": [
        {"EndpointName": name, "EndpointStatus": status, "CreationTime": now,
         "LastModifiedTime": now,
         "EndpointArn": f"arn:aws:sagemaker:eu-west-1:111122223333:endpoint/{name}"}
        for name, status, _, _ in endpoints]}, {})
    for name, status, kind, count in endpoints:
        if status in ("Deleting", "Failed") or name == "visual-tourism-endpoint":
            continue
        sm.add_response("describe_endpoint", {
            "EndpointName": name, "EndpointConfigName": f"{name}-config",
            "EndpointStatus": status, "CreationTime": now, "LastModifiedTime": now,
            "EndpointArn": f"arn:aws:sagemaker:eu-west-1:111122223333:endpoint/{name}",
            "ProductionVariants": [{"VariantName": "AllTraffic",
                                    "CurrentInstanceCount": count}]},
            {"EndpointName": name})
        sm.add_response("describe_endpoint_config", {
            "EndpointConfigName": f"{name}-config", "CreationTime": now,
            "EndpointConfigArn": "arn:aws:sagemaker:eu-west-1:111122223333:endpoint-config/c",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "m",
                                    "InstanceType": kind, "InitialInstanceCount": 1}]},
            {"EndpointConfigName": f"{name}-config"})
    lam = stubs["lambda"]
    total, unreserved = account
    lam.add_response("get_account_settings", {"AccountLimit": {
        "ConcurrentExecutions": total, "UnreservedConcurrentExecutions": unreserved,
        "TotalCodeSize": 1, "CodeSizeUnzipped": 1, "CodeSizeZipped": 1},
        "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 3}}, {})
    if own is None:
        lam.add_client_error("get_function_concurrency", "ResourceNotFoundException",
                             "Function not found", 404,
                             expected_params={"FunctionName": "visual-tourism-handler"})
    else:
        lam.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": own},
                         {"FunctionName": "visual-tourism-handler"})


def test_check_on_aws_reads_quotas_endpoints_and_concurrency_as_aws_answers(monkeypatch):
    aws, stubs = _stubbed(monkeypatch)
    cfg = load_config(region="eu-west-1")
    filler = [_quota(f"ml.m5.{n}xlarge for endpoint usage", f"L-0000{n:04d}", 2)
              for n in range(100)]
    _aws_answers(stubs, [filler, [_quota(QUOTA, "L-1A2B3C4D", 6)]], endpoints=[
        ("team-a", "InService", TYPE, 2), ("team-b", "Failed", TYPE, 0),
        ("visual-tourism-endpoint", "InService", TYPE, 1),  # ours: replaced, not counted
        ("team-c", "InService", "ml.g5.2xlarge", 1)], own=20)
    limits = quotas.check(cfg, aws)
    for stub in stubs.values():
        stub.assert_no_pending_responses()
    endpoint_line = _line(limits, "endpoint instances")
    assert endpoint_line.verdict == quotas.SHORT
    assert endpoint_line.figure.startswith(
        f"'{QUOTA}' (L-1A2B3C4D) is 6, 2 in use by other endpoints")
    assert ("aws service-quotas request-service-quota-increase --service-code sagemaker "
            "--quota-code L-1A2B3C4D --desired-value 7 --region eu-west-1") in endpoint_line.todo[0]
    assert "VT_MAX_INSTANCES=4 " in "\n".join(endpoint_line.todo)
    concurrency = _line(limits, "Lambda concurrency")
    assert concurrency.verdict == quotas.OK  # 990 unreserved + our own 20, less 100
    assert "990 unreserved (20 already ours)" in concurrency.figure
    text = limits.text()
    assert text.splitlines()[0].startswith("Limits for profile idefics-9b-instruct in eu-west-1")
    assert "  SHORT       endpoint instances:" in text and "  ok          region:" in text


def test_check_on_aws_without_quota_permissions_cannot_tell(monkeypatch):
    aws, stubs = _stubbed(monkeypatch)
    cfg = load_config(region="eu-west-1")
    stubs["service-quotas"].add_client_error(
        "list_service_quotas", "AccessDeniedException", "not authorized", 400,
        expected_params={"ServiceCode": "sagemaker"})
    stubs["sagemaker"].add_response("list_endpoints", {"Endpoints": []}, {})
    stubs["lambda"].add_client_error("get_account_settings", "AccessDeniedException",
                                     "not authorized", 403)
    limits = quotas.check(cfg, aws)
    assert [line.verdict for line in limits.lines] == [quotas.OK, quotas.UNKNOWN, quotas.UNKNOWN]
    assert "may not call servicequotas:ListServiceQuotas (AccessDenied)" in limits.text()
    assert "may not call lambda:GetAccountSettings (AccessDenied)" in limits.text()
    assert not limits.short


def test_a_region_without_a_service_the_plan_uses_is_short(monkeypatch):
    aws = Aws("eu-west-1", session=boto3.session.Session(
        aws_access_key_id="k", aws_secret_access_key="s", region_name="eu-west-1"))
    real = aws.session.get_available_regions
    monkeypatch.setattr(aws.session, "get_available_regions", lambda service: [
        r for r in real(service) if not (service == "scheduler" and r == "eu-west-1")])
    line = quotas.region_line(load_config(region="eu-west-1", stop_after="3h"), aws)
    assert line.verdict == quotas.SHORT and "eu-west-1 does not offer scheduler" in line.figure
    assert "AWS_REGION=us-east-1" in line.todo[0]
    assert quotas.region_line(load_config(region="eu-west-1"), aws).verdict == quotas.OK


def test_infra_deploy_checks_the_limits_before_it_creates_a_stack(mocked_aws, tmp_path,
                                                                   monkeypatch):
    from visual_tourism import infra
    from visual_tourism.local import moto_patches

    moto_patches.patch_cloudformation()
    moto_patches.patch_quotas()  # mocked_aws's moto_patches.restore() removes both
    monkeypatch.setenv(local_quotas.ENV, f"{QUOTA}=0")
    cfg = load_config(state_dir=str(tmp_path / "state"))
    aws = Aws(cfg.region)
    infra.package(cfg, aws, tmp_path)
    with pytest.raises(quotas.LimitsShortError, match="Nothing was created"):
        infra.deploy(cfg, aws, tmp_path, poll=0)
    assert infra.describe_stack(aws, infra.stack_name(cfg)) is None
    assert not aws.sagemaker.list_endpoints()["Endpoints"]
