"""The two places where local mode changes moto's behaviour, kept in one module.

Both replace private moto names, which is why moto is pinned exactly in pyproject.toml;
tests/test_local_stack.py::test_moto_private_names fails loudly if a release moves them.

1. Lambda invocation: moto would run a notified function only inside Docker (none here).
   ``LambdaFunction._invoke_lambda`` is replaced by a callable of ours that runs the deployed
   zip's handler asynchronously, as S3's asynchronous invocation does on AWS.
2. Bucket policies: moto treats a statement whose Condition it cannot evaluate as a match, so
   the TLS-only Deny (``aws:SecureTransport`` = false) would refuse every request. Local
   traffic is plain HTTP on loopback, so local mode evaluates bucket policies without their
   conditional statements: TLS is not enforced locally (on AWS it is).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from moto.awslambda.models import LambdaFunction
from moto.iam.access_control import IAMPolicy, PermissionResult
from moto.s3.models import FakeBucket

_original_invoke = LambdaFunction._invoke_lambda
_original_permission = FakeBucket.get_permission

Invoker = Callable[[Any, Any], tuple[str, bool, str]]


def _permission_without_conditions(self: FakeBucket, action: str, resource: str) -> Any:
    if self.policy is None:
        return PermissionResult.NEUTRAL
    document = json.loads(self.policy.decode())
    statements = document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    document["Statement"] = [s for s in statements if "Condition" not in s]
    if not document["Statement"]:
        return PermissionResult.NEUTRAL
    return IAMPolicy(json.dumps(document)).is_action_permitted(action, resource)


def patch_bucket_policies() -> None:
    FakeBucket.get_permission = _permission_without_conditions  # type: ignore[method-assign]


def patch_lambda_invoke(invoker: Invoker) -> None:
    def _invoke(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        return invoker(self, event)

    LambdaFunction._invoke_lambda = _invoke  # type: ignore[method-assign]


def restore() -> None:
    LambdaFunction._invoke_lambda = _original_invoke  # type: ignore[method-assign]
    FakeBucket.get_permission = _original_permission  # type: ignore[method-assign]
