"""Local mode: the AWS stand-in that the unchanged stack helpers and handler run against.

Three parts on loopback, selected by endpoint URLs only (boto3 reads ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``), so no module of the package branches on "local":

- moto's threaded server plays S3, IAM, Lambda (storage), SageMaker (control plane), STS,
  CloudWatch Logs and Application Auto Scaling;
- ``LambdaRuntime`` runs the deployed zip when the bucket notification fires;
- ``ModelServer`` plays the endpoint's runtime API, answering with a real model through
  transformers when one can be loaded, else with a clearly labelled offline stand-in, and
  enforcing the deployed container's limits (``container_limits``: read from the endpoint's
  SageMaker model, as ``up`` created it) with that container's status codes and bodies;
  ``AsyncEndpoints`` puts SageMaker's asynchronous queue (and its scaling from zero) in front;
- ``SchedulerRunner`` runs EventBridge Scheduler's one-time targets (the stop deadline);
- ``PlacesServer`` plays Amazon Location Service's Places API (``geo-places``, which moto
  lacks), reached through ``AWS_ENDPOINT_URL_GEO_PLACES``: strict requests, made-up places
  labelled "(not a real place)".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from photo_handler.serving_limits import ContainerLimits, GenerationError

from ..errors import ConfigError, PortInUseError
from . import iam_enforcement, moto_patches, quotas
from .credentials import RoleCredentials
from .lambda_runtime import LambdaRuntime

log = logging.getLogger(__name__)

REGION = "us-east-1"
# moto accepts any credentials; these are never sent anywhere but loopback.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


AWS_STAND_IN = "the AWS stand-in"
MODEL_SERVER = "the model server"


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise PortInUseError when ``port`` cannot be bound now (0, any free port, always can).

    Probed with SO_REUSEADDR like both servers bind, so a port left in TIME_WAIT by a stopped
    run counts as free, as it is for them.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUseError(what, host, port, exc.strerror or "") from None


_ECR_REGION = re.compile(r"\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com")


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number > 0 else None


def _images_per_prompt(value: str | None) -> int | None:
    """vLLM's limit_mm_per_prompt as LMI passes it: JSON ``{"image": 2}`` or ``image=2``."""
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
    return _positive_int(str(parsed.get("image"))) if isinstance(parsed, dict) else None


def container_limits(image: str, environment: Mapping[str, str]) -> ContainerLimits | None:
    """The limits a SageMaker model's container enforces, from its image URI and environment.

    The profile whose container image (resolved for the image's region) and model id
    (HF_MODEL_ID) match gives the engine, the version and how images are counted; the numeric
    limits in the environment override the profile's, as the container reads them: TGI's
    MAX_INPUT_TOKENS (1.x: MAX_INPUT_LENGTH), MAX_TOTAL_TOKENS, PAYLOAD_LIMIT,
    MAX_STOP_SEQUENCES; LMI's OPTION_MAX_MODEL_LEN and OPTION_LIMIT_MM_PER_PROMPT. None when no
    profile matches (an image this project does not deploy): the server then checks nothing
    container-specific.
    """
    from ..profiles import PROFILES

    found = _ECR_REGION.search(image)
    region = found.group(1) if found else REGION
    for profile in PROFILES.values():
        if environment.get("HF_MODEL_ID") != profile.model_id:
            continue
        try:
            if profile.image_uri(region) != image:
                continue
        except ConfigError:
            continue
        limits = profile.limits
        if limits.engine == "tgi":
            max_input = _positive_int(environment.get("MAX_INPUT_TOKENS")
                                      or environment.get("MAX_INPUT_LENGTH"))
            names = {"max_input_tokens": max_input,
                     "max_total_tokens": _positive_int(environment.get("MAX_TOTAL_TOKENS")),
                     "payload_limit_bytes": _positive_int(environment.get("PAYLOAD_LIMIT")),
                     "max_stop_sequences": _positive_int(environment.get("MAX_STOP_SEQUENCES"))}
        else:
            model_len = _positive_int(environment.get("OPTION_MAX_MODEL_LEN"))
            names = {"max_total_tokens": model_len,
                     "max_input_tokens": model_len - 1 if model_len else None,
                     "max_images": _images_per_prompt(environment.get(
                         "OPTION_LIMIT_MM_PER_PROMPT"))}
        changes = {name: value for name, value in names.items() if value is not None}
        try:
            return dataclasses.replace(limits, **changes)
        except GenerationError as exc:  # e.g. MAX_INPUT_TOKENS >= MAX_TOTAL_TOKENS
            log.warning("the container of %s would not start: %s", profile.name, exc)
            return limits
    log.warning("no model profile runs image %s with HF_MODEL_ID=%s: its limits are not "
                "enforced locally", image, environment.get("HF_MODEL_ID"))
    return None


def _moto_server(host: str, port: int) -> Any:
    """moto's threaded server, whose start() raises instead of hanging when it cannot bind.

    moto's thread builds a werkzeug server, which calls sys.exit on a busy port; the thread
    then dies before it signals "ready" and ThreadedMotoServer.start() waits for ever.
    """
    from moto.server import ThreadedMotoServer

    class GuardedMotoServer(ThreadedMotoServer):
        failure: BaseException | None = None

        def _server_entry(self) -> None:
            try:
                super()._server_entry()
            except BaseException as exc:  # SystemExit from werkzeug, or an OSError
                self.failure = exc
                self._server_ready_event.set()

        def start(self) -> None:
            super().start()
            if self.failure is not None or self._server is None:
                reason = getattr(self.failure, "strerror", None) or "cannot listen"
                raise PortInUseError(AWS_STAND_IN, host, port, reason)

    return GuardedMotoServer(ip_address=host, port=port, verbose=False)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration: boto3 reads its endpoints from them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


class LocalStack:
    """Start with ``with LocalStack() as local:``; ``local.env`` points boto3 at it."""

    def __init__(
        self,
        model: str | None = "stand-in",
        work_dir: Path | None = None,
        max_concurrency: int = 4,
        host: str = "127.0.0.1",
        moto_port: int = 0,
        model_port: int = 0,
        wake_seconds: float = 3.0,
        idle_seconds: float | None = None,
        enforce_iam: bool | None = None,
    ) -> None:
        self.model_spec = model
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="visual-tourism-local-"))
        self.max_concurrency = max_concurrency
        self.host = host
        self.moto_port = moto_port
        self.model_port = model_port
        # IAM for requests signed by a role (the functions'): on unless VT_LOCAL_IAM=off.
        self.enforce_iam = (os.environ.get("VT_LOCAL_IAM", "on").lower() not in ("off", "0")
                            if enforce_iam is None else enforce_iam)
        self.credentials: RoleCredentials | None = None
        self.backend_reason = ""
        self._moto: Any = None
        self.model_server: Any = None
        self.runtime: LambdaRuntime | None = None
        self.wake_seconds = wake_seconds  # an async endpoint at zero "starts" this long
        self.idle_seconds = idle_seconds  # ... and scales back in after this long idle
        self.async_endpoints: Any = None
        self.scheduler: Any = None
        self.places: Any = None  # places_server.PlacesServer
        # endpoint configuration name -> its container's limits (configurations are immutable)
        self._limits_cache: dict[str, ContainerLimits | None] = {}
        self._limits_lock = threading.Lock()

    @property
    def env(self) -> dict[str, str]:
        """The variables that point boto3, the CLI and the notebooks at this stack."""
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.model_server.url,
            **({"AWS_ENDPOINT_URL_GEO_PLACES": self.places.url} if self.places else {}),
            # Amazon Bedrock's Converse, for the managed profiles (local/converse.py)
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.model_server.url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            **CREDENTIALS,
        }

    @property
    def moto_url(self) -> str:
        host, port = self._moto.get_host_and_port()
        return f"http://{host}:{port}"

    @property
    def backend_description(self) -> str:
        return self.model_server.backend.description

    def start(self) -> LocalStack:
        """Start all three parts; on any failure stop what did start, then raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> LocalStack:
        from .backends import load_backend
        from .model_server import ModelServer

        # Both ports first: a busy one is reported at once, before a model loads for minutes.
        check_port_free(self.host, self.moto_port, AWS_STAND_IN)
        check_port_free(self.host, self.model_port, MODEL_SERVER)
        # moto serves through werkzeug, which logs every request at INFO on its own.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        quotas.settings()  # a VT_LOCAL_QUOTAS that names no quota: said now, not per request
        # Before the server answers: moto builds a service's routes on its first request.
        moto_patches.patch_quotas()
        self._moto = _moto_server(self.host, self.moto_port)
        self._moto.start()
        backend, self.backend_reason = load_backend(self.model_spec)
        try:
            self.model_server = ModelServer(
                backend=backend, host=self.host, port=self.model_port,
                endpoint_exists=self._endpoint_exists, authorize=self._authorize_invoke,
                authorize_model=self._authorize_model,
                fetch_origins=[self.moto_url],  # presigned photo URLs; nothing else here
                limits_for=self.endpoint_limits,
            ).start()
        except OSError as exc:  # taken between the check and now
            raise PortInUseError(MODEL_SERVER, self.host, self.model_port,
                                 exc.strerror or "") from None
        from .places_server import PlacesServer

        self.places = PlacesServer(host=self.host).start()
        if self.enforce_iam:
            iam_enforcement.enable()
        # The handler's processes reach the stack like the CLI does, through endpoint URLs,
        # with their execution role's temporary credentials.
        self.credentials = RoleCredentials(self.env)
        self.runtime = LambdaRuntime(
            self.work_dir, self.env, max_concurrency=self.max_concurrency,
            put_object=self._put_object, credentials=self.credentials.for_function,
        )
        from .async_worker import AsyncEndpoints
        from .scheduler_runner import SchedulerRunner

        self.async_endpoints = AsyncEndpoints(
            self.model_server, self.env, wake_seconds=self.wake_seconds,
            idle_seconds=self.idle_seconds,
        ).start()
        self.model_server.async_handler = self.async_endpoints.handle
        self.scheduler = SchedulerRunner(self.env).start()
        moto_patches.patch_bucket_policies()
        moto_patches.patch_event_invoke_config()
        moto_patches.patch_instance_types()  # current GPUs, as the real API takes
        moto_patches.patch_cloudformation()  # the template's resource types; rollback
        # Browser uploads: S3 checks POST policies; moto does not (see moto_patches).
        moto_patches.patch_post_policies(
            {CREDENTIALS["AWS_ACCESS_KEY_ID"]: CREDENTIALS["AWS_SECRET_ACCESS_KEY"]})
        moto_patches.patch_lambda_invoke(self.runtime.invoke_from_moto,
                                         self.runtime.invoke_sync_from_moto)
        log.info("Local stack up: AWS at %s, model at %s", self.moto_url, self.model_server.url)
        return self

    @staticmethod
    def _authorize_invoke(headers: Any, endpoint: str, region: str) -> str | None:
        """The Runtime API's check: may the caller's role invoke this endpoint?"""
        from .model_server import ACCOUNT_ID

        arn = f"arn:aws:sagemaker:{region}:{ACCOUNT_ID}:endpoint/{endpoint.lower()}"
        try:
            iam_enforcement.authorize(headers, "sagemaker:InvokeEndpoint", arn, ACCOUNT_ID)
        except iam_enforcement.Denied as denied:
            return str(denied)
        return None

    @staticmethod
    def _authorize_model(headers: Any, arn: str) -> str | None:
        """Bedrock's check for Converse: may the caller's role bedrock:InvokeModel this ARN?"""
        from .model_server import ACCOUNT_ID

        try:
            iam_enforcement.authorize(headers, "bedrock:InvokeModel", arn, ACCOUNT_ID)
        except iam_enforcement.Denied as denied:
            return str(denied)
        return None

    def _endpoint_exists(self, name: str) -> bool:
        client = boto3.client(
            "sagemaker", endpoint_url=self.moto_url, region_name=REGION,
            aws_access_key_id="local", aws_secret_access_key="local",
        )
        try:
            return client.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
        except ClientError:
            return False

    def _sagemaker(self) -> Any:
        return boto3.client(
            "sagemaker", endpoint_url=self.moto_url, region_name=REGION,
            aws_access_key_id="local", aws_secret_access_key="local",
        )

    def endpoint_limits(self, name: str) -> ContainerLimits | None:
        """The limits of the container behind endpoint ``name``, as ``up`` deployed it:
        endpoint -> endpoint configuration -> model -> PrimaryContainer (image, environment).
        Cached per endpoint configuration; None for an unknown endpoint or container."""
        client = self._sagemaker()
        try:
            config_name = client.describe_endpoint(EndpointName=name)["EndpointConfigName"]
        except ClientError:
            return None
        with self._limits_lock:
            if config_name in self._limits_cache:
                return self._limits_cache[config_name]
        try:
            config = client.describe_endpoint_config(EndpointConfigName=config_name)
            model = client.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        except (ClientError, KeyError, IndexError):
            return None
        container = model.get("PrimaryContainer") or {}
        limits = container_limits(container.get("Image", ""), container.get("Environment", {}))
        with self._limits_lock:
            self._limits_cache[config_name] = limits
        return limits

    def _put_object(self, bucket: str, key: str, body: bytes, function_arn: str) -> None:
        """How the Lambda service writes an on-failure record to an S3 destination."""
        client = boto3.client(
            "s3", endpoint_url=self.moto_url, region_name=REGION,
            aws_access_key_id="local", aws_secret_access_key="local",
        )
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")

    def log_path(self, function_name: str) -> Path:
        assert self.runtime is not None
        return self.runtime.log_path(function_name)

    def stop(self) -> None:
        if self.scheduler:
            self.scheduler.stop()
        if self.async_endpoints:
            self.async_endpoints.stop()
        if self.runtime:
            self.runtime.stop()
        moto_patches.restore()
        iam_enforcement.disable()
        if self.model_server:
            self.model_server.stop()
        if self.places:
            self.places.stop()
            self.places = None
        if self._moto:
            self._moto.stop()
            self._moto = None
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
