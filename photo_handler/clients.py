"""The AWS clients, one per service and configuration in a warm container, and what the SDK
the runtime bundles can do."""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

# boto3 reads endpoints, region and credentials from the environment when a client is made.
# Keying the cache on them keeps one client per warm Lambda yet never hands local mode or a
# test a client that still points at an earlier endpoint.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_GEO_PLACES",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
)
_sessions: dict[tuple[str | None, ...], Any] = {}
_clients: dict[tuple[Any, ...], Any] = {}


def client(service: str, read_timeout: int | None = None) -> Any:
    """The cached client for ``service`` (S3: SigV4, standard retries; the others: one
    attempt per call with ``read_timeout``, the caller deciding on retries)."""
    env = tuple(os.environ.get(name) for name in _CLIENT_ENV)
    key = (service, read_timeout, env)
    if key not in _clients:
        if len(_clients) > 16:
            _clients.clear()
        if env not in _sessions:  # clients of one session share its loaded service models
            _sessions.clear()
            _sessions[env] = boto3.session.Session()
        if service == "s3":
            config = Config(signature_version="s3v4", retries={"mode": "standard"})
        else:
            # One attempt per call: the caller's retry loop decides, knowing the time left.
            # (botocore's "max_attempts" counts retries, so max_attempts=1 would mean two.)
            config = Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                read_timeout=read_timeout, connect_timeout=min(5, read_timeout or 5),
            )
        _clients[key] = _sessions[env].client(service, config=config)
    return _clients[key]


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def accepts(client: Any, operation: str, *params: str) -> bool:
    """Whether this client's SDK knows the parameters (the Lambda runtime's bundled botocore
    may be older than the one we test with: S3 conditional writes need botocore >= 1.35.69
    for IfMatch, >= 1.35.2 for IfNoneMatch; python3.12 runtimes shipped 1.34.x)."""
    members = client.meta.service_model.operation_model(operation).input_shape.members
    return all(name in members for name in params)
