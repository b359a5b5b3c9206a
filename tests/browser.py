"""Headless Chromium for the browser tests, driven by Selenium (shared: tests/test_web_*.py and
any later JupyterLab test use ``chromium`` from here).

Debian's ``chromium`` and ``chromium-driver`` packages are used as installed; nothing downloads
a browser at test time (Selenium Manager is never asked: both paths are given). `make test`
installs the packages when it runs as root; elsewhere these tests skip, saying how to enable
them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PHONE = (390, 844)  # CSS pixels of a common phone
DESKTOP = (1280, 900)
HOW_TO_ENABLE = ("browser tests need Debian's Chromium and its driver: run "
                 "'sudo apt-get install -y chromium chromium-driver' (make test does this "
                 "when it runs as root)")


def chromium_paths() -> tuple[str, str] | None:
    browser = os.environ.get("VT_CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")
    driver = os.environ.get("VT_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        return None
    return browser, driver


def start_chromium(size: tuple[int, int] = PHONE) -> Any:
    paths = chromium_paths()
    if paths is None:
        pytest.skip(HOW_TO_ENABLE)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[dev]'")
    # Chromium's profile and its temporary files in a folder of ours, removed by stop_chromium.
    scratch = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    options.add_argument(f"--user-data-dir={scratch}/profile")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--no-first-run", "--disable-extensions",
                f"--window-size={size[0]},{size[1]}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(paths[1], env={**os.environ, "TMPDIR": scratch})
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except Exception:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    driver.vt_scratch = scratch
    driver.set_page_load_timeout(30)
    return driver


def stop_chromium(driver: Any) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "vt_scratch", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the session (a phone-sized window; resize as needed)."""
    driver = start_chromium()
    yield driver
    stop_chromium(driver)


def resize_viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport (not the window) width x height CSS pixels."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(width + (width - inner[0]), height + (height - inner[1]))


def full_page_screenshot(driver: Any, path: Path, width: int) -> None:
    """The whole page at ``width``, as a phone would scroll through it."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    resize_viewport(driver, width, max(height, 600))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
