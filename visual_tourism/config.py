"""One configuration object for the whole stack.

Values come from, in rising precedence: the defaults below, an optional TOML or JSON file
(``VT_CONFIG`` or the ``path`` argument), ``VT_*`` environment variables, and keyword
arguments. Every field can be set each way; ``VT_<FIELD>`` is the field's name in upper case.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import where
from .errors import ConfigError, RegionError
from .profiles import DEFAULT_PROFILE, ModelProfile, get_profile

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = PROJECT_ROOT / "images"

INSTRUCTION = (
    "You are a travel agent. Describe in 1 sentence what is in the image. Add another "
    "sentence for an entertaining story related to this location. Add a last sentence saying "
    "what is the best place to eat near this location."
)
EXAMPLE_ANSWER = (
    "The Trevi Fountain is a popular tourist attraction in Rome, Italy. The act of tossing a "
    "coin with one's right hand over the left shoulder is said to ensure a return to Rome, a "
    "promise of enduring romance with the city. The best place to eat near this location is "
    "the Pinsitaly Trevi restaurant."
)
GENERATION = {
    "do_sample": True,
    "top_p": 0.2,
    "temperature": 0.4,
    "top_k": 50,
    "max_new_tokens": 512,
}
TRANSPORTS = ("url", "data-uri")
INFERENCE_MODES = ("realtime", "async")
# Tag put on everything `up` creates; `down` deletes only what carries it.
STACK_TAG = "visual-tourism:stack"
# The web page's photos: uploads under input_prefix + WEB_FOLDER, answers under
# output_prefix + WEB_FOLDER. The handler writes a small copy of each, without metadata, under
# THUMBNAIL_PREFIX + WEB_FOLDER (THUMBNAIL_PREFIX of both functions): what the gallery shows.
# Outside output/, so results stay records only. The roles, both functions and the template
# are built from these two names.
WEB_FOLDER = "web/"
THUMBNAIL_PREFIX = "thumbnails/"

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Config:
    prefix: str = "visual-tourism"
    region: str = ""
    bucket: str = ""  # empty: "{prefix}-{account}-{region}" (in Studio "sagemaker-" first)
    input_prefix: str = "input/"
    example_prefix: str = "example/"
    output_prefix: str = "output/"
    example_image: str = str(IMAGES_DIR / "trevi.jpeg")
    example_answer: str = EXAMPLE_ANSWER
    instruction: str = INSTRUCTION
    model_profile: str = DEFAULT_PROFILE
    instance_type: str = ""  # empty: the profile's
    min_instances: int = 1
    max_instances: int = 5
    # SageMakerVariantInvocationsPerInstance is a per-minute figure; 5 as in the original.
    target_invocations: float = 5.0
    scale_in_cooldown: int = 600
    scale_out_cooldown: int = 300
    lambda_runtime: str = "python3.12"
    lambda_timeout: int = 300
    lambda_memory: int = 512
    # Bursts (visual_tourism/delivery.py): the function's reserved concurrency is
    # max_instances x requests_per_instance, so no more photos are in flight than the endpoint
    # at full scale can serve at once; the rest wait in Lambda's queue.
    requests_per_instance: int = 4
    max_event_age: int = 3600  # seconds an event may wait or retry before the destination
    retry_attempts: int = 2  # Lambda's retries of a failed invocation (0-2)
    image_transport: str = "url"
    generation: dict[str, Any] = field(default_factory=lambda: dict(GENERATION))
    state_dir: str = ""  # empty: ~/.visual-tourism
    # "async": SageMaker Asynchronous Inference, scales to zero when idle (see async_inference).
    inference_mode: str = "realtime"
    async_prefix: str = "async/"  # private: queued requests, outputs, failures
    async_request_ttl: int = 3600  # seconds a photo may wait in the queue (60-21600)
    async_invocation_timeout: int = 900  # seconds one async request may run (1-3600)
    async_max_concurrency: int = 4  # MaxConcurrentInvocationsPerInstance
    async_backlog_target: float = 5.0  # ApproximateBacklogSizePerInstance to aim for
    stop_after: str = ""  # e.g. "3h": a one-time schedule stops the endpoint (schedule.py)
    # The web page and its API (visual_tourism/web.py): "off" leaves them out of `up`.
    web_api: str = "on"
    web_rate_limit: float = 20.0  # requests/s over the whole API (API Gateway stage)
    web_burst_limit: int = 40
    web_upload_rate_limit: float = 1.0  # upload forms/s: each upload is a model call
    web_upload_burst_limit: int = 10
    web_max_photo_bytes: int = 20_000_000  # the handler's own limit
    # Answer presets (visual_tourism/presets.py): a DynamoDB table of named prompts and
    # parameters the uploader picks per photo; "off" leaves the table out of `up`.
    presets: str = "on"
    keep_presets: bool = False  # `down` keeps the presets table (and its edits), as --keep-presets
    # Nearby places to eat from Amazon Location Service (photo_handler/places.py, docs/places.md):
    # "off" makes no Places call (and no cost); a radius in metres and a handful of places.
    places: str = "on"
    places_radius: int = 800
    places_max_results: int = 5

    # -- derived names ------------------------------------------------------------------
    @property
    def profile(self) -> ModelProfile:
        return get_profile(self.model_profile)

    @property
    def effective_instance_type(self) -> str:
        return self.instance_type or self.profile.instance_type

    @property
    def endpoint_name(self) -> str:
        return f"{self.prefix}-endpoint"

    @property
    def function_name(self) -> str:
        return f"{self.prefix}-handler"

    @property
    def lambda_role_name(self) -> str:
        return f"{self.prefix}-lambda-role"

    @property
    def sagemaker_role_name(self) -> str:
        return f"{self.prefix}-sagemaker-role"

    @property
    def example_key(self) -> str:
        return self.example_prefix + Path(self.example_image).name

    @property
    def reserved_concurrency(self) -> int:
        """The function's reserved concurrency: the endpoint's capacity at full scale."""
        return self.max_instances * self.requests_per_instance

    @property
    def is_async(self) -> bool:
        return self.inference_mode == "async"

    @property
    def effective_image_transport(self) -> str:
        """Async requests may wait for hours: presigned URLs signed with the Lambda's
        short-lived session credentials could be dead by then, so images travel inline."""
        return "data-uri" if self.is_async else self.image_transport

    @property
    def needs_pillow(self) -> bool:
        """Whether the handler may resize images, so its zip must carry Pillow: the data-uri
        transport (the payload limit), a container that counts an image's tokens by its
        size (every formula but Idefics v1's one token per image), or the web page (the
        gallery's small copies of its photos, photo_handler.resize.thumbnail), or nearby
        places (the photo's EXIF GPS position, photo_handler.places)."""
        return (self.effective_image_transport == "data-uri"
                or self.profile.limits.image_formula != "idefics"
                or self.web_api == "on"  # the web photos' small copies (photo_handler/resize.py)
                or self.places == "on")

    @property
    def presets_table(self) -> str:
        """The presets table's name; empty when presets are off."""
        return f"{self.prefix}-presets" if self.presets == "on" else ""

    @property
    def schedule_name(self) -> str:
        return f"{self.prefix}-stop-deadline"

    @property
    def scheduler_role_name(self) -> str:
        return f"{self.prefix}-scheduler-role"

    @property
    def stop_after_seconds(self) -> int:
        return parse_duration(self.stop_after) if self.stop_after else 0

    def bucket_name(self, account_id: str) -> str:
        """The bucket setting, else "{prefix}-{account}-{region}"; inside SageMaker Studio
        "sagemaker-{prefix}-{account}-{region}", a name AmazonSageMakerFullAccess already
        lets the Studio role (and so the endpoint running under it) read and write objects
        in. Kept to the plain name when the longer one would pass S3's 63 characters."""
        if self.bucket:
            return self.bucket
        plain = f"{self.prefix}-{account_id}-{self.region}"
        studio = f"sagemaker-{plain}"
        return studio if where.in_studio() and len(studio) <= 63 else plain

    @property
    def state_path(self) -> Path:
        base = Path(self.state_dir) if self.state_dir else Path.home() / ".visual-tourism"
        return base / f"{self.prefix}-{self.region}.json"

    def replace(self, **changes: Any) -> Config:
        return validate(dataclasses.replace(self, **changes))


_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> int:
    """``"3h"``, ``"90m"``, ``"1h30m"``, ``"2d"``, ``"45s"`` -> seconds; ConfigError otherwise."""
    found = _DURATION_RE.match(text.strip().lower())
    if not text.strip() or not found or not any(found.groups()):
        raise ConfigError(
            f"Duration {text!r} is not understood: write it like 3h, 90m, 1h30m or 2d."
        )
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    """Turn a file or environment value into the field's type, with a clear error."""
    try:
        if kind in ("int", int):
            return int(raw)
        if kind in ("float", float):
            return float(raw)
        if kind in ("bool", bool):
            if isinstance(raw, bool):
                return raw
            words = {"true": True, "yes": True, "on": True, "1": True,
                     "false": False, "no": False, "off": False, "0": False}
            if str(raw).strip().lower() not in words:
                raise ValueError("expected true or false")
            return words[str(raw).strip().lower()]
        if kind in ("dict[str, Any]",):
            value = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Config value {name}={raw!r} is invalid: {exc}") from None


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist. Fix VT_CONFIG or the path given.")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Config file {path} cannot be parsed: {exc}") from None
    return data


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Build and validate the configuration (defaults < file < VT_* variables < arguments)."""
    env = os.environ if env is None else env
    known = {f.name: f for f in fields(Config)}
    values: dict[str, Any] = {}

    file_path = path or env.get("VT_CONFIG")
    if file_path:
        for key, raw in _read_file(Path(file_path)).items():
            if key not in known:
                raise ConfigError(
                    f"Unknown setting {key!r} in {file_path}. Known: {', '.join(known)}."
                )
            values[key] = _coerce(key, known[key].type, raw)
    for name, f in known.items():
        raw = env.get(f"VT_{name.upper()}")
        if raw not in (None, ""):
            values[name] = _coerce(name, f.type, raw)
    for name, raw in overrides.items():
        if name not in known:
            raise ConfigError(f"Unknown setting {name!r}. Known: {', '.join(known)}.")
        if raw is not None:
            values[name] = raw
    if not values.get("region"):
        values["region"] = where.region(env)
    return validate(Config(**values))


def known_regions() -> list[str]:
    import boto3

    return boto3.session.Session().get_available_regions("sagemaker")


def _generation_problems(cfg: Config) -> list[str]:
    """What the profile's container would refuse: each generation parameter, and the prompt
    (instruction, example answer and photo, max_new_tokens) against its token limits."""
    profile = cfg.profile
    problems = [f"generation: {p}" for p in profile.generation_problems(cfg.generation)]
    max_new = cfg.generation.get("max_new_tokens")
    if problems or not Path(cfg.example_image).is_file() or not isinstance(max_new, int):
        return problems
    try:
        from PIL import Image

        with Image.open(cfg.example_image) as image:
            size = image.size
    except OSError as exc:
        return [f"example_image {cfg.example_image!r} cannot be read as an image: {exc}"]
    try:
        profile.check_prompt(cfg.instruction, [(cfg.example_answer, size)], max_new)
    except ConfigError as exc:
        problems.append(str(exc))
    return problems


def validate(cfg: Config) -> Config:
    """Check every value; raise ConfigError naming the setting and what to do."""
    problems: list[str] = []
    if not _PREFIX_RE.match(cfg.prefix):
        problems.append(
            f"prefix {cfg.prefix!r}: use 3-32 lower-case letters, digits or '-', "
            "starting with a letter"
        )
    if cfg.bucket and (not _BUCKET_RE.match(cfg.bucket) or ".." in cfg.bucket):
        problems.append(f"bucket {cfg.bucket!r} is not a valid S3 bucket name")
    names = ("input_prefix", "example_prefix", "output_prefix")
    folders = tuple(getattr(cfg, name) for name in names)
    for name, value in zip(names, folders, strict=True):
        if not value.endswith("/") or value.startswith("/") or len(value) < 2:
            problems.append(f"{name} {value!r} must look like 'name/'")
    # Compared by position, not identity: equal strings may be one object or two.
    for i, (name_a, a) in enumerate(zip(names, folders, strict=True)):
        for name_b, b in zip(names[i + 1:], folders[i + 1:], strict=True):
            if a.startswith(b) or b.startswith(a):
                problems.append(
                    f"{name_a} {a!r} and {name_b} {b!r} overlap: each needs a folder of its "
                    "own (results under the input folder would trigger the handler again)"
                )
    if not Path(cfg.example_image).is_file():
        problems.append(f"example_image {cfg.example_image!r} does not exist")
    profile = get_profile(cfg.model_profile)  # raises UnknownProfileError listing them
    if profile.managed and cfg.inference_mode != "realtime":
        problems.append(f"inference_mode {cfg.inference_mode!r}: {profile.name} is a managed "
                        "model (Amazon Bedrock) with no endpoint to queue on; use realtime")
    if cfg.inference_mode not in INFERENCE_MODES:
        problems.append(f"inference_mode {cfg.inference_mode!r}: use one of {INFERENCE_MODES}")
    if not cfg.async_prefix.endswith("/") or cfg.async_prefix.startswith("/") or len(
        cfg.async_prefix
    ) < 2:
        problems.append(f"async_prefix {cfg.async_prefix!r} must look like 'name/'")
    elif any(f.startswith(cfg.async_prefix) or cfg.async_prefix.startswith(f) for f in folders):
        problems.append(f"async_prefix {cfg.async_prefix!r} overlaps {folders}")
    if not 60 <= cfg.async_request_ttl <= 21600:
        problems.append("async_request_ttl must be 60-21600 s (InvokeEndpointAsync's limits)")
    if not 1 <= cfg.async_invocation_timeout <= 3600:
        problems.append("async_invocation_timeout must be 1-3600 s")
    if not 1 <= cfg.async_max_concurrency <= 1000:
        problems.append("async_max_concurrency must be 1-1000 per instance")
    if cfg.async_backlog_target <= 0:
        problems.append("async_backlog_target must be > 0 (queued requests per instance)")
    if cfg.stop_after:
        try:
            seconds = parse_duration(cfg.stop_after)
        except ConfigError as exc:
            problems.append(f"stop_after: {exc}")
        else:
            if not 300 <= seconds <= 30 * 86400:
                problems.append(f"stop_after {cfg.stop_after!r}: use 5m to 30d")
    if not 1 <= cfg.min_instances <= cfg.max_instances:
        problems.append(
            f"autoscaling bounds min={cfg.min_instances} max={cfg.max_instances}: need "
            "1 <= min <= max (a real-time variant cannot scale to zero)"
        )
    if cfg.target_invocations <= 0:
        problems.append("target_invocations must be > 0 (invocations per instance per minute)")
    if cfg.scale_in_cooldown < 0 or cfg.scale_out_cooldown < 0:
        problems.append("cooldowns must be >= 0 seconds")
    if not re.match(r"^python3\.(1[2-9]|[2-9]\d)$", cfg.lambda_runtime):
        problems.append(f"lambda_runtime {cfg.lambda_runtime!r}: use python3.12 or newer")
    if not 70 <= cfg.lambda_timeout <= 900:
        problems.append(
            f"lambda_timeout {cfg.lambda_timeout}: use 70-900 s (one model call may take 60 s)"
        )
    if not 128 <= cfg.lambda_memory <= 10240:
        problems.append(f"lambda_memory {cfg.lambda_memory}: use 128-10240 MB")
    if not 1 <= cfg.requests_per_instance <= 1000:
        problems.append(f"requests_per_instance {cfg.requests_per_instance}: use 1-1000")
    elif cfg.reserved_concurrency > 900:
        problems.append(
            f"max_instances x requests_per_instance = {cfg.reserved_concurrency}: Lambda keeps "
            "100 of an account's default 1,000 unreserved; use at most 900"
        )
    if not 60 <= cfg.max_event_age <= 21600:
        problems.append(f"max_event_age {cfg.max_event_age}: use 60-21600 s (Lambda's range)")
    if not 0 <= cfg.retry_attempts <= 2:
        problems.append(f"retry_attempts {cfg.retry_attempts}: use 0-2 (Lambda's range)")
    if cfg.image_transport not in TRANSPORTS:
        problems.append(f"image_transport {cfg.image_transport!r}: use one of {TRANSPORTS}")
    if not isinstance(cfg.generation, dict) or "max_new_tokens" not in cfg.generation:
        problems.append("generation must be an object with at least max_new_tokens")
    else:
        problems.extend(_generation_problems(cfg))
    if cfg.web_api not in ("on", "off"):
        problems.append(f"web_api {cfg.web_api!r}: use 'on' or 'off'")
    if cfg.presets not in ("on", "off"):
        problems.append(f"presets {cfg.presets!r}: use 'on' or 'off'")
    if cfg.places not in ("on", "off"):
        problems.append(f"places {cfg.places!r}: use 'on' or 'off'")
    if not 1 <= cfg.places_radius <= 50_000:
        problems.append(f"places_radius {cfg.places_radius}: use 1-50,000 metres")
    if not 1 <= cfg.places_max_results <= 20:
        problems.append(f"places_max_results {cfg.places_max_results}: use 1-20")
    if not isinstance(cfg.keep_presets, bool):
        problems.append(f"keep_presets {cfg.keep_presets!r}: use true or false")
    if not (0 < cfg.web_upload_rate_limit <= cfg.web_rate_limit and cfg.web_burst_limit >= 1
            and 1 <= cfg.web_upload_burst_limit <= cfg.web_burst_limit):
        problems.append("web throttling: need 0 < upload rate <= rate and 1 <= upload burst "
                        "<= burst")
    if not 1_000 <= cfg.web_max_photo_bytes <= 50_000_000:
        problems.append("web_max_photo_bytes: use 1,000-50,000,000")
    if problems:
        raise ConfigError("Invalid configuration:\n  - " + "\n  - ".join(problems))
    if not cfg.region:
        raise RegionError(
            "No AWS region set. Set AWS_REGION (or VT_REGION), e.g. export AWS_REGION=us-east-1."
        )
    if cfg.region not in known_regions():
        raise RegionError(
            f"Unknown AWS region {cfg.region!r} (no SageMaker there). "
            "Set AWS_REGION to a region such as us-east-1, us-west-2 or eu-west-1."
        )
    return cfg
