"""Temporary credentials of a local function's execution role, as Lambda gives its sandbox.

Lambda assumes the function's role and hands the sandbox AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; every AWS call of the handler is then authorized
against that role's policies. Local mode does the same against moto's STS (GetFunction for the
role, then AssumeRole), with the stack's own credentials, and keeps the credentials until
shortly before they expire. With IAM enforcement on (``local.iam_enforcement``) an action the
role does not allow then fails locally as on AWS. Any function's role works: nothing here
knows which function or role it serves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from .. import where

log = logging.getLogger(__name__)

SESSION_SECONDS = 3600
# A warm worker keeps the credentials it started with for up to 30 minutes (lambda_runtime's
# max_worker_seconds): renew well before that is left.
RENEW_BEFORE = 2100
# What a sandbox gets when its role cannot be assumed: every call it makes is refused
# (InvalidClientTokenId), as a function with a broken role fails on AWS.
UNUSABLE = {"AWS_ACCESS_KEY_ID": "ASIAUNASSUMABLEROLE0", "AWS_SECRET_ACCESS_KEY": "none",
            "AWS_SESSION_TOKEN": "role-could-not-be-assumed"}


class RoleCredentials:
    """``for_function(arn)`` -> the environment variables of that function's role session."""

    def __init__(self, aws_environment: Mapping[str, str]) -> None:
        env = dict(aws_environment)
        self._session = boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=where.region(env) or None,
        )
        self._endpoint = env.get("AWS_ENDPOINT_URL")
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self.minted = 0  # AssumeRole calls made

    def _client(self, service: str) -> Any:
        return self._session.client(service, endpoint_url=self._endpoint)

    def for_function(self, function_arn: str) -> dict[str, str]:
        try:
            role = self._client("lambda").get_function_configuration(
                FunctionName=function_arn)["Role"]
            return self.for_role(role, session_name=function_arn.rsplit(":", 1)[-1])
        except (ClientError, BotoCoreError) as exc:
            log.error("Cannot assume the role of %s: %s", function_arn, exc)
            return dict(UNUSABLE)

    def for_role(self, role_arn: str, session_name: str) -> dict[str, str]:
        key = (role_arn, session_name)
        with self._lock:
            expires, env = self._cache.get(key, (0.0, {}))
            if time.time() < expires - RENEW_BEFORE:
                return dict(env)
            # Like IAM, refuse a role that does not exist (moto's STS would not).
            self._client("iam").get_role(RoleName=role_arn.rsplit("/", 1)[-1])
            creds = self._client("sts").assume_role(
                RoleArn=role_arn, RoleSessionName=session_name[:64],
                DurationSeconds=SESSION_SECONDS,
            )["Credentials"]
            self.minted += 1
            env = {
                "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
                "AWS_SESSION_TOKEN": creds["SessionToken"],
            }
            self._cache[key] = (creds["Expiration"].timestamp(), env)
            return dict(env)
