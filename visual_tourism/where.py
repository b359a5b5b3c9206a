"""Where the project is running: local mode or AWS, inside SageMaker Studio or not, and in
which region. One definition of each, read from the environment.

This is the package's bottom layer: it imports nothing else of the project, so every module
(configuration, prices, IAM, the notebooks) can ask it without an import circle.

- Local mode: ``AWS_ENDPOINT_URL`` points at this machine (what ``visual-tourism local serve``
  prints); boto3 then reaches the local stand-in and nothing is billed.
- SageMaker Studio: its metadata file exists, or its image's variable is set.
- The region: ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` (what boto3 and Lambda read).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
STUDIO_METADATA = Path("/opt/ml/metadata/resource-metadata.json")


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def is_loopback(url: str | None) -> bool:
    """True when ``url`` names this machine."""
    return bool(url) and urlsplit(url).hostname in LOOPBACK_HOSTS


def local_endpoints(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The local stand-in's URLs (``aws``, ``model``) in local mode, else None."""
    env = _env(env)
    url = env.get("AWS_ENDPOINT_URL", "")
    if not is_loopback(url):
        return None
    return {"aws": url, "model": env.get("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)}


def is_local(env: Mapping[str, str] | None = None) -> bool:
    """True in local mode: AWS is emulated on this machine and nothing is billed."""
    return local_endpoints(env) is not None


def in_studio(env: Mapping[str, str] | None = None) -> bool:
    """True inside SageMaker Studio (its notebooks run under the Studio execution role)."""
    return STUDIO_METADATA.is_file() or "SAGEMAKER_INTERNAL_IMAGE_URI" in _env(env)


def region(env: Mapping[str, str] | None = None) -> str:
    """The region the environment names, or "" when it names none."""
    env = _env(env)
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
