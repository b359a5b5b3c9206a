"""The function's configuration: environment variables read into ``Settings``, and defaults.

Read at every invocation (a warm container keeps nothing of it), and checked as a whole:
an invalid configuration is a ConfigError naming every problem, which the handler turns
into an error record per photo rather than a failed invocation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from . import serving_limits
from .errors import ConfigError

DEFAULT_INSTRUCTION = (
    "You are a travel agent. Describe in 1 sentence what is in the image. Add another "
    "sentence for an entertaining story related to this location. Add a last sentence saying "
    "what is the best place to eat near this location."
)
DEFAULT_EXAMPLE_ANSWER = (
    "The Trevi Fountain is a popular tourist attraction in Rome, Italy. The act of tossing a "
    "coin with one's right hand over the left shoulder is said to ensure a return to Rome, a "
    "promise of enduring romance with the city. The best place to eat near this location is "
    "the Pinsitaly Trevi restaurant."
)
DEFAULT_GENERATION: dict[str, Any] = {
    "do_sample": True, "top_p": 0.2, "temperature": 0.4, "top_k": 50, "max_new_tokens": 512,
}
STYLES = ("tgi", "messages", "converse")
KINDS = ("sagemaker", "bedrock")  # MODEL_KIND: a SageMaker endpoint, or Amazon Bedrock
TRANSPORTS = ("url", "data-uri")


@dataclass(frozen=True)
class Settings:
    bucket: str
    endpoint: str
    input_prefix: str = "input/"
    output_prefix: str = "output/"
    example_key: str = "example/trevi.jpeg"
    example_answer: str = DEFAULT_EXAMPLE_ANSWER
    instruction: str = DEFAULT_INSTRUCTION
    request_style: str = "tgi"
    generation: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_GENERATION))
    image_transport: str = "url"
    url_expires_seconds: int = 900
    max_payload_bytes: int = 1_900_000  # TGI's PAYLOAD_LIMIT defaults to 2,000,000
    model_profile: str | None = None
    model_id: str | None = None
    max_attempts: int = 4
    model_timeout_seconds: float = 60.0  # SageMaker's limit for one real-time call
    retry_base_seconds: float = 1.0
    result_margin_seconds: float = 5.0  # time kept back to write the result
    max_image_bytes: int = 20_000_000
    max_image_pixels: int = 50_000_000
    min_image_side: int = 32
    # "async": submit to SageMaker Asynchronous Inference and return (asynchronous.py).
    inference_mode: str = "realtime"
    async_prefix: str = "async/"
    async_ttl_seconds: int = 3600
    async_invocation_timeout_seconds: int = 900
    # From CONTAINER_LIMITS (JSON, serving_limits.ContainerLimits): the container's token
    # budget, image token formula and payload limit. None: a deployment without the variable;
    # images are then sized by bytes only.
    container_limits: serving_limits.ContainerLimits | None = None
    # The answer presets' DynamoDB table (presets_schema.py); empty: no presets, the prompt
    # above as it is. A preset read is kept this many seconds by a warm container.
    presets_table: str = ""
    preset_cache_seconds: float = 60.0
    # Set when the web page is on (visual_tourism/web.py): photos under INPUT_PREFIX + "web/"
    # get a small copy without metadata here, for the gallery, and answer once per upload form.
    thumbnail_prefix: str = ""
    # Nearby places to eat from Amazon Location Service (places.py): PLACES=off turns them off.
    places: bool = True
    places_radius_meters: int = 800
    places_max_results: int = 5
    places_opening_hours: bool = False  # "open now" (SearchNearby's Contact feature: Advanced)
    places_timeout_seconds: float = 5.0
    # "bedrock": a managed model called with Amazon Bedrock's Converse API (converse.py):
    # MODEL_ID is the modelId to call (a foundation model or an inference profile), no
    # ENDPOINT_NAME. MODEL_PRICES (JSON {"input_per_million", "output_per_million"}, US
    # dollars) prices each answer's usage in its record.
    model_kind: str = "sagemaker"
    model_prices: str = ""
    structured_output: str = "text"  # "tool": a forced Converse tool call (the model takes it)


ENV_NAMES = {  # environment variable -> Settings field
    "BUCKET_NAME": "bucket", "ENDPOINT_NAME": "endpoint", "INPUT_PREFIX": "input_prefix",
    "OUTPUT_PREFIX": "output_prefix", "EXAMPLE_KEY": "example_key",
    "EXAMPLE_ANSWER": "example_answer", "INSTRUCTION": "instruction",
    "REQUEST_STYLE": "request_style", "GENERATION_PARAMETERS": "generation",
    "IMAGE_TRANSPORT": "image_transport", "URL_EXPIRES_SECONDS": "url_expires_seconds",
    "MAX_PAYLOAD_BYTES": "max_payload_bytes", "MODEL_PROFILE": "model_profile",
    "MODEL_ID": "model_id", "MAX_ATTEMPTS": "max_attempts",
    "MODEL_TIMEOUT_SECONDS": "model_timeout_seconds", "RETRY_BASE_SECONDS": "retry_base_seconds",
    "RESULT_MARGIN_SECONDS": "result_margin_seconds", "MAX_IMAGE_BYTES": "max_image_bytes",
    "MAX_IMAGE_PIXELS": "max_image_pixels", "MIN_IMAGE_SIDE": "min_image_side",
    "INFERENCE_MODE": "inference_mode", "ASYNC_PREFIX": "async_prefix",
    "ASYNC_TTL_SECONDS": "async_ttl_seconds",
    "ASYNC_INVOCATION_TIMEOUT_SECONDS": "async_invocation_timeout_seconds",
    "PRESETS_TABLE": "presets_table",  # presets_schema.ENV_VAR
    "PRESET_CACHE_SECONDS": "preset_cache_seconds",
    "THUMBNAIL_PREFIX": "thumbnail_prefix",
    "PLACES": "places", "PLACES_RADIUS_METERS": "places_radius_meters",
    "PLACES_MAX_RESULTS": "places_max_results", "PLACES_OPENING_HOURS": "places_opening_hours",
    "PLACES_TIMEOUT_SECONDS": "places_timeout_seconds",
    "MODEL_KIND": "model_kind", "MODEL_PRICES": "model_prices",
    "STRUCTURED_OUTPUT": "structured_output",
}
SWITCHES = {"on": True, "off": False}  # the values of the on/off variables (PLACES)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration from the environment (read per invocation: tests vary it)."""
    env = os.environ if env is None else env
    kinds = {f.name: f.default for f in fields(Settings)}
    values: dict[str, Any] = {}
    for var, name in ENV_NAMES.items():
        raw = env.get(var, "")
        if raw == "":
            continue
        default = kinds[name]
        try:
            if name == "generation":
                value = json.loads(raw)
                if not isinstance(value, dict):
                    raise ValueError("not a JSON object")
            elif isinstance(default, bool):
                if raw.strip().lower() not in SWITCHES:
                    raise ValueError("use on or off")
                value = SWITCHES[raw.strip().lower()]
            elif isinstance(default, int | float):
                value = type(default)(raw)
            else:
                value = raw
        except ValueError as exc:
            raise ConfigError(f"Environment variable {var}={raw!r} is invalid ({exc}).") from None
        values[name] = value
    # A managed model has no endpoint: it is named by MODEL_ID.
    needed = (("BUCKET_NAME", "MODEL_ID") if values.get("model_kind") == "bedrock"
              else ("BUCKET_NAME", "ENDPOINT_NAME"))
    missing = [var for var in needed if ENV_NAMES[var] not in values]
    values.setdefault("endpoint", "")
    if missing:
        raise ConfigError(f"Set {' and '.join(missing)} in the Lambda's environment.")
    problems = []
    raw_limits = env.get(serving_limits.ENV_VAR, "")
    if raw_limits:
        try:
            limits = serving_limits.ContainerLimits.from_env(raw_limits)
        except serving_limits.GenerationError as exc:
            problems.append(str(exc))
        else:
            values["container_limits"] = limits
            # The body must stay under the container's own limit (TGI's PAYLOAD_LIMIT, or
            # SageMaker's 6 MB): 5% kept back, as the 1,900,000 default does for TGI's 2 MB.
            cap = limits.payload_limit_bytes * 95 // 100
            values["max_payload_bytes"] = min(values.get("max_payload_bytes", cap), cap)
    settings = Settings(**values)
    if settings.model_kind not in KINDS:
        problems.append(f"MODEL_KIND must be one of {', '.join(KINDS)}")
    elif (settings.model_kind == "bedrock") != (settings.request_style == "converse"):
        problems.append("MODEL_KIND=bedrock goes with REQUEST_STYLE=converse, and only it")
    elif settings.model_kind == "bedrock" and settings.inference_mode != "realtime":
        problems.append("INFERENCE_MODE must be realtime with MODEL_KIND=bedrock (a managed "
                        "model has no endpoint to queue requests on)")
    if settings.request_style not in STYLES:
        problems.append(f"REQUEST_STYLE must be one of {', '.join(STYLES)}")
    if settings.image_transport not in TRANSPORTS:
        problems.append(f"IMAGE_TRANSPORT must be one of {', '.join(TRANSPORTS)}")
    inp, out = settings.input_prefix, settings.output_prefix
    # Overlapping folders would make every result trigger the function again.
    if not inp.endswith("/") or not out.endswith("/") or inp.startswith(out) or out.startswith(inp):
        problems.append("INPUT_PREFIX and OUTPUT_PREFIX must be separate folders like 'input/'")
    if settings.inference_mode not in ("realtime", "async"):
        problems.append("INFERENCE_MODE must be realtime or async")
    if settings.max_attempts < 1:
        problems.append("MAX_ATTEMPTS must be at least 1")
    # SearchNearby's own ranges (botocore geo-places model: QueryRadius 1-21,000,000,
    # MaxResults 1-100); a request outside them would only fail on every photo.
    if not 1 <= settings.places_radius_meters <= 21_000_000:
        problems.append("PLACES_RADIUS_METERS must be within 1-21000000")
    if not 1 <= settings.places_max_results <= 100:
        problems.append("PLACES_MAX_RESULTS must be within 1-100")
    problems.extend(_generation_problems(settings))
    if problems:
        raise ConfigError("Invalid Lambda configuration: " + "; ".join(problems) + ".")
    return settings


def _generation_problems(settings: Settings) -> list[str]:
    """GENERATION_PARAMETERS the container would refuse (serving_limits holds the rules, the
    same ones load_config applies; CONTAINER_LIMITS says which container)."""
    limits = settings.container_limits
    if limits is None:  # no CONTAINER_LIMITS: nothing to check against
        return []
    return [f"GENERATION_PARAMETERS: {problem}" for problem in serving_limits.generation_problems(
        settings.generation, limits, settings.request_style)]


def fallback_settings() -> Settings:
    """Settings for answering photos while the configuration is invalid: the configured
    folders if they are usable, else the default ones."""
    prefixes = {
        name: value for name, value in (
            ("input_prefix", os.environ.get("INPUT_PREFIX", "")),
            ("output_prefix", os.environ.get("OUTPUT_PREFIX", "")),
        ) if value.endswith("/") and len(value) > 1
    }
    bucket = os.environ.get("BUCKET_NAME", "")  # still refuse other buckets when it is set
    fallback = Settings(bucket=bucket, endpoint="", **prefixes)
    inp, out = fallback.input_prefix, fallback.output_prefix
    return fallback if not (inp.startswith(out) or out.startswith(inp)) else Settings(bucket, "")
