"""The web page in local mode, in headless Chromium: what it weighs, how long a photo takes
from being chosen to its answer on the page, and how many API requests it makes meanwhile.

The model is the local stand-in (answers in about a second), so upload-to-answer measures the
path around the model: page, API function, S3 POST, trigger, handler, polling.
"""

from __future__ import annotations

import gzip
import time
from typing import Any

import requests

from .common import IMAGES, REGION, Row, percentile

TARGET_P95_S = 10.0  # a student waits no longer than this for the page, beyond the model
TARGET_WEIGHT = 50_000  # bytes of the page: one request on a classroom's shared Wi-Fi


def _skip(reason: str) -> tuple[list[Row], dict[str, Any]]:
    return [Row("web page", "skipped", "", reason, None)], {"skipped": reason}


def run(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    from browser import chromium_paths, start_chromium, stop_chromium
    from photos import twelve_megapixel_jpeg

    if chromium_paths() is None:
        return _skip("no chromium/chromedriver (apt-get install -y chromium chromium-driver)")
    from visual_tourism import stack
    from visual_tourism.config import load_config
    from visual_tourism.local.stack import LocalStack, environment
    from visual_tourism.local.web_front import serve_local

    rounds = 3 if quick else 10
    rows: list[Row] = []
    with LocalStack(model="stand-in") as local, environment(local.env):
        cfg = load_config(region=REGION, state_dir=str(local.work_dir / "state"),
                          prefix="vt-bench-web", web_rate_limit=1000, web_burst_limit=1000,
                          web_upload_rate_limit=1000, web_upload_burst_limit=1000)
        stack.up(cfg, endpoint_poll=0.2)
        front, link = serve_local(cfg, local)
        driver = start_chromium()
        try:
            html = requests.get(front.url, timeout=10).content
            before = sum(front.requests.values())  # the page fetched just above
            driver.get(link)
            time.sleep(1.0)  # the page's first API calls (presets, gallery)
            resources = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)")
            api_at_load = sum(front.requests.values()) - before - 1  # less the page itself
            static = 1 + sum(1 for r in resources if "/presets" not in r and "/results" not in r)
            rows += [
                Row("web page", "page weight (one file, no CDN)", f"<= {TARGET_WEIGHT:,} B",
                    f"{len(html):,} B ({len(gzip.compress(html)):,} B gzipped)",
                    len(html) <= TARGET_WEIGHT, len(html), "bytes"),
                Row("web page", "requests to show the page", "", f"{static} for the page, "
                    f"{api_at_load} API (presets, gallery)", None, static, "requests"),
            ]
            photos = [IMAGES / p for p in ("tour_eiffel.jpeg", "trevi.jpeg",
                                           "neuschwanstein.jpeg", "santiago_cathedral.jpeg")]
            big = local.work_dir / "twelve-mp.jpg"
            big.write_bytes(twelve_megapixel_jpeg())
            seconds, polls, calls = [], [], []
            for i in range(rounds):
                before = dict(front.requests)
                path = photos[i % len(photos)] if i % 4 != 3 else big
                started = time.monotonic()
                _choose(driver, path)
                _wait_answer(driver)
                seconds.append(time.monotonic() - started)
                polls.append(front.requests["GET /results/{id}"]
                             - before.get("GET /results/{id}", 0))
                calls.append(sum(front.requests.values()) - sum(before.values()))
            p50, p95 = percentile(seconds, 50), percentile(seconds, 95)
            rows += [
                Row("web page", f"upload-to-answer on the page, p50 ({rounds} photos, every "
                    "4th 12 MP)", "", f"{p50:.2f} s", None, p50, "s"),
                Row("web page", "upload-to-answer on the page, p95", f"<= {TARGET_P95_S:g} s",
                    f"{p95:.2f} s", p95 <= TARGET_P95_S, p95, "s"),
                Row("web page", "result polls per photo while waiting (backoff 1 s x1.5)", "",
                    f"{sum(polls) / rounds:.1f} (max {max(polls)})", None,
                    sum(polls) / rounds, "requests"),
                Row("web page", "API requests per photo, all (form, polls, gallery)", "",
                    f"{sum(calls) / rounds:.1f}", None, sum(calls) / rounds, "requests"),
            ]
        finally:
            stop_chromium(driver)
            front.stop()
    return rows, {"seconds": seconds, "polls": polls}


def _choose(driver: Any, path: Any) -> None:
    driver.execute_script("delete document.body.dataset.lastResult")
    field = driver.find_element("id", "photo")
    driver.execute_script("arguments[0].className = ''", field)
    field.send_keys(str(path))
    driver.execute_script("arguments[0].className = 'visually-hidden'", field)


def _wait_answer(driver: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script("return document.body.dataset.lastResult && "
                                 "!document.getElementById('pick').disabled"):
            return
        time.sleep(0.05)
    raise TimeoutError("no answer on the page")

