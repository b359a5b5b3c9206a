"""Where a notebook runs: local mode, SageMaker Studio, or this machine's AWS credentials."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .. import iam, where
from ..aws import Aws
from ..config import Config
from ..errors import VisualTourismError
from .settings import load_settings

log = logging.getLogger(__name__)


class NotReachableError(VisualTourismError):
    """The environment points at a local stand-in that does not answer."""


def _identity_name(arn: str) -> str:
    """'role Admin' or 'user alice' from a caller ARN, without the account or session name."""
    resource = arn.split(":", 5)[-1]
    kind, _, rest = resource.partition("/")
    if kind == "assumed-role":
        return f"role {rest.split('/')[0]}"
    return f"{kind} {rest}" if rest else kind


def describe_environment(
    cfg: Config | None = None, aws: Aws | None = None, env: Mapping[str, str] | None = None
) -> str:
    """One line saying where this notebook runs and against what, with no full account ID.

    Local mode is chosen by ``AWS_ENDPOINT_URL`` pointing at loopback (what
    ``visual-tourism local serve`` prints); SageMaker Studio by its metadata file; otherwise
    the machine's own AWS credentials are used.
    """
    from botocore.exceptions import EndpointConnectionError

    cfg = cfg or load_settings()
    aws = aws or Aws(cfg.region)
    local = where.local_endpoints(env)
    try:
        identity = aws.identity  # also proves that credentials and endpoints work
    except EndpointConnectionError:
        stand_in = local["aws"] if local else "AWS"
        raise NotReachableError(
            f"Nothing answers at {stand_in}. For local mode start 'visual-tourism local serve' in "
            "a terminal and export the variables it prints before starting JupyterLab; for "
            "AWS, unset AWS_ENDPOINT_URL."
        ) from None
    if local:
        return (
            f"local mode: AWS stand-in at {local['aws']}, model server at {local['model']} "
            f"(region {cfg.region}). Nothing here reaches AWS or costs money."
        )
    account = f"account ending {identity['Account'][-4:]}"
    if where.in_studio(env):
        try:
            role = (iam.studio_role_arn() or "").rsplit("/", 1)[-1] or "unknown"
        except Exception as exc:  # the SDK raises plain ValueErrors here
            log.info("Studio role lookup failed: %s", exc)
            role = "unknown"
        return (
            f"SageMaker Studio: execution role {role}, {account}, region {cfg.region}. "
            "Resources created here are billed to this account."
        )
    creds = aws.session.get_credentials()
    method = getattr(creds, "method", None) or "unknown source"
    return (
        f"AWS from this machine: {account}, as {_identity_name(identity['Arn'])} "
        f"(credentials from {method}), region {cfg.region}. Resources created here are billed "
        "to this account."
    )
