"""What the notebooks show about inference modes, cost and the stop deadline.

Thin helpers over prices, costs, async_inference and schedule, shared by the model notebook
(choose real-time or asynchronous inference, see what each costs) and the clean-up notebook
(the deadline, and the cost so far).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

from .. import async_inference, costs, endpoint, prices, schedule, stack, where
from ..aws import Aws
from ..config import INFERENCE_MODES, Config
from ..errors import ConfigError
from .display import say
from .settings import save_settings, settings_path


def mode_tradeoff(cfg: Config) -> str:
    """Real-time or async: what each costs idle and busy, and how long the first photo waits."""
    price = prices.HOURLY_USD.get(cfg.effective_instance_type)
    hourly = f"${price:.2f}/hour" if price is not None else "see the AWS price list"
    lines = [
        f"Instance: {cfg.effective_instance_type} at {hourly} "
        f"({prices.PRICE_REGION} list price, {prices.PRICE_DATE}).",
        "",
        f"realtime (default): at least {cfg.min_instances} instance(s) run from `up` to `down`: "
        "answers in seconds, and the bill runs while nobody uploads "
        + (f"(${price * cfg.min_instances * 24:,.0f} a day idle)." if price else "."),
        "async: photos queue in S3; the endpoint scales to 0 instances when idle and costs "
        f"nothing then. The first photo after idle waits about {async_inference.WAKE_MINUTES} "
        "minutes while a GPU instance starts and loads the model; 'wake' before a class "
        "avoids that wait.",
    ]
    if where.is_local():
        lines.append(f"[{prices.LOCAL_NOTE}]")
    return "\n".join(lines)


def use_inference_mode(
    mode: str, env: Mapping[str, str] | None = None, **more: Any
) -> Config:
    """Save ``inference_mode`` (and any other settings given) with the settings of 01_setup,
    so the later notebooks build the function, its triggers and the scaling for that mode."""
    if mode not in INFERENCE_MODES:
        raise ConfigError(f"inference_mode {mode!r}: use one of {INFERENCE_MODES}")
    env = os.environ if env is None else env
    path = settings_path(env)
    saved = tomllib.loads(path.read_text()) if path.is_file() else {}
    return save_settings({**saved, "inference_mode": mode, **more}, env)


def cost_before(cfg: Config) -> str:
    """Said before a cell that starts billing."""
    return "Cost: " + prices.describe_plan(cfg) + "\nCost: " + prices.describe_places(cfg)


def show_cost_so_far(cfg: Config, aws: Aws) -> dict[str, Any]:
    ep = endpoint.describe(aws, cfg)
    info = costs.cost_so_far(aws, cfg, ep)
    least = "" if info.get("complete", True) else "at least "
    say(f"cost so far: {least}${info['so_far_usd']} (next hour ${info['next_hour_usd']}): "
         f"{info['note']}")
    return info


def show_deadline(cfg: Config, aws: Aws) -> dict[str, Any] | None:
    """When the stop deadline fires and what it does (or that there is none)."""
    found = schedule.describe(aws, cfg)
    if found is None:
        say("No stop deadline: the endpoint runs until this notebook removes it. Set one "
             "with `visual-tourism up --stop-after 3h` (or stop_after in the settings).")
    else:
        say(f"Stop deadline: at {found['fires_at']} (in {found['in_minutes']} min) a schedule "
             f"will {found['action']}. Clean-up removes the schedule with everything else.")
    return found


def arm_deadline(cfg: Config, aws: Aws) -> dict[str, Any] | None:
    """With ``stop_after`` set: the one-time schedule that stops the endpoint (as `up` does)."""
    if cfg.profile.managed:
        say(f"No stop deadline: {cfg.profile.name} is a managed model, with nothing to stop "
            "and nothing billed while idle.")
        stack.arm_deadline(cfg, aws, progress=say)  # removes one an earlier run armed
        return None
    if not cfg.stop_after:
        say("No stop deadline (stop_after is empty): the endpoint runs until 07_cleanup. To "
             "have it stopped even if nobody runs clean-up, set stop_after (e.g. \"3h\") in "
             "01_setup's settings and run this cell again.")
        return None
    stack.arm_deadline(cfg, aws, progress=say)
    return schedule.describe(aws, cfg)
