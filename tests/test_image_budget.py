"""The image budget: every request the handler builds fits its profile's container.

For every profile of visual_tourism/profiles.py, both image transports, every photo in images/
and a 12-megapixel photo, the handler runs as deployed (its environment from
lambda_fn.function_environment) against moto's S3 and the local model server, which keeps the
request bodies. Each body is then checked by the container's own accounting, independently of
the handler's code: the images as sent (data: URIs decoded, URLs fetched) counted with the
profile's formula (serving_limits.image_tokens), the text bounded from above, and
max_new_tokens, against MAX_INPUT_TOKENS / MAX_TOTAL_TOKENS and the payload limit.
"""

from __future__ import annotations

import base64
import io
import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_handler
from photos import twelve_megapixel_jpeg
from PIL import Image
from test_handler import ENDPOINT, IMAGES, RecordingServer, event_for, result, run

from photo_handler import budget as handler_budget
from photo_handler import resize, serving_limits
from photo_handler.serving_limits import ContainerLimits
from visual_tourism import lambda_fn, packaging
from visual_tourism.config import Config
from visual_tourism.profiles import PROFILES, ModelProfile

# Profiles served from a container on an endpoint (the managed ones, Amazon Bedrock's, are
# sized to Bedrock's image limits: tests/test_bedrock.py).
HOSTED = sorted(name for name, profile in PROFILES.items() if not profile.managed)

# test_handler's fixtures: the bucket on moto's S3 and the endpoint's image fetches.
s3, bucket, fetched = test_handler.s3, test_handler.bucket, test_handler.fetched
PHOTOS = sorted(p for p in IMAGES.glob("*.jpeg") if p.name != "trevi.jpeg")
TRANSPORTS = ("url", "data-uri")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, fetched: list[str],
           moto_server: str) -> Iterator[RecordingServer]:
    """The local endpoint, taking bodies up to the largest payload limit of any profile (the
    checks below hold each request to its own profile's limit)."""
    largest = max(p.limits.payload_limit_bytes for p in PROFILES.values())
    with RecordingServer(endpoint_exists=lambda name: name == ENDPOINT,
                         fetch_origins=[moto_server], payload_limit=largest) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", running.url)
        yield running


@pytest.fixture(scope="module")
def big_photo() -> bytes:
    return twelve_megapixel_jpeg()


@pytest.fixture(autouse=True)
def fresh_example_cache() -> None:
    handler_budget._examples.clear()  # each test's bucket holds its own example


def deploy_env(monkeypatch: pytest.MonkeyPatch, bucket: str, profile: ModelProfile,
               transport: str, **changes: Any) -> Config:
    """The function's environment for this profile, as `up` sets it."""
    cfg = Config(model_profile=profile.name, image_transport=transport, **changes)
    for name, value in lambda_fn.function_environment(cfg, bucket).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONTAINER_LIMITS", profile.limits.to_env())  # a profile made here
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)  # the local model server's
    monkeypatch.setenv("PRESETS_TABLE", "")  # no presets table here: the built-in prompt
    return cfg


# -- the container's accounting, from the request body alone ---------------------------------


def image_size(url: str) -> tuple[int, int]:
    """The size of an image as the container gets it: a data: URI decoded, a URL fetched."""
    if url.startswith("data:"):
        data = base64.b64decode(url.split(",", 1)[1])
    else:
        with urllib.request.urlopen(url, timeout=10) as response:
            data = response.read()
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def parse(body: dict[str, Any]) -> tuple[list[str], int, list[str], int]:
    """(texts, chat messages, image URLs, max_new_tokens) of a request body."""
    if "inputs" in body:  # TGI: every ![](url) is one image
        urls = re.findall(r"!\[\]\(([^)\s]+)\)", body["inputs"])
        text = re.sub(r"!\[\]\([^)\s]+\)", "![]()", body["inputs"])
        return [text], 0, urls, body["parameters"]["max_new_tokens"]
    texts, urls = [], []
    for message in body["messages"]:
        content = message["content"]
        for part in [content] if isinstance(content, str) else content:
            if isinstance(part, str):
                texts.append(part)
            elif part["type"] == "text":
                texts.append(part["text"])
            else:
                urls.append(part["image_url"]["url"])
    return texts, len(body["messages"]), urls, body["max_tokens"]


def accounting(limits: ContainerLimits, body: dict[str, Any]) -> tuple[serving_limits.Budget,
                                                                      list[tuple[int, int]]]:
    texts, messages, urls, max_new = parse(body)
    sizes = [image_size(url) for url in urls]
    return serving_limits.request_budget(limits, texts, sizes, max_new, messages), sizes


def check_fits(limits: ContainerLimits, body: dict[str, Any], raw_size: int) -> list[int]:
    """Assert the request fits ``limits``; return each image's tokens."""
    budget, sizes = accounting(limits, body)
    assert budget.fits, budget.explain()
    assert raw_size <= limits.payload_limit_bytes
    assert len(sizes) == 2 <= limits.max_images
    return list(budget.image_tokens)


# -- every profile, every photo, both transports ---------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", HOSTED)
def test_every_request_fits_its_profile_by_the_containers_accounting(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    big_photo: bytes, name: str, transport: str,
) -> None:
    profile = PROFILES[name]
    limits = profile.limits
    deploy_env(monkeypatch, bucket, profile, transport)
    keys = []
    for path in PHOTOS:
        keys.append(f"input/{path.name}")
        s3.put_object(Bucket=bucket, Key=keys[-1], Body=path.read_bytes())
    keys.append("input/12-megapixels.jpg")
    s3.put_object(Bucket=bucket, Key=keys[-1], Body=big_photo)

    summary = run(event_for(bucket, s3, *keys))

    assert [r["status"] for r in summary["records"]] == ["ok"] * len(keys), summary
    assert len(server.requests) == len(keys)
    for key, body, raw_size, line in zip(keys, server.requests, server.request_sizes,
                                         summary["records"], strict=True):
        example_tokens, photo_tokens = check_fits(limits, body, raw_size)
        record = result(s3, bucket, "output/" + key.removeprefix("input/") + ".json")
        stored = (record["image"]["width"], record["image"]["height"])
        sent = image_size(parse(body)[2][1])
        assert example_tokens <= limits.example_image_tokens
        if "sent" in record["image"]:  # resized
            assert (record["image"]["sent"]["width"], record["image"]["sent"]["height"]) == sent
            assert line["images_resized"] >= 1
            budget = accounting(limits, body)[0]
            room = min(budget.max_input_tokens - budget.text_tokens,
                       budget.max_total_tokens - budget.max_new_tokens - budget.text_tokens)
            allowance = room - example_tokens
            if serving_limits.image_tokens(*stored, limits.image_formula) <= allowance:
                # Resized for bytes only (data-uri): the payload rule, at most 2048 pixels.
                assert transport == "data-uri" and max(sent) <= resize.SHRINK_MAX_SIDE
            else:  # as large as the token budget allows, unless the payload made it smaller
                by_bytes = raw_size > limits.payload_limit_bytes // 2
                assert by_bytes or photo_tokens >= 0.97 * allowance, (key, sent)
        else:
            assert sorted(sent) == sorted(stored)  # the photo as uploaded
        if transport == "url" and sent == stored:  # the original, fetched by the endpoint
            assert parse(body)[2][1].startswith("http")
        if limits.image_formula == "idefics" and transport == "url":  # nothing to resize
            assert line["images_resized"] == 0


def test_the_12_megapixel_photo_is_resized_for_the_qwen_router(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    big_photo: bytes, fetched: list[str],
) -> None:
    profile = PROFILES["qwen2.5-vl-7b-instruct"]
    assert serving_limits.image_tokens(4000, 3000, profile.limits.image_formula) > 60_000
    deploy_env(monkeypatch, bucket, profile, "url")
    s3.put_object(Bucket=bucket, Key="input/big.jpg", Body=big_photo)

    run(event_for(bucket, s3, "input/big.jpg"))

    record = result(s3, bucket, "output/big.jpg.json")
    assert record["status"] == "ok", record
    width, height = record["image"]["sent"]["width"], record["image"]["sent"]["height"]
    assert width / height == pytest.approx(4 / 3, rel=0.01)
    assert f"{width}x{height} pixels" in record["answer"]  # what the model saw
    # Both images went inline: the example (3,985 tokens at its stored size) is over its
    # 2,048-token share too.
    assert all(url.startswith("data:image/jpeg;base64,") for url in fetched)


# -- a wrong formula or limit fails ----------------------------------------------------------


def captured_request(s3: Any, bucket: str, server: RecordingServer,
                     monkeypatch: pytest.MonkeyPatch, profile: ModelProfile,
                     photo: bytes) -> tuple[dict[str, Any], int]:
    deploy_env(monkeypatch, bucket, profile, "url")
    s3.put_object(Bucket=bucket, Key="input/photo.jpg", Body=photo)
    run(event_for(bucket, s3, "input/photo.jpg"))
    assert result(s3, bucket, "output/photo.jpg.json")["status"] == "ok"
    return server.requests[-1], server.request_sizes[-1]


def test_a_profile_with_the_wrong_formula_sends_requests_its_container_refuses(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    big_photo: bytes,
) -> None:
    qwen = PROFILES["qwen2.5-vl-7b-instruct"]
    # Qwen on TGI 3.3.6 declared with Idefics' formula (1 token per image): nothing resized.
    wrong = ModelProfile(**{**qwen.__dict__, "limits": ContainerLimits(
        **{**qwen.limits.__dict__, "image_formula": "idefics", "example_image_tokens": 1,
           "min_image_tokens": 1})})
    body, size = captured_request(s3, bucket, server, monkeypatch, wrong, big_photo)
    check_fits(wrong.limits, body, size)  # fits what the profile claims...
    budget, _ = accounting(qwen.limits, body)  # ...not what TGI 3.3.6's router counts
    assert not budget.fits and budget.input_tokens > 60_000, budget.explain()


def test_a_profile_with_a_wrong_limit_sends_requests_its_container_refuses(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    big_photo: bytes,
) -> None:
    vllm = PROFILES["qwen2.5-vl-7b-instruct-vllm"]
    # max_model_len declared 4x what the container was started with.
    wrong = ModelProfile(**{**vllm.__dict__, "limits": ContainerLimits(
        **{**vllm.limits.__dict__, "max_input_tokens": 32767, "max_total_tokens": 32768})})
    body, size = captured_request(s3, bucket, server, monkeypatch, wrong, big_photo)
    check_fits(wrong.limits, body, size)
    assert not accounting(vllm.limits, body)[0].fits


def test_the_accounting_tells_the_formulas_apart() -> None:
    # The check above is only as good as the counting: the same body, four answers.
    counts = {f: serving_limits.image_tokens(1200, 651, f) for f in serving_limits.FORMULAS}
    assert counts["idefics"] == 1 and counts["qwen2-vl-router"] == 3985
    assert len(set(counts.values())) == len(serving_limits.FORMULAS)


# -- what the handler cannot fix -------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTED)
def test_a_prompt_too_long_for_the_container_is_an_error_without_a_model_call(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    profile = PROFILES[name]
    deploy_env(monkeypatch, bucket, profile, "url")
    monkeypatch.setenv("INSTRUCTION", "Describe the photo. " * 500)  # ~10,000 tokens
    s3.put_object(Bucket=bucket, Key="input/photo.jpg", Body=PHOTOS[0].read_bytes())

    run(event_for(bucket, s3, "input/photo.jpg"))

    record = result(s3, bucket, "output/photo.jpg.json")
    assert record["error"]["code"] == "configuration_error"
    message = record["error"]["message"]
    assert f"MAX_INPUT_TOKENS {profile.limits.max_input_tokens}" in message
    assert f"MAX_TOTAL_TOKENS {profile.limits.max_total_tokens}" in message
    assert "INSTRUCTION" in message and "model was not called" in message
    assert server.calls == []


def test_without_pillow_a_photo_that_needs_resizing_is_a_configuration_error(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    big_photo: bytes,
) -> None:
    deploy_env(monkeypatch, bucket, PROFILES["qwen2.5-vl-7b-instruct"], "url")
    monkeypatch.setitem(sys.modules, "PIL", None)  # a zip built without Pillow
    s3.put_object(Bucket=bucket, Key="input/big.jpg", Body=big_photo)

    run(event_for(bucket, s3, "input/big.jpg"))

    record = result(s3, bucket, "output/big.jpg.json")
    assert record["error"]["code"] == "configuration_error"
    assert "Pillow" in record["error"]["message"]
    assert server.calls == []


def test_idefics_needs_no_pillow_and_no_extra_s3_call(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    big_photo: bytes,
) -> None:
    deploy_env(monkeypatch, bucket, PROFILES["idefics-9b-instruct"], "url")
    # As without Pillow in the zip (the model server, in this process, needs the real one).
    monkeypatch.setattr(resize, "_pillow", lambda: pytest.fail("Pillow was needed"))
    s3.put_object(Bucket=bucket, Key="input/big.jpg", Body=big_photo)

    run(event_for(bucket, s3, "input/big.jpg"))

    assert result(s3, bucket, "output/big.jpg.json")["status"] == "ok"
    assert handler_budget._examples == {}  # the example went by URL, never read


# -- the sized example is kept by a warm container ---------------------------------------------


def test_the_sized_example_is_made_once_per_example_etag(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    deploy_env(monkeypatch, bucket, PROFILES["qwen2.5-vl-7b-instruct"], "url")
    resized: list[tuple[int, int] | None] = []
    real = resize._resized

    def spy(data: bytes, *args: Any, **kwargs: Any) -> Any:
        out = real(data, *args, **kwargs)
        resized.append(out[1])
        return out

    monkeypatch.setattr(resize, "_resized", spy)
    small = PHOTOS[-1].read_bytes()  # fits its allowance: sent by URL
    for name in ("a.jpg", "b.jpg"):
        s3.put_object(Bucket=bucket, Key=f"input/{name}", Body=small)
        run(event_for(bucket, s3, f"input/{name}"))
    assert len(resized) == 1  # the example, once
    first = server.requests[0]["messages"][0]["content"][1]["image_url"]["url"]
    assert server.requests[1]["messages"][0]["content"][1]["image_url"]["url"] == first

    # A new example photo (new ETag) is sized again.
    with Image.open(IMAGES / "trevi.jpeg") as image:
        out = io.BytesIO()
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out, "JPEG")
    s3.put_object(Bucket=bucket, Key="example/trevi.jpeg", Body=out.getvalue())
    s3.put_object(Bucket=bucket, Key="input/c.jpg", Body=small)
    run(event_for(bucket, s3, "input/c.jpg"))
    assert len(resized) == 2
    assert server.requests[2]["messages"][0]["content"][1]["image_url"]["url"] != first


# -- the function's package ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_pillow_is_vendored_whenever_the_handler_may_resize(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    vendored: list[str] = []
    monkeypatch.setattr(packaging, "vendor_pillow",
                        lambda cfg, cache=None: vendored.append(cfg.model_profile) or tmp_path)
    formula = PROFILES[name].limits.image_formula
    for transport, mode in (("url", "realtime"), ("data-uri", "realtime"), ("url", "async")):
        cfg = Config(model_profile=name, image_transport=transport, inference_mode=mode,
                     web_api="off", places="off")
        needs = formula != "idefics" or cfg.effective_image_transport == "data-uri"
        assert cfg.needs_pillow is needs
        assert (packaging.vendor_dir(cfg) == tmp_path) is needs
        # With the web page on, always: the gallery's small copies of its photos.
        with_web = Config(model_profile=name, image_transport=transport, inference_mode=mode)
        assert with_web.web_api == "on" and with_web.needs_pillow
        # With nearby places on, always: the photo's EXIF GPS position.
        assert Config(model_profile=name, image_transport=transport, inference_mode=mode,
                      web_api="off", places="on").needs_pillow
    assert len(vendored) == (3 if formula != "idefics" else 2)
