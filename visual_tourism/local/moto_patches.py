"""The places where local mode changes moto's behaviour, kept in one module.

They replace private moto names, which is why moto is pinned exactly in pyproject.toml;
tests/test_local_stack.py::test_moto_private_names fails loudly if a release moves them.

1. Lambda invocation: moto would run a notified function only inside Docker (none here).
   ``LambdaFunction._invoke_lambda`` is replaced by a callable of ours that runs the deployed
   zip's handler asynchronously, as S3's asynchronous invocation does on AWS.
2. Bucket policies: moto treats a statement whose Condition it cannot evaluate as a match, so
   the TLS-only Deny (``aws:SecureTransport`` = false) would refuse every request. Local
   traffic is plain HTTP on loopback, so local mode evaluates bucket policies without their
   conditional statements: TLS is not enforced locally (on AWS it is).
3. Asynchronous invocation settings: moto's PutFunctionEventInvokeConfig appends to a list
   and GetFunctionEventInvokeConfig answers the first entry, so a second Put never shows.
   On AWS a Put replaces the configuration; local mode makes moto do that.
4. Endpoint instance types: moto checks CreateEndpointConfig against an old allow-list that
   refuses ml.g5 and newer GPUs; local mode checks against botocore's SageMaker service model
   (ProductionVariantInstanceType), the list the real API validates with.
5. Synchronous invokes: moto answers ``RequestResponse`` with canned text (or Docker);
   ``LambdaFunction.invoke`` is replaced so an API call's RequestResponse runs on the local
   Lambda service and returns the handler's result, while moto's own services' events (empty
   headers) keep going to the asynchronous queue through ``_invoke_lambda``.
6. CloudFormation: moto's lacks resource types the template uses (the web page's HTTP API,
   the bucket policy, the asynchronous invocation settings, autoscaling, the alarm, the
   deadline's schedule) and ignores bucket properties (the notification that triggers the
   function among them); ``parsing.get_model_map`` is widened with local models of them
   (``cfn_resources``), and a failed creation rolls back to ROLLBACK_COMPLETE as on AWS
   instead of leaving a half-built stack (``parsing.parse_and_create_resource``,
   ``Stack.create_resources``).
7. Quotas (``local.quotas`` holds the values and AWS's messages): moto's Service Quotas knows
   only VPC quotas and has no ListServiceQuotas; its Lambda has no GetAccountSettings and
   enforces concurrency only against MOTO_LAMBDA_CONCURRENCY_QUOTA; its SageMaker creates
   endpoints of any size. Local mode serves SageMaker's and Lambda's quotas
   (ListServiceQuotas, ListAWSDefaultServiceQuotas, GetServiceQuota, GetAccountSettings on
   the route AWS uses) and refuses what exceeds them as AWS does (CreateEndpoint and
   UpdateEndpointWeightsAndCapacities: ResourceLimitExceeded; PutFunctionConcurrency:
   InvalidParameterValueException). ``patch_quotas`` must run before the stand-in answers its
   first Lambda request: moto builds each service's routes on first use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import EventInvokeConfig, LambdaBackend, LambdaFunction
from moto.iam.access_control import IAMPolicy, PermissionResult
from moto.s3.models import FakeBucket, S3Backend
from moto.s3.responses import S3Response
from moto.sagemaker.exceptions import SagemakerClientError
from moto.sagemaker.exceptions import ValidationError as SageMakerValidationError
from moto.sagemaker.models import FakeEndpointConfig
from werkzeug.exceptions import HTTPException

_original_invoke = LambdaFunction._invoke_lambda
_original_function_invoke = LambdaFunction.invoke
_original_permission = FakeBucket.get_permission
_original_put_object = S3Backend.put_object
_original_put_event_config = LambdaBackend.put_function_event_invoke_config
_original_post = S3Response._bucket_response_post
_original_instance_check = FakeEndpointConfig.validate_instance_type

Invoker = Callable[[Any, Any], tuple[str, bool, str]]
PutHook = Callable[[str, str], None]  # (bucket, key)


class S3WriteFault(HTTPException):
    """S3's HTTP 500 InternalError for one PutObject; clients retry it as transient."""

    code = 500

    def __init__(self) -> None:
        super().__init__(
            description='<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError'
            "</Code><Message>Injected fault: we encountered an internal error. Please try "
            "again.</Message></Error>"
        )

    # werkzeug would wrap the description in HTML; S3 clients parse the XML error.
    def get_body(self, *args: Any, **kwargs: Any) -> str:
        return self.description or ""

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [("Content-Type", "application/xml")]


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


def _put_event_invoke_config(self: LambdaBackend, function_name: str,
                             config: dict[str, Any]) -> dict[str, Any]:
    fn = self.get_function(function_name)
    fn.event_invoke_config = [EventInvokeConfig(fn.function_arn, fn.last_modified, config)]
    return fn.event_invoke_config[0].response()


def patch_event_invoke_config() -> None:
    LambdaBackend.put_function_event_invoke_config = (  # type: ignore[method-assign]
        _put_event_invoke_config)


def patch_lambda_invoke(invoker: Invoker, sync_invoker: Callable[..., Any] | None = None,
                        ) -> None:
    """``invoker`` takes asynchronous invocations (S3's, ``InvocationType=Event``);
    ``sync_invoker`` (returns the runtime's Outcome) answers ``RequestResponse`` invokes with
    the handler's result, ``X-Amz-Function-Error`` and the log tail, as Lambda does."""
    def _invoke(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        return invoker(self, event)

    LambdaFunction._invoke_lambda = _invoke  # type: ignore[method-assign]
    if sync_invoker is None:
        return

    def invoke(self: LambdaFunction, body: str, request_headers: Any,
               response_headers: Any) -> str | bytes:
        # moto's own services (S3's notifications, SNS, ...) call invoke with empty headers:
        # those are asynchronous events. An API call carries its HTTP request's headers.
        kind = request_headers.get("x-amz-invocation-type", "RequestResponse")
        if not request_headers or kind != "RequestResponse":
            return _original_function_invoke(self, body, request_headers, response_headers)
        from .lambda_runtime import TooManyRequests

        event = json.loads(body) if body else {}
        try:
            outcome = sync_invoker(self, event)
        except TooManyRequests as exc:
            raise _TooManyRequests(str(exc)) from None
        if not outcome.ok:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(outcome.error or {}).encode()
        return json.dumps(outcome.result).encode()

    LambdaFunction.invoke = invoke  # type: ignore[method-assign]


class _TooManyRequests(LambdaClientError):
    def __init__(self, message: str) -> None:
        super().__init__("TooManyRequestsException", message)
        self.code = 429


def hook_put_object(before: PutHook | None = None, after: PutHook | None = None) -> None:
    """Call ``before(bucket, key)`` ahead of every stored object, ``after`` once it is visible.

    Applies to every S3 backend of this process, moto's threaded server included;
    ``unhook_put_object`` (or ``restore``) removes it. Raise ``S3WriteFault`` from ``before``
    to fail that PutObject (nothing is stored).
    """

    def put_object(self: S3Backend, bucket_name: str, key_name: str, *args: Any,
                   **kwargs: Any) -> Any:
        if before is not None:
            before(bucket_name, key_name)
        stored = _original_put_object(self, bucket_name, key_name, *args, **kwargs)
        if after is not None:
            after(bucket_name, key_name)
        return stored

    S3Backend.put_object = put_object  # type: ignore[method-assign]


def patch_post_policies(secrets_by_key: dict[str, str]) -> None:
    """Refuse browser uploads that break their POST policy (see post_policy.check)."""
    from . import iam_enforcement
    from .post_policy import PolicyViolation, check

    def post(self: S3Response, request: Any, bucket_name: str) -> Any:
        self.path = self._get_path(request)  # is_delete_keys reads it
        if self.is_delete_keys() or not request.headers.get("Content-Length"):
            return _original_post(self, request, bucket_name)
        fields = {k: v for k, v in self.form_data.items() if k != "file"}
        body = self.raw_body if isinstance(self.raw_body, bytes) else str(self.body).encode()
        cors = self._get_cors_headers_other()
        # A form signed with a role's session (the web function's): its key, and its rights.
        known = {**secrets_by_key, **iam_enforcement.form_secrets(fields, self.current_account)}
        try:
            check(fields, len(body), bucket_name, known)
            iam_enforcement.authorize_form(fields, bucket_name, fields.get("key", ""),
                                           self.current_account)
        except PolicyViolation as refusal:
            return refusal.status, {**cors, "content-type": "application/xml"}, refusal.xml()
        except iam_enforcement.Denied:
            refusal = PolicyViolation(403, "AccessDenied", "Access Denied")
            return refusal.status, {**cors, "content-type": "application/xml"}, refusal.xml()
        status, headers, text = _original_post(self, request, bucket_name)
        return status, {**headers, **cors}, text

    S3Response._bucket_response_post = post  # type: ignore[method-assign]


def unpatch_post_policies() -> None:
    S3Response._bucket_response_post = _original_post  # type: ignore[method-assign]


def unhook_put_object() -> None:
    S3Backend.put_object = _original_put_object  # type: ignore[method-assign]


def _instance_type_of_the_api(self: FakeEndpointConfig, instance_type: str) -> None:
    """SageMaker's own list of endpoint instance types (botocore's service model), in place of
    moto's older allow-list, which refuses current GPUs (ml.g5, ml.g6, ...) that AWS takes."""
    allowed = _endpoint_instance_types()
    if instance_type not in allowed:
        raise SageMakerValidationError(
            message=f"Value '{instance_type}' at 'instanceType' failed to satisfy constraint: "
                    f"Member must satisfy enum value set: [{', '.join(sorted(allowed))}]")


def _endpoint_instance_types() -> frozenset[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for("ProductionVariantInstanceType").enum)


def patch_instance_types() -> None:
    FakeEndpointConfig.validate_instance_type = (  # type: ignore[method-assign]
        _instance_type_of_the_api)


# -- 7. quotas ----------------------------------------------------------------------------------
class _ResourceLimitExceeded(SagemakerClientError):
    code = "ResourceLimitExceeded"


_quota_originals: dict[str, Any] = {}
_ACCOUNT_SETTINGS_PATH = r"{0}/(?P<api_version>[^/]+)/account-settings/?$"


def _quota_error(exc: Exception) -> Any:
    from moto.servicequotas.exceptions import JsonRESTError

    return JsonRESTError("IllegalArgumentException", str(exc))


def _endpoint_instances(backend: Any, skip: str = "") -> dict[str, int]:
    """Instances per type held by the backend's endpoints (but ``skip``), as SageMaker counts
    them against "<type> for endpoint usage"."""
    used: dict[str, int] = {}
    for name, endpoint in backend.endpoints.items():
        if name == skip or endpoint.endpoint_status in ("Deleting", "Failed"):
            continue
        config = backend.endpoint_configs.get(endpoint.endpoint_config_name)
        types = {v["VariantName"]: v.get("InstanceType", "")
                 for v in (config.production_variants if config else [])}
        for variant in endpoint.production_variants:
            kind = types.get(variant["VariantName"], "")
            if kind:
                used[kind] = used.get(kind, 0) + int(variant.get("CurrentInstanceCount") or 0)
    return used


def _check_room(backend: Any, wanted: dict[str, int], skip: str) -> None:
    from . import quotas

    used = _endpoint_instances(backend, skip)
    for kind, count in wanted.items():
        try:
            quota = quotas.endpoint_quota(kind)
        except quotas.QuotaSettingError as exc:
            raise SageMakerValidationError(message=str(exc)) from None
        if used.get(kind, 0) + count > quota:
            raise _ResourceLimitExceeded(
                quotas.endpoint_limit_message(kind, quota, used.get(kind, 0), count))


def patch_quotas() -> None:
    """Serve SageMaker's and Lambda's quotas and enforce them (see the module docstring)."""
    from moto.awslambda import urls as lambda_urls
    from moto.awslambda.exceptions import InvalidParameterValueException
    from moto.awslambda.responses import LambdaResponse
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.servicequotas.models import ServiceQuotasBackend
    from moto.servicequotas.responses import ServiceQuotasResponse

    from . import quotas

    if _quota_originals:
        return
    _quota_originals.update(
        get_quota=ServiceQuotasBackend.get_service_quota,
        list_defaults=ServiceQuotasBackend.list_aws_default_service_quotas,
        list_defaults_response=ServiceQuotasResponse.list_aws_default_service_quotas,
        put_concurrency=LambdaBackend.put_function_concurrency,
        create_endpoint=SageMakerModelBackend.create_endpoint,
        update_capacities=SageMakerModelBackend.update_endpoint_weights_and_capacities)
    get_quota, put_concurrency = _quota_originals["get_quota"], _quota_originals["put_concurrency"]
    create_endpoint = _quota_originals["create_endpoint"]
    update_capacities = _quota_originals["update_capacities"]

    def served(service: str) -> list[dict[str, Any]] | None:
        if service not in ("sagemaker", "lambda"):
            return None
        try:
            return quotas.quotas(service)
        except quotas.QuotaSettingError as exc:
            raise _quota_error(exc) from None

    def page(self: ServiceQuotasResponse) -> str:
        params = json.loads(self.body)
        found = served(str(params.get("ServiceCode")))
        if found is None:  # moto's own (vpc), unpaginated
            found = self.backend.list_aws_default_service_quotas(str(params.get("ServiceCode")))
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults") or 100)
        body: dict[str, Any] = {"Quotas": found[start:start + size]}
        if start + size < len(found):
            body["NextToken"] = str(start + size)
        return json.dumps(body)

    def get_service_quota(self: ServiceQuotasBackend, service_code: str,
                          quota_code: str) -> dict[str, Any]:
        for quota in served(service_code) or []:
            if quota["QuotaCode"] == quota_code:
                return quota
        return get_quota(self, service_code, quota_code)

    def get_account_settings(self: LambdaResponse) -> Any:
        try:
            total = quotas.concurrency()
        except quotas.QuotaSettingError as exc:
            raise InvalidParameterValueException(str(exc)) from None
        reserved = sum(int(fn.reserved_concurrency or 0) for fn in self.backend.list_functions())
        functions = list(self.backend.list_functions())
        return 200, {}, json.dumps({
            "AccountLimit": {"TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000,
                             "CodeSizeZipped": 52428800, "ConcurrentExecutions": total,
                             "UnreservedConcurrentExecutions": max(0, total - reserved)},
            "AccountUsage": {"TotalCodeSize": sum(int(fn.code_size or 0) for fn in functions),
                             "FunctionCount": len(functions)}})

    def put_function_concurrency(self: LambdaBackend, function_name: str,
                                 reserved_concurrency: str) -> str:
        try:
            total = quotas.concurrency()
        except quotas.QuotaSettingError as exc:
            raise InvalidParameterValueException(str(exc)) from None
        target = self.get_function(function_name)
        others = sum(int(fn.reserved_concurrency or 0) for fn in self.list_functions()
                     if fn.function_name != target.function_name)
        if total - others - int(reserved_concurrency) < min(quotas.MIN_UNRESERVED, total):
            raise InvalidParameterValueException(quotas.reservation_message(total))
        return put_concurrency(self, function_name, reserved_concurrency)

    def create_endpoint_within_quota(self: SageMakerModelBackend, endpoint_name: str,
                                     endpoint_config_name: str, tags: Any) -> Any:
        config = self.endpoint_configs.get(endpoint_config_name)
        wanted: dict[str, int] = {}
        for variant in (config.production_variants if config else []):
            if variant.get("InstanceType"):
                kind = variant["InstanceType"]
                wanted[kind] = wanted.get(kind, 0) + int(variant.get("InitialInstanceCount") or 1)
        _check_room(self, wanted, skip=endpoint_name)
        return create_endpoint(self, endpoint_name, endpoint_config_name, tags)

    def update_capacities_within_quota(  # moto's own parameter names: it calls by keyword
            self: SageMakerModelBackend, endpoint_name: str,
            desired_weights_and_capacities: list[dict[str, Any]]) -> str:
        desired = desired_weights_and_capacities
        endpoint = self.endpoints.get(endpoint_name)
        config = self.endpoint_configs.get(endpoint.endpoint_config_name) if endpoint else None
        types = {v["VariantName"]: v.get("InstanceType", "")
                 for v in (config.production_variants if config else [])}
        wanted: dict[str, int] = {}
        for change in desired:
            kind = types.get(change.get("VariantName", ""), "")
            if kind and change.get("DesiredInstanceCount") is not None:
                wanted[kind] = wanted.get(kind, 0) + int(change["DesiredInstanceCount"])
        _check_room(self, wanted, skip=endpoint_name)
        return update_capacities(self, endpoint_name, desired)

    ServiceQuotasResponse.list_service_quotas = page  # type: ignore[attr-defined]
    ServiceQuotasResponse.list_aws_default_service_quotas = page  # type: ignore[method-assign]
    ServiceQuotasBackend.get_service_quota = get_service_quota  # type: ignore[method-assign]
    LambdaResponse.get_account_settings = get_account_settings  # type: ignore[attr-defined]
    lambda_urls.url_paths[_ACCOUNT_SETTINGS_PATH] = LambdaResponse.dispatch
    LambdaBackend.put_function_concurrency = put_function_concurrency  # type: ignore[method-assign]
    SageMakerModelBackend.create_endpoint = create_endpoint_within_quota  # type: ignore[method-assign]
    SageMakerModelBackend.update_endpoint_weights_and_capacities = (  # type: ignore[method-assign]
        update_capacities_within_quota)


def unpatch_quotas() -> None:
    if not _quota_originals:
        return
    from moto.awslambda import urls as lambda_urls
    from moto.awslambda.responses import LambdaResponse
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.servicequotas.models import ServiceQuotasBackend
    from moto.servicequotas.responses import ServiceQuotasResponse

    del ServiceQuotasResponse.list_service_quotas  # type: ignore[attr-defined]
    ServiceQuotasResponse.list_aws_default_service_quotas = (  # type: ignore[method-assign]
        _quota_originals["list_defaults_response"])
    ServiceQuotasBackend.get_service_quota = _quota_originals["get_quota"]  # type: ignore[method-assign]
    del LambdaResponse.get_account_settings  # type: ignore[attr-defined]
    lambda_urls.url_paths.pop(_ACCOUNT_SETTINGS_PATH, None)
    LambdaBackend.put_function_concurrency = (  # type: ignore[method-assign]
        _quota_originals["put_concurrency"])
    SageMakerModelBackend.create_endpoint = _quota_originals["create_endpoint"]  # type: ignore[method-assign]
    SageMakerModelBackend.update_endpoint_weights_and_capacities = (  # type: ignore[method-assign]
        _quota_originals["update_capacities"])
    _quota_originals.clear()


_cfn_originals: dict[str, Any] = {}


def patch_cloudformation() -> None:
    """Teach moto's CloudFormation the template's missing resource types, and rollback."""
    from moto.cloudformation import parsing
    from moto.cloudformation.models import Stack

    from . import cfn_resources

    if _cfn_originals:
        return
    _cfn_originals.update(
        get_model_map=parsing.get_model_map, get_name_type_map=parsing.get_name_type_map,
        parse_and_create_resource=parsing.parse_and_create_resource,
        create_resources=Stack.create_resources)
    model_map, name_map = _cfn_originals["get_model_map"], _cfn_originals["get_name_type_map"]

    def get_model_map() -> dict[str, Any]:
        return {**model_map(), **cfn_resources.MODELS}

    def get_name_type_map() -> dict[str, Any]:
        return {**name_map(), **{kind: model.cloudformation_name_type()
                                 for kind, model in cfn_resources.MODELS.items()}}

    parsing.get_model_map = get_model_map  # type: ignore[assignment]
    parsing.get_name_type_map = get_name_type_map  # type: ignore[assignment]
    parsing.parse_and_create_resource = cfn_resources.guarded_create(
        _cfn_originals["parse_and_create_resource"])
    Stack.create_resources = cfn_resources.guarded_create_resources(  # type: ignore[method-assign]
        _cfn_originals["create_resources"])


def unpatch_cloudformation() -> None:
    if not _cfn_originals:
        return
    from moto.cloudformation import parsing
    from moto.cloudformation.models import Stack

    parsing.get_model_map = _cfn_originals["get_model_map"]
    parsing.get_name_type_map = _cfn_originals["get_name_type_map"]
    parsing.parse_and_create_resource = _cfn_originals["parse_and_create_resource"]
    Stack.create_resources = _cfn_originals["create_resources"]  # type: ignore[method-assign]
    _cfn_originals.clear()


def restore() -> None:
    unpatch_cloudformation()
    unpatch_quotas()
    LambdaFunction.invoke = _original_function_invoke  # type: ignore[method-assign]
    FakeEndpointConfig.validate_instance_type = (  # type: ignore[method-assign]
        _original_instance_check)
    LambdaFunction._invoke_lambda = _original_invoke  # type: ignore[method-assign]
    LambdaBackend.put_function_event_invoke_config = (  # type: ignore[method-assign]
        _original_put_event_config)
    FakeBucket.get_permission = _original_permission  # type: ignore[method-assign]
    S3Backend.put_object = _original_put_object  # type: ignore[method-assign]
    S3Response._bucket_response_post = _original_post  # type: ignore[method-assign]
