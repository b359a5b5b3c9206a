"""Dated price tables: the endpoint instance types the hosted profiles use, and the per-token
prices of the managed (Amazon Bedrock) ones.

SageMaker real-time inference, on-demand, Linux, us-east-1, in US dollars per instance-hour.
Prices change and differ by region: check the AWS pricing page or the Pricing Calculator
before you budget. A real-time endpoint is billed per second for as long as it exists, busy
or idle; an asynchronous one for the time it has instances (none while scaled to zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import where

PRICE_DATE = "2026-11"
PRICE_REGION = "us-east-1"
PRICE_SOURCE = "https://aws.amazon.com/sagemaker/pricing/ (real-time inference, on-demand)"

HOURLY_USD: dict[str, float] = {
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 0.94,
    "ml.g4dn.4xlarge": 1.505,
    "ml.g4dn.8xlarge": 2.72,
    "ml.g4dn.12xlarge": 4.89,
    "ml.g4dn.16xlarge": 5.44,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.g5.12xlarge": 7.09,
}


@dataclass(frozen=True)
class TokenPrice:
    """A managed model's on-demand price, US dollars per million tokens in and out."""

    input_per_million: float
    output_per_million: float
    date: str
    region: str
    source: str
    verified: bool  # False: a third-party figure not yet checked on the AWS pricing page

    def basis(self) -> str:
        check = "" if self.verified else "; third-party figure, unverified: check it there"
        return f"{self.region} on-demand list price as of {self.date} ({self.source}{check})"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_million
                + output_tokens * self.output_per_million) / 1_000_000


BEDROCK_PRICE_SOURCE = "https://aws.amazon.com/bedrock/pricing/ (on-demand)"
# Amazon Bedrock, on demand, per 1M tokens (input/output), in the source region; a
# cross-region inference profile is billed at the source region's price. Neither figure could
# be read from AWS's own page here: both are third-party figures, marked unverified.
TOKEN_USD: dict[str, TokenPrice] = {
    "amazon.nova-lite-v1:0": TokenPrice(0.06, 0.24, "2026-12", "us-east-1",
                                        BEDROCK_PRICE_SOURCE, verified=False),
    "meta.llama3-2-11b-instruct-v1:0": TokenPrice(0.16, 0.16, "2026-12", "us-east-1",
                                                  BEDROCK_PRICE_SOURCE, verified=False),
}


def token_cost(model_id: str, input_tokens: int, output_tokens: int) -> float | None:
    """The list price of one Converse call's ``usage``, or None if the model is not listed."""
    price = TOKEN_USD.get(model_id)
    return None if price is None else price.cost(input_tokens, output_tokens)


def hourly_cost(instance_type: str | None, instances: int) -> float | None:
    """Cost per hour of ``instances`` running instances, or None if the type is not listed."""
    price = HOURLY_USD.get(instance_type or "")
    return None if price is None else round(price * instances, 3)


def describe_cost(instance_type: str | None, instances: int, region: str,
                  local: bool = False) -> str:
    """The endpoint's hourly and monthly cost in words; in local mode, that none is billed."""
    cost = hourly_cost(instance_type, instances)
    if cost is None:
        text = f"no price recorded for {instance_type}: see {PRICE_SOURCE}"
    else:
        note = "" if region == PRICE_REGION else f"; {region} differs"
        text = (
            f"${cost:.2f}/hour ({instances} x {instance_type} at "
            f"${HOURLY_USD[instance_type]}/h, {PRICE_REGION} list price as of "
            f"{PRICE_DATE}{note}), about ${cost * HOURS_PER_MONTH:,.0f} a month if left running"
        )
    if local:
        return f"nothing is billed in local mode (on AWS this would be {text})"
    return text


HOURS_PER_MONTH = 730  # AWS's own convention for monthly estimates

# Amazon Location Service, Places API v2 (photo_handler/places.py), US dollars per 1,000
# requests by pricing bucket (the response's PricingBucket says which applied). Third-party
# figures, NOT checked against AWS's price page: unverified list prices, noted on this date.
PLACES_PRICE_DATE = "2026-12"
PLACES_PRICE_SOURCE = "https://aws.amazon.com/location/pricing/"
PLACES_PER_1000_USD = {"Core": 0.50, "Advanced": 1.50, "Stored": 4.00}
# The handler stores what it gets (IntendedUse=Storage): one SearchNearby per located photo,
# and a Geocode first when only the recognised landmark tells where the photo was taken.
PLACES_BUCKET = "Stored"


def places_cost_per_photo(cfg: Any, geocoded: bool = False) -> float:
    """What one photo's nearby places cost (0 with places off)."""
    if getattr(cfg, "places", "off") != "on":
        return 0.0
    return PLACES_PER_1000_USD[PLACES_BUCKET] * (2 if geocoded else 1) / 1000


def describe_places(cfg: Any) -> str:
    """The nearby places' cost per photo in words, for `up`, `status` and the notebooks."""
    if getattr(cfg, "places", "off") != "on":
        return "nearby places off: no Amazon Location Service cost"
    one, two = places_cost_per_photo(cfg), places_cost_per_photo(cfg, geocoded=True)
    return labelled(
        f"nearby places ${one:.3f} per photo with a position (SearchNearby, "
        f"{PLACES_BUCKET} tier at ${PLACES_PER_1000_USD[PLACES_BUCKET]:.2f}/1,000 requests), "
        f"${two:.3f} when the recognised landmark is looked up first (Geocode); about "
        f"${one * 1000:.2f} per 1,000 photos: unverified third-party list prices noted "
        f"{PLACES_PRICE_DATE}, check {PLACES_PRICE_SOURCE}")
LOCAL_NOTE = "AWS list prices for the same stack on AWS; nothing is billed in local mode"


def labelled(text: str) -> str:
    """``text``, marked in local mode as the price of the same stack on AWS."""
    return f"{text} [{LOCAL_NOTE}]" if where.is_local() else text


def describe_plan(cfg: Any) -> str:
    """What the configured endpoint costs, said before `up` and before billable cells."""
    if cfg.profile.managed:
        return labelled(describe_managed(cfg.profile.model_id, cfg.region))
    instance_type = cfg.effective_instance_type
    price = HOURLY_USD.get(instance_type)
    if price is None:
        return labelled(f"no price recorded for {instance_type}: see {PRICE_SOURCE}")
    where = f"{PRICE_REGION} list price as of {PRICE_DATE}" + (
        "" if cfg.region == PRICE_REGION else f"; {cfg.region} differs"
    )
    if cfg.is_async:
        text = (
            f"async: $0/hour while idle (scales to 0 instances); ${price:.2f}/hour for each "
            f"running {instance_type} ({where}), about ${price * HOURS_PER_MONTH:,.0f} a month "
            f"if one ran all month; up to {cfg.max_instances} under load"
        )
    else:
        hourly = price * cfg.min_instances
        text = (
            f"${hourly:.2f}/hour ({cfg.min_instances} x {instance_type}, {where}), about "
            f"${hourly * HOURS_PER_MONTH:,.0f} a month if left running, busy or idle"
        )
    if cfg.stop_after:
        text += f"; stop deadline after {cfg.stop_after}"
    return labelled(text)


def describe_managed(model_id: str, region: str) -> str:
    """A managed model's cost in words: per token, nothing while idle."""
    price = TOKEN_USD.get(model_id)
    if price is None:
        return (f"$0/hour while idle (a managed model); per token: no price recorded for "
                f"{model_id}: see {BEDROCK_PRICE_SOURCE}")
    note = "" if region == price.region else f"; {region} may differ"
    return (f"$0/hour while idle (a managed model: nothing deployed, nothing to stop); "
            f"${price.input_per_million:g} per 1M input and ${price.output_per_million:g} "
            f"per 1M output tokens ({price.basis()}{note}), about "
            f"${price.cost(TYPICAL_INPUT_TOKENS, TYPICAL_OUTPUT_TOKENS):.4f} a photo "
            f"(~{TYPICAL_INPUT_TOKENS:,} tokens in, {TYPICAL_OUTPUT_TOKENS} out)")


# One photo as the default prompt sends it: two ~1 MP images (the example and the photo,
# ~1,300 tokens each by Nova's published figure), ~300 prompt tokens; ~250 tokens answered.
TYPICAL_INPUT_TOKENS = 2_900
TYPICAL_OUTPUT_TOKENS = 250
