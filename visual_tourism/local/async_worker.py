"""Local SageMaker Asynchronous Inference: the queue in front of the local model server.

moto stores an endpoint's ``AsyncInferenceConfig`` but its ``InvokeEndpointAsync`` ignores the
output path and runs nothing, so local mode plays the service here, as strictly as AWS
documents it:

- ``POST /endpoints/{name}/async-invocations`` (the route boto3 calls) checks the endpoint
  exists and is asynchronous, and the parameters' limits, queues the request and answers 202
  with the ``OutputLocation`` and ``FailureLocation`` headers;
- one worker takes requests oldest first: it reads the input from S3, runs it through the
  container (the model server's ``/invocations`` code, faults included) and writes the answer
  to the output path or the container's error to the failure path, through S3 like any other
  object, so the bucket's notifications fire;
- a request still queued after its ``RequestTTLSeconds`` is dropped with a failure object;
- with 0 instances, requests wait; ``HasBacklogWithoutCapacity`` is published and, when the
  endpoint's scaling has a step policy and a maximum above 0 (what scales an async endpoint
  out from zero on AWS), one instance "starts" after ``wake_seconds``; with ``idle_seconds``
  an idle endpoint whose minimum is 0 scales back in.

The instance count lives where `status` reads it: the endpoint's variant in moto.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from .model_server import _aws_error, _Response

log = logging.getLogger(__name__)

VARIANT = "AllTraffic"
DEFAULT_TTL = 21600  # InvokeEndpointAsync's default RequestTTLSeconds (6 hours)


@dataclass
class _Request:
    endpoint: str
    inference_id: str
    input_location: str
    content_type: str
    output_location: str
    failure_location: str
    expires_at: float


def _split(location: str) -> tuple[str, str]:
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return bucket, key


class AsyncEndpoints:
    """Plug into a ModelServer: ``model_server.async_handler = AsyncEndpoints(...).handle``."""

    def __init__(
        self,
        model_server: Any,
        aws_env: dict[str, str],
        wake_seconds: float = 3.0,
        idle_seconds: float | None = None,
        poll: float = 0.05,
    ) -> None:
        self.model_server = model_server
        self.wake_seconds = wake_seconds
        self.idle_seconds = idle_seconds
        self.poll = poll
        self._clients = {
            name: boto3.client(
                name, endpoint_url=aws_env["AWS_ENDPOINT_URL"],
                region_name=aws_env["AWS_REGION"],
                aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"],
            )
            for name in ("s3", "sagemaker", "application-autoscaling", "cloudwatch")
        }
        self._queue: collections.deque[_Request] = collections.deque()
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.events: list[tuple[float, str, str]] = []  # (time, endpoint, what): wake, expire...
        self.clock_offset = 0.0  # seconds added to the queue's clock (tests of the TTL)

    # -- life cycle
    def start(self) -> AsyncEndpoints:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="async-endpoints", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=2)  # a daemon thread: never hold up the stack's exit
        self._thread = None

    @property
    def backlog(self) -> int:
        with self._lock:
            return len(self._queue)

    # -- the Runtime API route
    def handle(self, endpoint: str, headers: Any, body: bytes) -> _Response:
        input_location = headers.get("X-Amzn-SageMaker-InputLocation")
        if not input_location or not input_location.startswith(("s3://", "https://")):
            return _aws_error(400, "ValidationError", "InputLocation must be an S3 URI.")
        config = self._async_config(endpoint)
        if isinstance(config, _Response):
            return config
        ttl = int(headers.get("X-Amzn-SageMaker-RequestTTLSeconds") or DEFAULT_TTL)
        timeout = int(headers.get("X-Amzn-SageMaker-InvocationTimeoutSeconds") or 900)
        if not 60 <= ttl <= 21600 or not 1 <= timeout <= 3600:
            return _aws_error(400, "ValidationError",
                              "RequestTTLSeconds must be 60-21600, "
                              "InvocationTimeoutSeconds 1-3600.")
        inference_id = headers.get("X-Amzn-SageMaker-Inference-Id") or str(uuid.uuid4())
        if not 1 <= len(inference_id) <= 64:
            return _aws_error(400, "ValidationError", "InferenceId must be 1-64 characters.")
        output = config["OutputConfig"]
        # The object name is SageMaker's to choose (documented only as "based on the inference
        # ID"); callers must use the returned locations, as the handler does.
        request = _Request(
            endpoint=endpoint, inference_id=inference_id, input_location=input_location,
            content_type=headers.get("X-Amzn-SageMaker-Content-Type") or "application/json",
            output_location=f"{output['S3OutputPath'].rstrip('/')}/{uuid.uuid4()}.out",
            failure_location=f"{output.get('S3FailurePath', output['S3OutputPath']).rstrip('/')}"
                             f"/{uuid.uuid4()}-error.out",
            expires_at=self._now() + ttl,
        )
        with self._lock:
            self._queue.append(request)
        self._wakeup.set()
        return _Response.json(
            202, {"InferenceId": inference_id},
            **{"X-Amzn-SageMaker-OutputLocation": request.output_location,
               "X-Amzn-SageMaker-FailureLocation": request.failure_location},
        )

    def _async_config(self, endpoint: str) -> dict[str, Any] | _Response:
        sagemaker = self._clients["sagemaker"]
        try:
            found = sagemaker.describe_endpoint(EndpointName=endpoint)
            config = sagemaker.describe_endpoint_config(
                EndpointConfigName=found["EndpointConfigName"])
        except ClientError:
            return _aws_error(400, "ValidationError", f"Endpoint {endpoint} not found.")
        async_config = config.get("AsyncInferenceConfig") or {}
        if not async_config.get("OutputConfig", {}).get("S3OutputPath"):
            return _aws_error(400, "ValidationError",
                              f"Endpoint {endpoint} is not an asynchronous inference endpoint.")
        return async_config

    def _now(self) -> float:
        return time.time() + self.clock_offset

    # -- capacity, as the endpoint's variant records it
    def instances(self, endpoint: str) -> int:
        try:
            found = self._clients["sagemaker"].describe_endpoint(EndpointName=endpoint)
        except ClientError:
            return 0
        return int((found.get("ProductionVariants") or [{}])[0].get("CurrentInstanceCount") or 0)

    def _set_instances(self, endpoint: str, count: int, why: str) -> None:
        self._clients["sagemaker"].update_endpoint_weights_and_capacities(
            EndpointName=endpoint,
            DesiredWeightsAndCapacities=[{"VariantName": VARIANT, "DesiredWeight": 1.0,
                                          "DesiredInstanceCount": count}],
        )
        self.events.append((time.time(), endpoint, why))
        log.info("Async endpoint %s: %s (%d instance(s))", endpoint, why, count)

    def _scaling(self, endpoint: str) -> tuple[dict[str, Any] | None, bool]:
        """(scalable target, has a step policy) for the endpoint's variant."""
        client = self._clients["application-autoscaling"]
        resource = f"endpoint/{endpoint}/variant/{VARIANT}"
        targets = client.describe_scalable_targets(
            ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"]
        policies = client.describe_scaling_policies(
            ServiceNamespace="sagemaker", ResourceId=resource)["ScalingPolicies"]
        return (targets[0] if targets else None,
                any(p["PolicyType"] == "StepScaling" for p in policies))

    def _publish(self, endpoint: str, backlog: int, without_capacity: bool) -> None:
        dims = [{"Name": "EndpointName", "Value": endpoint}]
        try:
            self._clients["cloudwatch"].put_metric_data(Namespace="AWS/SageMaker", MetricData=[
                {"MetricName": "ApproximateBacklogSize", "Dimensions": dims, "Value": backlog},
                {"MetricName": "HasBacklogWithoutCapacity", "Dimensions": dims,
                 "Value": 1.0 if without_capacity else 0.0},
            ])
        except ClientError as exc:  # metrics are for `status`; never stop the queue for them
            log.debug("metrics not published: %s", exc)

    # -- the worker
    def _run(self) -> None:
        waiting_since: dict[str, float] = {}
        idle_since: dict[str, float] = {}
        last_metrics = 0.0
        known: set[str] = set()
        while not self._stopping.is_set():
            try:
                self._expire()
                with self._lock:
                    head = self._queue[0] if self._queue else None
                    by_endpoint = collections.Counter(r.endpoint for r in self._queue)
                known.update(by_endpoint)
                now = time.time()
                if now - last_metrics > 1.0:
                    self._clamp_to_bounds()
                    for endpoint in known:
                        self._publish(endpoint, by_endpoint[endpoint],
                                      by_endpoint[endpoint] > 0 and not self.instances(endpoint))
                    last_metrics = now
                if head is None:
                    self._scale_in_idle(known, idle_since)
                    self._wakeup.wait(self.poll * 4)
                    self._wakeup.clear()
                    continue
                idle_since.pop(head.endpoint, None)
                if not self.instances(head.endpoint):
                    self._maybe_wake(head.endpoint, waiting_since)
                    self._stopping.wait(self.poll)
                    continue
                waiting_since.pop(head.endpoint, None)
                with self._lock:
                    self._queue.popleft()
                self._process(head)
            except Exception:  # the worker must outlive any one request's trouble
                log.exception("async worker: unexpected failure")
                self._stopping.wait(self.poll)

    def _clamp_to_bounds(self) -> None:
        """Application Auto Scaling moves capacity into a newly registered [min, max] range
        (how `wake`, `sleep` and the async stop deadline act on AWS)."""
        targets = self._clients["application-autoscaling"].describe_scalable_targets(
            ServiceNamespace="sagemaker")["ScalableTargets"]
        for target in targets:
            parts = target["ResourceId"].split("/")  # endpoint/<name>/variant/<variant>
            if len(parts) != 4:
                continue
            endpoint, count = parts[1], self.instances(parts[1])
            low, high = target["MinCapacity"], target["MaxCapacity"]
            try:
                if count > high:
                    self._set_instances(endpoint, high, "scaled in to the maximum")
                elif count < low:
                    self._set_instances(endpoint, low, "scaled out to the minimum")
            except ClientError as exc:  # the endpoint is gone or changing: next round
                log.debug("capacity of %s not set: %s", endpoint, exc)

    def _maybe_wake(self, endpoint: str, waiting_since: dict[str, float]) -> None:
        target, step_policy = self._scaling(endpoint)
        if not target or not step_policy or target["MaxCapacity"] < 1:
            waiting_since.pop(endpoint, None)  # nothing would scale it out: stays queued
            return
        started = waiting_since.setdefault(endpoint, time.time())
        if time.time() - started >= self.wake_seconds:
            self._set_instances(endpoint, 1, "woke from zero")
            waiting_since.pop(endpoint, None)

    def _scale_in_idle(self, known: set[str], idle_since: dict[str, float]) -> None:
        if self.idle_seconds is None:
            return
        for endpoint in known:
            if not self.instances(endpoint):
                idle_since.pop(endpoint, None)
                continue
            target, _ = self._scaling(endpoint)
            if not target or target["MinCapacity"] > 0:
                continue
            since = idle_since.setdefault(endpoint, time.time())
            if time.time() - since >= self.idle_seconds:
                self._set_instances(endpoint, 0, "scaled in to zero when idle")
                idle_since.pop(endpoint, None)

    def _expire(self) -> None:
        now = self._now()
        with self._lock:
            expired = [r for r in self._queue if r.expires_at <= now]
            for request in expired:
                self._queue.remove(request)
        for request in expired:
            self.events.append((now, request.endpoint, "request expired"))
            self._write(request.failure_location, json.dumps({
                "errorMessage": f"Request {request.inference_id} expired: it waited longer "
                                "than its RequestTTLSeconds without being processed.",
            }).encode())

    def _process(self, request: _Request) -> None:
        s3 = self._clients["s3"]
        bucket, key = _split(request.input_location)
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            self._write(request.failure_location, json.dumps({
                "errorMessage": f"Could not read the input {request.input_location}: {exc}"
            }).encode())
            return
        plan = self.model_server.faults.take()
        if plan.delay:
            self._stopping.wait(plan.delay)
        if plan.fail is not None or plan.drop:
            self._write(request.failure_location, json.dumps({
                "errorMessage": f"Injected fault: the model container failed ({plan.fail})."
            }).encode())
            return
        outcome = self.model_server._container(body, request.content_type)
        response = outcome.response
        if response is not None and 200 <= response.status < 300:
            self._write(request.output_location, response.body)
        else:
            detail = response.body.decode("utf-8", "replace") if response else "no answer"
            status = response.status if response else 500
            kind = "client" if status < 500 else "server"
            self._write(request.failure_location, json.dumps({
                "errorMessage": f"Received {kind} error ({status}) from primary with message "
                                f"\"{detail}\"."
            }).encode())

    def _write(self, location: str, body: bytes) -> None:
        bucket, key = _split(location)
        self._clients["s3"].put_object(Bucket=bucket, Key=key, Body=body)
