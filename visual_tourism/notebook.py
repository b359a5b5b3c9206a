"""Everything the notebooks call beyond `stack`: environment, settings, display, the demo panel.

The notebooks under ``notebooks/`` stay thin: each code cell is one call into this module or
into `visual_tourism.stack`, so nothing works only inside a notebook and all of it is tested.

Display helpers mask AWS account IDs (``********1234``): notebook outputs get shared as files
and screenshots. ``print(...)`` a value yourself when you need it in full.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import re
import tempfile
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import autoscaling, bucket, endpoint, iam, lambda_fn, pricing, stack
from .aws import Aws
from .config import IMAGES_DIR, Config, load_config
from .errors import ConfigError, VisualTourismError
from .profiles import PROFILES

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SETTINGS_FILE = "settings.toml"
# What the settings file holds: the plain text and numbers of notebook 01's settings dict.
_SCALARS = (str, int, float)
_ACCOUNT_ID = re.compile(r"(?<!\d)(\d{8})(\d{4})(?!\d)")


class LeftoverError(VisualTourismError):
    """Clean-up finished but some resource of the stack is still there."""


class NotReachableError(VisualTourismError):
    """The environment points at a local stand-in that does not answer."""


# -- output -----------------------------------------------------------------------------------


def redact(text: str) -> str:
    """Mask 12-digit numbers (AWS account IDs) down to their last four digits."""
    return _ACCOUNT_ID.sub(lambda m: "*" * 8 + m.group(2), text)


def say(message: str) -> None:
    """The notebooks' progress callback: print, with account IDs masked."""
    print(redact(message), flush=True)


def show(info: Mapping[str, Any]) -> None:
    """Print a dict as aligned ``key: value`` lines (nested values as compact JSON)."""
    width = max((len(str(k)) for k in info), default=0)
    for key, value in info.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        say(f"{str(key):<{width}}  {text}")


def _home_relative(path: Path) -> str:
    """A path as ``~/...`` when under the home folder: no user name in shared outputs."""
    try:
        return "~/" + str(path.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


# -- where are we running? --------------------------------------------------------------------


def local_endpoints(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The local stand-in's URLs when the environment points boto3 at loopback, else None."""
    env = os.environ if env is None else env
    url = env.get("AWS_ENDPOINT_URL", "")
    if not url or urlparse(url).hostname not in LOOPBACK_HOSTS:
        return None
    return {"aws": url, "model": env.get("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)}


def is_local(env: Mapping[str, str] | None = None) -> bool:
    return local_endpoints(env) is not None


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
    local = local_endpoints(env)
    try:
        identity = aws.identity  # also proves that credentials and endpoints work
    except EndpointConnectionError:
        where = local["aws"] if local else "AWS"
        raise NotReachableError(
            f"Nothing answers at {where}. For local mode start 'visual-tourism local serve' in "
            "a terminal and export the variables it prints before starting JupyterLab; for "
            "AWS, unset AWS_ENDPOINT_URL."
        ) from None
    if local:
        return (
            f"local mode: AWS stand-in at {local['aws']}, model server at {local['model']} "
            f"(region {cfg.region}). Nothing here reaches AWS or costs money."
        )
    account = f"account ending {identity['Account'][-4:]}"
    if iam.in_studio():
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


# -- settings ---------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(
    r"<[^<>]*>|change[_-]?me|replace[_-]?me|(?-i:\bTODO\b|\bFIXME\b)|^your[-_ ]|^x{3,}$|^\.\.\.$"
    r"|123456789012",
    re.IGNORECASE,
)


def check_placeholders(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    """Raise ConfigError naming every value still left as a placeholder; return the settings.

    Catches what copy-pasted examples leave behind: ``"<your-bucket>"``, ``"CHANGE_ME"``,
    ``"your-role"``, ``"TODO"``, ``"..."``, the documentation's account ID.
    """
    found: list[str] = []

    def walk(path: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{path}.{key}" if path else str(key), inner)
        elif isinstance(value, list | tuple):
            for i, inner in enumerate(value):
                walk(f"{path}[{i}]", inner)
        elif isinstance(value, str) and _PLACEHOLDER.search(value.strip()):
            found.append(f"{path} = {value!r}")

    walk("", settings)
    if found:
        raise ConfigError(
            "Replace the placeholder values in the settings cell, then run it again:\n  - "
            + "\n  - ".join(found)
        )
    return settings


def settings_path(env: Mapping[str, str] | None = None) -> Path:
    """Where notebook 01 keeps the settings: ``VT_CONFIG`` if set, else in the state folder.

    The state folder (``VT_STATE_DIR``, default ``~/.visual-tourism``) is outside the
    repository, so account-specific choices are never committed by accident.
    """
    env = os.environ if env is None else env
    if env.get("VT_CONFIG"):
        return Path(env["VT_CONFIG"])
    base = env.get("VT_STATE_DIR") or str(Path.home() / ".visual-tourism")
    return Path(base) / SETTINGS_FILE


def _environment_with_region(env: Mapping[str, str]) -> dict[str, str]:
    """The environment, plus the region of the AWS profile or Studio image as a last resort.

    ``load_config`` reads only environment variables; on a laptop the region is often just in
    ``~/.aws/config``.
    """
    merged = dict(env)
    if not (merged.get("AWS_REGION") or merged.get("AWS_DEFAULT_REGION")):
        import boto3

        region = boto3.session.Session().region_name
        if region:
            merged["AWS_DEFAULT_REGION"] = region
    return merged


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """The configuration every notebook starts from: defaults < settings file < VT_* variables
    < keyword arguments."""
    env = os.environ if env is None else env
    path = settings_path(env)
    # VT_CONFIG is read by load_config itself; the default file only if notebook 01 wrote it.
    explicit = None if env.get("VT_CONFIG") or not path.is_file() else path
    return load_config(explicit, env=_environment_with_region(env), **overrides)


def _toml_value(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, _SCALARS):
        raise ConfigError(
            f"Setting {key!r} = {value!r}: only text and numbers can be saved here; put "
            "structured settings in a TOML file of your own and point VT_CONFIG at it."
        )
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (no raw control characters, same escapes).
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def save_settings(settings: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Check, validate and save the settings for the other notebooks; return the config.

    Empty values mean "the default" and are not written.
    """
    env = os.environ if env is None else env
    check_placeholders(settings)
    chosen = {k: v for k, v in settings.items() if v not in ("", None)}
    load_config(None, env=_environment_with_region(env), **chosen)  # raises on a bad value
    path = settings_path(env)
    if path.suffix != ".toml":
        raise ConfigError(f"VT_CONFIG points at {path}: save_settings writes TOML files only.")
    lines = [
        "# Visual Tourism settings, written by notebooks/01_setup.ipynb.",
        "# VT_* environment variables override these values.",
        *(f"{key} = {_toml_value(key, value)}" for key, value in chosen.items()),
    ]
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != chosen:  # e.g. a character TOML cannot hold unescaped
        raise ConfigError(f"These settings cannot be written as TOML: {chosen!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    say(f"saved {len(chosen)} settings to {_home_relative(path)}")
    for key in chosen:
        if env.get(f"VT_{key.upper()}"):
            say(f"note: VT_{key.upper()} is set in the environment and wins over the file")
    return load_settings(env)


bucket_name = stack.bucket_name  # the bucket this stack uses

def show_profiles() -> None:
    """The model profiles to choose from, with their instance and its list price."""
    for profile in PROFILES.values():
        cost = pricing.hourly_cost(profile.instance_type, 1)
        price = f"${cost:.2f}/h" if cost is not None else "price not recorded"
        say(f"{profile.name:24} {profile.model_id}")
        say(f"{'':24} {profile.instance_type} ({price}), licence: {profile.licence}")


def plan(cfg: Config, aws: Aws) -> dict[str, Any]:
    """The names and sizes of what the next notebooks create."""
    return {
        "bucket": bucket_name(cfg, aws),
        "roles": [cfg.lambda_role_name, "Studio execution role" if iam.in_studio()
                  else cfg.sagemaker_role_name],
        "model": f"{cfg.profile.model_id} ({cfg.profile.licence})",
        "endpoint": f"{cfg.endpoint_name} on {cfg.effective_instance_type}, "
                    f"{cfg.min_instances}-{cfg.max_instances} instance(s)",
        "function": f"{cfg.function_name} ({cfg.lambda_runtime}, {cfg.lambda_timeout} s, "
                    f"{cfg.lambda_memory} MB)",
        "trigger": f"uploads under {cfg.input_prefix} -> results under {cfg.output_prefix}",
    }


# -- steps ------------------------------------------------------------------------------------


def show_bucket(cfg: Config, aws: Aws) -> None:
    """The bucket's privacy settings and what each folder holds."""
    name = bucket_name(cfg, aws)
    show(bucket.describe(aws, cfg, name))
    policy = json.loads(aws.s3.get_bucket_policy(Bucket=name)["Policy"])
    for statement in policy.get("Statement", []):
        say(f"bucket policy: {statement.get('Effect')} {statement.get('Action')} "
            f"({statement.get('Sid', '')})")
    for folder in (cfg.input_prefix, cfg.example_prefix, cfg.output_prefix):
        listing = aws.s3.list_objects_v2(Bucket=name, Prefix=folder, MaxKeys=5)
        keys = [o["Key"] for o in listing.get("Contents", [])]
        say(f"{folder:10} {', '.join(keys) if keys else '(empty)'}")


def show_lambda_policy(cfg: Config, aws: Aws) -> None:
    """What the Lambda's role may do, statement by statement."""
    name = bucket_name(cfg, aws)
    policy = iam.lambda_policy(cfg, account=aws.account_id, bucket=name,
                               partition=aws.partition)
    for statement in policy["Statement"]:
        resources = statement["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        say(f"{statement['Sid']}: {', '.join(statement['Action'])}")
        for resource in resources:
            say(f"    on {resource}")


def show_model(cfg: Config) -> None:
    """The chosen profile: model, container, instance, container settings."""
    profile = cfg.profile
    show({
        "model": profile.model_id,
        "licence": profile.licence,
        "container": f"{profile.image_family} {profile.image_version}",
        "instance": cfg.effective_instance_type,
        "request style": profile.request_style,
        "container env": profile.container_env(),
        "notes": profile.notes,
    })


def cost_warning(cfg: Config, env: Mapping[str, str] | None = None) -> str:
    """What starting the endpoint costs and how long it takes, here."""
    cost = pricing.describe_cost(cfg.effective_instance_type, cfg.min_instances, cfg.region)
    if is_local(env):
        return ("Local mode: the endpoint is emulated, starts in seconds and costs nothing. "
                f"On AWS this step takes 10-15 minutes and bills {cost}.")
    return (f"This starts {cfg.min_instances} x {cfg.effective_instance_type}: 10-15 minutes, "
            f"then {cost}. Billing runs until 07_cleanup.ipynb deletes the endpoint.")


def autoscaling_plan(cfg: Config) -> dict[str, Any]:
    """The scaling target and policy ``attach_autoscaling`` will put in place."""
    most = pricing.hourly_cost(cfg.effective_instance_type, cfg.max_instances)
    return {
        "resource": autoscaling.resource_id(cfg),
        "instances": f"{cfg.min_instances} to {cfg.max_instances}",
        "policy": autoscaling.target_tracking(cfg),
        "most per hour": f"${most:.2f} at {cfg.max_instances} instances" if most is not None
        else "price not recorded",
    }


# -- the demo ---------------------------------------------------------------------------------


def demo_photos(cfg: Config, images_dir: Path = IMAGES_DIR) -> list[Path]:
    """The bundled photos, minus the in-context example (asking about it would be cheating)."""
    example = Path(cfg.example_image).name
    return sorted(p for p in images_dir.glob("*.jp*g") if p.name != example)


_PHOTO_CODES = frozenset({"not_an_image", "corrupt_image", "empty_file", "unsupported_format",
                          "image_too_large", "image_too_small", "truncated_image"})
_EXPLANATIONS = {
    "photo": "The handler checked the upload before calling the model and refused it, so no "
             "GPU time was spent. Upload a JPEG, PNG, GIF or WebP photo.",
    "busy": "The model endpoint was busy or too slow; the handler already retried. This is "
            "usually temporary: try again in a minute, and check the endpoint's status and "
            "autoscaling if it keeps happening.",
    "wiring": "The handler could not use the model: the endpoint is missing, refused the call "
              "or is misconfigured. Re-run the model and Lambda notebooks (or 'visual-tourism "
              "up'), then try again.",
    "answer": "The model was reached but gave no usable answer. Try another photo.",
    "input": "The handler could not read the photo from the bucket. Upload it again.",
}
_CATEGORY = {
    **dict.fromkeys(_PHOTO_CODES, "photo"),
    "model_timeout": "busy", "model_unavailable": "busy",
    "endpoint_not_found": "wiring", "model_request_failed": "wiring",
    "configuration_error": "wiring",
    "model_rejected_input": "answer", "bad_model_response": "answer", "empty_answer": "answer",
    "input_unreadable": "input",
}


def explain_error(error: Mapping[str, Any]) -> str:
    """A plain-language reading of a result record's ``error`` (code + message)."""
    category = _CATEGORY.get(str(error.get("code", "")))
    return _EXPLANATIONS[category] if category else "The handler reported an error."


def thumbnail_data_uri(path: Path, size: int = 480) -> str | None:
    """A small JPEG of the photo as a data URI, or None when it is not a readable image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            small = ImageOps.exif_transpose(image).convert("RGB")
            small.thumbnail((size, size))
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def side_by_side_html(image_path: str | Path, record: Mapping[str, Any] | None,
                      failure: str | None = None) -> str:
    """HTML with the photo on the left and the answer, or the error explained, on the right.

    Every text from the record is escaped: a model's answer must not inject markup.
    """
    path = Path(image_path)
    uri = thumbnail_data_uri(path)
    picture = (f'<img src="{uri}" alt="{html.escape(path.name)}" style="max-width:100%">'
               if uri else '<div style="padding:2em;border:1px dashed gray">'
               "(not a viewable image)</div>")
    if record is not None and record.get("status") == "ok":
        heading = "Answer"
        body = f"<p>{html.escape(str(record.get('answer', '')).strip())}</p>"
    elif record is not None:
        error = record.get("error") or {}
        heading = f"No answer: {html.escape(str(error.get('code', 'error')))}"
        body = (f"<p>{html.escape(explain_error(error))}</p>"
                f"<p><i>Handler:</i> {html.escape(redact(str(error.get('message', ''))))}</p>")
    else:
        heading = "No answer"
        body = f"<p>{html.escape(redact(failure or 'nothing came back'))}</p>"
    details = []
    if record is not None:
        model = record.get("model") or {}
        timing = record.get("timing") or {}
        details = [
            f"model {model.get('model_id') or model.get('endpoint') or '?'}",
            f"model time {timing.get('model_seconds', '?')} s",
            f"answer seen {record.get('seen_after_seconds', '?')} s after upload",
            f"record {record.get('result_key', '?')}",
        ]
    footer = (f'<p style="color:gray;font-size:smaller">{html.escape("; ".join(details))}</p>'
              if details else "")
    return (
        '<div style="display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap">'
        f'<figure style="margin:0;flex:0 1 480px">{picture}'
        f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
        f'<div style="flex:1 1 20em"><h4>{heading}</h4>{body}{footer}</div></div>'
    )


def show_side_by_side(image_path: str | Path, record: Mapping[str, Any] | None) -> None:
    from IPython.display import HTML, display

    display(HTML(side_by_side_html(image_path, record)))


def show_record(record: Mapping[str, Any]) -> None:
    """The full result record as stored under output/, account IDs masked."""
    say(json.dumps(record, indent=2, ensure_ascii=False, default=str))


def sample_not_a_photo(folder: Path | None = None) -> Path:
    """A text file named like a photo: the handler must refuse it by its bytes, not its name."""
    folder = folder or Path(tempfile.mkdtemp(prefix="visual-tourism-sample-"))
    path = folder / "not-a-photo.jpeg"
    path.write_text("This is a text file, not a photo.\n")
    return path


_SAFE_NAME = re.compile(r"[^A-Za-z0-9 ._-]+")


class DemoPanel:
    """Choose or upload a photo, press the button, watch progress, read the answer.

    ``on_ask`` is the button's callback; it can be called directly (tests do) and returns the
    result record, or None when no record came back.
    """

    def __init__(self, cfg: Config, aws: Aws, timeout: float = 300.0,
                 images_dir: Path = IMAGES_DIR, upload_dir: Path | None = None) -> None:
        import ipywidgets as widgets

        self.cfg, self.aws, self.timeout = cfg, aws, timeout
        self.upload_dir = upload_dir or Path(tempfile.mkdtemp(prefix="visual-tourism-uploads-"))
        self.record: dict[str, Any] | None = None
        self._lines: list[str] = []
        self._started = 0.0
        self.photo = widgets.Dropdown(
            options=[(p.stem.replace("_", " "), str(p)) for p in demo_photos(cfg, images_dir)],
            description="Photo",
        )
        self.upload = widgets.FileUpload(accept="image/*", multiple=False,
                                         description="Upload a photo")
        self.button = widgets.Button(description="Ask the travel agent", icon="paper-plane",
                                     button_style="primary",
                                     layout=widgets.Layout(width="auto"))
        self.progress = widgets.HTML()
        self.result = widgets.HTML()
        self.upload.observe(self.on_upload, names="value")
        self.button.on_click(self.on_ask)
        self.widget = widgets.VBox([
            widgets.HBox([self.photo, self.upload, self.button]), self.progress, self.result,
        ])

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def on_upload(self, change: Mapping[str, Any]) -> None:
        """Save an uploaded file and select it in the list (an empty change is the reset)."""
        files = change.get("new") or ()
        if not files:
            return
        upload = files[0]
        name = _SAFE_NAME.sub("_", Path(str(upload["name"])).name).strip(" .") or "upload.jpeg"
        path = self.upload_dir / name
        path.write_bytes(bytes(upload["content"]))
        label = f"{name} (uploaded)"
        others = [option for option in self.photo.options if option[1] != str(path)]
        self.photo.options = [*others, (label, str(path))]
        self.photo.value = str(path)
        self.upload.value = ()  # ready for the next upload of the same file

    def report(self, message: str) -> None:
        """The progress callback: the latest lines, with the time since the button press."""
        self._lines.append(f"{time.monotonic() - self._started:5.1f} s  {redact(message)}")
        shown = "<br>".join(html.escape(line) for line in self._lines[-8:])
        self.progress.value = f'<pre style="margin:0">{shown}</pre>'

    def on_ask(self, _button: Any = None) -> dict[str, Any] | None:
        path = Path(self.photo.value)
        self._lines, self._started = [], time.monotonic()
        self.button.disabled = True
        self.result.value = ""
        self.report(f"asking about {path.name}")
        record: dict[str, Any] | None = None
        try:
            record = stack.ask(path, self.cfg, self.aws, timeout=self.timeout,
                               progress=self.report)
        except Exception as exc:
            # A button callback's exception would only reach the kernel's log, unseen: show it.
            log.warning("Demo panel: %s", exc, exc_info=not isinstance(exc, VisualTourismError))
            self.report(f"failed: {exc}")
            self.result.value = side_by_side_html(path, None, failure=str(exc))
        else:
            self.report(f"{record.get('status')}: record {record.get('result_key')}")
            self.result.value = side_by_side_html(path, record)
        finally:
            self.button.disabled = False
        self.record = record
        return record


def demo_panel(cfg: Config, aws: Aws, timeout: float = 300.0) -> DemoPanel:
    return DemoPanel(cfg, aws, timeout=timeout)


# -- clean-up ---------------------------------------------------------------------------------


def leftovers(cfg: Config, aws: Aws, keep_bucket: bool = False) -> list[str]:
    """Every resource of this stack that still exists (the bucket only unless kept on purpose)."""
    found: list[str] = []
    ep = endpoint.describe(aws, cfg)
    if ep["state"] != "absent":
        found.append(f"endpoint {ep['name']} ({ep['state']}, {ep['instances']} instance(s), "
                     "billed by the hour)")
    found += [f"SageMaker model {name}" for name in endpoint.our_models(aws, cfg)]
    found += [f"endpoint configuration {name}" for name in endpoint.our_configs(aws, cfg)]
    if autoscaling.describe(aws, cfg)["state"] != "absent":
        found.append(f"autoscaling target {autoscaling.resource_id(cfg)}")
    if lambda_fn.get_function(aws, cfg.function_name) is not None:
        found.append(f"Lambda function {cfg.function_name}")
    for group_name in (f"/aws/lambda/{cfg.function_name}",
                       f"/aws/sagemaker/Endpoints/{cfg.endpoint_name}"):
        groups = aws.client("logs").describe_log_groups(logGroupNamePrefix=group_name)
        found += [f"log group {g['logGroupName']}" for g in groups["logGroups"]
                  if g["logGroupName"] == group_name]
    for role in (cfg.lambda_role_name, cfg.sagemaker_role_name):
        if iam.get_role(aws, role) is not None:
            found.append(f"IAM role {role}")
    name = bucket_name(cfg, aws)
    if not keep_bucket and bucket.bucket_state(aws, name) == "exists":
        found.append(f"bucket {name}")
    return found


def confirm_clean(cfg: Config, aws: Aws, keep_bucket: bool = False) -> None:
    """Raise LeftoverError listing what is still there; else say that nothing billable is."""
    left = leftovers(cfg, aws, keep_bucket)
    if left:
        raise LeftoverError(
            redact("Still there after clean-up:\n  - " + "\n  - ".join(left) + "\nRun the "
                   "clean-up again; if something stays, delete it in the AWS console.")
        )
    say(f"Nothing billable is left for stack {cfg.prefix!r} in {cfg.region}: no endpoint, "
        "model, autoscaling target, Lambda function, log group or IAM role.")
    name = bucket_name(cfg, aws)
    if keep_bucket and bucket.bucket_state(aws, name) == "exists":
        say(f"Kept bucket {name} on purpose: its photos and results cost cents per GB-month.")
    elif not keep_bucket:
        say("The bucket and its photos and results are gone too.")
