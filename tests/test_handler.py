"""lambda_handler end to end: captured S3 events, S3 on moto's server, the local model server.

Nothing is faked inside the handler: it talks HTTP to moto (S3) and to ModelServer (the
SageMaker Runtime API in front of a TGI-like container), which fetches the presigned URLs or
decodes the data URIs it is given, as the real endpoint does.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import re
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from photos import twelve_megapixel_jpeg
from PIL import Image

import lambda_code
from photo_handler import (
    clients,
    errors,
    logs,
)
from photo_handler import model as handler_model
from photo_handler import request as handler_request
from photo_handler import settings as handler_settings
from photo_handler import upload as handler_upload
from visual_tourism.local import model_server
from visual_tourism.local.model_server import ModelServer

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
EVENTS = Path(__file__).resolve().parent / "events"
ENDPOINT = "visual-tourism-endpoint"
STOPS = ["User:", "<end_of_utterance>"]


# -- fixtures and helpers ---------------------------------------------------------------------


class RecordingServer(ModelServer):
    """The local endpoint, keeping every request body it received (its `calls` do not)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests: list[dict[str, Any]] = []
        self.request_sizes: list[int] = []

    def handle_post(self, path: str, headers: Any, body: bytes | None) -> Any:
        if body is not None:  # None: over the payload limit, refused unread
            self.requests.append(json.loads(body))
            self.request_sizes.append(len(body))
        return super().handle_post(path, headers, body)


class FakeContext:
    """Lambda's context: the remaining time counts down from ``budget_ms``."""

    def __init__(self, budget_ms: int = 300_000) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + budget_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    # Any other service the handler may call (DynamoDB for presets) goes to moto too.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return boto3.client("s3", endpoint_url=moto_server)


@pytest.fixture
def bucket(s3: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket holding the example photo; the handler's environment points at it."""
    name = f"vt-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="example/trevi.jpeg", Body=(IMAGES / "trevi.jpeg").read_bytes())
    monkeypatch.setenv("BUCKET_NAME", name)
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("MODEL_PROFILE", "idefics-9b-instruct")
    monkeypatch.setenv("MODEL_ID", "HuggingFaceM4/idefics-9b-instruct")
    monkeypatch.setenv("RETRY_BASE_SECONDS", "0.01")  # tests never wait long between attempts
    monkeypatch.setenv("RESULT_MARGIN_SECONDS", "0.5")
    return name


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image URL the model server fetched or decoded."""
    urls: list[str] = []
    real = model_server.load_image

    def recording(url: str, timeout: float = 10.0, allowed_origins: Any = ()) -> Image.Image:
        urls.append(url)
        return real(url, timeout, allowed_origins)

    monkeypatch.setattr(model_server, "load_image", recording)
    return urls


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, fetched: list[str],
           moto_server: str) -> Iterator[RecordingServer]:
    # Images come from S3's presigned URLs only, as in local mode.
    with RecordingServer(endpoint_exists=lambda name: name == ENDPOINT,
                         fetch_origins=[moto_server]) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", running.url)
        yield running


def load_event(name: str, bucket: str, s3: Any) -> dict[str, Any]:
    """A captured event for ``bucket``; size and eTag of existing objects as S3 would send."""
    event = json.loads((EVENTS / name).read_text().replace("BUCKET", bucket))
    for record in event["Records"]:
        obj = record["s3"]["object"]
        try:
            head = s3.head_object(Bucket=bucket, Key=unquote_plus(obj["key"]))
        except ClientError:
            continue
        obj.update(size=head["ContentLength"], eTag=head["ETag"].strip('"'))
    return event


def event_for(bucket: str, s3: Any, *keys: str) -> dict[str, Any]:
    """An ObjectCreated:Put event for keys (not URL-encoded), built from the captured one."""
    template = json.loads((EVENTS / "s3_put.json").read_text())["Records"][0]
    records = []
    for key in keys:
        record = copy.deepcopy(template)
        record["s3"]["object"]["key"] = quote_plus(key, safe="/")  # as S3 encodes keys
        records.append(record)
    text = json.dumps({"Records": records}).replace("BUCKET", bucket)
    event = json.loads(text)
    for record in event["Records"]:
        head = s3.head_object(Bucket=bucket, Key=unquote_plus(record["s3"]["object"]["key"]))
        record["s3"]["object"].update(size=head["ContentLength"], eTag=head["ETag"].strip('"'))
    return event


def run(event: dict[str, Any], budget_ms: int = 300_000) -> dict[str, Any]:
    return lambda_code.lambda_handler(event, FakeContext(budget_ms))


def result(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def output_keys(s3: Any, bucket: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="output/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def all_keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def image_bytes(fmt: str, size: tuple[int, int], **options: Any) -> bytes:
    mode = "P" if fmt == "GIF" else "RGB"
    image = Image.merge("RGB", [Image.linear_gradient("L").resize(size).rotate(a)
                                for a in (0, 90, 180)]).convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG: signature and a valid IHDR claiming any size (no pixels follow)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\x00\x00\x00\x00IDAT")


def photo_jpeg() -> bytes:
    return (IMAGES / "tour_eiffel.jpeg").read_bytes()


# -- the happy path ---------------------------------------------------------------------------


def test_one_photo_gives_one_result(
    s3: Any, bucket: str, server: RecordingServer, fetched: list[str]
) -> None:
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())
    head = s3.head_object(Bucket=bucket, Key="input/colosseum.jpg")
    before = datetime.now().astimezone()
    started = time.monotonic()

    summary = run(load_event("s3_put.json", bucket, s3))
    took = time.monotonic() - started

    assert summary["records"][0]["status"] == "ok"
    stored = s3.get_object(Bucket=bucket, Key="output/colosseum.jpg.json")
    assert stored["ContentType"] == "application/json"
    # Which upload it answers: the photo's ETag, and its date and metadata in a digest.
    assert stored["Metadata"] == {"input-etag": head["ETag"].strip('"'), "final": "true",
                                  "upload": handler_upload.fingerprint(
                                      handler_upload.upload_of(head))}
    body = json.loads(stored["Body"].read())
    assert set(body) == {"status", "answer", "input", "image", "model", "places", "timing",
                         "request_id", "written_at"}
    assert body["status"] == "ok"
    assert body["places"]["status"] == "no_position"  # no GPS, no position given, no fields
    # The stand-in describes the last image of the prompt: the photo, not the example.
    with Image.open(IMAGES / "tour_eiffel.jpeg") as image:
        assert f"{image.width}x{image.height} pixels" in body["answer"]
    assert body["answer"] == body["answer"].strip()
    assert not any(stop in body["answer"] for stop in STOPS)
    assert body["input"] == {"bucket": bucket, "key": "input/colosseum.jpg",
                             "etag": head["ETag"].strip('"'), "size": head["ContentLength"]}
    assert body["image"] == {"format": "jpeg", "width": image.width, "height": image.height}
    assert body["model"] == {"endpoint": ENDPOINT, "profile": "idefics-9b-instruct",
                             "model_id": "HuggingFaceM4/idefics-9b-instruct",
                             "request_style": "tgi", "image_transport": "url"}
    assert body["timing"]["attempts"] == 1
    # The handler's own clock: the model's share within its total, both within the call.
    assert 0 < body["timing"]["model_seconds"] <= body["timing"]["total_seconds"] <= took
    written = datetime.fromisoformat(body["written_at"].replace("Z", "+00:00"))
    assert body["written_at"].endswith("Z") and written >= before.replace(microsecond=0)
    assert [c["status"] for c in server.calls] == [200]
    assert len(fetched) == 2  # the endpoint fetched the example and the photo itself


def test_tgi_request_is_exactly_the_one_shot_prompt(
    s3: Any, bucket: str, server: RecordingServer, fetched: list[str], moto_server: str
) -> None:
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())
    run(load_event("s3_put.json", bucket, s3))

    (request,) = server.requests
    settings = handler_settings.load_settings()
    match = re.fullmatch(
        re.escape(f"User:{settings.instruction}![](") + r"(?P<example>[^)\s]+)"
        + re.escape(f")<end_of_utterance>\nAssistant: {settings.example_answer}<end_of_utterance>"
                    f"\nUser:{settings.instruction}![](") + r"(?P<photo>[^)\s]+)"
        + re.escape(")<end_of_utterance>\nAssistant:"),
        request["inputs"],
    )
    assert match, request["inputs"]
    assert request["parameters"] == {
        "do_sample": True, "top_p": 0.2, "temperature": 0.4, "top_k": 50,
        "max_new_tokens": 512, "return_full_text": False, "stop": STOPS,
    }
    # Short-lived presigned GET URLs, which the endpoint really fetched.
    for name, key in (("example", "example/trevi.jpeg"), ("photo", "input/colosseum.jpg")):
        url = match[name]
        assert url.startswith(f"{moto_server}/{bucket}/{key}?")
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=900" in url
    assert fetched == [match["example"], match["photo"]]


def test_messages_style(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUEST_STYLE", "messages")
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())

    run(load_event("s3_put.json", bucket, s3))

    (request,) = server.requests
    settings = handler_settings.load_settings()
    example_url = request["messages"][0]["content"][1]["image_url"]["url"]
    photo_url = request["messages"][2]["content"][1]["image_url"]["url"]
    assert request == {
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": settings.instruction},
                {"type": "image_url", "image_url": {"url": example_url}},
            ]},
            {"role": "assistant", "content": settings.example_answer},
            {"role": "user", "content": [
                {"type": "text", "text": settings.instruction},
                {"type": "image_url", "image_url": {"url": photo_url}},
            ]},
        ],
        "max_tokens": 512, "temperature": 0.4, "top_p": 0.2,
    }
    assert f"/{bucket}/example/trevi.jpeg?" in example_url
    assert f"/{bucket}/input/colosseum.jpg?" in photo_url
    body = result(s3, bucket, "output/colosseum.jpg.json")
    assert body["status"] == "ok" and body["model"]["request_style"] == "messages"
    with Image.open(IMAGES / "tour_eiffel.jpeg") as image:  # choices[0].message.content
        assert f"{image.width}x{image.height} pixels" in body["answer"]
    assert body["answer"] == body["answer"].strip()
    assert server.calls[0]["style"] == "messages"


def test_stop_sequence_returned_by_tgi_is_cut_off(
    s3: Any, bucket: str, server: RecordingServer
) -> None:
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())
    generated: list[str] = []
    real = server.handle_post

    def keep_answer(path: str, headers: Any, body: bytes) -> Any:
        response = real(path, headers, body)
        generated.append(json.loads(response.body)[0]["generated_text"])
        return response

    server.handle_post = keep_answer  # type: ignore[method-assign]
    run(load_event("s3_put.json", bucket, s3))

    assert generated[0].endswith("User:")  # TGI leaves the plain-text stop sequence in
    assert result(s3, bucket, "output/colosseum.jpg.json")["answer"] == (
        generated[0].removesuffix("User:").strip()
    )


# -- events: records, keys --------------------------------------------------------------------

ENCODED = {  # key in the captured event -> the object's real name
    "input/my+holiday+photo.JPG": "input/my holiday photo.JPG",
    "input/caf%C3%A9+de+Flore.jpeg": "input/café de Flore.jpeg",
    "input/1%2B1%3D2.jpg": "input/1+1=2.jpg",
    "input/100%25+Roma.jpg": "input/100% Roma.jpg",
    "input/photo+%281%29.jpg": "input/photo (1).jpg",
    "input/trips/2024/%E6%9D%B1%E4%BA%AC+tower.v2.final.jpeg":
        "input/trips/2024/東京 tower.v2.final.jpeg",
}


def test_url_encoded_keys_in_a_multi_record_event(
    s3: Any, bucket: str, server: RecordingServer, fetched: list[str]
) -> None:
    captured = json.loads((EVENTS / "s3_put_encoded_keys.json").read_text())
    assert [r["s3"]["object"]["key"] for r in captured["Records"]] == list(ENCODED)
    photos = sorted(IMAGES.glob("*.jpeg"))
    for number, name in enumerate(ENCODED.values()):
        s3.put_object(Bucket=bucket, Key=name, Body=photos[number % len(photos)].read_bytes())

    summary = run(load_event("s3_put_encoded_keys.json", bucket, s3))

    assert [r["key"] for r in summary["records"]] == list(ENCODED.values())
    assert output_keys(s3, bucket) == sorted(
        "output/" + name.removeprefix("input/") + ".json" for name in ENCODED.values()
    )
    for name in ENCODED.values():
        body = result(s3, bucket, "output/" + name.removeprefix("input/") + ".json")
        assert body["status"] == "ok", body
        assert body["input"]["key"] == name
    # Each photo was fetched through its own presigned URL, its name percent-encoded.
    photo_urls = fetched[1::2]
    assert [unquote_plus(u.split("?")[0].split(f"/{bucket}/", 1)[1]) for u in photo_urls] == list(
        ENCODED.values())
    assert all(quote(name, safe="/") in url for name, url in zip(ENCODED.values(), photo_urls,
                                                                  strict=True))


def test_multi_record_event_skips_keys_outside_input(
    s3: Any, bucket: str, server: RecordingServer
) -> None:
    s3.put_object(Bucket=bucket, Key="input/a.jpg", Body=photo_jpeg())
    s3.put_object(Bucket=bucket, Key="input/a.png", Body=image_bytes("PNG", (300, 200)))
    s3.put_object(Bucket=bucket, Key="photos/rome.jpg", Body=photo_jpeg())
    s3.put_object(Bucket=bucket, Key="input/new folder/", Body=b"")

    summary = run(load_event("s3_put_multi.json", bucket, s3))

    assert [(r["key"], r["status"]) for r in summary["records"]] == [
        ("input/a.jpg", "ok"), ("photos/rome.jpg", "ignored"), ("input/a.png", "ok"),
        ("input/new folder/", "ignored"),
    ]
    # a.jpg and a.png are two results, not one overwritten by the other.
    assert output_keys(s3, bucket) == ["output/a.jpg.json", "output/a.png.json"]
    assert result(s3, bucket, "output/a.jpg.json")["image"]["format"] == "jpeg"
    assert result(s3, bucket, "output/a.png.json")["image"] == {
        "format": "png", "width": 300, "height": 200}
    assert len(server.calls) == 2


def test_event_for_a_key_outside_input_writes_nothing(
    s3: Any, bucket: str, server: RecordingServer
) -> None:
    before = all_keys(s3, bucket)
    summary = run(load_event("s3_put_non_input.json", bucket, s3))
    assert summary["records"][0]["status"] == "ignored"
    assert all_keys(s3, bucket) == before
    assert server.calls == []


def test_captured_events_are_anonymous() -> None:
    paths = sorted(EVENTS.glob("*.json"))
    assert paths
    for path in paths:
        assert not re.search(r"(?<![0-9A-Fa-f])\d{12}(?![0-9A-Fa-f])", path.read_text()), path


def test_captured_api_events_are_payload_2_0() -> None:
    paths = sorted(EVENTS.glob("api_*.json"))
    assert paths
    for path in paths:
        data = json.loads(path.read_text())
        assert data["version"] == "2.0", path
        assert data["routeKey"] == data["requestContext"]["routeKey"], path
        assert {"accountId", "apiId", "domainName", "http", "requestId", "stage",
                "timeEpoch"} <= set(data["requestContext"]), path
        assert data["rawPath"] == data["requestContext"]["http"]["path"], path


def test_captured_s3_events_are_real_shaped() -> None:
    paths = sorted(EVENTS.glob("s3_*.json"))
    assert paths
    for path in paths:
        for record in json.loads(path.read_text())["Records"]:
            assert record["eventVersion"] == "2.1" and record["eventSource"] == "aws:s3"
            assert record["eventName"] == "ObjectCreated:Put"
            assert {"awsRegion", "eventTime", "userIdentity", "requestParameters",
                    "responseElements"} <= set(record)
            s3_part = record["s3"]
            assert {"s3SchemaVersion", "configurationId"} <= set(s3_part)
            assert s3_part["bucket"] == {"name": "BUCKET", "arn": "arn:aws:s3:::BUCKET",
                                         "ownerIdentity": s3_part["bucket"]["ownerIdentity"]}
            assert set(s3_part["object"]) == {"key", "size", "eTag", "sequencer"}


# -- content checks ---------------------------------------------------------------------------

HEIC = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 200


def truncated_jpeg() -> bytes:
    data = photo_jpeg()
    return data[: data.index(b"\xff\xc0") - 20]  # cut inside the header, before the frame


@pytest.mark.parametrize(
    ("name", "data", "code", "words"),
    [
        ("empty.jpg", lambda: b"", "empty_file", "empty"),
        ("notes.jpg", lambda: b"Remember: buy coins for the fountain.\n" * 20, "not_an_image",
         "text"),
        ("IMG_0001.HEIC", lambda: HEIC, "unsupported_format", "Most Compatible"),
        ("cut.jpg", truncated_jpeg, "truncated_image", "complete photo"),
        ("dot.png", lambda: image_bytes("PNG", (1, 1)), "image_too_small", "1x1"),
        ("huge.png", lambda: png_header(100_000, 100_000), "image_too_large", "10000 megapixels"),
    ],
)
def test_bad_input_gets_an_error_result_without_calling_the_model(
    s3: Any, bucket: str, server: RecordingServer, name: str, data: Callable[[], bytes],
    code: str, words: str,
) -> None:
    content = data()
    s3.put_object(Bucket=bucket, Key=f"input/{name}", Body=content)

    summary = run(event_for(bucket, s3, f"input/{name}"))

    assert summary["records"][0]["error_code"] == code
    stored = s3.get_object(Bucket=bucket, Key=f"output/{name}.json")
    assert stored["Metadata"]["final"] == "true"  # the same bytes would fail the same way
    body = json.loads(stored["Body"].read())
    assert body["status"] == "error" and "answer" not in body
    assert body["error"]["code"] == code
    assert words in body["error"]["message"]
    assert body["input"]["size"] == len(content)
    assert body["timing"] == {"model_seconds": 0.0, "total_seconds": body["timing"][
        "total_seconds"], "attempts": 0}
    assert server.calls == []


def test_too_many_bytes(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_IMAGE_BYTES", "100000")
    s3.put_object(Bucket=bucket, Key="input/big.jpg", Body=photo_jpeg())
    run(event_for(bucket, s3, "input/big.jpg"))
    body = result(s3, bucket, "output/big.jpg.json")
    assert body["error"]["code"] == "image_too_large" and "0.1 MB limit" in body["error"]["message"]
    assert server.calls == []


def test_header_past_the_first_read_is_found(
    s3: Any, bucket: str, server: RecordingServer
) -> None:
    # 300 KiB of APP segments (a huge EXIF/XMP block) before the frame header.
    data = photo_jpeg()
    filler = b"".join(b"\xff\xe2\xff\xf2" + b"\x00" * 65520 for _ in range(5))
    s3.put_object(Bucket=bucket, Key="input/xmp.jpg", Body=data[:2] + filler + data[2:])
    run(event_for(bucket, s3, "input/xmp.jpg"))
    assert result(s3, bucket, "output/xmp.jpg.json")["status"] == "ok"


@pytest.mark.parametrize(
    ("key", "fmt", "size"),
    [
        ("input/ROME.JPG", "JPEG", (801, 600)),
        ("input/a.b.c.jpeg", "JPEG", (640, 480)),
        ("input/my holiday photo.jpg", "JPEG", (500, 700)),
        ("input/Tōkyō 東京 +%.jpg", "JPEG", (600, 600)),
        ("input/shot.png", "PNG", (320, 240)),
        ("input/loop.gif", "GIF", (200, 150)),
        ("input/web.webp", "WEBP", (400, 300)),
        ("input/old.bmp", "BMP", (120, 90)),
        ("input/no-extension", "JPEG", (256, 256)),
    ],
)
def test_normal_inputs(
    s3: Any, bucket: str, server: RecordingServer, key: str, fmt: str, size: tuple[int, int]
) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=image_bytes(fmt, size))

    run(event_for(bucket, s3, key))

    body = result(s3, bucket, "output/" + key.removeprefix("input/") + ".json")
    assert body["status"] == "ok", body
    assert body["image"] == {"format": fmt.lower(), "width": size[0], "height": size[1]}
    assert f"{size[0]}x{size[1]} pixels" in body["answer"]  # the model saw this photo


# -- transports -------------------------------------------------------------------------------


def test_data_uri_transport_shrinks_a_12_megapixel_photo_under_the_payload_limit(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    fetched: list[str],
) -> None:
    monkeypatch.setenv("IMAGE_TRANSPORT", "data-uri")
    big = twelve_megapixel_jpeg()
    assert len(big) > 2_000_000  # too big for the payload as it is
    s3.put_object(Bucket=bucket, Key="input/big.jpg", Body=big)

    run(event_for(bucket, s3, "input/big.jpg"))

    body = result(s3, bucket, "output/big.jpg.json")
    assert body["status"] == "ok", body
    assert body["model"]["image_transport"] == "data-uri"
    assert server.request_sizes[0] <= 1_900_000
    assert "http" not in json.dumps(server.requests[0])  # nothing for the endpoint to fetch
    example_uri, photo_uri = fetched
    trevi = (IMAGES / "trevi.jpeg").read_bytes()
    assert example_uri == "data:image/jpeg;base64," + base64.b64encode(trevi).decode()
    assert photo_uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(photo_uri.split(",", 1)[1]))) as sent:
        assert sent.size == (2048, 1536)  # downscaled, aspect kept
    assert "2048x1536 pixels" in body["answer"]


def test_data_uri_transport_sends_a_small_photo_as_it_is(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    fetched: list[str],
) -> None:
    monkeypatch.setenv("IMAGE_TRANSPORT", "data-uri")
    monkeypatch.setenv("REQUEST_STYLE", "messages")
    png = image_bytes("PNG", (300, 200))
    s3.put_object(Bucket=bucket, Key="input/small.png", Body=png)

    run(event_for(bucket, s3, "input/small.png"))

    assert result(s3, bucket, "output/small.png.json")["status"] == "ok"
    assert fetched[1] == "data:image/png;base64," + base64.b64encode(png).decode()
    photo_part = server.requests[0]["messages"][2]["content"][1]
    assert photo_part == {"type": "image_url", "image_url": {"url": fetched[1]}}


# -- failures of the model --------------------------------------------------------------------


@pytest.mark.parametrize(
    "inject",
    [
        lambda faults: faults.fail(n=2, status=503),
        lambda faults: faults.fail(n=2, status=424),  # ModelError
        lambda faults: faults.fail(n=2, status=429),  # throttled
        lambda faults: faults.fail(n=2, status=500),
        lambda faults: faults.drop(n=2),  # connection closed without an answer
    ],
    ids=["503", "424", "429", "500", "drop"],
)
def test_transient_failures_are_retried(
    s3: Any, bucket: str, server: RecordingServer, inject: Callable[[Any], None]
) -> None:
    inject(server.faults)
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())

    run(event_for(bucket, s3, "input/colosseum.jpg"))

    body = result(s3, bucket, "output/colosseum.jpg.json")
    assert body["status"] == "ok"
    assert body["timing"]["attempts"] == 3
    assert len(server.calls) == 3


def test_exhausted_retries_give_an_error_result_and_a_normal_return(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_ATTEMPTS", "3")
    server.faults.fail(n=10, status=503)
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())
    event = event_for(bucket, s3, "input/colosseum.jpg")

    summary = run(event)  # returns: Lambda must not retry (and re-run GPU inference)

    assert summary["records"][0]["error_code"] == "model_unavailable"
    stored = s3.get_object(Bucket=bucket, Key="output/colosseum.jpg.json")
    body = json.loads(stored["Body"].read())
    assert body["error"]["code"] == "model_unavailable"
    assert "ServiceUnavailable" in body["error"]["message"]
    assert "upload the photo again later" in body["error"]["message"]
    assert body["timing"]["attempts"] == 3
    assert len(server.calls) == 3
    # Not final: a redelivery or re-upload of the same bytes tries again, and can succeed.
    assert stored["Metadata"]["final"] == "false"
    server.faults.clear()
    assert run(event)["records"][0]["status"] == "ok"
    assert len(server.calls) == 4


def test_unknown_endpoint_fails_fast(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", "no-such-endpoint")
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())

    run(event_for(bucket, s3, "input/colosseum.jpg"))

    body = result(s3, bucket, "output/colosseum.jpg.json")
    assert body["error"]["code"] == "endpoint_not_found"
    assert "ENDPOINT_NAME" in body["error"]["message"]
    assert body["timing"]["attempts"] == 1 and len(server.calls) == 1  # no retry, no wait


def test_broken_configuration_still_answers_every_photo(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENDPOINT_NAME")
    monkeypatch.setenv("REQUEST_STYLE", "telepathy")
    for name in ("a.jpg", "b.jpg"):
        s3.put_object(Bucket=bucket, Key=f"input/{name}", Body=photo_jpeg())

    run(event_for(bucket, s3, "input/a.jpg", "input/b.jpg"))  # returns: nothing to retry

    for name in ("a.jpg", "b.jpg"):
        body = result(s3, bucket, f"output/{name}.json")
        assert body["error"]["code"] == "configuration_error"
        assert "ENDPOINT_NAME" in body["error"]["message"]
    assert server.calls == []
    head = s3.head_object(Bucket=bucket, Key="output/a.jpg.json")
    assert head["Metadata"]["final"] == "false"  # answered once the configuration is fixed


def test_broken_configuration_answers_in_the_configured_folders(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENDPOINT_NAME")
    monkeypatch.setenv("INPUT_PREFIX", "photos/")
    monkeypatch.setenv("OUTPUT_PREFIX", "answers/")
    s3.put_object(Bucket=bucket, Key="photos/a.jpg", Body=photo_jpeg())
    run(event_for(bucket, s3, "photos/a.jpg"))
    assert result(s3, bucket, "answers/a.jpg.json")["error"]["code"] == "configuration_error"


def test_a_malformed_record_does_not_stop_the_others(s3: Any, bucket: str,
                                                      server: RecordingServer) -> None:
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())
    event = event_for(bucket, s3, "input/colosseum.jpg")
    event["Records"].insert(0, {"eventName": "ObjectCreated:Put", "s3": {}})
    summary = run(event)
    assert [r["status"] for r in summary["records"]] == ["malformed_record", "ok"]
    assert result(s3, bucket, "output/colosseum.jpg.json")["status"] == "ok"


def test_an_unexpected_failure_still_leaves_a_record(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(handler_request, "build_request", broken)
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())

    run(event_for(bucket, s3, "input/colosseum.jpg"))

    body = result(s3, bucket, "output/colosseum.jpg.json")
    assert body["error"]["code"] == "internal_error"
    assert "a bug" in body["error"]["message"]
    assert server.calls == []


def test_request_refused_by_the_container_is_not_retried(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TGI answers 422 (validation) for top_p >= 1; SageMaker wraps it in a ModelError.
    monkeypatch.setenv("GENERATION_PARAMETERS", '{"max_new_tokens": 64, "top_p": 1.5}')
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())

    run(event_for(bucket, s3, "input/colosseum.jpg"))

    body = result(s3, bucket, "output/colosseum.jpg.json")
    assert body["error"]["code"] == "model_rejected_input"
    assert "top_p" in body["error"]["message"]
    assert body["timing"]["attempts"] == 1 and len(server.calls) == 1


# TGI v1.4.5 (Idefics v1) fetches and decodes images in its Python shard: a failure there is a
# generation error, HTTP 424, which SageMaker wraps in a ModelError (OriginalStatusCode 424).
IDEFICS_DECODE_FAILURE = ("Request failed during generation: Server error: Could not load image "
                          "from url data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ")
IDEFICS_FETCH_FAILURE = ("Request failed during generation: Server error: HTTPSConnectionPool("
                         "host='b.s3.amazonaws.com', port=443): Read timed out. (read timeout=5)")
IDEFICS_OUT_OF_MEMORY = ("Request failed during generation: Server error: CUDA out of memory. "
                         "Tried to allocate 2.00 GiB")


@pytest.mark.parametrize(
    ("error", "attempts", "code"),
    [(IDEFICS_DECODE_FAILURE, 1, "model_rejected_input"),  # the same bytes fail again
     (IDEFICS_FETCH_FAILURE, 2, "model_rejected_input"),  # a download may pass once more
     (IDEFICS_OUT_OF_MEMORY, 4, "model_unavailable")],  # not the image: retried as before
    ids=["decode", "fetch", "other-424"],
)
def test_an_idefics_image_failure_is_not_retried_four_times(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    error: str, attempts: int, code: str,
) -> None:
    from visual_tourism.profiles import PROFILES

    monkeypatch.setenv("CONTAINER_LIMITS", PROFILES["idefics-9b-instruct"].limits.to_env())
    calls: list[str] = []
    real = server.handle_post

    def failing(path: str, headers: Any, body: bytes | None) -> Any:
        if not path.startswith("/endpoints/"):
            return real(path, headers, body)
        calls.append(path)
        original = json.dumps({"error": error, "error_type": "generation"})
        return ModelServer._model_error(ENDPOINT, "us-east-1", 424, original)

    server.handle_post = failing  # type: ignore[method-assign]
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())

    run(event_for(bucket, s3, "input/colosseum.jpg"))

    body = result(s3, bucket, "output/colosseum.jpg.json")
    assert body["error"]["code"] == code
    assert body["timing"]["attempts"] == attempts == len(calls)
    if code == "model_rejected_input":
        assert "could not " in body["error"]["message"] and "an image" in body["error"]["message"]


def test_slow_answer_past_the_remaining_time_still_gets_a_result(
    s3: Any, bucket: str, server: RecordingServer
) -> None:
    # The model holds every request until released (never, here): only the handler's own
    # deadline, from the invocation's remaining time, can end the call. The budget leaves the
    # handler room to reach the model however busy the machine is.
    hold = server.faults.hold(n=None)
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())
    event = event_for(bucket, s3, "input/colosseum.jpg")

    try:
        summary = run(event, budget_ms=6000)
        answered_by_the_model = hold.released.is_set()
    finally:
        hold.release()

    assert hold.held == 1 and not answered_by_the_model  # it gave up on the model, in time
    assert summary["records"][0]["error_code"] == "model_timeout"
    body = result(s3, bucket, "output/colosseum.jpg.json")
    assert body["error"]["code"] == "model_timeout"
    assert "Lambda timeout" in body["error"]["message"]
    assert "ReadTimeoutError" in body["error"]["message"]
    assert body["timing"]["attempts"] == 1


def test_wrong_response_shape_is_a_bad_model_response(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A messages-style endpoint asked in the tgi style answers something else entirely.
    monkeypatch.setattr(server, "_generate_tgi", lambda request, outcome, *_: {"unexpected": 1})
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())
    run(event_for(bucket, s3, "input/colosseum.jpg"))
    body = result(s3, bucket, "output/colosseum.jpg.json")
    assert body["error"]["code"] == "bad_model_response"
    assert "REQUEST_STYLE=tgi" in body["error"]["message"]


# -- idempotence and writes -------------------------------------------------------------------


def test_duplicate_delivery_calls_the_model_once_and_a_new_upload_again(
    s3: Any, bucket: str, server: RecordingServer
) -> None:
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())
    first = event_for(bucket, s3, "input/colosseum.jpg")
    run(first)
    written = result(s3, bucket, "output/colosseum.jpg.json")

    assert run(first)["records"][0]["status"] == "duplicate"
    assert len(server.calls) == 1
    assert result(s3, bucket, "output/colosseum.jpg.json") == written

    # A changed object (new ETag) is described again...
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=image_bytes("PNG", (90, 60)))
    second = event_for(bucket, s3, "input/colosseum.jpg")
    assert run(second)["records"][0]["status"] == "ok"
    assert len(server.calls) == 2
    assert result(s3, bucket, "output/colosseum.jpg.json")["image"]["format"] == "png"
    # ...and a late redelivery of the first upload's event does not call the model again.
    assert run(first)["records"][0]["status"] == "duplicate"
    assert len(server.calls) == 2


def test_a_slow_answer_for_an_older_upload_does_not_overwrite_a_newer_one(
    s3: Any, bucket: str, server: RecordingServer
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())
    older = event_for(bucket, s3, "input/colosseum.jpg")
    hold = server.faults.hold(n=1)  # the first upload's answer comes when released
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(run, older)
        assert hold.arrived.wait(30)  # it is waiting for the model (it has read the photo)
        assert not slow.done()
        s3.put_object(Bucket=bucket, Key="input/colosseum.jpg",
                      Body=image_bytes("PNG", (90, 60)))
        newer = event_for(bucket, s3, "input/colosseum.jpg")
        assert run(newer)["records"][0]["status"] == "ok"
        hold.release()
        assert slow.result()["records"][0]["status"] == "superseded"
    body = result(s3, bucket, "output/colosseum.jpg.json")
    assert body["image"]["format"] == "png"
    assert body["input"]["etag"] == newer["Records"][0]["s3"]["object"]["eTag"]



@pytest.mark.parametrize("transport", ["url", "data-uri"])
def test_an_older_upload_answered_last_does_not_undo_a_newer_upload_of_earlier_bytes(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    """B answered; A uploaded (still being answered); B's bytes uploaded again: that upload
    is a duplicate of the record there (no model call), so A's late answer must not replace it."""
    monkeypatch.setenv("IMAGE_TRANSPORT", transport)
    key, b_bytes = "input/aba.jpg", image_bytes("PNG", (90, 60))
    s3.put_object(Bucket=bucket, Key=key, Body=b_bytes)
    run(event_for(bucket, s3, key))
    answered = result(s3, bucket, "output/aba.jpg.json")
    real, calls = handler_model.invoke_model, []

    def b_again_meanwhile(body: bytes, settings: Any, deadline: float) -> Any:
        calls.append(1)
        s3.put_object(Bucket=bucket, Key=key, Body=b_bytes)
        assert run(event_for(bucket, s3, key))["records"][0]["status"] == "duplicate"
        return real(body, settings, deadline)

    monkeypatch.setattr(handler_model, "invoke_model", b_again_meanwhile)
    s3.put_object(Bucket=bucket, Key=key, Body=photo_jpeg())
    assert run(event_for(bucket, s3, key))["records"][0]["status"] == "superseded"
    assert calls == [1]
    assert result(s3, bucket, "output/aba.jpg.json") == answered


def test_happy_path_makes_five_aws_calls(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=bucket, Key="input/colosseum.jpg", Body=photo_jpeg())
    event = event_for(bucket, s3, "input/colosseum.jpg")
    operations: list[str] = []
    real_client = boto3.session.Session.client

    def counting_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = real_client(self, *args, **kwargs)
        client.meta.events.register(
            "before-call", lambda model, **_: operations.append(model.name))
        return client

    monkeypatch.setattr(clients, "_clients", {})
    monkeypatch.setattr(boto3.session.Session, "client", counting_client)

    run(event)
    # The second HEAD (the photo, after inference) makes sure the endpoint, which fetched the
    # photo by URL, saw the upload whose ETag the record carries.
    assert operations == ["HeadObject", "GetObject", "InvokeEndpoint", "HeadObject", "PutObject"]
    operations.clear()
    run(event)
    assert operations == ["HeadObject"]  # a duplicate costs one HEAD


def test_a_failed_result_write_raises(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=bucket, Key="input/a.jpg", Body=photo_jpeg())
    s3.put_object(Bucket=bucket, Key="input/b.jpg", Body=photo_jpeg())
    event = event_for(bucket, s3, "input/a.jpg", "input/b.jpg")
    denied = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
              b"<Message>Access Denied</Message></Error>")

    class Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield denied

    def deny_a(request: Any, **_: Any) -> AWSResponse | None:
        if "/input/" not in request.url and request.url.split("?")[0].endswith("/a.jpg.json"):
            return AWSResponse(request.url, 403, {"Content-Type": "application/xml"}, Raw())
        return None

    monkeypatch.setattr(clients, "_clients", {})  # the hooked client dies with this test
    clients.client("s3").meta.events.register("before-send.s3.PutObject", deny_a)

    with pytest.raises(errors.ResultWriteError, match="a.jpg.json"):
        run(event)
    # The other photo's result was still written; Lambda's retry will skip it (same ETag).
    assert output_keys(s3, bucket) == ["output/b.jpg.json"]
    assert len(server.calls) == 2


# -- logging and import -----------------------------------------------------------------------


def test_one_json_log_line_per_photo(
    s3: Any, bucket: str, server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    s3.put_object(Bucket=bucket, Key="input/a.jpg", Body=photo_jpeg())
    s3.put_object(Bucket=bucket, Key="input/a.png", Body=b"not a png")
    s3.put_object(Bucket=bucket, Key="photos/rome.jpg", Body=photo_jpeg())
    caplog.set_level(logging.INFO, logger="lambda_code")

    run(load_event("s3_put_multi.json", bucket, s3))

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_code"]
    assert [(line["key"], line["status"]) for line in lines] == [
        ("input/a.jpg", "ok"), ("photos/rome.jpg", "ignored"), ("input/a.png", "error"),
        ("input/new folder/", "ignored"),
    ]
    ok, _, error, _ = lines
    assert ok["error_code"] is None and ok["attempts"] == 1
    assert ok["model_seconds"] > 0 and ok["total_seconds"] >= ok["model_seconds"]
    assert ok["result_key"] == "output/a.jpg.json"
    assert error["error_code"] == "not_an_image" and error["attempts"] == 0


def test_logging_is_configured_only_inside_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    root, own = logging.getLogger(), logs.log
    monkeypatch.setattr(root, "level", logging.WARNING)
    monkeypatch.setattr(own, "level", logging.NOTSET)
    handlers = list(root.handlers)
    logs.configure_logging()  # not in Lambda: untouched
    assert own.level == logging.NOTSET
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "visual-tourism-handler")
    monkeypatch.setenv("AWS_LAMBDA_LOG_LEVEL", "WARN")
    logs.configure_logging()  # the function's own log level wins
    assert own.level == logging.NOTSET
    monkeypatch.delenv("AWS_LAMBDA_LOG_LEVEL")
    logs.configure_logging()
    # Only the handler's own logger is raised: its one line per photo shows, while the
    # runtime's root logger (and so botocore's INFO chatter) stays at WARNING.
    assert own.level == logging.INFO
    assert root.level == logging.WARNING
    assert root.handlers == handlers


def test_import_is_light() -> None:
    code = ("import sys, lambda_code; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'PIL', 'visual_tourism', "
            "'moto', 'numpy', 'requests'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
