"""A dated price table for the endpoint instance types the profiles use.

SageMaker real-time inference, on-demand, Linux, us-east-1, in US dollars per instance-hour.
Prices change and differ by region: check the AWS pricing page or the Pricing Calculator
before you budget. The endpoint is billed per second for as long as it exists, busy or idle.
"""

from __future__ import annotations

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
            f"{PRICE_DATE}{note}), about ${cost * 24 * 30:,.0f} a month if left running"
        )
    if local:
        return f"nothing is billed in local mode (on AWS this would be {text})"
    return text
