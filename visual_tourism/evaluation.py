"""`visual-tourism eval`: does a profile recognise the labelled photos, how fast, at what cost.

Each photo of ``images/labels.json`` goes through the deployed stack exactly as a user's does
(``stack.ask``: an upload under ``input/``, the trigger, the handler, the endpoint, the result
record). An answer is scored per photo on three questions, each 1 or 0:

- **landmark**: does it name the landmark or one of its aliases;
- **city**, **country**: does it name the right city, the right country (or an alias).

Matching ignores case and accents and looks for whole words ("Rome" does not match
"Romeo"); it cannot tell "not Paris" from "Paris", so a score is an upper bound on what a
reader would accept. The in-context example (``trevi.jpeg``) is left out by default: its
answer is in every prompt, so naming it says nothing about the photo.

Per profile: the three rates, the latency a user sees (upload to result record, the record's
``seen_after_seconds``) and the model's own time (``timing.model_seconds``) as p50/p95, and a
cost per photo **estimate**: the endpoint's list price per hour x model seconds / 3600 (what
the photo's share of an instance-hour is worth; the endpoint bills every second it runs, busy
or idle). The report is written as JSON and, when matplotlib is installed, a small PNG chart
that the notebooks can show.

A managed profile (Amazon Bedrock) is costed from what it used: each record's ``usage``
(tokens in and out) at the model's list price per token, measured per photo; it bills nothing
while idle. To compare the two kinds at a class's volume, every profile's report also gives
the cost per photo at 10, 100 and 1,000 photos a day **including idle cost**: a real-time
endpoint runs (and bills) 24 hours a day whatever the volume, so its day's price is shared by
the day's photos; a managed model's per-photo price is the same at every volume.

``compare`` deploys several profiles in turn (``up``, eval, ``down`` keeping the bucket) after
stating what that costs; it refuses without ``yes``. In local mode the answers come from the
local model server, not the profile's model; the offline stand-in scores zero, and says so.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import prices, stack, where
from .config import IMAGES_DIR, Config
from .errors import AskTimeoutError, ConfigError, VisualTourismError
from .local.backends import STAND_IN, STAND_IN_LABEL
from .profiles import NO_PRICE, PROFILES, get_profile

LABELS_PATH = IMAGES_DIR / "labels.json"
FIELDS = ("landmark", "city", "country")
# What one profile costs in a comparison: a GPU endpoint takes 10-15 minutes to be InService
# on AWS (billed from when its instance starts), then the photos and `down` take a few more.
EXPECTED_DEPLOY_MINUTES = 15
EXPECTED_EVAL_MINUTES = 10
MINUTES_PER_PROFILE = EXPECTED_DEPLOY_MINUTES + EXPECTED_EVAL_MINUTES
EXPECTED_PHOTOS = 20  # at most what a run asks about (images/labels.json has fewer)
COST_NOTE = ("estimate: endpoint list price per hour x model seconds / 3600; the endpoint "
             "bills every second it runs, busy or idle")
MANAGED_COST_NOTE = ("measured tokens (each record's usage) x the model's list price per token "
                     "(prices.TOKEN_USD); nothing billed while idle")
DAILY_VOLUMES = (10, 100, 1000)  # photos a day: a class, a school, a busy public page
DAILY_NOTE = ("cost per photo at N photos a day, idle included: a real-time endpoint's 24 "
              "hours at list price (min instances) / N; a managed model's measured cost per "
              "photo (no idle cost). List-price estimates, not bills")
STAND_IN_NOTE = ("answered by the local offline stand-in, not a model: every score is 0 by "
                 "construction (run local mode with a real model, or on AWS, to measure)")
LOCAL_NOTE = ("local mode: the answers come from the local model server, not from the "
              "profile's model on its container; latency and cost are not AWS's")

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


# -- labels ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Label:
    """What one photo shows, and the other names an answer may use for it."""

    photo: str
    landmark: str
    city: str
    country: str
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    in_context_example: bool = False
    near: str | None = None  # where the landmark stands ("LAT,LON"): sent with the photo

    def names(self, what: str) -> tuple[str, ...]:
        return (getattr(self, what), *self.aliases.get(what, ()))


def load_labels(path: str | Path = LABELS_PATH) -> list[Label]:
    """The labels file, checked: every photo named must exist beside it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read the labels file {path}: {exc}") from None
    labels = []
    for i, item in enumerate(data.get("photos", []) if isinstance(data, dict) else []):
        missing = [k for k in ("photo", *FIELDS) if not isinstance(item.get(k), str)
                   or not item[k].strip()]
        if missing:
            raise ConfigError(f"{path}: photo #{i + 1} lacks {', '.join(missing)}")
        aliases = {k: tuple(v) for k, v in (item.get("aliases") or {}).items() if k in FIELDS}
        near = item.get("near") or None
        if near is not None and not isinstance(near, str):
            raise ConfigError(f"{path}: photo #{i + 1}: near must be \"LAT,LON\"")
        labels.append(Label(item["photo"], item["landmark"], item["city"], item["country"],
                            aliases, bool(item.get("in_context_example", False)), near))
        if not (path.parent / item["photo"]).is_file():
            raise ConfigError(f"{path}: {item['photo']} is not in {path.parent}")
    if not labels:
        raise ConfigError(f"{path}: no photos (expected {{\"photos\": [{{\"photo\": ...}}]}})")
    return labels


def selected(labels: Sequence[Label], include_example: bool = False) -> list[Label]:
    """The photos to ask about: all but the in-context example unless asked."""
    return [x for x in labels if include_example or not x.in_context_example]


# -- scoring -----------------------------------------------------------------------------------

_NOT_WORD = re.compile(r"[^0-9a-z]+")


def _normal(text: str) -> str:
    """Lower case, accents dropped, every run of non-alphanumerics one space, padded."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text)
                    if not unicodedata.combining(c))
    plain = plain.casefold().replace("ß", "ss")
    return " " + _NOT_WORD.sub(" ", plain).strip() + " "


def mentions(answer: str, names: Sequence[str]) -> bool:
    """Does the answer name one of ``names`` as whole words (case and accents ignored)?"""
    text = _normal(answer)
    return any(_normal(name) in text for name in names if name.strip())


def score(answer: str, label: Label) -> dict[str, int]:
    """1 or 0 per question (landmark, city, country) for one answer."""
    return {what: int(mentions(answer, label.names(what))) for what in FIELDS}


def is_stand_in(record: Mapping[str, Any]) -> bool:
    """Was this record answered by the local offline stand-in rather than a model?"""
    model = record.get("model") or {}
    backend = str(model.get("backend") or "") if isinstance(model, Mapping) else ""
    return backend == STAND_IN or STAND_IN_LABEL in str(record.get("answer") or "")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between the closest ranks; None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 3)


def photo_result(label: Label, record: Mapping[str, Any],
                 price_per_hour: float | None) -> dict[str, Any]:
    """One photo's line of the report, from its result record (a managed model's record
    carries its own cost: ``usage.cost_usd``)."""
    ok = record.get("status") == "ok"
    answer = str(record.get("answer") or "") if ok else ""
    stand_in = ok and is_stand_in(record)
    scores = score(answer, label) if ok and not stand_in else dict.fromkeys(FIELDS, 0)
    timing = record.get("timing") or {}
    model_seconds = timing.get("model_seconds")
    latency = record.get("seen_after_seconds", timing.get("total_seconds"))
    usage = record.get("usage") if isinstance(record.get("usage"), Mapping) else None
    if usage is not None:  # a managed model: what its tokens cost, measured
        cost = usage.get("cost_usd") if ok else None
    else:
        cost = (round(price_per_hour * model_seconds / 3600, 6)
                if price_per_hour is not None and model_seconds is not None and ok else None)
    error = record.get("error") or {}
    return {
        "photo": label.photo,
        "expected": {what: getattr(label, what) for what in FIELDS},
        "status": record.get("status"),
        "answer": answer,
        "error_code": None if ok else error.get("code"),
        "stand_in": stand_in,
        "scores": scores,
        "latency_seconds": latency,
        "model_seconds": model_seconds,
        "cost_usd_estimate": cost,
        "tokens": ({"input": usage.get("input_tokens"), "output": usage.get("output_tokens")}
                   if usage is not None else None),
        "result_key": record.get("result_key"),
        "nearby": nearby_result(record),
    }


def nearby_result(record: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the answer recommends one of the real places nearby (places.recommended,
    set by the handler), given that the record has any."""
    info = record.get("places") if record.get("status") == "ok" else None
    info = info if isinstance(info, Mapping) else {}
    return {"places": len(info.get("nearby") or []), "status": info.get("status"),
            "recommended": info.get("recommended")}


def nearby_rate(photos: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Of the photos whose record lists real places nearby, how many answers recommend one
    of them by name (None: no photo had places)."""
    with_places = [p for p in photos if (p.get("nearby") or {}).get("places")]
    chosen = sum(1 for p in with_places if p["nearby"].get("recommended"))
    return {"photos_with_places": len(with_places), "recommended_nearby": chosen,
            "rate": round(chosen / len(with_places), 3) if with_places else None}


def summarise(profile: str, instance_type: str, photos: Sequence[Mapping[str, Any]], *,
              local: bool, min_instances: int = 1) -> dict[str, Any]:
    """A profile's report: the photos, the rates, latency p50/p95, cost per photo, and cost
    per photo at DAILY_VOLUMES idle included (``min_instances``: what a real-time endpoint
    keeps running)."""
    n = len(photos)
    latency = [p["latency_seconds"] for p in photos if p["latency_seconds"] is not None]
    model = [p["model_seconds"] for p in photos
             if p["model_seconds"] is not None and p["status"] == "ok"]
    costs = [p["cost_usd_estimate"] for p in photos if p["cost_usd_estimate"] is not None]
    stand_in = any(p["stand_in"] for p in photos)
    notes = []
    if stand_in:
        notes.append(STAND_IN_NOTE)
    if local:
        notes.append(LOCAL_NOTE)
    failed = [p for p in photos if p["status"] != "ok"]
    if failed:
        notes.append(f"{len(failed)} of {n} photo(s) got no answer ("
                     + ", ".join(f"{p['photo']}: {p['error_code']}" for p in failed)
                     + "); they score 0")
    managed = profile in PROFILES and get_profile(profile).managed
    price = None if managed else prices.HOURLY_USD.get(instance_type)
    per_photo = round(sum(costs) / len(costs), 6) if costs else None
    idle_per_day = 0.0 if managed else (round(price * 24 * min_instances, 4)
                                        if price is not None else None)
    return {
        "profile": profile,
        "kind": "bedrock" if managed else "sagemaker",
        "instance_type": instance_type,
        "price_per_hour_usd": price,
        "photos": list(photos),
        "n_photos": n,
        "answered": n - len(failed),
        "correct": {what: sum(p["scores"][what] for p in photos) for what in FIELDS},
        "rate": {what: (round(sum(p["scores"][what] for p in photos) / n, 3) if n else None)
                 for what in FIELDS},
        "nearby": nearby_rate(photos),
        "latency_seconds": {"p50": percentile(latency, 50), "p95": percentile(latency, 95)},
        "model_seconds": {"p50": percentile(model, 50), "p95": percentile(model, 95)},
        "cost_per_photo_usd_estimate": per_photo,
        "cost_note": (MANAGED_COST_NOTE if managed else COST_NOTE if price is not None
                      else f"{NO_PRICE} for {instance_type}"),
        "idle_cost_per_day_usd": idle_per_day,
        "cost_per_photo_per_day_usd": daily_costs(managed, per_photo, idle_per_day),
        "stand_in": stand_in,
        "local": local,
        "notes": notes,
    }


def daily_costs(managed: bool, per_photo: float | None,
                idle_per_day: float | None) -> dict[str, float | None]:
    """Cost per photo at each of DAILY_VOLUMES, idle included (DAILY_NOTE)."""
    if managed:
        return {str(n): per_photo for n in DAILY_VOLUMES}
    if idle_per_day is None:
        return {str(n): None for n in DAILY_VOLUMES}
    return {str(n): round(idle_per_day / n, 6) for n in DAILY_VOLUMES}


# -- running it --------------------------------------------------------------------------------

def run_eval(cfg: Config, aws: Any = None, *, labels: Sequence[Label] | None = None,
             labels_path: str | Path = LABELS_PATH, include_example: bool = False,
             timeout: float | None = None, progress: Progress = _quiet,
             run_id: str | None = None) -> dict[str, Any]:
    """Ask the deployed stack about every labelled photo; return the profile's report.

    Each photo is uploaded under ``input/eval/<run>-<profile>/`` so that no earlier answer
    (the handler reuses a final answer for the same key and bytes) is counted for this run.
    """
    from .aws import Aws

    aws = aws or Aws(cfg.region)
    labels_path = Path(labels_path)
    chosen = selected(labels if labels is not None else load_labels(labels_path),
                      include_example)
    run_id = run_id or _run_id()
    price = prices.HOURLY_USD.get(cfg.effective_instance_type)
    progress(f"eval {cfg.model_profile}: {len(chosen)} photo(s) through the stack "
             f"{cfg.prefix!r}")
    results = []
    for label in chosen:
        key = f"{cfg.input_prefix}eval/{run_id}-{cfg.model_profile}/{label.photo}"
        try:
            record = stack.ask(labels_path.parent / label.photo, cfg, aws, timeout=timeout,
                               key=key, near=label.near)
        except AskTimeoutError as exc:
            record = {"status": "error", "error": {"code": "timeout", "message": str(exc)}}
        result = photo_result(label, record, price)
        results.append(result)
        marks = " ".join(f"{what} {'yes' if result['scores'][what] else 'no'}"
                         for what in FIELDS)
        progress(f"  {label.photo}: {result['status']}"
                 + (f" ({result['error_code']})" if result["error_code"] else "")
                 + f"; {marks}; {result['latency_seconds']} s")
    return summarise(cfg.model_profile, cfg.effective_instance_type, results,
                     local=bool(getattr(aws, "is_local", False)),
                     min_instances=cfg.min_instances)


def _run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def estimate_compare_cost(names: Sequence[str], local: bool | None = None) -> dict[str, Any]:
    """What comparing these profiles costs on AWS, before anything is deployed.

    Each profile's instance price x MINUTES_PER_PROFILE (10-15 minutes to InService, billed
    from when the instance starts, plus the photos and `down`). Offline: no AWS call.
    """
    local = where.is_local() if local is None else local
    lines, total, unknown = [], 0.0, []
    for name in names:
        profile = get_profile(name)
        if profile.managed:  # nothing to start; the photos' tokens alone
            photo = prices.token_cost(profile.model_id, prices.TYPICAL_INPUT_TOKENS,
                                      prices.TYPICAL_OUTPUT_TOKENS)
            cost = (photo or 0.0) * EXPECTED_PHOTOS
            total += cost
            lines.append(f"  {name}: managed (Amazon Bedrock), nothing to start; about "
                         f"${cost:.4f} for {EXPECTED_PHOTOS} photos at list price per token")
            continue
        price = prices.HOURLY_USD.get(profile.instance_type)
        if price is None:
            unknown.append(name)
            lines.append(f"  {name}: {profile.instance_type}, {prices.PRICE_SOURCE} "
                         "(no price recorded)")
            continue
        cost = price * MINUTES_PER_PROFILE / 60
        total += cost
        lines.append(f"  {name}: {profile.instance_type} at ${price:g}/h x "
                     f"{MINUTES_PER_PROFILE} min = about ${cost:.2f}")
    return {"total_usd": round(total, 2), "lines": lines, "unknown": unknown, "local": local,
            "minutes_per_profile": MINUTES_PER_PROFILE}


def describe_estimate(estimate: Mapping[str, Any]) -> str:
    head = (f"Comparing {len(estimate['lines'])} profile(s) deploys each in turn ('up'), asks "
            "about the photos, and removes it ('down', keeping the bucket). Estimated cost on "
            f"AWS (list prices, {prices.PRICE_REGION}, {prices.PRICE_DATE}; about "
            f"{EXPECTED_DEPLOY_MINUTES} min to start and {EXPECTED_EVAL_MINUTES} min for the "
            "photos and removal per profile):")
    text = "\n".join([head, *estimate["lines"], f"  total: about ${estimate['total_usd']:.2f}"
                      + (" plus the profiles without a recorded price" if estimate["unknown"]
                         else "")])
    text += ("\nIf a stack already runs under this prefix, it is replaced during the "
             "comparison and redeployed with its profile at the end (one more deployment).")
    if estimate["local"]:
        text += "\nLocal mode: nothing is billed here; the figures are what AWS would charge."
    return text


class ConfirmationRequired(VisualTourismError):
    """A billable action was asked for without --yes."""


def deployed_profile(cfg: Config, aws: Any) -> str | None:
    """The profile the stack under cfg's prefix runs now (its function's MODEL_PROFILE), or
    None when no endpoint of it exists."""
    from . import endpoint

    endpoint_absent = endpoint.describe(aws, cfg)["state"] == "absent"
    try:
        fn = aws.lambda_.get_function_configuration(FunctionName=cfg.function_name)
        variables = fn.get("Environment", {}).get("Variables", {})
        name = variables.get("MODEL_PROFILE")
    except (ClientError, BotoCoreError):  # no function: assume cfg's profile
        variables, name = {}, None
    if endpoint_absent:  # a managed model's stack runs without one
        return name if variables.get("MODEL_KIND") == "bedrock" and name in PROFILES else None
    return name if name in PROFILES else cfg.model_profile


def compare(names: Sequence[str], cfg: Config, aws: Any = None, *, yes: bool = False,
            progress: Progress = _quiet, labels_path: str | Path = LABELS_PATH,
            include_example: bool = False, timeout: float | None = None,
            endpoint_poll: float | None = None) -> dict[str, Any]:
    """Deploy, evaluate and remove each profile in turn; return the whole report.

    Without ``yes`` it states the estimated cost and raises ConfirmationRequired before any
    AWS call. The bucket is kept; a stack that ran before is redeployed with its profile.
    """
    unknown = [n for n in names if n not in PROFILES]
    if unknown or not names:
        raise ConfigError(f"Unknown profile(s) {', '.join(unknown) or '(none given)'}: "
                          f"use some of {', '.join(PROFILES)}.")
    # Every profile's settings are checked first (generation parameters per container).
    configs = [cfg.replace(model_profile=name, instance_type="") for name in names]
    labels = load_labels(labels_path)
    estimate = estimate_compare_cost(names)
    progress(describe_estimate(estimate))
    if not yes:
        raise ConfirmationRequired(
            "Nothing was deployed. To accept the estimated cost above, run the same command "
            "with --yes.")
    from .aws import Aws

    aws = aws or Aws(cfg.region)
    poll = endpoint_poll if endpoint_poll is not None else (0.5 if aws.is_local else 15.0)
    original = deployed_profile(cfg, aws)
    run_id = _run_id()
    reports: list[dict[str, Any]] = []
    interrupted = False
    try:
        if original is not None:
            # Removed rather than updated in place: an in-place update holds the old and the
            # new instances at once (and needs quota for both) for as long as a deployment.
            progress(f"\n== the stack {cfg.prefix!r} runs {original}: down first (the bucket "
                     "stays); it is redeployed at the end")
            # The presets table (a teacher's edits) is kept, like the bucket.
            stack.down(cfg, aws, delete_bucket=False, progress=progress, keep_presets=True)
        for each in configs:
            progress(f"\n== {each.model_profile}: up")
            try:
                stack.up(each, aws, progress=progress, endpoint_poll=poll)
                reports.append(run_eval(each, aws, labels=labels, labels_path=labels_path,
                                        include_example=include_example, timeout=timeout,
                                        progress=progress, run_id=run_id))
            except (VisualTourismError, ClientError, BotoCoreError) as exc:
                # e.g. no quota for the instance type: the other profiles still run
                progress(f"{each.model_profile}: failed: {exc}")
                reports.append({"profile": each.model_profile, "error": str(exc)})
            finally:
                progress(f"== {each.model_profile}: down (the bucket stays)")
                stack.down(each, aws, delete_bucket=False, progress=progress,
                           keep_presets=True)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if original is not None:
            if interrupted:
                progress(f"Interrupted: {original} was not redeployed; run 'visual-tourism up "
                         f"--model-profile {original}' to restore it.")
            else:
                progress(f"\n== restoring the stack that ran before: up with {original}")
                stack.up(cfg.replace(model_profile=original), aws, progress=progress,
                         endpoint_poll=poll)
    return report(reports, labels_path=labels_path, include_example=include_example,
                  run_id=run_id, estimate=estimate, restored=original)


def report(profiles: Sequence[Mapping[str, Any]], *, labels_path: str | Path = LABELS_PATH,
           include_example: bool = False, run_id: str | None = None,
           estimate: Mapping[str, Any] | None = None,
           restored: str | None = None) -> dict[str, Any]:
    """The whole run's report (what is written as JSON)."""
    labels = load_labels(labels_path)
    left_out = [x.photo for x in labels if x.in_context_example and not include_example]
    return {
        "run_id": run_id or _run_id(),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "labels": str(labels_path),
        "left_out": [f"{p} (the in-context example: its answer is in every prompt)"
                     for p in left_out],
        "scoring": "1 when the answer names the expected landmark / city / country or an "
                   "alias (case and accents ignored, whole words), else 0",
        "latency": "seconds from upload to result record (p50/p95); model_seconds: the "
                   "endpoint call alone",
        "cost": COST_NOTE,
        "managed_cost": MANAGED_COST_NOTE,
        "cost_per_day": DAILY_NOTE,
        "compare_estimate": dict(estimate) if estimate else None,
        "restored_profile": restored,
        "profiles": list(profiles),
    }


# -- output ------------------------------------------------------------------------------------

def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.5f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_profile(result: Mapping[str, Any]) -> str:
    """One profile's table: a line per photo, then the summary and its notes."""
    if "error" in result:
        return f"{result['profile']}: not evaluated: {result['error']}"
    price = result["price_per_hour_usd"]
    serving = ("managed by Amazon Bedrock ($0/h idle" if result.get("kind") == "bedrock" else
               f"on {result['instance_type']} ("
               + (f"${price:g}/h list price" if price is not None else "no price recorded"))
    head = (f"{result['profile']} {serving}): {result['n_photos']} photo(s), "
            f"{result['answered']} answered")
    rows = [(p["photo"], *("yes" if p["scores"][w] else "no" for w in FIELDS),
             _seconds(p["latency_seconds"]), _seconds(p["model_seconds"]),
             _usd(p["cost_usd_estimate"]))
            for p in result["photos"]]
    lines = [head, *_table(("photo", *FIELDS, "latency s", "model s", "cost/photo (est.)"),
                           rows)]
    n = result["n_photos"]
    lines.append(
        "summary: " + ", ".join(f"{w} {result['correct'][w]}/{n}" for w in FIELDS)
        + f"; latency p50 {_seconds(result['latency_seconds']['p50'])} s, p95 "
        f"{_seconds(result['latency_seconds']['p95'])} s (upload to result); model p50 "
        f"{_seconds(result['model_seconds']['p50'])} s, p95 "
        f"{_seconds(result['model_seconds']['p95'])} s; cost per photo about "
        f"{_usd(result['cost_per_photo_usd_estimate'])} ({result['cost_note']})")
    lines.append("nearby places: " + _nearby_text(result.get("nearby") or {}))
    lines += [f"NOTE: {note}" for note in result["notes"]]
    return "\n".join(lines)


def _nearby_text(nearby: Mapping[str, Any]) -> str:
    with_places = nearby.get("photos_with_places") or 0
    if not with_places:
        return "no record listed real places nearby (places off, or no position)"
    return (f"the answer recommended one of the real places nearby for "
            f"{nearby['recommended_nearby']}/{with_places} photo(s) with places")


def _nearby_cell(result: Mapping[str, Any]) -> str:
    nearby = result.get("nearby") or {}
    with_places = nearby.get("photos_with_places") or 0
    return f"{nearby.get('recommended_nearby', 0)}/{with_places}" if with_places else "-"


def format_report(full: Mapping[str, Any]) -> str:
    parts = [format_profile(r) for r in full["profiles"]]
    done = [r for r in full["profiles"] if "error" not in r]
    if len(full["profiles"]) > 1 and done:
        rows = [(r["profile"], *(f"{r['correct'][w]}/{r['n_photos']}" for w in FIELDS),
                 _seconds(r["latency_seconds"]["p50"]), _seconds(r["latency_seconds"]["p95"]),
                 _usd(r["cost_per_photo_usd_estimate"]), _nearby_cell(r),
                 "stand-in" if r["stand_in"] else ("local" if r["local"] else ""))
                for r in done]
        parts.append("\n".join(["comparison:", *_table(
            ("profile", *FIELDS, "p50 s", "p95 s", "cost/photo (est.)", "eats nearby",
             "note"), rows)]))
    if done:
        rows = [(r["profile"], r.get("kind", "sagemaker"),
                 _usd(r.get("idle_cost_per_day_usd")),
                 *(_usd((r.get("cost_per_photo_per_day_usd") or {}).get(str(n)))
                   for n in DAILY_VOLUMES)) for r in done]
        parts.append("\n".join([
            "cost per photo by photos a day, idle included (list-price estimates):", *_table(
                ("profile", "kind", "idle $/day", *(f"@{n:,}/day" for n in DAILY_VOLUMES)),
                rows), DAILY_NOTE]))
    if full["left_out"]:
        parts.append("left out: " + "; ".join(full["left_out"]))
    return "\n\n".join(parts)


def default_path(cfg: Config, run_id: str) -> Path:
    """Where the report goes without --out: beside the stack's state file."""
    return cfg.state_path.parent / "eval" / f"{cfg.prefix}-{run_id}.json"


def write(full: Mapping[str, Any], path: str | Path) -> tuple[Path, Path | None, str]:
    """Write the JSON report and its chart (same name, .png); returns both paths and a note
    saying where they are (or why there is no chart)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    png = chart(full, path.with_suffix(".png"))
    note = f"report: {path}" + (f"\nchart: {png}" if png else
                                "\nchart: skipped (matplotlib is not installed: "
                                "pip install -e '.[notebooks]')")
    return path, png, note


def chart(full: Mapping[str, Any], path: str | Path) -> Path | None:
    """A small PNG: the three rates per profile, and latency p50/p95; None without
    matplotlib. Uses matplotlib's object API (no pyplot), so it never changes a notebook's
    backend."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    done = [r for r in full["profiles"] if "error" not in r]
    fig = Figure(figsize=(12, 3.4), dpi=100, layout="constrained")
    rates, times, money = fig.subplots(1, 3)
    names = [r["profile"] + (" (stand-in)" if r["stand_in"] else "") for r in done]
    width = 0.8 / len(FIELDS)
    for i, what in enumerate(FIELDS):
        rates.bar([j + i * width for j in range(len(done))],
                  [100 * (r["rate"][what] or 0) for r in done], width, label=what)
    rates.set_xticks([j + width for j in range(len(done))], names, rotation=15, ha="right",
                     fontsize=7)
    rates.set_ylim(0, 100)
    rates.set_ylabel("% of photos right")
    rates.set_title("Recognised", fontsize=9)
    rates.legend(fontsize=7)
    for i, q in enumerate(("p50", "p95")):
        times.bar([j + i * 0.4 for j in range(len(done))],
                  [r["latency_seconds"][q] or 0 for r in done], 0.4, label=f"latency {q}")
    times.set_xticks([j + 0.2 for j in range(len(done))],
                     [f"{r['profile']}\n{_usd(r['cost_per_photo_usd_estimate'])}/photo (est.)"
                      for r in done], rotation=15, ha="right", fontsize=7)
    times.set_ylabel("seconds, upload to result")
    times.set_title("Latency", fontsize=9)
    times.legend(fontsize=7)
    step = 0.8 / len(DAILY_VOLUMES)
    for i, n in enumerate(DAILY_VOLUMES):
        money.bar([j + i * step for j in range(len(done))],
                  [(r.get("cost_per_photo_per_day_usd") or {}).get(str(n)) or 0 for r in done],
                  step, label=f"{n:,} photos/day")
    money.set_xticks([j + step for j in range(len(done))], [r["profile"] for r in done],
                     rotation=15, ha="right", fontsize=7)
    money.set_yscale("log")
    money.set_ylabel("USD per photo, idle included")
    money.set_title("Cost per photo (list-price estimate)", fontsize=9)
    money.legend(fontsize=7)
    path = Path(path)
    fig.savefig(path)
    return path
