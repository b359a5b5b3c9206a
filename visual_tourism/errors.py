"""The package's errors: one base class, each with a message that says what to do."""

from __future__ import annotations


class VisualTourismError(Exception):
    """Base class. The CLI prints ``str(error)`` and exits non-zero; no traceback."""


class ConfigError(VisualTourismError):
    """A configuration value is missing or invalid."""


class UnknownProfileError(ConfigError):
    """The model profile named in the configuration does not exist."""


class CredentialsError(VisualTourismError):
    """No AWS credentials were found, or they were rejected."""


class RegionError(ConfigError):
    """The region is unknown, or a needed service is not offered there."""


class BucketTakenError(VisualTourismError):
    """The bucket name belongs to another account, or to something this tool did not create."""


class NotOwnedError(VisualTourismError):
    """A resource with our name exists but was not created by this tool: we refuse to touch it."""


class EndpointFailedError(VisualTourismError):
    """The SageMaker endpoint went to ``Failed``; the message carries its FailureReason."""


class NotDeployedError(VisualTourismError):
    """An operation needs a resource that is not deployed yet."""


class AskTimeoutError(VisualTourismError):
    """No result appeared under ``output/`` in time."""


class DeployError(VisualTourismError):
    """An AWS call failed while creating or deleting a resource."""


class StackFailedError(DeployError):
    """A CloudFormation stack operation failed; the message names each failed resource and
    its reason."""


class PortInUseError(VisualTourismError):
    """A local server cannot listen on its port: something else already does."""

    def __init__(self, what: str, host: str, port: int, reason: str = "",
                 option: str = "") -> None:
        self.what, self.host, self.port = what, host, port
        change = (f"choose another with {option} (0 picks a free one)" if option
                  else "choose another port")
        super().__init__(
            f"port {port} on {host} ({what}) is in use{f' ({reason})' if reason else ''}: "
            f"is another 'local serve' running? Stop it, or {change}."
        )


class ModelAccessError(VisualTourismError):
    """A managed model (Amazon Bedrock) cannot be invoked in the region yet: nothing was
    created; the message says how to request access or which region offers it."""
