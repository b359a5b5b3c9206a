"""IAM in local mode: what a function's role does not allow fails here as it would on AWS.

moto stores IAM policies but, by default, authorizes nothing. Its own switch
(``INITIAL_NO_AUTH_ACTION_COUNT``) is all or nothing: every request must then be signed by an
IAM user or an assumed role, which the stack's own root-like credentials are not. So local mode
decides per request instead:

- a request signed with temporary credentials (a session token: every local function runs with
  its execution role's, see ``local.credentials``) or with an IAM user's key (``AKIA...``) is
  authenticated and authorized by moto's own IAM evaluator (``moto.iam.access_control``):
  signature, then the identity policies of that user or role, with resource ARNs (S3 passes the
  object's ARN). Presigned S3 URLs (query-string signatures) are authorized the same way, for
  the signer's role, as S3 does when the model container fetches a photo;
- any other request (the account's root stand-in, long-term keys moto does not know) is let
  through, as an administrator's would be. `up` and `down` run that way.

Two stricter-than-moto rules S3 applies to a principal: reading a missing object answers 403
AccessDenied, not 404 NoSuchKey, unless the caller may ``s3:ListBucket`` the bucket; and S3's
request condition keys (``s3:prefix``, ``s3:delimiter``, ``s3:max-keys``) are evaluated from the
request, as IAM does (moto ignores the operators it lacks, StringLike among them, so a
ListBucket limited to some prefixes would allow any listing). A GetObject or HeadObject carries
no ``s3:prefix``: a ListBucket limited by one does not make a missing object a 404.

``authorize`` serves the other local services (the model server's ``sagemaker:InvokeEndpoint``)
from the same policies. What is not modelled, and so not enforced locally: condition keys in
identity policies other than S3's request keys above (moto checks StringEquals on the keys it
knows and ignores other operators, so such a condition is mostly as if absent),
resource-based policies (bucket policies aside: see ``moto_patches``), permission boundaries,
SCPs and session policies. SSM and DynamoDB requests are authorized on the parameter's or the
table's ARN (moto passes "*"). Enforcement is on while ``enable()`` is in force
(``LocalStack(enforce_iam=...)``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlparse

from moto.core.authorization import ActionAuthenticatorMixin
from moto.iam.access_control import (
    AssumedRoleAccessKey,
    CreateAccessKeyFailure,
    IAMPolicy,
    IAMUserAccessKey,
    PermissionResult,
    S3IAMRequest,
)
from moto.s3.exceptions import BucketAccessDeniedError, S3AccessDeniedError

log = logging.getLogger(__name__)

_original = ActionAuthenticatorMixin._authenticate_and_authorize_action
_lock = threading.Lock()
_enabled = False
# What was authorized or denied, per (principal role or user, action): the security figures.
decisions: dict[tuple[str, str], dict[str, int]] = {}


class Denied(Exception):
    """An identity policy does not allow ``action`` on ``resource`` for ``principal``."""

    def __init__(self, principal: str, action: str, resource: str) -> None:
        super().__init__(principal, action, resource)
        self.principal, self.action, self.resource = principal, action, resource

    def __str__(self) -> str:
        return (f"User: {self.principal} is not authorized to perform: {self.action} on "
                f"resource: {self.resource} because no identity-based policy allows the "
                f"{self.action} action")


def enable() -> None:
    global _enabled
    with _lock:
        ActionAuthenticatorMixin._authenticate_and_authorize_action = (  # type: ignore[method-assign]
            _authenticate_and_authorize_action
        )
        _enabled = True


def disable() -> None:
    global _enabled
    with _lock:
        ActionAuthenticatorMixin._authenticate_and_authorize_action = _original  # type: ignore[method-assign]
        _enabled = False


def enabled() -> bool:
    return _enabled


def _record(principal: str, action: str, allowed: bool) -> None:
    # The principal's role or user name, not the session: figures group by role.
    name = principal.split(":", 5)[-1]
    if name.startswith("assumed-role/"):
        name = "role/" + name.split("/")[1]
    with _lock:
        counts = decisions.setdefault((name, action), {"allowed": 0, "denied": 0})
        counts["allowed" if allowed else "denied"] += 1


def _credential(headers: Mapping[str, str], query: Mapping[str, list[str]]) -> tuple[str, str]:
    """(access key id, session token) of a header or query-string SigV4 signature."""
    auth = headers.get("Authorization") or ""
    if "Credential=" in auth:
        key = auth.partition("Credential=")[2].partition("/")[0]
        return key, headers.get("X-Amz-Security-Token") or ""
    # Presigned: SigV4 (X-Amz-Credential) or SigV2 (AWSAccessKeyId) query parameters.
    key = (query.get("X-Amz-Credential") or query.get("AWSAccessKeyId") or [""])[0]
    token = query.get("X-Amz-Security-Token") or query.get("x-amz-security-token") or [""]
    return key.partition("/")[0], token[0]


def is_principal(access_key: str, token: str) -> bool:
    """Signed by an IAM user or an assumed role: the requests local mode authorizes."""
    return bool(access_key) and (access_key.startswith("AKIA") or bool(token))


def _access_key(account: str, partition: str, access_key: str, token: str) -> Any:
    headers = {"X-Amz-Security-Token": token} if token else {}
    return (AssumedRoleAccessKey if token else IAMUserAccessKey)(
        account_id=account, partition=partition, access_key_id=access_key, headers=headers,
    )


# S3's request condition keys local mode knows, from the request (IAM's "s3:" keys).
S3_CONTEXT_KEYS = ("s3:prefix", "s3:delimiter", "s3:max-keys")
_MISSING = object()


def _glob(pattern: str) -> str:
    """IAM's StringLike: ``*`` any characters, ``?`` one."""
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def _condition_holds(operator: str, expected: Any, actual: Any) -> bool:
    """One operator on one key (the String* family, with IfExists); values OR'ed."""
    base = operator[:-len("IfExists")] if operator.endswith("IfExists") else operator
    if actual is _MISSING:
        return operator.endswith("IfExists") or base.startswith("StringNot")
    values = [str(v) for v in (expected if isinstance(expected, list) else [expected])]
    if base in ("StringEquals", "StringNotEquals"):
        found = str(actual) in values
    elif base in ("StringLike", "StringNotLike"):
        found = any(re.fullmatch(_glob(v), str(actual), re.DOTALL) for v in values)
    elif base in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        found = str(actual).lower() in [v.lower() for v in values]
    else:
        return False  # an operator not modelled here: the statement does not apply
    return not found if "Not" in base else found


def _with_context(policy: Any, context: Mapping[str, str]) -> str:
    """The policy document with every condition on an S3 request key decided from
    ``context``: a statement whose condition fails is dropped (it does not apply), one whose
    condition holds keeps only the conditions moto evaluates itself."""
    document = json.loads(json.dumps(IAMPolicy(policy)._policy_json))
    statements = document.get("Statement", [])
    kept = []
    for statement in statements if isinstance(statements, list) else [statements]:
        condition = statement.get("Condition") or {}
        applies, rest = True, {}
        for operator, pairs in condition.items():
            for name, expected in pairs.items():
                if name.lower() in S3_CONTEXT_KEYS:
                    applies = applies and _condition_holds(
                        operator, expected, context.get(name.lower(), _MISSING))
                else:
                    rest.setdefault(operator, {})[name] = expected
        if not applies:
            continue
        statement = {k: v for k, v in statement.items() if k != "Condition"}
        if rest:
            statement["Condition"] = rest
        kept.append(statement)
    document["Statement"] = kept
    return json.dumps(document)


def s3_context(action: str, query: Mapping[str, list[str]]) -> dict[str, str]:
    """The S3 condition keys a request carries: a listing's prefix, delimiter and max-keys;
    an object request carries none of them."""
    if action != "s3:ListBucket":
        return {}
    names = {"s3:prefix": "prefix", "s3:delimiter": "delimiter", "s3:max-keys": "max-keys"}
    return {key: query[param][0] for key, param in names.items() if query.get(param)}


def evaluate(key: Any, action: str, resource: str,
             context: Mapping[str, str] | None = None) -> bool:
    """moto's evaluation of the principal's identity policies, with S3's request condition
    keys decided from ``context`` (see ``_with_context``): an explicit Deny wins."""
    permitted = False
    for policy in key.collect_policies():
        result = IAMPolicy(_with_context(policy, context or {})).is_action_permitted(
            action, resource)
        if result == PermissionResult.DENIED:
            return False
        permitted = permitted or result == PermissionResult.PERMITTED
    return permitted


def authorize(
    headers: Mapping[str, str], action: str, resource: str, account: str,
    partition: str = "aws", query: Mapping[str, list[str]] | None = None,
) -> None:
    """Raise ``Denied`` when a principal's policies do not allow ``action`` on ``resource``.

    Requests not signed by a principal (see ``is_principal``) and any request while
    enforcement is off pass. An unknown or expired key is denied.
    """
    if not _enabled:
        return
    access_key, token = _credential(headers, query or {})
    if not is_principal(access_key, token):
        return
    try:
        key = _access_key(account, partition, access_key, token)
    except CreateAccessKeyFailure:
        _record("unknown", action, False)
        raise Denied(f"unknown access key {access_key}", action, resource) from None
    allowed = evaluate(key, action, resource)
    _record(key.arn, action, allowed)
    if not allowed:
        raise Denied(key.arn, action, resource)


def form_secrets(form: Mapping[str, str], account: str, partition: str = "aws"
                 ) -> dict[str, str]:
    """{access key: secret} of a POST form signed with a role's temporary credentials (the
    web function signs upload forms with its role's), for the form's signature check."""
    fields = {k.lower(): v for k, v in form.items()}
    access_key = fields.get("x-amz-credential", "").partition("/")[0]
    token = fields.get("x-amz-security-token", "")
    if not access_key or not token:
        return {}
    try:
        key = AssumedRoleAccessKey(account_id=account, partition=partition,
                                   access_key_id=access_key,
                                   headers={"X-Amz-Security-Token": token})
    except CreateAccessKeyFailure:
        return {}
    return {access_key: key._secret_access_key}


def authorize_form(form: Mapping[str, str], bucket: str, key: str, account: str) -> None:
    """S3 authorizes a POST upload as s3:PutObject on its key for the form's signer: a form
    can upload no more than the role that signed it. Raises ``Denied``."""
    fields = {k.lower(): v for k, v in form.items()}
    headers = {"Authorization": f"Credential={fields.get('x-amz-credential', '')}",
               "X-Amz-Security-Token": fields.get("x-amz-security-token", "")}
    authorize(headers, "s3:PutObject", f"arn:aws:s3:::{bucket}/{key}", account)


def _authenticate_and_authorize_action(
    self: Any, iam_request_cls: type, resource: str = "*"
) -> None:
    """Replaces moto's: authorizes principals' requests only (see the module docstring)."""
    query = parse_qs(urlparse(self.uri).query, keep_blank_values=True)
    access_key, token = _credential(self.headers, query)
    if not is_principal(access_key, token):
        return
    if resource == "*" and getattr(self, "service_name", None) == "dynamodb":
        resource = _dynamodb_table_arn(self) or resource
    if resource == "*" and getattr(self, "service_name", None) == "ssm":
        resource = _ssm_parameter_arn(self) or resource
    s3 = iam_request_cls is S3IAMRequest
    if "Credential=" not in (self.headers.get("Authorization") or ""):
        # A presigned URL: S3 authorizes it for the signer (moto would fail on it).
        action = f"s3:{self._get_action()}" if s3 else "unknown"
        try:
            authorize(self.headers, action, resource, self.current_account,
                      query=query)
        except Denied:
            raise (BucketAccessDeniedError(bucket=self.bucket_name) if s3
                   else S3AccessDeniedError()) from None
    else:
        path = self.raw_path + (f"?{urlparse(self.uri).query}" if urlparse(self.uri).query
                                else "")
        request = iam_request_cls(
            account_id=self.current_account, method=self.method, path=path, data=self.data,
            body=self.raw_body, headers=self.headers, action=self._get_action(),
        )
        request.check_signature()
        action = request._action
        context = s3_context(action, query) if s3 else {}
        if s3 and action != "sts:GetCallerIdentity":
            allowed = evaluate(request._access_key, action, resource, context)
            _record(request._access_key.arn, action, allowed)
            if not allowed:
                request._raise_access_denied()
        else:
            try:
                request.check_action_permitted(resource)
            except Exception:
                _record(request._access_key.arn, action, False)
                raise
            _record(request._access_key.arn, action, True)
    if s3:
        _missing_object_needs_list_bucket(self, resource, access_key, token)


def _dynamodb_table_arn(self: Any) -> str | None:
    """DynamoDB authorizes a request on its table's ARN (moto passes "*", so a policy scoped
    to one table, as the stack's roles are, would never match)."""
    body = self.body  # moto's DynamoDB handler has parsed it already; others have not
    if not isinstance(body, dict):
        try:
            body = json.loads(body or "{}")
        except (TypeError, ValueError):
            return None
    table = body.get("TableName") if isinstance(body, dict) else None
    if not isinstance(table, str) or not table:
        return None
    if table.startswith("arn:"):
        return table
    return f"arn:{self.partition}:dynamodb:{self.region}:{self.current_account}:table/{table}"


def _ssm_parameter_arn(self: Any) -> str | None:
    """SSM authorizes a parameter request on the parameter's ARN (moto passes "*", so a policy
    scoped to one parameter, as the web role's is, would never match)."""
    try:
        body = json.loads(self.body or "{}") if not isinstance(self.body, dict) else self.body
    except (TypeError, ValueError):
        return None
    name = body.get("Name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        return None
    if name.startswith("arn:"):
        return name
    return (f"arn:{self.partition}:ssm:{self.region}:{self.current_account}:parameter"
            f"{name if name.startswith('/') else '/' + name}")


def _missing_object_needs_list_bucket(
    self: Any, resource: str, access_key: str, token: str
) -> None:
    """S3: without s3:ListBucket a missing object is 403 AccessDenied, not 404."""
    bucket_and_key = resource.split(":::", 1)[-1]
    bucket, _, key = bucket_and_key.partition("/")
    if not key or self._get_action() != "GetObject" or self.method not in ("GET", "HEAD"):
        return
    try:
        if self.backend.get_object(bucket, key) is not None:
            return  # it exists
    except Exception:  # noqa: BLE001 - moto's MissingBucket: S3 answers by the same rule
        pass
    principal = _access_key(self.current_account, "aws", access_key, token)
    bucket_arn = resource.split("/", 1)[0]
    allowed = evaluate(principal, "s3:ListBucket", bucket_arn)
    _record(principal.arn, "s3:ListBucket", allowed)
    if not allowed:
        raise BucketAccessDeniedError(bucket=bucket)
