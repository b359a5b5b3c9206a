"""CloudFormation in local mode: the resource types of infra/template.yaml that moto 5.2.5's
CloudFormation lacks, and CloudFormation's rollback of a failed creation.

moto's CloudFormation skips (with a warning) AWS::ApiGatewayV2::Api/Integration/Route/Stage,
AWS::S3::BucketPolicy, AWS::Lambda::EventInvokeConfig,
AWS::ApplicationAutoScaling::ScalableTarget/ScalingPolicy, AWS::CloudWatch::Alarm and
AWS::Scheduler::ScheduleGroup/Schedule, and a ``!GetAtt`` of a skipped resource fails the whole
stack. Its AWS::S3::Bucket ignores NotificationConfiguration (so no photo would ever reach the
function), PublicAccessBlockConfiguration, OwnershipControls, CorsConfiguration and
LifecycleConfiguration; its AWS::IAM::Role keeps inline policies in a form that IAM
evaluation cannot read and never updates them; its AWS::SageMaker::Endpoint ignores
EndpointName. The models here create each of those in the moto backend that the
matching API call (and ``visual-tourism up``) uses, so a stack deployed locally is the stack
``up`` builds, and the local web front, Lambda service, autoscaling and scheduler find it.

They are duck-typed, not subclasses of moto's ``CloudFormationModel``: moto collects that
class's subclasses once per process, and these must exist only while local mode patches moto
(``moto_patches.patch_cloudformation``; ``restore`` removes them).

A failed creation: moto raises out of CreateStack and leaves a half-built stack whose
outputs cannot be evaluated (so DescribeStacks answers 500, and a later DeleteStack fails
too). CloudFormation records the failed resource with its reason, deletes what it created
(keeping ``DeletionPolicy: Retain`` resources) and ends in ROLLBACK_COMPLETE; so does local
mode (``create_resources``).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from moto.apigatewayv2.models import apigatewayv2_backends
from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.awslambda.models import lambda_backends
from moto.cloudformation import parsing
from moto.cloudformation.exceptions import UnformattedGetAttTemplateException
from moto.cloudformation.models import Event, Stack
from moto.cloudwatch.models import cloudwatch_backends
from moto.iam.models import Role as MotoRole
from moto.s3.models import FakeBucket, s3_backends
from moto.sagemaker.models import FakeEndpoint
from moto.scheduler.models import scheduler_backends
from moto.utilities.utils import get_partition

log = logging.getLogger(__name__)


def _s3(account_id: str, region_name: str) -> Any:
    return s3_backends[account_id][get_partition(region_name)]


def _tags(tags: Any) -> dict[str, str]:
    """CloudFormation writes tags as a list of Key/Value or as a map, per resource type."""
    if isinstance(tags, dict):
        return {str(k): str(v) for k, v in tags.items()}
    return {t["Key"]: str(t["Value"]) for t in tags or []}


class LocalResource:
    """What moto's ResourceMap needs of a resource model (see CloudFormationModel)."""

    TYPE: ClassVar[str] = ""
    ATTRIBUTES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, physical_id: str, properties: dict[str, Any], account_id: str,
                 region_name: str, attributes: dict[str, Any] | None = None) -> None:
        self.physical_id = physical_id
        self.properties = properties
        self.account_id = account_id
        self.region_name = region_name
        self.attributes = attributes or {}

    # -- class side: how moto's parser creates, updates and deletes ---------------------------
    @classmethod
    def cloudformation_type(cls) -> str:
        return cls.TYPE

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""  # the properties are read directly

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in cls.ATTRIBUTES

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str,
                                        **kwargs: Any) -> LocalResource:
        properties = cloudformation_json.get("Properties") or {}
        return cls.create(properties, account_id, region_name,
                          kwargs.get("LogicalId") or resource_name)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: LocalResource,
                                        new_resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str) -> LocalResource:
        properties = cloudformation_json.get("Properties") or {}
        return original_resource.update(properties)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str) -> None:
        return None  # instances delete themselves (delete below)

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        raise NotImplementedError

    # -- instance side ---------------------------------------------------------------------
    def update(self, properties: dict[str, Any]) -> LocalResource:
        """Replacement by default; in-place where the API allows it (overridden)."""
        self.delete(self.account_id, self.region_name)
        return self.create(properties, self.account_id, self.region_name, self.physical_id)

    def delete(self, account_id: str, region_name: str) -> None:
        raise NotImplementedError

    @property
    def physical_resource_id(self) -> str:
        return self.physical_id

    def get_cfn_attribute(self, attribute_name: str) -> Any:
        if attribute_name not in self.attributes:
            raise UnformattedGetAttTemplateException()
        return self.attributes[attribute_name]

    def is_created(self) -> bool:
        return True


# -- API Gateway HTTP API ---------------------------------------------------------------------
def _apigw(account_id: str, region_name: str) -> Any:
    return apigatewayv2_backends[account_id][region_name]


class HttpApi(LocalResource):
    TYPE = "AWS::ApiGatewayV2::Api"
    ATTRIBUTES = ("ApiEndpoint", "ApiId")

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        api = _apigw(account_id, region_name).create_api(
            api_key_selection_expression=properties.get("ApiKeySelectionExpression"),
            cors_configuration=properties.get("CorsConfiguration"),
            description=properties.get("Description"),
            disable_schema_validation=properties.get("DisableSchemaValidation"),
            disable_execute_api_endpoint=properties.get("DisableExecuteApiEndpoint"),
            name=properties.get("Name"),
            protocol_type=properties.get("ProtocolType", "HTTP"),
            route_selection_expression=properties.get("RouteSelectionExpression"),
            tags=_tags(properties.get("Tags")),
            version=properties.get("Version"),
        )
        return cls(api.api_id, properties, account_id, region_name,
                   {"ApiEndpoint": api.api_endpoint, "ApiId": api.api_id})

    def update(self, properties: dict[str, Any]) -> LocalResource:
        api = _apigw(self.account_id, self.region_name).get_api(self.physical_id)
        api.name = properties.get("Name", api.name)
        api.description = properties.get("Description", api.description)
        self.properties = properties
        return self

    def delete(self, account_id: str, region_name: str) -> None:
        _apigw(account_id, region_name).delete_api(self.physical_id)


class HttpIntegration(LocalResource):
    TYPE = "AWS::ApiGatewayV2::Integration"
    ATTRIBUTES = ("IntegrationId",)

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        timeout = properties.get("TimeoutInMillis")
        integration = _apigw(account_id, region_name).create_integration(
            api_id=properties["ApiId"], connection_id=properties.get("ConnectionId"),
            connection_type=properties.get("ConnectionType"),
            content_handling_strategy=properties.get("ContentHandlingStrategy"),
            credentials_arn=properties.get("CredentialsArn"),
            description=properties.get("Description"),
            integration_method=properties.get("IntegrationMethod"),
            integration_subtype=properties.get("IntegrationSubtype"),
            integration_type=properties["IntegrationType"],
            integration_uri=properties.get("IntegrationUri"),
            passthrough_behavior=properties.get("PassthroughBehavior"),
            payload_format_version=properties.get("PayloadFormatVersion"),
            request_parameters=properties.get("RequestParameters"),
            request_templates=properties.get("RequestTemplates"),
            response_parameters=properties.get("ResponseParameters"),
            template_selection_expression=properties.get("TemplateSelectionExpression"),
            timeout_in_millis=int(timeout) if timeout is not None else None,
            tls_config=properties.get("TlsConfig"),
        )
        return cls(integration.id, properties, account_id, region_name,
                   {"IntegrationId": integration.id})

    def delete(self, account_id: str, region_name: str) -> None:
        backend = _apigw(account_id, region_name)
        if self.properties["ApiId"] in backend.apis:
            backend.delete_integration(self.properties["ApiId"], self.physical_id)


class HttpRoute(LocalResource):
    TYPE = "AWS::ApiGatewayV2::Route"
    ATTRIBUTES = ("RouteId",)

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        route = _apigw(account_id, region_name).create_route(
            api_id=properties["ApiId"],
            api_key_required=bool(properties.get("ApiKeyRequired", False)),
            authorization_scopes=properties.get("AuthorizationScopes") or [],
            authorization_type=properties.get("AuthorizationType", "NONE"),
            authorizer_id=properties.get("AuthorizerId"),
            model_selection_expression=properties.get("ModelSelectionExpression"),
            operation_name=properties.get("OperationName"),
            request_models=properties.get("RequestModels"),
            request_parameters=properties.get("RequestParameters"),
            route_key=properties["RouteKey"],
            route_response_selection_expression=properties.get(
                "RouteResponseSelectionExpression"),
            target=properties.get("Target"),
        )
        return cls(route.route_id, properties, account_id, region_name,
                   {"RouteId": route.route_id})

    def delete(self, account_id: str, region_name: str) -> None:
        backend = _apigw(account_id, region_name)
        if self.properties["ApiId"] in backend.apis:
            backend.delete_route(self.properties["ApiId"], self.physical_id)


def _camel(value: Any) -> Any:
    """CloudFormation's ThrottlingBurstLimit is the API's JSON throttlingBurstLimit."""
    if isinstance(value, dict):
        return {(k[:1].lower() + k[1:] if k[:1].isupper() else k): _camel(v)
                for k, v in value.items()}
    return value


def _route_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    numbers = {"throttlingBurstLimit": int, "throttlingRateLimit": float}
    out: dict[str, Any] = {}
    for key, value in _camel(settings or {}).items():
        out[key] = numbers[key](value) if key in numbers else value
    return out


class HttpStage(LocalResource):
    TYPE = "AWS::ApiGatewayV2::Stage"

    @staticmethod
    def _config(properties: dict[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = {"stageName": properties["StageName"]}
        if "AutoDeploy" in properties:
            config["autoDeploy"] = str(properties["AutoDeploy"]).lower() == "true"
        if "Description" in properties:
            config["description"] = properties["Description"]
        if "DefaultRouteSettings" in properties:
            config["defaultRouteSettings"] = _route_settings(properties["DefaultRouteSettings"])
        if "RouteSettings" in properties:
            config["routeSettings"] = {route: _route_settings(settings) for route, settings
                                       in (properties["RouteSettings"] or {}).items()}
        if "StageVariables" in properties:
            config["stageVariables"] = properties["StageVariables"]
        if "Tags" in properties:
            config["tags"] = _tags(properties["Tags"])
        return config

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        _apigw(account_id, region_name).create_stage(properties["ApiId"],
                                                     cls._config(properties))
        return cls(properties["StageName"], properties, account_id, region_name)

    def update(self, properties: dict[str, Any]) -> LocalResource:
        self.delete(self.account_id, self.region_name)  # same name, new settings
        return self.create(properties, self.account_id, self.region_name, self.physical_id)

    def delete(self, account_id: str, region_name: str) -> None:
        backend = _apigw(account_id, region_name)
        if self.properties["ApiId"] in backend.apis:
            backend.delete_stage(self.properties["ApiId"], self.physical_id)


# -- S3 ---------------------------------------------------------------------------------------
class BucketPolicy(LocalResource):
    TYPE = "AWS::S3::BucketPolicy"

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        bucket = properties["Bucket"]
        document = properties["PolicyDocument"]
        text = document if isinstance(document, str) else json.dumps(document)
        _s3(account_id, region_name).put_bucket_policy(bucket, text.encode())
        return cls(bucket, properties, account_id, region_name)

    def update(self, properties: dict[str, Any]) -> LocalResource:
        return self.create(properties, self.account_id, self.region_name, self.physical_id)

    def delete(self, account_id: str, region_name: str) -> None:
        backend = _s3(account_id, region_name)
        if self.physical_id in backend.buckets:
            backend.delete_bucket_policy(self.physical_id)


def _filter_rules(filter_: dict[str, Any] | None) -> dict[str, Any] | None:
    rules = ((filter_ or {}).get("S3Key") or {}).get("Rules") or []
    if not rules:
        return None
    return {"S3Key": {"FilterRule": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}


def notification_configuration(properties: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's NotificationConfiguration in the form moto's S3 backend keeps."""
    kinds = {"LambdaConfigurations": ("CloudFunctionConfiguration", "CloudFunction", "Function"),
             "QueueConfigurations": ("QueueConfiguration", "Queue", "Queue"),
             "TopicConfigurations": ("TopicConfiguration", "Topic", "Topic")}
    config: dict[str, Any] = {}
    for cfn_key, (api_key, target_key, cfn_target) in kinds.items():
        entries = []
        for n, item in enumerate(properties.get(cfn_key) or []):
            if not item:  # an !If that chose AWS::NoValue
                continue
            entry: dict[str, Any] = {"Id": f"cfn-{cfn_key[:-14].lower()}-{n}",
                                     target_key: item[cfn_target], "Event": [item["Event"]]}
            rules = _filter_rules(item.get("Filter"))
            if rules:
                entry["Filter"] = rules
            entries.append(entry)
        if entries:
            config[api_key] = entries
    if properties.get("EventBridgeConfiguration"):
        config["EventBridgeConfiguration"] = {}
    return config


def _cors_rules(cors: dict[str, Any]) -> list[dict[str, Any]]:
    rules = []
    for rule in cors.get("CorsRules") or []:
        api: dict[str, Any] = {"AllowedMethod": list(rule["AllowedMethods"]),
                               "AllowedOrigin": list(rule["AllowedOrigins"])}
        if rule.get("AllowedHeaders"):
            api["AllowedHeader"] = list(rule["AllowedHeaders"])
        if rule.get("ExposedHeaders"):
            api["ExposeHeader"] = list(rule["ExposedHeaders"])
        if rule.get("MaxAge") is not None:
            api["MaxAgeSeconds"] = str(rule["MaxAge"])
        if rule.get("Id"):
            api["ID"] = rule["Id"]
        rules.append(api)
    return rules


def _lifecycle_rules(lifecycle: dict[str, Any]) -> list[dict[str, Any]]:
    rules = []
    for rule in lifecycle.get("Rules") or []:
        api: dict[str, Any] = {"ID": rule.get("Id"), "Status": rule["Status"],
                               "Prefix": rule.get("Prefix", "")}
        if rule.get("ExpirationInDays") is not None:
            api["Expiration"] = {"Days": str(rule["ExpirationInDays"])}
        abort = rule.get("AbortIncompleteMultipartUpload")
        if abort:
            api["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": str(abort["DaysAfterInitiation"])}
        rules.append(api)
    return rules


def apply_bucket_properties(bucket: Any, properties: dict[str, Any], account_id: str,
                            region_name: str) -> None:
    """The AWS::S3::Bucket properties moto's own model ignores."""
    backend = _s3(account_id, region_name)
    name = bucket.name
    block = properties.get("PublicAccessBlockConfiguration")
    if block:
        backend.put_public_access_block(name, {k: str(v).lower() == "true"
                                               for k, v in block.items()})
    ownership = (properties.get("OwnershipControls") or {}).get("Rules") or []
    if ownership:
        backend.put_bucket_ownership_controls(name, ownership[0]["ObjectOwnership"])
    cors = properties.get("CorsConfiguration")
    if cors:
        backend.put_bucket_cors(name, _cors_rules(cors))
    lifecycle = properties.get("LifecycleConfiguration")
    if lifecycle:
        backend.put_bucket_lifecycle(name, _lifecycle_rules(lifecycle))
    if "NotificationConfiguration" in properties:
        backend.put_bucket_notification_configuration(
            name, notification_configuration(properties["NotificationConfiguration"] or {}))


class MotoBacked:
    """One of moto's own resource models with local changes: what a subclass does not
    override goes to moto's model (``MOTO``) unchanged."""

    TYPE: ClassVar[str] = ""
    MOTO: ClassVar[Any] = None

    @classmethod
    def cloudformation_type(cls) -> str:
        return cls.TYPE

    @classmethod
    def cloudformation_name_type(cls) -> str:
        return cls.MOTO.cloudformation_name_type()

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return cls.MOTO.has_cfn_attr(attr)

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str,
                                        **kwargs: Any) -> Any:
        return cls.MOTO.create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kwargs)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str,
                                        cloudformation_json: Any, account_id: str,
                                        region_name: str) -> Any:
        return cls.MOTO.update_from_cloudformation_json(
            original_resource, new_resource_name, cloudformation_json, account_id,
            region_name)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str) -> None:
        cls.MOTO.delete_from_cloudformation_json(resource_name, cloudformation_json,
                                                 account_id, region_name)


class Bucket(MotoBacked):
    """moto's AWS::S3::Bucket (FakeBucket), then the properties it ignores."""

    TYPE, MOTO = "AWS::S3::Bucket", FakeBucket

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str,
                                        **kwargs: Any) -> Any:
        bucket = super().create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kwargs)
        apply_bucket_properties(bucket, cloudformation_json.get("Properties") or {},
                                account_id, region_name)
        return bucket

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str,
                                        cloudformation_json: Any, account_id: str,
                                        region_name: str) -> Any:
        bucket = super().update_from_cloudformation_json(
            original_resource, new_resource_name, cloudformation_json, account_id,
            region_name)
        apply_bucket_properties(bucket, cloudformation_json.get("Properties") or {},
                                account_id, region_name)
        return bucket


# -- IAM ----------------------------------------------------------------------------------------
def _without_novalue(value: Any) -> Any:
    """CloudFormation drops a list item that is ``!Ref AWS::NoValue``; moto keeps a null."""
    if isinstance(value, dict):
        return {k: _without_novalue(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_novalue(v) for v in value if v is not None]
    return value


def _policy_text(document: Any) -> str:
    return document if isinstance(document, str) else json.dumps(_without_novalue(document))


class IamRole(MotoBacked):
    """moto's AWS::IAM::Role, with its inline policies stored as the JSON documents the API
    stores (moto's model keeps the parsed dict, which IAM evaluation cannot read and
    GetRolePolicy answers as a Python repr), and updated with the stack."""

    TYPE, MOTO = "AWS::IAM::Role", MotoRole

    @staticmethod
    def _policies(cloudformation_json: Any) -> tuple[Any, dict[str, str]]:
        cloudformation_json = copy.deepcopy(cloudformation_json)
        properties = cloudformation_json.setdefault("Properties", {})
        policies = {p["PolicyName"]: _policy_text(p["PolicyDocument"])
                    for p in properties.get("Policies") or []}
        properties["Policies"] = [{"PolicyName": name, "PolicyDocument": text}
                                  for name, text in policies.items()]
        return cloudformation_json, policies

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str,
                                        **kwargs: Any) -> Any:
        cloudformation_json, _ = cls._policies(cloudformation_json)
        return super().create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kwargs)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str,
                                        cloudformation_json: Any, account_id: str,
                                        region_name: str) -> Any:
        cloudformation_json, policies = cls._policies(cloudformation_json)
        role = super().update_from_cloudformation_json(
            original_resource, new_resource_name, cloudformation_json, account_id,
            region_name)
        for name in list(role.policies):
            if name not in policies:
                role.delete_policy(name)
        for name, text in policies.items():
            role.put_policy(name, text)
        return role


# -- SageMaker --------------------------------------------------------------------------------
class SageMakerEndpoint(MotoBacked):
    """moto's AWS::SageMaker::Endpoint, named by its EndpointName as on AWS (moto generates a
    mixed-case name instead, which neither the role's invoke statement nor `up` would use)."""

    TYPE, MOTO = "AWS::SageMaker::Endpoint", FakeEndpoint

    @staticmethod
    def cloudformation_name_type() -> str:
        return "EndpointName"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str,
                                        **kwargs: Any) -> Any:
        name = (cloudformation_json.get("Properties") or {}).get("EndpointName") or resource_name
        return super().create_from_cloudformation_json(
            name, cloudformation_json, account_id, region_name, **kwargs)


# -- Lambda -----------------------------------------------------------------------------------
class EventInvokeConfig(LocalResource):
    TYPE = "AWS::Lambda::EventInvokeConfig"

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        config: dict[str, Any] = {}
        for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
            if properties.get(key) is not None:
                config[key] = int(properties[key])
        if properties.get("DestinationConfig"):
            config["DestinationConfig"] = properties["DestinationConfig"]
        function = properties["FunctionName"]
        lambda_backends[account_id][region_name].put_function_event_invoke_config(
            function, config)
        return cls(f"{function}|{properties.get('Qualifier', '$LATEST')}", properties,
                   account_id, region_name)

    def update(self, properties: dict[str, Any]) -> LocalResource:
        return self.create(properties, self.account_id, self.region_name, self.physical_id)

    def delete(self, account_id: str, region_name: str) -> None:
        backend = lambda_backends[account_id][region_name]
        function = self.properties["FunctionName"]
        try:
            backend.delete_function_event_invoke_config(function)
        except Exception:  # noqa: BLE001 - the function is already gone
            log.debug("no event invoke config left on %s", function)


# -- Application Auto Scaling and its alarm ----------------------------------------------------
def _autoscaling(account_id: str, region_name: str) -> Any:
    return applicationautoscaling_backends[account_id][region_name]


def _number(value: Any) -> int | float | None:
    if value is None:
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


def _numbers(value: Any) -> Any:
    """A policy configuration with the numbers CloudFormation passes as strings as numbers."""
    if isinstance(value, dict):
        return {k: (_numbers(v) if isinstance(v, dict | list) else
                    _number(v) if k in _NUMERIC else v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


_NUMERIC = {"TargetValue", "ScaleInCooldown", "ScaleOutCooldown", "Cooldown",
            "ScalingAdjustment", "MetricIntervalLowerBound", "MetricIntervalUpperBound",
            "MinAdjustmentMagnitude"}


class ScalableTarget(LocalResource):
    TYPE = "AWS::ApplicationAutoScaling::ScalableTarget"

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        namespace = properties["ServiceNamespace"]
        resource_id = properties["ResourceId"]
        dimension = properties["ScalableDimension"]
        _autoscaling(account_id, region_name).register_scalable_target(
            namespace, resource_id, dimension, _number(properties.get("MinCapacity")),
            _number(properties.get("MaxCapacity")), properties.get("RoleARN", ""),
            properties.get("SuspendedState"))
        # CloudFormation's Ref of a scalable target: resource id|dimension|namespace.
        return cls(f"{resource_id}|{dimension}|{namespace}", properties, account_id,
                   region_name)

    def update(self, properties: dict[str, Any]) -> LocalResource:
        if properties["ResourceId"] != self.properties["ResourceId"]:
            return super().update(properties)
        return self.create(properties, self.account_id, self.region_name, self.physical_id)

    def delete(self, account_id: str, region_name: str) -> None:
        backend = _autoscaling(account_id, region_name)
        resource_id, dimension, namespace = self.physical_id.split("|")
        for policy in list(backend.policies.values()):
            if policy.resource_id == resource_id:  # a target's policies go with it
                backend.delete_scaling_policy(policy.policy_name, namespace, resource_id,
                                              dimension)
        if backend._scalable_target_exists(resource_id, dimension):
            backend.deregister_scalable_target(namespace, resource_id, dimension)


class ScalingPolicy(LocalResource):
    TYPE = "AWS::ApplicationAutoScaling::ScalingPolicy"
    ATTRIBUTES = ("Arn",)

    def _target(self) -> tuple[str, str, str]:
        return _policy_target(self.properties)

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        resource_id, dimension, namespace = _policy_target(properties)
        body = (properties.get("StepScalingPolicyConfiguration")
                or properties.get("TargetTrackingScalingPolicyConfiguration"))
        policy = _autoscaling(account_id, region_name).put_scaling_policy(
            properties["PolicyName"], namespace, resource_id, dimension, _numbers(body),
            properties.get("PolicyType"))
        return cls(policy.policy_arn, properties, account_id, region_name,
                   {"Arn": policy.policy_arn})

    def delete(self, account_id: str, region_name: str) -> None:
        backend = _autoscaling(account_id, region_name)
        resource_id, dimension, namespace = self._target()
        if any(p.policy_arn == self.physical_id for p in backend.policies.values()):
            backend.delete_scaling_policy(self.properties["PolicyName"], namespace,
                                          resource_id, dimension)


def _policy_target(properties: dict[str, Any]) -> tuple[str, str, str]:
    if properties.get("ScalingTargetId"):
        resource_id, dimension, namespace = properties["ScalingTargetId"].split("|")
        return resource_id, dimension, namespace
    return (properties["ResourceId"], properties["ScalableDimension"],
            properties["ServiceNamespace"])


class Alarm(LocalResource):
    TYPE = "AWS::CloudWatch::Alarm"
    ATTRIBUTES = ("Arn",)

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        name = properties.get("AlarmName") or logical_id
        alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=name, namespace=properties.get("Namespace"),
            metric_name=properties.get("MetricName"),
            comparison_operator=properties["ComparisonOperator"],
            evaluation_periods=int(properties["EvaluationPeriods"]),
            period=int(properties.get("Period", 60)),
            threshold=float(properties.get("Threshold", 0)),
            statistic=properties.get("Statistic"),
            description=properties.get("AlarmDescription"),
            dimensions=[{"Name": d["Name"], "Value": d["Value"]}
                        for d in properties.get("Dimensions") or []],
            alarm_actions=list(properties.get("AlarmActions") or []),
            treat_missing_data=properties.get("TreatMissingData"),
            tags=[{"Key": k, "Value": v} for k, v in _tags(properties.get("Tags")).items()],
        )
        return cls(name, properties, account_id, region_name, {"Arn": alarm.alarm_arn})

    def update(self, properties: dict[str, Any]) -> LocalResource:
        return self.create(properties, self.account_id, self.region_name, self.physical_id)

    def delete(self, account_id: str, region_name: str) -> None:
        cloudwatch_backends[account_id][region_name].delete_alarms([self.physical_id])


# -- EventBridge Scheduler ----------------------------------------------------------------------
def _scheduler(account_id: str, region_name: str) -> Any:
    return scheduler_backends[account_id][region_name]


class ScheduleGroup(LocalResource):
    TYPE = "AWS::Scheduler::ScheduleGroup"
    ATTRIBUTES = ("Arn",)

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        name = properties.get("Name") or logical_id
        group = _scheduler(account_id, region_name).create_schedule_group(
            name, [{"Key": k, "Value": v} for k, v in _tags(properties.get("Tags")).items()])
        return cls(name, properties, account_id, region_name, {"Arn": group.arn})

    def update(self, properties: dict[str, Any]) -> LocalResource:
        return self  # only tags could change; the name is fixed

    def delete(self, account_id: str, region_name: str) -> None:
        backend = _scheduler(account_id, region_name)
        if self.physical_id in backend.schedule_groups:
            backend.delete_schedule_group(self.physical_id)


class Schedule(LocalResource):
    TYPE = "AWS::Scheduler::Schedule"
    ATTRIBUTES = ("Arn",)

    @staticmethod
    def _arguments(properties: dict[str, Any], name: str) -> dict[str, Any]:
        return {
            "description": properties.get("Description"),
            "end_date": properties.get("EndDate"),
            "flexible_time_window": properties.get("FlexibleTimeWindow"),
            "group_name": properties.get("GroupName"),
            "kms_key_arn": properties.get("KmsKeyArn"),
            "name": name,
            "schedule_expression": properties["ScheduleExpression"],
            "schedule_expression_timezone": properties.get("ScheduleExpressionTimezone"),
            "start_date": properties.get("StartDate"),
            "state": properties.get("State", "ENABLED"),
            "target": properties["Target"],
        }

    @classmethod
    def create(cls, properties: dict[str, Any], account_id: str, region_name: str,
               logical_id: str) -> LocalResource:
        name = properties.get("Name") or logical_id
        schedule = _scheduler(account_id, region_name).create_schedule(
            **cls._arguments(properties, name), action_after_completion=None)
        return cls(name, properties, account_id, region_name, {"Arn": schedule.arn})

    def update(self, properties: dict[str, Any]) -> LocalResource:
        if properties.get("GroupName") != self.properties.get("GroupName"):
            return super().update(properties)
        _scheduler(self.account_id, self.region_name).update_schedule(
            **self._arguments(properties, self.physical_id))
        self.properties = properties
        return self

    def delete(self, account_id: str, region_name: str) -> None:
        backend = _scheduler(account_id, region_name)
        group = self.properties.get("GroupName") or "default"
        if self.physical_id in getattr(backend.schedule_groups.get(group), "schedules", {}):
            backend.delete_schedule(group, self.physical_id)


MODELS: dict[str, Any] = {model.cloudformation_type(): model for model in (
    HttpApi, HttpIntegration, HttpRoute, HttpStage, BucketPolicy, Bucket, IamRole,
    SageMakerEndpoint, EventInvokeConfig,
    ScalableTarget, ScalingPolicy, Alarm, ScheduleGroup, Schedule)}


# -- a failed creation rolls back ---------------------------------------------------------------
class ResourceFailed(Exception):
    """A resource of the stack could not be created: which one, and CloudFormation's reason."""

    def __init__(self, logical_id: str, resource_type: str, reason: str) -> None:
        super().__init__(reason)
        self.logical_id, self.resource_type, self.reason = logical_id, resource_type, reason


def _message(exc: BaseException) -> str:
    for attribute in ("message", "description"):
        text = getattr(exc, attribute, None)
        if isinstance(text, str) and text:
            return text
    return str(exc) or type(exc).__name__


def guarded_create(original: Callable[..., Any]) -> Callable[..., Any]:
    """parsing.parse_and_create_resource, telling which resource failed and why."""

    def parse_and_create_resource(logical_id: str, resource_json: dict[str, Any],
                                  resources_map: Any, account_id: str,
                                  region_name: str) -> Any:
        try:
            return original(logical_id, resource_json, resources_map, account_id,
                            region_name)
        except ResourceFailed:
            raise  # a resource this one refers to failed first: that one is the cause
        except Exception as exc:  # noqa: BLE001 - any failure is the resource's CREATE_FAILED
            reason = f'Resource handler returned message: "{_message(exc)}"'
            raise ResourceFailed(logical_id, resource_json.get("Type", ""), reason) from exc

    return parse_and_create_resource


def _resource_event(stack: Stack, logical_id: str, resource_type: str, status: str,
                    reason: str | None = None, physical_id: str = "") -> None:
    stack.events.append(Event(
        stack_id=stack.stack_id, stack_name=stack.name, logical_resource_id=logical_id,
        physical_resource_id=physical_id, resource_type=resource_type,
        resource_status=status, resource_status_reason=reason, resource_properties=None))


def roll_back(stack: Stack, failure: BaseException) -> None:
    """What CloudFormation does when a resource fails to create (and rollback is on)."""
    if isinstance(failure, ResourceFailed):
        logical_id, resource_type, reason = (failure.logical_id, failure.resource_type,
                                             failure.reason)
    else:
        logical_id, resource_type, reason = stack.name, "AWS::CloudFormation::Stack", _message(
            failure)
    log.warning("stack %s: %s failed to create: %s", stack.name, logical_id, reason)
    _resource_event(stack, logical_id, resource_type, "CREATE_FAILED", reason)
    stack.status = "ROLLBACK_IN_PROGRESS"
    stack._add_stack_event("ROLLBACK_IN_PROGRESS",
                           f"The following resource(s) failed to create: [{logical_id}]. "
                           "Rollback requested by user.")
    resource_map = stack.resource_map
    created = {name: resource for name, resource in resource_map._parsed_resources.items()
               if name in resource_map._resource_json_map and resource is not None
               and not isinstance(resource, str)}
    kept: dict[str, Any] = {}
    failed_deletes = []
    # The newest first, as CloudFormation deletes in reverse dependency order.
    for name, resource in reversed(list(created.items())):
        resource_json = resource_map._resource_json_map[name]
        if resource_json.get("DeletionPolicy") == "Retain":
            kept[name] = resource_json
            _resource_event(stack, name, resource_json["Type"], "DELETE_SKIPPED",
                            physical_id=str(getattr(resource, "physical_resource_id", "")))
            continue
        try:
            resource_map._delete_resource(resource, resource_json)
        except Exception as exc:  # noqa: BLE001 - reported as DELETE_FAILED
            failed_deletes.append(name)
            kept[name] = resource_json
            _resource_event(stack, name, resource_json["Type"], "DELETE_FAILED",
                            _message(exc))
            continue
        resource_map._parsed_resources.pop(name, None)
        _resource_event(stack, name, resource_json["Type"], "DELETE_COMPLETE",
                        physical_id=str(getattr(resource, "physical_resource_id", "")))
    # Nothing else of the template may be created later by a lazy lookup (ListStackResources
    # and DescribeStacks' outputs resolve resources on demand); the stack has no outputs.
    resource_map._resource_json_map = kept
    stack.output_map = parsing.OutputMap(resource_map, {"Outputs": {}}, stack.stack_id)
    stack.status = "ROLLBACK_FAILED" if failed_deletes else "ROLLBACK_COMPLETE"
    stack._add_stack_event(stack.status)


def guarded_create_resources(original: Callable[[Stack], None]) -> Callable[[Stack], None]:
    def create_resources(self: Stack) -> None:
        try:
            original(self)
        except Exception as exc:  # noqa: BLE001 - the stack rolls back instead
            roll_back(self, exc)

    return create_resources
