"""Model profiles: which model, in which container, on which instance, spoken to how.

A profile is plain data, of one of two kinds:

- ``sagemaker`` (hosted): an open model in a serving container on a SageMaker endpoint that
  this project deploys. The container URI is resolved through the SageMaker SDK's
  ``image_uris`` (never a hand-written table of ECR accounts), lazily, because importing the
  SDK takes seconds and only ``up`` needs it.
- ``bedrock`` (managed): a model Amazon Bedrock serves, called with the Converse API
  (``photo_handler/converse.py``): no endpoint, no instance, nothing billed while idle, a price
  per token (``prices.TOKEN_USD``). Some models are invoked only through a cross-region
  inference profile (``us.<model id>``), whose ARN the function's role needs as well.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from photo_handler import serving_limits
from photo_handler.serving_limits import ContainerLimits

from . import prices
from .errors import ConfigError, UnknownProfileError

log = logging.getLogger(__name__)

# Request styles understood by lambda_code.py (its REQUEST_STYLE variable).
STYLE_TGI = "tgi"  # {"inputs": prompt with ![](url) images, "parameters": {...}}
STYLE_MESSAGES = "messages"  # OpenAI-style {"messages": [...]} with image_url parts

# The TGI prompt style adds these stop sequences itself unless `stop` is set.
TGI_STOP = ("User:", "<end_of_utterance>")
STYLE_CONVERSE = "converse"  # Amazon Bedrock's Converse API (photo_handler/converse.py)

KIND_SAGEMAKER = "sagemaker"  # hosted: a SageMaker endpoint this project deploys
KIND_BEDROCK = "bedrock"  # managed: Amazon Bedrock serves it, billed per token
KINDS = (KIND_SAGEMAKER, KIND_BEDROCK)

# Cross-region inference profiles are named "<geography>.<model id>"; the geography is the
# source region's (https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html).
_GEOGRAPHIES = (("us-gov-", "us-gov"), ("us-", "us"), ("eu-", "eu"), ("ap-", "apac"),
                ("ca-", "ca"))


@dataclass(frozen=True)
class ModelProfile:
    name: str
    model_id: str
    image_family: str  # sagemaker-core image_uris framework name
    image_version: str
    instance_type: str
    request_style: str
    licence: str
    limits: ContainerLimits
    revision: str | None = None  # the model repository's commit; None: not pinned
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: int = 900
    notes: str = ""
    kind: str = KIND_SAGEMAKER
    # bedrock: the regions whose Bedrock offers the model on demand (as documented when the
    # profile was written; `check` asks Bedrock itself), and whether it is invoked through a
    # cross-region inference profile rather than by its own ID.
    regions: tuple[str, ...] = ()
    inference_profile: bool = False
    # bedrock: the model takes Converse's toolChoice {"tool": ...}, so a structured answer is
    # a forced tool call; else JSON asked for in the prompt (as on the endpoints).
    forced_tool: bool = False

    @property
    def managed(self) -> bool:
        """A managed model (Amazon Bedrock): no endpoint, container or instance of ours."""
        return self.kind == KIND_BEDROCK

    def invoke_id(self, region: str) -> str:
        """The modelId the function calls: the model's own ID, or its cross-region inference
        profile's for ``region``'s geography."""
        if not self.inference_profile:
            return self.model_id
        geo = next((g for start, g in _GEOGRAPHIES if region.startswith(start)), None)
        if geo is None:
            raise ConfigError(f"{self.name} is invoked through a cross-region inference "
                              f"profile, and {region} belongs to no geography that has one: "
                              f"use one of {', '.join(self.regions)}.")
        return f"{geo}.{self.model_id}"

    def invoke_arns(self, region: str, account: str, partition: str = "aws") -> list[str]:
        """What ``bedrock:InvokeModel`` must allow for this model and nothing else: the
        foundation model's ARN, and with an inference profile the profile's ARN and the
        model's ARN in every region the profile may route to (the model only)."""
        if not self.inference_profile:
            return [f"arn:{partition}:bedrock:{region}::foundation-model/{self.model_id}"]
        return [
            f"arn:{partition}:bedrock:{region}:{account}:inference-profile/"
            f"{self.invoke_id(region)}",
            f"arn:{partition}:bedrock:*::foundation-model/{self.model_id}",
        ]

    def container_env(self) -> dict[str, str]:
        """The container's environment: the model, its pinned revision and its limits."""
        if self.managed:
            raise ConfigError(f"{self.name} is a managed model (Amazon Bedrock): it has no "
                              "container to configure.")
        env = {"HF_MODEL_ID": self.model_id, **self.env}
        lim = self.limits
        if lim.engine == "tgi":
            if self.revision:
                env["REVISION"] = self.revision
            # TGI 1.x names the input limit MAX_INPUT_LENGTH, 2.x+ MAX_INPUT_TOKENS.
            input_var = "MAX_INPUT_LENGTH" if lim.container_version.startswith("1.") else (
                "MAX_INPUT_TOKENS")
            env[input_var] = str(lim.max_input_tokens)
            env["MAX_TOTAL_TOKENS"] = str(lim.max_total_tokens)
            if not lim.container_version.startswith("1."):  # 1.x: fixed, not configurable
                env["PAYLOAD_LIMIT"] = str(lim.payload_limit_bytes)
        else:  # the LMI container maps OPTION_<NAME> to vLLM's engine argument <name>
            if self.revision:
                env["OPTION_REVISION"] = self.revision
            env["OPTION_MAX_MODEL_LEN"] = str(lim.max_total_tokens)
            env["OPTION_LIMIT_MM_PER_PROMPT"] = json.dumps({"image": lim.max_images})
        return env

    def image_uri(self, region: str) -> str:
        if self.managed:
            raise ConfigError(f"{self.name} is a managed model (Amazon Bedrock): it has no "
                              "container image.")
        return _image_uri(self.image_family, self.image_version, region)

    # -- what the container accepts (serving_limits holds the rules) --------------------
    def generation_problems(self, params: Mapping[str, Any]) -> list[str]:
        return serving_limits.generation_problems(params, self.limits, self.request_style)

    def check_generation(self, params: Mapping[str, Any]) -> None:
        """Raise ConfigError naming each parameter the container would refuse and its range."""
        problems = self.generation_problems(params)
        if problems:
            raise ConfigError(
                f"Generation parameters that {self.name}'s container "
                f"({self.image_family} {self.image_version}) would refuse:\n  - "
                + "\n  - ".join(problems)
            )

    def prompt_budget(
        self, texts: Sequence[str], images: Sequence[tuple[int, int]], max_new_tokens: int,
    ) -> serving_limits.Budget:
        """Tokens of a request with these texts and images (width, height) as sent, by the
        container's accounting (text estimated from above; in the messages style each text
        counted as its own chat message)."""
        messages = 0 if self.request_style == STYLE_TGI else len(texts)
        return serving_limits.request_budget(self.limits, texts, images, max_new_tokens,
                                             messages=messages)

    def check_prompt(
        self, instruction: str, examples: Sequence[tuple[str, tuple[int, int]]],
        max_new_tokens: int,
    ) -> serving_limits.Budget:
        """The budget of a few-shot prompt, or ConfigError when it cannot fit.

        ``examples``: (answer, (width, height) of its photo) per in-context example. The
        handler shrinks each example photo to at most ``limits.example_image_tokens`` and gives
        the upload the rest; the prompt does not fit when the upload would get fewer than
        ``limits.min_image_tokens``. The returned budget holds each image's allowance.
        """
        texts = [instruction] * (len(examples) + 1) + [answer for answer, _ in examples]
        texts += _markup(self.request_style, len(examples))
        text_tokens = self.prompt_budget(texts, [], max_new_tokens).text_tokens
        try:
            allowances, upload = serving_limits.image_allowances(
                self.limits, text_tokens, max_new_tokens, [size for _, size in examples])
        except serving_limits.GenerationError as exc:
            raise ConfigError(f"The prompt does not fit {self.name}: {exc}.") from None
        return serving_limits.Budget(
            text_tokens=text_tokens, image_tokens=(*allowances, upload),
            max_new_tokens=max_new_tokens, max_input_tokens=self.limits.max_input_tokens,
            max_total_tokens=self.limits.max_total_tokens)


def _bedrock_limits(context: int, max_output: int, max_images: int) -> ContainerLimits:
    """Limits of a managed model, in the shape the handler and presets check against:
    ``context`` tokens in all, answers of at most ``max_output``; images are checked one by
    one against Bedrock's own limits (photo_handler.converse), so the payload figure is
    Converse's per-image byte limit times the images a request may carry."""
    return ContainerLimits(
        engine="bedrock", container_version="converse",
        max_input_tokens=context - max_output, max_total_tokens=context,
        payload_limit_bytes=3_750_000 * max_images, max_stop_sequences=4,
        image_formula="bedrock", max_images=max_images, example_image_tokens=1600,
        min_image_tokens=64)


def _markup(style: str, n_examples: int) -> list[str]:
    """The prompt's fixed text around the instructions and answers."""
    if style == STYLE_TGI:
        turn = "User:<end_of_utterance>\nAssistant: <end_of_utterance>\n"
        return [turn * (n_examples + 1)]
    return []


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


# Limits, per container. Token limits must fit the model's context and the GPU's memory; the
# payload limit is the container's request body limit, below SageMaker's 6 MB real-time cap:
# TGI v3.3.6 reads PAYLOAD_LIMIT (launcher/src/main.rs, default 2,000,000 bytes); v1.4.5 has
# no such setting and keeps axum's default body limit of 2 MiB, answering 413 "Failed to
# buffer the request body: length limit exceeded" (TGI issue #1802).
_TGI_PAYLOAD = 2_000_000
_TGI1_PAYLOAD = 2 * 1024 * 1024
_SAGEMAKER_PAYLOAD = 6_000_000  # InvokeEndpoint's request limit (6 MB)

PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="idefics-9b-instruct",
            model_id="HuggingFaceM4/idefics-9b-instruct",
            # No commit of this repository could be found in public sources to check it
            # against: not pinned, and shown as such (`visual-tourism profiles`).
            revision=None,
            image_family="huggingface-llm",
            # TGI 1.4.5: the last 1.x release. It still serves Idefics v1 through the
            # non-flash-attention code path, which T4 GPUs (sm75, ml.g4dn) need; TGI 3.x
            # requires flash attention for Idefics (sm80+). It also accepts images as data
            # URIs (added in 1.1.1), which the original 1.1.0 did not.
            image_version="1.4.5",
            instance_type="ml.g4dn.12xlarge",
            request_style=STYLE_TGI,
            licence="research only (LLaMA-1 base); not for commercial use",
            limits=ContainerLimits(
                engine="tgi", container_version="1.4.5",
                # Idefics v1 (LLaMA-1) has a 2,048-token context.
                max_input_tokens=1536, max_total_tokens=2048,
                payload_limit_bytes=_TGI1_PAYLOAD, max_stop_sequences=4,
                # router/src/validation.rs (v1.4.5): one <image> token per image.
                image_formula="idefics", example_image_tokens=1, min_image_tokens=1,
            ),
            env={"SM_NUM_GPUS": "4"},
            notes="The original design: 9B parameters sharded over 4 T4 GPUs.",
        ),
        ModelProfile(
            name="qwen2.5-vl-7b-instruct",
            model_id="Qwen/Qwen2.5-VL-7B-Instruct",
            # A commit of the Hub repository: the snapshot name in Hugging Face caches
            # (models--Qwen--Qwen2.5-VL-7B-Instruct/snapshots/<commit>) in several
            # independent public projects that pin it.
            revision="cc594898137f460bfe9f0759e9844b3ce807cfb5",
            image_family="huggingface-llm",
            # TGI 3.x serves Qwen2.5-VL and accepts OpenAI-style messages on /invocations.
            image_version="3.3.6",
            instance_type="ml.g5.2xlarge",
            request_style=STYLE_MESSAGES,
            licence="Apache-2.0",
            limits=ContainerLimits(
                engine="tgi", container_version="3.3.6",
                # The router counts an image as height*width/14^2 tokens (router/src/
                # config.rs, v3.3.6), about 4x what the model computes, so the input limit
                # is set for the router's count: 10,240 holds the text, a 2,048-token
                # example (~0.4 MP) and a ~1.4 MP photo; the KV cache and prefill of the
                # real (4x smaller) sequence fit the A10G's 24 GB beside 16 GB of weights.
                max_input_tokens=10240, max_total_tokens=10752,
                payload_limit_bytes=_TGI_PAYLOAD, max_stop_sequences=4,
                image_formula="qwen2-vl-router", example_image_tokens=2048,
                min_image_tokens=1024,  # ~450x450 pixels
            ),
            env={"SM_NUM_GPUS": "1"},
            notes="A current Apache-2.0 model on one A10G GPU (24 GB).",
        ),
        ModelProfile(
            name="smolvlm-instruct",
            model_id="HuggingFaceTB/SmolVLM-Instruct",
            # Checked as for Qwen: the snapshot commit public projects resolve and pin.
            revision="81cd9a775a4d644f2faf4e7becff4559b46b14c7",
            # AWS LMI (DJL serving) 0.33.0 = LMI 15 with vLLM 0.8.4, which serves
            # Idefics3-architecture models such as SmolVLM and runs on T4 GPUs.
            image_family="djl-lmi",
            image_version="0.33.0",
            instance_type="ml.g4dn.xlarge",
            request_style=STYLE_MESSAGES,
            licence="Apache-2.0",
            limits=ContainerLimits(
                engine="vllm", container_version="0.33.0",
                # vLLM has one limit, max_model_len (prompt + max_tokens). An image costs at
                # most 1,513 tokens (16 tiles and a global image of 81 each, plus markers).
                max_input_tokens=8191, max_total_tokens=8192,
                payload_limit_bytes=_SAGEMAKER_PAYLOAD, max_stop_sequences=None,
                image_formula="idefics3", example_image_tokens=1536, min_image_tokens=81,
            ),
            notes="Small and cheap: 2.2B parameters on one T4 GPU (16 GB).",
        ),
        ModelProfile(
            name="qwen2.5-vl-7b-instruct-vllm",
            model_id="Qwen/Qwen2.5-VL-7B-Instruct",
            revision="cc594898137f460bfe9f0759e9844b3ce807cfb5",
            # vLLM serves Qwen2.5-VL since 0.7.2; LMI 0.33.0 ships vLLM 0.8.4.
            image_family="djl-lmi",
            image_version="0.33.0",
            instance_type="ml.g5.2xlarge",
            request_style=STYLE_MESSAGES,
            licence="Apache-2.0",
            limits=ContainerLimits(
                engine="vllm", container_version="0.33.0",
                # vLLM counts the processor's real tokens (one per 28x28 cell after
                # smart_resize), so the same photo costs a quarter of TGI's router count.
                max_input_tokens=8191, max_total_tokens=8192,
                payload_limit_bytes=_SAGEMAKER_PAYLOAD, max_stop_sequences=None,
                image_formula="qwen2-vl-processor", example_image_tokens=1024,
                min_image_tokens=256,
            ),
            notes="The same Qwen2.5-VL on vLLM (TGI is in maintenance mode).",
        ),
        # -- managed models (Amazon Bedrock, Converse): nothing deployed, billed per token --
        ModelProfile(
            name="nova-lite",
            model_id="amazon.nova-lite-v1:0",
            kind=KIND_BEDROCK,
            image_family="bedrock",
            image_version="converse",
            instance_type="",  # none: a managed model
            request_style=STYLE_CONVERSE,
            licence="AWS Service Terms (Amazon Nova: an AWS model, no separate licence)",
            # Bedrock's Nova Lite: 300K-token context, answers up to 5K tokens (model card);
            # up to 20 images a request (Converse's limit).
            limits=_bedrock_limits(300_000, 5_000, max_images=20),
            regions=("us-east-1",),
            forced_tool=True,
            notes="Amazon's low-cost multimodal model: on demand, nothing billed while idle.",
        ),
        ModelProfile(
            name="llama3.2-11b-vision",
            model_id="meta.llama3-2-11b-instruct-v1:0",
            kind=KIND_BEDROCK,
            image_family="bedrock",
            image_version="converse",
            instance_type="",
            request_style=STYLE_CONVERSE,
            licence="Llama 3.2 Community License (open weights; Bedrock's third-party model "
                    "terms apply)",
            # 128K-token context; the Mllama architecture takes one image per request, so no
            # example photo (its answer still travels as text).
            limits=_bedrock_limits(128_000, 2_048, max_images=1),
            # On demand only through the US cross-region inference profile.
            regions=("us-east-1", "us-east-2", "us-west-2"),
            inference_profile=True,
            notes="Open weights, served by Bedrock through its US inference profile.",
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


# -- the lineup as data and tables (`visual-tourism profiles`, docs/models.md's table) -----------

# How each container family is named in tables; the LMI releases' vLLM versions are from the
# LMI release notes (djl-lmi 0.33.0 = LMI 15 with vLLM 0.8.4).
_CONTAINER_NAMES = {"huggingface-llm": "Hugging Face TGI", "djl-lmi": "AWS LMI"}
_LMI_VLLM = {"0.33.0": "0.8.4"}
_STYLE_NAMES = {STYLE_TGI: "TGI prompt (inputs + parameters)",
                STYLE_MESSAGES: "OpenAI-style messages",
                STYLE_CONVERSE: "Bedrock Converse (image bytes in the message)"}
NOT_PINNED = "not pinned"
NO_PRICE = "no price recorded"


def _container_name(profile: ModelProfile) -> str:
    if profile.managed:
        return "Amazon Bedrock (managed)"
    name = f"{_CONTAINER_NAMES.get(profile.image_family, profile.image_family)} "
    name += profile.image_version
    vllm = _LMI_VLLM.get(profile.image_version) if profile.image_family == "djl-lmi" else None
    return f"{name} (vLLM {vllm})" if vllm else name


def _bytes(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000} MB"
    return f"{n:,} bytes"


def describe(profile: ModelProfile, default: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """Everything a person choosing a model reads about one profile, as plain data (--json).

    The price is the instance's on-demand list price from ``prices.HOURLY_USD`` (None when
    not recorded); the limits are the ones the container is started with.
    """
    lim = profile.limits
    price = prices.HOURLY_USD.get(profile.instance_type)
    if profile.managed:
        return _describe_managed(profile, default)
    return {
        "name": profile.name,
        "default": profile.name == default,
        "model_id": profile.model_id,
        "revision": profile.revision,
        "container": _container_name(profile),
        "image_family": profile.image_family,
        "image_version": profile.image_version,
        "engine": lim.engine,
        "instance_type": profile.instance_type,
        "licence": profile.licence,
        "price_per_hour_usd": price,
        "price": (f"${price:g}/h" if price is not None else NO_PRICE),
        "price_basis": (f"{prices.PRICE_REGION} on-demand list price as of "
                        f"{prices.PRICE_DATE} ({prices.PRICE_SOURCE})"),
        "limits": {
            "max_input_tokens": lim.max_input_tokens,
            "max_total_tokens": lim.max_total_tokens,
            "payload_limit_bytes": lim.payload_limit_bytes,
            "max_stop_sequences": lim.max_stop_sequences,  # None: no limit
            "max_images": lim.max_images,
            "image_formula": lim.image_formula,
        },
        "request_style": profile.request_style,
        "request_style_text": _STYLE_NAMES.get(profile.request_style, profile.request_style),
        "notes": profile.notes,
        "kind": profile.kind,
        "idle_cost_per_hour_usd": price,
    }


def _describe_managed(profile: ModelProfile, default: str) -> dict[str, Any]:
    """``describe`` for a managed model: per-token prices, nothing billed while idle."""
    lim = profile.limits
    tokens = prices.TOKEN_USD.get(profile.model_id)
    price = (f"$0/h; ${tokens.input_per_million:g}+${tokens.output_per_million:g}/1M tok"
             if tokens else NO_PRICE)
    return {
        "name": profile.name,
        "default": profile.name == default,
        "model_id": profile.model_id,
        "revision": None,
        "container": _container_name(profile),
        "image_family": profile.image_family,
        "image_version": profile.image_version,
        "engine": lim.engine,
        "instance_type": profile.instance_type,  # "": none
        "licence": profile.licence,
        "price_per_hour_usd": None,
        "price": price,
        "price_basis": (tokens.basis() if tokens else NO_PRICE),
        "token_prices_usd_per_million": (
            {"input": tokens.input_per_million, "output": tokens.output_per_million}
            if tokens else None),
        "limits": {
            "max_input_tokens": lim.max_input_tokens,
            "max_total_tokens": lim.max_total_tokens,
            "payload_limit_bytes": lim.payload_limit_bytes,
            "max_stop_sequences": lim.max_stop_sequences,
            "max_images": lim.max_images,
            "image_formula": lim.image_formula,
        },
        "request_style": profile.request_style,
        "request_style_text": _STYLE_NAMES[profile.request_style],
        "notes": profile.notes,
        "kind": profile.kind,
        "regions": list(profile.regions),
        "inference_profile": profile.inference_profile,
        "idle_cost_per_hour_usd": 0.0,
    }


def lineup(default: str = DEFAULT_PROFILE) -> list[dict[str, Any]]:
    """Every profile, described (see ``describe``), in the order PROFILES lists them."""
    return [describe(p, default) for p in PROFILES.values()]


TABLE_HEADERS = ("Profile", "Model @ revision", "Container", "Instance", "Price/hour",
                 "Limits", "Request style", "Licence")


def _limits_text(limits: Mapping[str, Any]) -> str:
    if limits["image_formula"] == "bedrock":
        return (f"{limits['max_total_tokens']:,} tokens context, answers up to "
                f"{limits['max_total_tokens'] - limits['max_input_tokens']:,}; "
                f"{limits['max_images']} image(s) of png/jpeg/gif/webp, each at most 3.75 MB "
                "and 8,000 px a side")
    stops = limits["max_stop_sequences"]
    return (f"{limits['max_input_tokens']:,} input / {limits['max_total_tokens']:,} total "
            f"tokens; payload {_bytes(limits['payload_limit_bytes'])}; "
            f"{'no limit on' if stops is None else f'at most {stops}'} stop sequences; "
            f"{limits['max_images']} images")


def table_rows(rows: Sequence[Mapping[str, Any]] | None = None,
               markdown: bool = False) -> list[tuple[str, ...]]:
    """One tuple of cells per profile, in TABLE_HEADERS order."""
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    cells = []
    for row in rows if rows is not None else lineup():
        revision = row["revision"]
        managed = row.get("kind") == KIND_BEDROCK
        model = (f"{code(row['model_id'])} (versioned by Bedrock)" if managed else
                 f"{code(row['model_id'])} @ " + (code(revision[:12]) if revision else NOT_PINNED))
        cells.append((
            code(row["name"]) + (" (default)" if row["default"] else ""),
            model,
            row["container"],
            "none (managed)" if managed else code(row["instance_type"]),
            row["price"],
            _limits_text(row["limits"]),
            row["request_style_text"],
            row["licence"],
        ))
    return cells


def markdown_table(rows: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The profile table of docs/models.md (`visual-tourism profiles --markdown`)."""
    lines = ["| " + " | ".join(TABLE_HEADERS) + " |",
             "|" + "---|" * len(TABLE_HEADERS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
              for row in table_rows(rows, markdown=True)]
    return "\n".join(lines) + "\n"
