"""Model profiles: which model, in which container, on which instance, spoken to how.

A profile is plain data. The container URI is resolved through the SageMaker SDK's
``image_uris`` (never a hand-written table of ECR accounts), lazily, because importing the SDK
takes seconds and only ``up`` needs it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from .errors import ConfigError, UnknownProfileError

log = logging.getLogger(__name__)

# Request styles understood by lambda_code.py (its REQUEST_STYLE variable).
STYLE_TGI = "tgi"  # {"inputs": prompt with ![](url) images, "parameters": {...}}
STYLE_MESSAGES = "messages"  # OpenAI-style {"messages": [...]} with image_url parts


@dataclass(frozen=True)
class ModelProfile:
    name: str
    model_id: str
    image_family: str
    image_version: str
    instance_type: str
    request_style: str
    licence: str
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: int = 900
    notes: str = ""

    def container_env(self) -> dict[str, str]:
        return {"HF_MODEL_ID": self.model_id, **self.env}

    def image_uri(self, region: str) -> str:
        return _image_uri(self.image_family, self.image_version, region)


@functools.cache
def _image_uri(family: str, version: str, region: str) -> str:
    """Resolved once per process: the steps of `up` each need it, and the SDK's lookup reads
    its JSON tables every time."""
    try:
        from sagemaker.core import image_uris
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "The SageMaker SDK is needed to resolve the container image: "
            "pip install 'sagemaker-core' (it comes with this project's install)."
        ) from exc
    try:
        return image_uris.retrieve(family, region=region, version=version, image_scope="inference")
    except ValueError as exc:
        raise ConfigError(
            f"No {family} {version} container in {region}: {exc}. "
            "Pick another region or profile."
        ) from exc


PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="idefics-9b-instruct",
            model_id="HuggingFaceM4/idefics-9b-instruct",
            image_family="huggingface-llm",
            # TGI 1.4.5: the last 1.x release. It still serves Idefics v1 through the
            # non-flash-attention code path, which T4 GPUs (sm75, ml.g4dn) need; TGI 3.x
            # requires flash attention for Idefics (sm80+). It also accepts images as data
            # URIs (added in 1.1.1), which the original 1.1.0 did not.
            image_version="1.4.5",
            instance_type="ml.g4dn.12xlarge",
            request_style=STYLE_TGI,
            licence="research only (LLaMA-1 base); not for commercial use",
            env={
                "SM_NUM_GPUS": "4",
                "MAX_INPUT_LENGTH": "1536",
                "MAX_TOTAL_TOKENS": "2048",
            },
            notes="The original design: 9B parameters sharded over 4 T4 GPUs.",
        ),
        ModelProfile(
            name="qwen2.5-vl-7b-instruct",
            model_id="Qwen/Qwen2.5-VL-7B-Instruct",
            image_family="huggingface-llm",
            # TGI 3.x serves Qwen2.5-VL and accepts OpenAI-style messages on /invocations.
            image_version="3.3.6",
            instance_type="ml.g5.2xlarge",
            request_style=STYLE_MESSAGES,
            licence="Apache-2.0",
            env={
                "SM_NUM_GPUS": "1",
                "MAX_INPUT_TOKENS": "8192",
                "MAX_TOTAL_TOKENS": "8704",
            },
            notes="A current Apache-2.0 model on one A10G GPU (24 GB).",
        ),
    )
}

DEFAULT_PROFILE = "idefics-9b-instruct"


def get_profile(name: str) -> ModelProfile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise UnknownProfileError(
            f"Unknown model profile {name!r}. Known profiles: {known}. "
            "Set VT_MODEL_PROFILE or 'model_profile' in the config file to one of them."
        ) from None
