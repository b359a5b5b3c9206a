"""Asynchronous inference and the stop deadline, in local mode: the unchanged stack helpers,
the real handler fired by S3 notifications (input/, then SageMaker's output or failure object),
the local async queue in front of the model server, and the local Scheduler; then, in this
process, which upload a late completion may answer."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import test_handler

from photo_handler import asynchronous
from visual_tourism import async_inference, packaging, schedule, stack
from visual_tourism.aws import Aws
from visual_tourism.config import load_config, parse_duration
from visual_tourism.errors import ConfigError
from visual_tourism.local.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "images").glob("*.jpeg"))
WAKE = 1.5


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("local"),
                    wake_seconds=WAKE) as running:
        yield running


@pytest.fixture
def env(env, monkeypatch):  # conftest's, plus:
    # The photos fit the data-URI budget as they are: no Pillow for the Lambda's platform
    # needs downloading (that path is the data-uri transport's, tested elsewhere).
    monkeypatch.setattr(packaging, "vendor_pillow", lambda cfg, cache=None: None)
    return env


def _deploy(env, tmp_path, **settings):
    cfg = load_config(prefix="t" + os.urandom(3).hex(), state_dir=str(tmp_path / "state"),
                      **settings)
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)
    return cfg, aws


@pytest.fixture
def deployed(env, tmp_path):
    cfg, aws = _deploy(env, tmp_path, inference_mode="async")
    yield cfg, aws
    env.runtime.wait_idle(60)
    stack.down(cfg, aws, delete_bucket=True)


def records(cfg, aws) -> dict[str, dict]:
    bucket = cfg.bucket_name(aws.account_id)
    found = {}
    for obj in aws.s3.list_objects_v2(Bucket=bucket, Prefix=cfg.output_prefix).get(
            "Contents", []):
        if not obj["Key"].endswith(".json"):
            continue  # the folder marker
        found[obj["Key"]] = json.loads(
            aws.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    return found


def leftovers(cfg, aws) -> list[str]:
    """What the queue left in the bucket (requests hold photos; markers, SageMaker objects)."""
    listed = aws.s3.list_objects_v2(Bucket=cfg.bucket_name(aws.account_id),
                                    Prefix=cfg.async_prefix)
    return [o["Key"] for o in listed.get("Contents", []) if not o["Key"].endswith("/")]


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_async_stack_is_wired_as_aws_documents(env, deployed):
    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    current = aws.sagemaker.describe_endpoint(EndpointName=cfg.endpoint_name)
    conf = aws.sagemaker.describe_endpoint_config(
        EndpointConfigName=current["EndpointConfigName"])
    assert conf["AsyncInferenceConfig"]["OutputConfig"] == {
        "S3OutputPath": f"s3://{bucket}/async/outputs/",
        "S3FailurePath": f"s3://{bucket}/async/failures/",
    }
    target = aws.autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[f"endpoint/{cfg.endpoint_name}/variant/"
                                                   "AllTraffic"])["ScalableTargets"][0]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, cfg.max_instances)
    policies = {p["PolicyName"]: p for p in aws.autoscaling.describe_scaling_policies(
        ServiceNamespace="sagemaker")["ScalingPolicies"] if p["PolicyName"].startswith(cfg.prefix)}
    tracking = policies[async_inference.tracking_policy_name(cfg)]
    spec = tracking["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    assert spec["MetricName"] == "ApproximateBacklogSizePerInstance"
    step = policies[async_inference.step_policy_name(cfg)]
    assert step["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
        {"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]
    alarm = aws.client("cloudwatch").describe_alarms(
        AlarmNames=[async_inference.alarm_name(cfg)])["MetricAlarms"][0]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [step["PolicyARN"]]
    notifications = aws.s3.get_bucket_notification_configuration(Bucket=bucket)
    prefixes = sorted(c["Filter"]["Key"]["FilterRules"][0]["Value"]
                      for c in notifications["LambdaFunctionConfigurations"])
    assert prefixes == ["async/failures/", "async/outputs/", "input/"]
    variables = aws.lambda_.get_function_configuration(
        FunctionName=cfg.function_name)["Environment"]["Variables"]
    assert variables["INFERENCE_MODE"] == "async"
    assert variables["IMAGE_TRANSPORT"] == "data-uri"  # queued requests outlive presigned URLs
    policy = aws.iam.get_role_policy(RoleName=cfg.lambda_role_name,
                                     PolicyName="visual-tourism-lambda")["PolicyDocument"]
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert "sagemaker:InvokeEndpointAsync" in actions and "sagemaker:InvokeEndpoint" not in actions


def test_a_queued_photo_gets_one_record_and_leaves_nothing_queued(env, deployed):
    cfg, aws = deployed
    calls_before = len(env.model_server.calls)
    record = stack.ask(PHOTOS[0], cfg, aws, timeout=60)
    assert record["status"] == "ok" and "Offline stand-in" in record["answer"]
    assert record["model"]["image_transport"] == "data-uri"
    assert env.runtime.wait_idle(30)
    assert list(records(cfg, aws)) == [f"output/{PHOTOS[0].name}.json"]
    assert leftovers(cfg, aws) == []
    styles = [c["style"] for c in env.model_server.calls[calls_before:]]
    assert styles == ["async"]  # the handler queued it; no real-time call
    # A second upload of the same bytes is already answered: nothing is queued again.
    bucket = cfg.bucket_name(aws.account_id)
    aws.s3.put_object(Bucket=bucket, Key=f"input/{PHOTOS[0].name}", Body=PHOTOS[0].read_bytes())
    assert env.runtime.wait_idle(30)
    assert [c["style"] for c in env.model_server.calls[calls_before:]] == ["async"]


def test_an_endpoint_at_zero_wakes_and_ask_says_so(env, deployed):
    cfg, aws = deployed
    async_inference.sleep(aws, cfg)
    assert stack.status(cfg, aws)["inference"]["instances"] == 0
    said: list[str] = []
    started = time.monotonic()
    record = stack.ask(PHOTOS[1], cfg, aws, timeout=60, progress=said.append)
    assert record["status"] == "ok"
    assert time.monotonic() - started >= WAKE  # it waited for an instance
    assert any("0 instances" in line and "wake" in line for line in said)
    assert any(what == "woke from zero" for _, ep, what in env.async_endpoints.events
               if ep == cfg.endpoint_name)
    status = stack.status(cfg, aws)
    assert status["inference"]["instances"] == 1 and status["inference"]["mode"] == "async"
    assert status["cost_so_far"]["next_hour_usd"] > 0
    assert "nothing is billed in local mode" in status["cost_so_far"]["note"]
    assert "at least" in status["cost_so_far"]["note"]  # local mode keeps no scaling history


def test_a_request_that_expires_in_the_queue_gets_an_error_record(env, deployed, tmp_path):
    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    # The async deadline's action: capacity floor and ceiling 0, so nothing wakes it.
    aws.autoscaling.register_scalable_target(**schedule.target_input(cfg))
    assert wait_for(lambda: async_inference.instances_now(aws, cfg) == 0)
    aws.s3.put_object(Bucket=bucket, Key="input/late.jpeg", Body=PHOTOS[2].read_bytes())
    assert wait_for(lambda: env.async_endpoints.backlog == 1)
    time.sleep(WAKE + 0.5)
    assert env.async_endpoints.backlog == 1  # still queued: max 0 means no wake
    assert records(cfg, aws) == {}
    env.async_endpoints.clock_offset = cfg.async_request_ttl + 1  # the TTL passes
    try:
        assert wait_for(lambda: "output/late.jpeg.json" in records(cfg, aws))
    finally:
        env.async_endpoints.clock_offset = 0.0
    env.runtime.wait_idle(30)
    found = records(cfg, aws)
    assert list(found) == ["output/late.jpeg.json"]
    assert found["output/late.jpeg.json"]["error"]["code"] == "queue_expired"
    assert "wake" in found["output/late.jpeg.json"]["error"]["message"]
    head = aws.s3.head_object(Bucket=bucket, Key="output/late.jpeg.json")
    assert head["Metadata"]["final"] == "false"  # a re-upload is tried again
    assert leftovers(cfg, aws) == []


def test_a_container_failure_gets_one_error_record_and_a_reupload_recovers(env, deployed):
    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    env.model_server.faults.fail(1)
    aws.s3.put_object(Bucket=bucket, Key="input/broken.jpeg", Body=PHOTOS[3].read_bytes())
    assert wait_for(lambda: "output/broken.jpeg.json" in records(cfg, aws))
    env.runtime.wait_idle(30)
    failed = records(cfg, aws)["output/broken.jpeg.json"]
    assert failed["error"]["code"] == "model_failed"
    record = stack.ask(PHOTOS[3], cfg, aws, key="input/broken.jpeg", timeout=60)
    assert record["status"] == "ok"
    env.runtime.wait_idle(30)
    assert list(records(cfg, aws)) == ["output/broken.jpeg.json"]
    assert leftovers(cfg, aws) == []


def test_status_reports_the_backlog_while_photos_queue(env, deployed):
    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)
    aws.autoscaling.register_scalable_target(**schedule.target_input(cfg))  # held at zero
    assert wait_for(lambda: async_inference.instances_now(aws, cfg) == 0)
    for photo in PHOTOS[:2]:
        aws.s3.put_object(Bucket=bucket, Key=f"input/queued-{photo.name}",
                          Body=photo.read_bytes())
    assert wait_for(lambda: env.async_endpoints.backlog == 2)
    # What `status` prints: the ApproximateBacklogSize the local queue publishes, as AWS does.
    assert wait_for(lambda: stack.status(cfg, aws)["inference"]["backlog"] == 2, timeout=15)
    async_inference.wake(aws, cfg)
    assert wait_for(lambda: len(records(cfg, aws)) == 2)
    env.runtime.wait_idle(30)
    assert leftovers(cfg, aws) == []


def test_lifecycle_rules_expire_orphaned_queue_objects_and_keep_other_rules(env, deployed):
    cfg, aws = deployed
    bucket = cfg.bucket_name(aws.account_id)

    def rules():
        found = aws.s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        return {r["ID"]: r for r in found}

    ours = rules()  # put by `up` with the async triggers
    assert {r["Filter"]["Prefix"] for r in ours.values()} == {
        "async/requests/", "async/pending/", "async/outputs/", "async/failures/"}
    assert all(r["Expiration"] == {"Days": 2} and r["Status"] == "Enabled"
               for r in ours.values())  # the request TTL (1 h) plus a day, in whole days
    other = {"ID": "someone-elses", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
             "Expiration": {"Days": 30}}
    aws.s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [*ours.values(), other]})
    stack.connect_trigger(replace(cfg, async_request_ttl=21600), aws)
    after = rules()
    assert after["someone-elses"]["Expiration"] == {"Days": 30}
    assert set(after) == {*ours, "someone-elses"}
    assert after[f"{cfg.prefix}-async-requests-expiry"]["Expiration"] == {"Days": 2}
    async_inference.ensure_lifecycle(aws, cfg, bucket)
    assert rules() == after  # running it again changes nothing


def test_bad_photos_never_reach_the_queue(env, deployed):
    cfg, aws = deployed
    calls = len(env.model_server.calls)
    aws.s3.put_object(Bucket=cfg.bucket_name(aws.account_id), Key="input/notes.jpg",
                      Body=b"just some text, not a photo at all")
    assert wait_for(lambda: "output/notes.jpg.json" in records(cfg, aws))
    assert records(cfg, aws)["output/notes.jpg.json"]["error"]["code"] == "not_an_image"
    assert len(env.model_server.calls) == calls


def test_deadline_deletes_a_realtime_endpoint_and_down_removes_it(env, tmp_path):
    cfg, aws = _deploy(env, tmp_path, stop_after="2h")
    try:
        status = stack.status(cfg, aws)
        assert status["deadline"]["action"] == "delete the endpoint"
        assert 119 <= status["deadline"]["in_minutes"] <= 120
        policy = aws.iam.get_role_policy(RoleName=cfg.scheduler_role_name,
                                         PolicyName=schedule.POLICY_NAME)["PolicyDocument"]
        assert [s["Action"] for s in policy["Statement"]] == [["sagemaker:DeleteEndpoint"]]
        assert env.scheduler.run_due() == []  # not yet
        ran = env.scheduler.run_due(now=datetime.now(UTC) + timedelta(hours=2, minutes=1))
        assert [r["error"] for r in ran] == [None]
        assert aws.sagemaker.list_endpoints(NameContains=cfg.prefix)["Endpoints"] == []
        assert stack.status(cfg, aws)["deadline"] is None  # ActionAfterCompletion DELETE
        # `up` again brings the endpoint back and arms a new deadline.
        stack.up(cfg, aws, endpoint_poll=0.1)
        assert stack.status(cfg, aws)["deadline"] is not None
    finally:
        removed = stack.down(cfg, aws, delete_bucket=True)
    assert "stop deadline" in removed
    assert stack.status(cfg, aws)["deadline"] is None
    assert aws.iam.list_roles()["Roles"] == [] or cfg.scheduler_role_name not in {
        r["RoleName"] for r in aws.iam.list_roles()["Roles"]}


def test_async_deadline_scales_to_zero_and_wake_brings_it_back(env, tmp_path):
    cfg, aws = _deploy(env, tmp_path, inference_mode="async", stop_after="30m")
    try:
        assert stack.status(cfg, aws)["deadline"]["action"] == "scale the endpoint to zero"
        env.scheduler.run_due(now=datetime.now(UTC) + timedelta(minutes=31))
        assert wait_for(lambda: async_inference.instances_now(aws, cfg) == 0)
        assert stack.status(cfg, aws)["inference"]["stopped"] is True
        assert "until 'visual-tourism wake'" in async_inference.waiting_note(aws, cfg)
        # Neither `sleep` nor `up` without a deadline lifts a deadline that has fired.
        async_inference.sleep(aws, cfg)
        assert stack.status(cfg, aws)["inference"]["max"] == 0
        said: list[str] = []
        stack.up(replace(cfg, stop_after=""), aws, endpoint_poll=0.1, progress=said.append)
        assert any(line.startswith("autoscaling held at 0 instances") for line in said), said
        inference = stack.status(cfg, aws)["inference"]
        assert (inference["max"], inference["stopped"], inference["instances"]) == (0, True, 0)
        # `wake` does, on purpose.
        async_inference.wake(aws, cfg)
        assert async_inference.instances_now(aws, cfg) == 1
        inference = stack.status(cfg, aws)["inference"]
        assert (inference["min"], inference["max"], inference["stopped"]) == (
            1, cfg.max_instances, False)
        async_inference.sleep(aws, cfg)
        assert async_inference.instances_now(aws, cfg) == 0
        inference = stack.status(cfg, aws)["inference"]
        assert (inference["min"], inference["max"]) == (0, cfg.max_instances)
        assert "wakes now that a photo is queued" in async_inference.waiting_note(aws, cfg)
    finally:
        stack.down(cfg, aws, delete_bucket=True)


def test_settings_are_validated():
    assert parse_duration("3h") == 10800
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    for bad in ("", "3 hours", "h", "-1h"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
    with pytest.raises(ConfigError, match="inference_mode"):
        load_config(region="us-east-1", inference_mode="batch")
    with pytest.raises(ConfigError, match="stop_after"):
        load_config(region="us-east-1", stop_after="1m")
    with pytest.raises(ConfigError, match="async_request_ttl"):
        load_config(region="us-east-1", async_request_ttl=30)
    with pytest.raises(ConfigError, match="overlaps"):
        load_config(region="us-east-1", async_prefix="output/")
    cfg = load_config(region="us-east-1", inference_mode="async")
    assert cfg.effective_image_transport == "data-uri" and cfg.image_transport == "url"


# -- the cost so far, from the scaling history ------------------------------------------------


class _Pages:
    def __init__(self, activities):
        self.activities = activities

    def paginate(self, **params):
        assert params["ResourceId"].endswith("/variant/AllTraffic")
        if isinstance(self.activities, Exception):
            raise self.activities
        return [{"ScalingActivities": self.activities}]


class _FakeAws:
    """describe_endpoint, describe_endpoint_config and the activities, in AWS's shapes."""

    is_local = False

    def __init__(self, created, modified, activities, *, is_async=True):
        self.endpoint = {"CreationTime": created, "LastModifiedTime": modified,
                         "EndpointConfigName": "c"}
        self.config = {"ProductionVariants": [{"InitialInstanceCount": 1}],
                       **({"AsyncInferenceConfig": {"OutputConfig": {}}} if is_async else {})}
        self.sagemaker = self
        self.autoscaling = self
        self.activities = activities

    def describe_endpoint(self, EndpointName):  # noqa: N803 (boto3's names)
        return self.endpoint

    def describe_endpoint_config(self, EndpointConfigName):  # noqa: N803
        return self.config

    def get_paginator(self, name):
        assert name == "describe_scaling_activities"
        return _Pages(self.activities)


def _activity(count, ended, status="Successful"):
    return {
        "ActivityId": os.urandom(4).hex(), "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/e/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "Description": f"Setting desired instance count to {count}.",
        "Cause": "monitor alarm ... in state ALARM triggered policy ...",
        "StartTime": ended - timedelta(minutes=4), "EndTime": ended, "StatusCode": status,
        "StatusMessage": f"Successfully set desired instance count to {count}. Change "
                         "successfully fulfilled by sagemaker.",
    }


def test_cost_so_far_adds_up_instance_time_from_the_scaling_history():
    from visual_tourism import costs

    now = datetime.now(UTC)
    cfg = load_config(region="us-east-1", inference_mode="async")
    ep = {"state": "InService", "instance_type": "ml.g4dn.12xlarge", "instances": 0}
    hour = timedelta(hours=1)
    # Created 5 h ago with 1 instance; in at 4 h, out for a class at 2 h, back to 0 at 1 h ago.
    history = [_activity(1, now - 2 * hour), _activity(0, now - 4 * hour),
               _activity(0, now - hour), _activity(3, now - 3 * hour, status="Failed")]
    aws = _FakeAws(now - 5 * hour, now - hour, history)
    info = costs.cost_so_far(aws, cfg, ep)
    assert info["complete"] is True
    assert info["instance_hours"] == pytest.approx(2.0, abs=0.01)
    assert info["so_far_usd"] == pytest.approx(2 * 4.89, abs=0.02)  # not $0 at 0 instances
    assert info["next_hour_usd"] == 0
    assert "estimate from list prices" in info["note"] and "at least" not in info["note"]

    # `sleep` changed it 30 min ago, outside Application Auto Scaling: only what is certain.
    aws = _FakeAws(now - 5 * hour, now - hour / 2, history[:2])
    info = costs.cost_so_far(aws, cfg, ep)
    assert info["complete"] is False
    assert info["instance_hours"] == pytest.approx(1.0, abs=0.01)  # 5 h..4 h; 2 h..now unknown
    assert "at least $4.89" in info["note"]

    # No history to read (as in local mode's moto): a real-time endpoint counts its 1 instance.
    ep_rt = {**ep, "instances": 2}
    aws = _FakeAws(now - 5 * hour, now - hour, NotImplementedError("no"), is_async=False)
    info = costs.cost_so_far(aws, load_config(region="us-east-1"), ep_rt)
    assert info["complete"] is False and "at least" in info["note"]
    assert info["instance_hours"] == pytest.approx(4 * 1 + 1 * 2, abs=0.01)
    assert info["next_hour_usd"] == pytest.approx(2 * 4.89, abs=0.01)


def test_parsing_the_capacity_from_activities():
    from visual_tourism import costs

    now = datetime.now(UTC)
    unfinished = {**_activity(2, now), "EndTime": None}
    assert costs.capacity_changes([_activity(2, now), unfinished,
                                     {**_activity(1, now), "Description": "?"}]) == [
        (now, 2), (now, 1)]  # StatusMessage when the Description says nothing


# -- in-process: which upload a late completion may answer ------------------------------------
# lambda_handler in this process against moto's server (test_handler's fixtures), with
# InvokeEndpointAsync answered as SageMaker answers it; the test writes SageMaker's output and
# failure objects itself, in the order it wants, and delivers their events.

s3, bucket = test_handler.s3, test_handler.bucket


class FakeQueue:
    """InvokeEndpointAsync (asynchronous._invoke): every request gets its own output and failure
    location, named by SageMaker (here: by the order of submission); what was queued is kept."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3, self.bucket, self.queued = s3, bucket, []

    def __call__(self, settings: Any, **params: Any) -> dict[str, Any]:
        number = len(self.queued)
        self.queued.append(params)
        return {"OutputLocation": f"s3://{self.bucket}/async/outputs/{number}.out",
                "FailureLocation": f"s3://{self.bucket}/async/failures/{number}-error.out",
                "InferenceId": params["InferenceId"]}

    def finish(self, number: int, answer: str | None = None,
               failure: str | None = None) -> dict[str, Any]:
        """SageMaker writes request ``number``'s output (or failure) object; its S3 event
        runs the handler. Returns the handler's summary line."""
        if failure is None:
            key = f"async/outputs/{number}.out"
            body = json.dumps([{"generated_text": answer}]).encode()
        else:
            key, body = f"async/failures/{number}-error.out", failure.encode()
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return test_handler.run(test_handler.event_for(self.bucket, self.s3, key))["records"][0]


@pytest.fixture
def queue(s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> FakeQueue:
    monkeypatch.setenv("INFERENCE_MODE", "async")
    monkeypatch.setenv("IMAGE_TRANSPORT", "data-uri")  # as `up` sets it for async
    fake = FakeQueue(s3, bucket)
    monkeypatch.setattr(asynchronous, "_invoke", fake)
    return fake


def _queue_upload(s3: Any, bucket: str, key: str, photo: str, **metadata: str) -> str:
    """Upload ``photo`` under ``key`` and run its event (the handler queues it); its ETag."""
    s3.put_object(Bucket=bucket, Key=key, Body=(test_handler.IMAGES / photo).read_bytes(),
                  Metadata=metadata)
    event = test_handler.event_for(bucket, s3, key)
    assert test_handler.run(event)["records"][0]["status"] == "queued"
    return event["Records"][0]["s3"]["object"]["eTag"]


@pytest.mark.parametrize("late", ["answer", "model_failed", "queue_expired"])
def test_a_late_completion_for_a_replaced_upload_never_replaces_the_newer_record(
    s3: Any, bucket: str, queue: FakeQueue, late: str,
) -> None:
    older = _queue_upload(s3, bucket, "input/p.jpeg", "tour_eiffel.jpeg")
    newer = _queue_upload(s3, bucket, "input/p.jpeg", "trevi.jpeg")  # replaced while queued
    assert older != newer
    # SageMaker finishes the newer request first...
    assert queue.finish(1, answer="The Trevi Fountain.")["status"] == "ok"
    # ...then the older one: an answer, a failure, or the queue's TTL passing.
    line = (queue.finish(0, answer="The Eiffel Tower.") if late == "answer" else
            queue.finish(0, failure="Request expired" if late == "queue_expired"
                         else "Received server error (500) from model"))
    assert line["status"] == "superseded"
    record = test_handler.result(s3, bucket, "output/p.jpeg.json")
    assert record["status"] == "ok" and record["answer"] == "The Trevi Fountain."
    assert record["input"]["etag"] == newer
    head = s3.head_object(Bucket=bucket, Key="output/p.jpeg.json")
    assert head["Metadata"]["input-etag"] == newer and head["Metadata"]["final"] == "true"
    # The superseded request is tidied like any other: nothing of either is left queued.
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="async/").get("Contents", [])
    assert [o["Key"] for o in listed] == []
