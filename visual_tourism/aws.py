"""The one wrapper every AWS call goes through: clients, identity, error translation, retries.

Library modules take an ``Aws`` object instead of creating boto3 clients, so tests can pass
one pointed at moto, and local mode needs nothing but endpoint URLs in the environment.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any, TypeVar

import boto3
import botocore.config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from . import where
from .errors import CredentialsError, DeployError, RegionError

log = logging.getLogger(__name__)
T = TypeVar("T")

NOT_FOUND_CODES = frozenset(
    {
        "404",
        "NoSuchKey",
        "NoSuchBucket",
        "NotFound",
        "NoSuchEntity",
        "ResourceNotFoundException",
        "ObjectNotFoundException",
        "NoSuchBucketPolicy",
        "NoSuchTagSet",
        "ServerSideEncryptionConfigurationNotFoundError",
        "NoSuchPublicAccessBlockConfiguration",
    }
)
_NOT_FOUND_WORDS = re.compile(r"could not find|does not exist|not found|\bno .* found")
_CREDENTIAL_CODES = frozenset(
    {"InvalidClientTokenId", "ExpiredToken", "UnrecognizedClientException", "SignatureDoesNotMatch"}
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", ""))
    return str(exc)


def is_not_found(exc: BaseException) -> bool:
    """True for every flavour of "does not exist" the services use (SageMaker says it in words)."""
    if not isinstance(exc, ClientError):
        return False
    code = error_code(exc)
    if code in NOT_FOUND_CODES:
        return True
    message = error_message(exc).lower()
    return code == "ValidationException" and bool(_NOT_FOUND_WORDS.search(message))


class Aws:
    """boto3 clients for one region, plus the identity of the caller."""

    def __init__(
        self,
        region: str,
        session: boto3.session.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.region = region
        self.session = session or boto3.session.Session(region_name=region)
        self.sleep = sleep  # injectable so tests of retries never wait
        self._clients: dict[str, Any] = {}
        self._config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 5})

    def client(self, service: str) -> Any:
        if service not in self._clients:
            try:
                self._clients[service] = self.session.client(
                    service, region_name=self.region, config=self._config
                )
            except NoRegionError:  # pragma: no cover - region is always passed
                raise RegionError("No AWS region set. Set AWS_REGION.") from None
        return self._clients[service]

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def lambda_(self) -> Any:
        return self.client("lambda")

    @property
    def sagemaker(self) -> Any:
        return self.client("sagemaker")

    @property
    def autoscaling(self) -> Any:
        return self.client("application-autoscaling")

    @cached_property
    def identity(self) -> dict[str, str]:
        try:
            return self.client("sts").get_caller_identity()
        except (NoCredentialsError, PartialCredentialsError):
            raise CredentialsError(
                "No AWS credentials found. Run 'aws configure' or 'aws sso login', set "
                "AWS_PROFILE, or try local mode: 'visual-tourism local demo'."
            ) from None
        except ClientError as exc:
            if error_code(exc) in _CREDENTIAL_CODES:
                raise CredentialsError(
                    f"AWS rejected the credentials ({error_code(exc)}): {error_message(exc)}. "
                    "Refresh them ('aws sso login') or pick another AWS_PROFILE."
                ) from None
            raise

    @property
    def account_id(self) -> str:
        return self.identity["Account"]

    @property
    def is_local(self) -> bool:
        """True when SageMaker is reached on this machine (local mode): nothing is billed."""
        return where.is_loopback(self.sagemaker.meta.endpoint_url)

    @cached_property
    def partition(self) -> str:
        return self.session.get_partition_for_region(self.region)

    def wait(self, service: str, waiter: str, delay: int = 5, max_attempts: int = 120,
             **kwargs: Any) -> None:
        """A botocore waiter with our delay and attempt count."""
        self.client(service).get_waiter(waiter).wait(
            WaiterConfig={"Delay": delay, "MaxAttempts": max_attempts}, **kwargs
        )

    def retry(
        self,
        call: Callable[[], T],
        *,
        retry_if: Callable[[BaseException], bool],
        what: str,
        timeout: float = 90.0,
        first_delay: float = 1.0,
    ) -> T:
        """Call until it succeeds or ``timeout`` passes, backing off while ``retry_if(error)``.

        Used for IAM propagation: a role just created cannot be assumed for some seconds.
        """
        deadline = time.monotonic() + timeout
        delay = first_delay
        while True:
            try:
                return call()
            except (ClientError, BotoCoreError) as exc:
                if not retry_if(exc) or time.monotonic() + delay > deadline:
                    raise
                log.info("%s: %s; retrying in %.0f s", what, error_message(exc), delay)
                self.sleep(delay)
                delay = min(delay * 2, 10.0)


def ignore_not_found(call: Callable[[], Any], what: str) -> bool:
    """Run a delete; "already gone" counts as success. Returns True if something was deleted."""
    try:
        call()
    except ClientError as exc:
        if is_not_found(exc):
            log.debug("%s: already gone", what)
            return False
        raise DeployError(f"Could not delete {what}: {error_message(exc)}") from exc
    return True


def tags_dict(tags: Iterable[dict[str, str]] | dict[str, str] | None) -> dict[str, str]:
    """Normalise the services' three tag shapes into one dict."""
    if not tags:
        return {}
    if isinstance(tags, dict):
        return dict(tags)
    return {t.get("Key", t.get("key", "")): t.get("Value", t.get("value", "")) for t in tags}
