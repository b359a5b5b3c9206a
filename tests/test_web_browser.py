"""The web page end to end in a real browser (headless Chromium), in local mode: the printed
link opens the page, a photo goes from the page straight to S3 (policy checked), the trigger
answers it, and the page shows the answer; a wrong code, a text file named .jpg and a 12 MP
photo taken sideways are each handled as a student would expect.

Set WEB_SCREENSHOTS=<dir> to keep phone and desktop screenshots (docs/web-page.md's come from here).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from browser import DESKTOP, PHONE, full_page_screenshot, resize_viewport
from photos import twelve_megapixel_jpeg
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Any]]:
    """A local stack after `up`, with the web front serving on loopback."""
    from visual_tourism import stack
    from visual_tourism.config import load_config
    from visual_tourism.local.stack import LocalStack, environment
    from visual_tourism.local.web_front import serve_local

    with LocalStack(model="stand-in") as local, environment(local.env):
        cfg = load_config(region="us-east-1", state_dir=str(local.work_dir / "state"),
                          prefix="vt-browser")
        stack.up(cfg, endpoint_poll=0.5)
        front, link = serve_local(cfg, local)
        try:
            yield {"link": link, "url": front.url, "code": link.split("#code=")[1],
                   "front": front, "cfg": cfg, "env": local.env, "local": local}
        finally:
            front.stop()
            local.runtime.wait_idle(30)
            # moto keeps its accounts for the whole process: leave nothing for other tests.
            stack.down(cfg, delete_bucket=True)


def _wait(driver: Any, condition: Any, timeout: float = 60.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def _open(driver: Any, link: str) -> None:
    driver.get("about:blank")
    driver.execute_script("sessionStorage.clear()") if driver.current_url.startswith(
        "http") else None
    driver.get(link)
    _wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")


def _choose(driver: Any, path: Path) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "photo")
    # The real field is visually hidden behind the big button; Selenium types into it.
    driver.execute_script("arguments[0].className = ''; arguments[0].removeAttribute("
                          "'aria-hidden')", field)
    field.send_keys(str(path))
    driver.execute_script("arguments[0].className = 'visually-hidden'", field)


def _answer(driver: Any) -> tuple[str, str]:
    _wait(driver, lambda d: d.execute_script(
        "return document.body.dataset.lastResult && !document.getElementById('pick').disabled"
    ), timeout=120)
    return (driver.execute_script("return document.body.dataset.lastResult"),
            driver.find_element("id", "result-text").text)


def _result(site: dict[str, Any], driver: Any) -> dict[str, Any]:
    listing = requests.get(site["url"] + "results", headers={"x-access-code": site["code"]},
                           timeout=10).json()["results"]
    return listing[0]


def test_the_printed_link_opens_the_page_and_a_photo_gets_its_answer(site, chromium):
    resize_viewport(chromium, *PHONE)
    _open(chromium, site["link"])
    assert "#code" not in chromium.current_url  # the code leaves the address bar
    assert chromium.find_element("id", "code-form").is_displayed() is False
    _choose(chromium, IMAGES / "tour_eiffel.jpeg")
    status, text = _answer(chromium)
    assert status == "ok", text
    assert "stand-in" in text  # the local model server's labelled answer
    _wait(chromium, lambda d: len(d.find_elements("css selector", "#gallery li")) >= 1)
    # The gallery shows the handler's small copy (read with the web role's rights, which no
    # longer reach the originals), loaded from the bucket as an inline JPEG.
    image = chromium.find_element("css selector", "#gallery li img")
    assert "/thumbnails/web/" in image.get_attribute("src")
    _wait(chromium, lambda d: d.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", image), timeout=20)
    width, height = chromium.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
    assert max(width, height) == 480
    shots = os.environ.get("WEB_SCREENSHOTS")
    if shots:
        full_page_screenshot(chromium, Path(shots) / "web-phone.png", PHONE[0])
        resize_viewport(chromium, *DESKTOP)
        chromium.save_screenshot(str(Path(shots) / "web-desktop.png"))
        resize_viewport(chromium, *PHONE)


def test_a_wrong_code_is_refused_and_the_page_asks_for_the_code(site, chromium):
    _open(chromium, site["url"] + "#code=not-the-code")
    form = chromium.find_element("id", "code-form")
    _wait(chromium, lambda d: form.is_displayed(), timeout=20)
    _wait(chromium, lambda d: d.find_element("id", "error").is_displayed(), timeout=20)
    assert "Wrong access code" in chromium.find_element("id", "error").text
    # The right code typed into the form works.
    chromium.find_element("id", "code-input").send_keys(site["code"] + "\n")
    _wait(chromium, lambda d: not form.is_displayed(), timeout=20)


def test_a_text_file_named_jpg_gets_the_error_explained(site, chromium, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("Dear diary, today we saw the Eiffel Tower.\n" * 20)
    _open(chromium, site["link"])
    _choose(chromium, fake)
    status, text = _answer(chromium)
    assert status == "error"
    assert "This file is not a photo." in text
    assert _result(site, chromium)["record"]["error"]["code"] == "not_an_image"


def test_a_12_megapixel_photo_taken_sideways_is_downscaled_upright_and_answered(
        site, chromium, tmp_path):
    image = Image.open(io.BytesIO(twelve_megapixel_jpeg()))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; show rotated 90 degrees clockwise
    big = tmp_path / "sideways.jpg"
    image.save(big, "JPEG", quality=92, exif=exif.tobytes())
    assert big.stat().st_size > 5_000_000
    _open(chromium, site["link"])
    _choose(chromium, big)
    status, text = _answer(chromium)
    assert status == "ok", text
    record = _result(site, chromium)["record"]
    # 4000x3000 stored sideways -> upright 3000x4000 -> long side 2048.
    assert (record["image"]["width"], record["image"]["height"]) == (1536, 2048)
    sent = json.dumps(record)
    assert "input" not in record and "vt-browser-" not in sent


def test_my_location_is_off_until_ticked_then_brings_the_real_places_nearby(site, chromium):
    """The browser grants a (fake) position through the DevTools protocol, as a phone's user
    would by allowing the page's request; the page sends it rounded, signed with the form."""
    from visual_tourism import stack
    from visual_tourism.aws import Aws
    from visual_tourism.local.stack import environment

    origin = site["url"].rstrip("/")
    chromium.execute_cdp_cmd("Browser.grantPermissions",
                             {"origin": origin, "permissions": ["geolocation"]})
    chromium.execute_cdp_cmd("Emulation.setGeolocationOverride",
                             {"latitude": 41.900934, "longitude": 12.483313, "accuracy": 20})
    try:
        resize_viewport(chromium, *PHONE)
        _open(chromium, site["link"])
        box = chromium.find_element("id", "use-location")
        assert box.is_displayed() and not box.is_selected()  # off by default
        box.click()
        _choose(chromium, IMAGES / "neuschwanstein.jpeg")
        status, text = _answer(chromium)
        assert status == "ok", text
        nearby = chromium.find_element("id", "nearby").text
        assert "Places to eat within 800 m" in nearby
        assert "Stand-in restaurant 1 (not a real place)" in nearby
        assert "Amazon Location Service" in nearby  # the attribution, under the list
        # What reached S3: the position rounded to about 100 m, as the photo's metadata.
        with environment(site["env"]):
            aws = Aws("us-east-1")
            bucket = stack.bucket_name(site["cfg"], aws)
            photo_id = _result(site, chromium)["id"]
            head = aws.s3.head_object(Bucket=bucket, Key=f"input/web/{photo_id}")
            assert head["Metadata"]["near"] == "41.901,12.483"
        # The class gallery shows the answer, never the places or the position.
        gallery = chromium.find_element("id", "gallery").text
        assert "not a real place" not in gallery and "41.90" not in gallery
        assert "places" not in _result(site, chromium)["record"]
    finally:
        chromium.execute_cdp_cmd("Emulation.clearGeolocationOverride", {})
        chromium.execute_cdp_cmd("Browser.resetPermissions", {})


# -- what the page says when the upload is refused: a second front with other limits ----------
@contextmanager
def _front(site: dict[str, Any], *, settings: dict[str, str] | None = None,
           route_limits: dict[str, tuple[float, int]] | None = None,
           handler: Callable[[dict[str, Any], dict[str, str]], Any] | None = None
           ) -> Iterator[str]:
    """Another front on the same stack (the deployed function's environment with
    ``settings`` changed); the bucket's CORS rule also admits its origin meanwhile.
    Yields the page's link."""
    from visual_tourism import stack, web
    from visual_tourism.aws import Aws
    from visual_tourism.local.stack import environment
    from visual_tourism.local.web_front import WebFront, as_its_role, function_env
    from web_function import app

    with environment(site["env"]):  # each test's fixtures unset the stack's variables
        aws = Aws("us-east-1")
        env = function_env(site["cfg"], aws, site["env"], **(settings or {}))
        bucket = stack.bucket_name(site["cfg"], aws)
        rules = aws.s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
        # As Lambda runs it: with the web role's credentials.
        invoke = as_its_role(site["cfg"], aws, env, site["local"].credentials.for_function,
                             handler or app.handle)
    with environment(site["env"]), WebFront(invoke, app.ROUTES,
                  route_limits=route_limits) as front:
        # One rule naming both origins: moto's preflight refuses if any rule does not match.
        both = web.cors_rule(web.origin_of(site["url"]))
        both["AllowedOrigins"].append(web.origin_of(front.url))
        aws.s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [both]})
        try:
            yield front.link(site["code"])
        finally:
            aws.s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})


def _refusal(driver: Any, link: str, photo: Path) -> str:
    """Send ``photo`` from the page at ``link``; the words of the error the page shows."""
    _open(driver, link)
    _choose(driver, photo)
    error = driver.find_element("id", "error")
    _wait(driver, lambda d: error.is_displayed() and d.find_element("id", "pick").is_enabled(),
          timeout=60)
    return error.text


def test_a_photo_over_the_forms_size_limit_is_refused_by_s3_and_the_page_says_why(
        site, chromium):
    """The form's content-length-range is what S3 enforces, whatever the page believed (for
    example a page opened before the teacher lowered the limit)."""
    photo = IMAGES / "tour_eiffel.jpeg"
    limit = photo.stat().st_size // 2

    def handler(event: dict[str, Any], env: dict[str, str]) -> Any:
        from web_function import app

        if event["routeKey"] != "POST /uploads":
            return app.handle(event, env)  # the page still says 20 MB
        body = json.loads(event["body"])
        event = {**event, "body": json.dumps({**body, "size": 1})}  # asks for a form anyway
        return app.handle(event, {**env, "MAX_PHOTO_BYTES": str(limit)})

    with _front(site, handler=handler) as link:
        text = _refusal(chromium, link, photo)
    assert "The photo is larger than the upload limit" in text, text
    assert f"the limit is {float(f'{limit / 1e6:.2g}'):g} MB" in text, text
    assert "lower resolution" in text


def test_an_expired_upload_form_is_explained(site, chromium):
    with _front(site, settings={"UPLOAD_EXPIRES_SECONDS": "-60"}) as link:
        text = _refusal(chromium, link, IMAGES / "trevi.jpeg")
    assert "The upload form expired" in text and "Pick the photo again" in text, text


def test_too_many_requests_from_the_front_are_explained(site, chromium):
    """API Gateway's own 429 (the upload route's throttle spent): the page explains it."""
    with _front(site, route_limits={"POST /uploads": (0.001, 0)}) as link:
        text = _refusal(chromium, link, IMAGES / "trevi.jpeg")
    assert "Too many requests right now" in text and "Wait a few seconds" in text, text
