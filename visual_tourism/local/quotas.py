"""The account's limits in local mode: SageMaker's and Lambda's quotas, served as AWS serves them.

moto's Service Quotas knows only VPC quotas and its Lambda has no GetAccountSettings, so local
mode serves them itself (the patches are in ``moto_patches``), for the preflight
(visual_tourism/quotas.py) to read through the same calls as on AWS:

- Service Quotas ``sagemaker``: one quota "<instance type> for endpoint usage" per endpoint
  instance type SageMaker's API accepts (botocore's ProductionVariantInstanceType), in
  ListServiceQuotas, ListAWSDefaultServiceQuotas and GetServiceQuota.
- Service Quotas ``lambda``: "Concurrent executions" (L-B99A9384, AWS's code), which is also
  what Lambda's GetAccountSettings reports as ``ConcurrentExecutions``, with
  ``UnreservedConcurrentExecutions`` the total less what functions reserve.
- As strict as AWS: CreateEndpoint (and UpdateEndpointWeightsAndCapacities) beyond an instance
  type's quota fails with ResourceLimitExceeded and AWS's message; PutFunctionConcurrency that
  would leave fewer than the minimum unreserved fails with InvalidParameterValueException.

Values are generous by default, so the demo (and a test run whose stacks share one stand-in's
state) never meets them: 1,000 instances of every type, 10,000 concurrent executions (AWS's
default is 1,000). ``VT_LOCAL_QUOTAS`` sets them to rehearse a new
account, each quota by the name Service Quotas gives it (case-insensitive):
``VT_LOCAL_QUOTAS='ml.g4dn.12xlarge for endpoint usage=0;Concurrent executions=10'``. It is
read from the stand-in's own environment on every request (set it before `local serve`; the
tests set it in the process that runs the stand-in). A name that is no such quota is refused
as Service Quotas refuses a bad argument (IllegalArgumentException), naming it.

The quota codes of the SageMaker quotas are local stand-ins (``L-`` and eight hex digits of the
name's hash): on AWS each account reads the real ones from Service Quotas, as the preflight
does.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

ENV = "VT_LOCAL_QUOTAS"
DEFAULT_ENDPOINT_INSTANCES = 1000
DEFAULT_CONCURRENCY = 10000
CONCURRENCY_NAME = "Concurrent executions"
CONCURRENCY_CODE = "L-B99A9384"
MIN_UNRESERVED = 100
ENDPOINT_SUFFIX = " for endpoint usage"


class QuotaSettingError(ConfigError):
    """VT_LOCAL_QUOTAS names no quota, or gives no number."""


@functools.lru_cache(maxsize=1)
def endpoint_instance_types() -> tuple[str, ...]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return tuple(sorted(model.shape_for("ProductionVariantInstanceType").enum))


def local_code(name: str) -> str:
    return "L-" + hashlib.sha256(name.lower().encode()).hexdigest()[:8].upper()


def _defaults() -> dict[str, tuple[str, str, str, float]]:
    """lower-case name -> (service, code, name, default value)."""
    quotas = {f"{t}{ENDPOINT_SUFFIX}".lower(): ("sagemaker", local_code(f"{t}{ENDPOINT_SUFFIX}"),
                                                f"{t}{ENDPOINT_SUFFIX}",
                                                float(DEFAULT_ENDPOINT_INSTANCES))
              for t in endpoint_instance_types()}
    quotas[CONCURRENCY_NAME.lower()] = ("lambda", CONCURRENCY_CODE, CONCURRENCY_NAME,
                                        float(DEFAULT_CONCURRENCY))
    return quotas


def parse(text: str) -> dict[str, float]:
    """``name=value;name=value`` -> {lower-case name: value}; QuotaSettingError when a name is
    no quota local mode serves or a value is not a number >= 0."""
    known = _defaults()
    values: dict[str, float] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, raw = part.rpartition("=")
        key = name.strip().lower()
        if not sep or key not in known:
            raise QuotaSettingError(
                f"{ENV}: {part!r} names no quota local mode serves; use the names Service "
                f"Quotas gives, e.g. 'ml.g4dn.12xlarge{ENDPOINT_SUFFIX}=0' or "
                f"'{CONCURRENCY_NAME}=10', separated by ';'")
        try:
            value = float(raw.strip())
        except ValueError:
            value = -1.0
        if value < 0:
            raise QuotaSettingError(f"{ENV}: {part!r}: the value must be a number >= 0")
        values[key] = value
    return values


def settings(env: Mapping[str, str] | None = None) -> dict[str, float]:
    return parse((os.environ if env is None else env).get(ENV, ""))


def quotas(service: str, env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The quotas of ``service`` as Service Quotas returns them (ServiceQuota shape)."""
    chosen = settings(env)
    out = []
    for key, (svc, code, name, default) in _defaults().items():
        if svc != service:
            continue
        out.append({
            "ServiceCode": svc, "ServiceName": "Amazon SageMaker" if svc == "sagemaker"
            else "AWS Lambda", "QuotaCode": code, "QuotaName": name,
            "QuotaArn": f"arn:aws:servicequotas:us-east-1:123456789012:{svc}/{code}",
            "Value": chosen.get(key, default), "Unit": "None", "Adjustable": True,
            "GlobalQuota": False})
    return out


def value(name: str, env: Mapping[str, str] | None = None) -> float:
    key = name.lower()
    return settings(env).get(key, _defaults()[key][3])


def endpoint_quota(instance_type: str) -> int:
    return int(value(f"{instance_type}{ENDPOINT_SUFFIX}"))


def concurrency() -> int:
    return int(value(CONCURRENCY_NAME))


def endpoint_limit_message(instance_type: str, quota: int, used: int, delta: int) -> str:
    """AWS's ResourceLimitExceeded text for endpoint instances."""
    return (f"The account-level service limit '{instance_type}{ENDPOINT_SUFFIX}' is {quota} "
            f"Instances, with current utilization of {used} Instances and a request delta of "
            f"{delta} Instances. Please use AWS Service Quotas to request an increase for this "
            "quota. If AWS Service Quotas is not available, contact AWS support to request an "
            "increase for this quota.")


def reservation_message(total: int) -> str:
    """Lambda's InvalidParameterValueException text for a reservation beyond the room."""
    return ("Specified ReservedConcurrentExecutions for function decreases account's "
            f"UnreservedConcurrentExecution below its minimum value of "
            f"[{min(MIN_UNRESERVED, total)}].")
