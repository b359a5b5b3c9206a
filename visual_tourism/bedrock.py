"""Amazon Bedrock, for a managed profile: can this account invoke the model in this region, and
what to do if not (`check`, and `up` before anything is created).

Bedrock's control plane answers ``GetFoundationModelAvailability(modelId)`` (botocore's
``bedrock`` 2023-04-20 service model): ``regionAvailability`` (offered here or not),
``authorizationStatus`` (AUTHORIZED or NOT_AUTHORIZED: access not granted),
``entitlementAvailability`` and ``agreementAvailability.status`` (AVAILABLE, PENDING,
NOT_AVAILABLE, ERROR: a model's end-user licence offer to accept, for third-party models).
An SDK without that operation falls back to ``GetFoundationModel`` (offered here or not).
Nothing here creates a resource: a managed model needs none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .aws import Aws, error_code, error_message
from .config import Config
from .errors import ModelAccessError

log = logging.getLogger(__name__)

AVAILABLE, NEEDS_ACCESS = "available", "needs_access"
NOT_OFFERED, UNKNOWN = "not_offered", "unknown"
CONSOLE = "https://console.aws.amazon.com/bedrock/home?region={region}#/modelaccess"


@dataclass(frozen=True)
class Access:
    state: str  # AVAILABLE, NEEDS_ACCESS, NOT_OFFERED or UNKNOWN
    text: str  # what it means and what to do

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "text": self.text}


def model_access(aws: Aws, cfg: Config) -> Access | None:
    """Whether cfg's managed model can be invoked in its region; None for a hosted profile."""
    profile = cfg.profile
    if not profile.managed:
        return None
    invoke = profile.invoke_id(cfg.region)
    if aws.is_local:
        return Access(AVAILABLE, f"local mode: the local model server answers Converse for "
                      f"{invoke} (on AWS, 'visual-tourism check' asks Bedrock)")
    console = CONSOLE.format(region=cfg.region)
    client = aws.client("bedrock")
    try:
        if "GetFoundationModelAvailability" in client.meta.service_model.operation_names:
            answer = client.get_foundation_model_availability(modelId=profile.model_id)
        else:  # an older SDK: whether the region offers it, no more
            client.get_foundation_model(modelIdentifier=profile.model_id)
            return Access(UNKNOWN, f"{profile.model_id} is offered in {cfg.region}; whether "
                          f"this account has access is not known to this SDK: see {console}")
    except ClientError as exc:
        code = error_code(exc)
        if code in ("ResourceNotFoundException", "ValidationException"):
            return Access(NOT_OFFERED, _not_offered(profile, cfg.region))
        if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            return Access(UNKNOWN, "cannot tell whether the model may be invoked: this identity "
                          "may not call bedrock:GetFoundationModelAvailability ("
                          f"{error_message(exc)}); check {console}")
        return Access(UNKNOWN, f"cannot tell: Bedrock answered {code}: {error_message(exc)}")
    except BotoCoreError as exc:
        return Access(UNKNOWN, f"cannot tell: {exc}")
    return read_availability(answer, profile, cfg.region)


def read_availability(answer: dict[str, Any], profile: Any, region: str) -> Access:
    """GetFoundationModelAvailability's answer in words, with what to do."""
    console = CONSOLE.format(region=region)
    if answer.get("regionAvailability") == "NOT_AVAILABLE":
        return Access(NOT_OFFERED, _not_offered(profile, region))
    agreement = (answer.get("agreementAvailability") or {}).get("status")
    problems = []
    if answer.get("authorizationStatus") == "NOT_AUTHORIZED":
        problems.append("this account has no access to the model yet")
    if answer.get("entitlementAvailability") == "NOT_AVAILABLE":
        problems.append("the account is not entitled to it (for a third-party model, an AWS "
                        "Marketplace subscription is made when access is requested: it needs "
                        "aws-marketplace:Subscribe for whoever requests it)")
    if agreement == "PENDING":
        problems.append("its licence agreement is being processed: wait a few minutes")
    elif agreement in ("NOT_AVAILABLE", "ERROR"):
        problems.append(f"its licence agreement is {agreement.lower().replace('_', ' ')}: "
                        "accept the model's end-user licence when requesting access")
    if problems:
        return Access(NEEDS_ACCESS, f"{profile.model_id} cannot be invoked in {region} yet: "
                      + "; ".join(problems) + f". Request access in the Bedrock console "
                      f"(Model access, {console}), then run 'visual-tourism check' again.")
    via = (f" through the inference profile {profile.invoke_id(region)}"
           if profile.inference_profile else "")
    return Access(AVAILABLE, f"{profile.model_id} may be invoked in {region}{via}")


def _not_offered(profile: Any, region: str) -> str:
    return (f"Amazon Bedrock does not offer {profile.model_id} in {region}: use a region that "
            f"does ({', '.join(profile.regions)}) with --region or VT_REGION, or another "
            "profile ('visual-tourism profiles').")


def require_access(aws: Aws, cfg: Config, progress: Any) -> None:
    """`up`'s check for a managed model: refuse, creating nothing, when Bedrock says the model
    cannot be invoked here; go ahead (saying so) when it cannot tell."""
    access = model_access(aws, cfg)
    if access is None:
        return
    if access.state in (NEEDS_ACCESS, NOT_OFFERED):
        raise ModelAccessError(f"Nothing was created: {access.text}")
    progress(f"model access: {access.text}" + (" Going ahead." if access.state == UNKNOWN
                                                else ""))
