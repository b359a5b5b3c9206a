# ruff: noqa: F811 - the fixtures imported from test_handler are redefined as arguments
"""Review findings of issue 14: old SDKs, decoding memory, long keys, foreign text, re-reads
pinned to the ETag, foreign buckets. End to end against moto's server and the local model
server (fixtures from test_handler.py), plus a few units."""

from __future__ import annotations

import json
import logging
import struct
import sys
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from test_handler import (  # noqa: F401 - fixtures
    RecordingServer,
    all_keys,
    bucket,
    event_for,
    fetched,
    image_bytes,
    output_keys,
    photo_jpeg,
    png_header,
    result,
    run,
    s3,
    server,
)
from werkzeug.exceptions import HTTPException

from photo_handler import answer as handler_answer
from photo_handler import clients, errors, records, resize, sniff
from visual_tourism.local import model_server, moto_patches

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not installed
from benchmarks import decode_memory  # noqa: E402

# -- 1. an SDK without conditional writes (in process; tests/test_old_sdk.py runs botocore 1.34)


def test_feature_detection_reads_the_service_model() -> None:
    client = clients.client("s3")
    assert clients.accepts(client, "PutObject", "IfMatch", "IfNoneMatch")
    assert not clients.accepts(client, "PutObject", "IfNoSuchParameter")


@pytest.fixture
def old_put(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The handler sees an SDK without IfMatch/IfNoneMatch; every PutObject's kwargs kept."""
    real = clients.accepts
    monkeypatch.setattr(clients, "accepts", lambda client, op, *names: (
        False if op == "PutObject" else real(client, op, *names)))
    puts: list[dict[str, Any]] = []
    monkeypatch.setattr(clients, "_clients", {})
    clients.client("s3").meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: puts.append(dict(params)))
    return puts


def test_without_conditional_writes_a_slow_older_answer_does_not_overwrite_a_newer_one(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    old_put: list[dict[str, Any]],
) -> None:
    monkeypatch.setenv("IMAGE_TRANSPORT", "data-uri")  # bytes pinned: the write decides
    s3.put_object(Bucket=bucket, Key="input/a.jpg", Body=photo_jpeg())
    older = event_for(bucket, s3, "input/a.jpg")
    hold = server.faults.hold(n=1)  # the older upload's answer comes when released
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(run, older)
        assert hold.arrived.wait(30)
        s3.put_object(Bucket=bucket, Key="input/a.jpg", Body=image_bytes("PNG", (90, 60)))
        newer = event_for(bucket, s3, "input/a.jpg")
        assert run(newer)["records"][0]["status"] == "ok"
        hold.release()
        assert slow.result()["records"][0]["status"] == "superseded"
    body = result(s3, bucket, "output/a.jpg.json")
    assert body["image"]["format"] == "png"
    assert body["input"]["etag"] == newer["Records"][0]["s3"]["object"]["eTag"]
    assert all("IfMatch" not in p and "IfNoneMatch" not in p for p in old_put)
    assert run(newer)["records"][0]["status"] == "duplicate"  # and no third model call
    assert len(server.calls) == 2


# -- 2. decoding memory and decompression bombs ---------------------------------------------


def _gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b";"


def _webp_header(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (
        (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little"))
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def _jpeg_header(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00" * 3
    return b"\xff\xd8" + sof + b"\xff\xd9"


BOMBS = {  # headers claiming 65,000 x 65,000 pixels (4,225 megapixels), no pixels behind them
    "bomb.png": lambda: png_header(65_000, 65_000),
    "bomb.gif": lambda: _gif_header(65_000, 65_000),
    "bomb.webp": lambda: _webp_header(16_383, 16_383),
    "bomb.bmp": lambda: _bmp_header(65_000, 65_000),
    "bomb.jpg": lambda: _jpeg_header(65_000, 65_000),
}


@pytest.mark.parametrize("transport", ["url", "data-uri"])
def test_decompression_bombs_end_in_one_record_without_the_model(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    transport: str, reliability_tally: dict[str, Any],
) -> None:
    monkeypatch.setenv("IMAGE_TRANSPORT", transport)
    for name, make in BOMBS.items():
        s3.put_object(Bucket=bucket, Key=f"input/{name}", Body=make())
    # and a real one, large but allowed: 7000x7000 (49 MP) in 0.2 MB, shrunk or fetched
    real = decode_memory.max_size_photo("PNG")
    s3.put_object(Bucket=bucket, Key="input/large.png", Body=real)

    summary = run(event_for(bucket, s3, *[f"input/{n}" for n in BOMBS]))

    stored = set(output_keys(s3, bucket))
    lost = [name for name in BOMBS if f"output/{name}.json" not in stored]
    tally(reliability_tally, bad_inputs=len(BOMBS), lost=len(lost),
          line=f"decompression bombs ({transport}): {len(BOMBS)} formats "
               f"({', '.join(sorted(n.split('.')[1] for n in BOMBS))}), "
               f"{len(BOMBS) - len(lost)} error records, {len(lost)} lost, "
               f"{len(server.calls)} model calls")
    for name, line in zip(BOMBS, summary["records"], strict=True):
        body = result(s3, bucket, f"output/{name}.json")
        assert line["error_code"] == body["error"]["code"] == "image_too_large", name
        assert "megapixel" in body["error"]["message"]
    assert server.calls == []  # none of them reached the model
    run(event_for(bucket, s3, "input/large.png"))
    body = result(s3, bucket, "output/large.png.json")
    assert body["status"] == "ok" and body["image"]["width"] == 7000
    assert len(output_keys(s3, bucket)) == len(BOMBS) + 1


@pytest.mark.parametrize(("fmt", "limit_mb"), [("PNG", 300), ("JPEG", 200), ("GIF", 200),
                                               ("WEBP", 300), ("WEBP-refused", 100),
                                               ("BMP", 200)])
def test_shrinking_a_max_size_photo_stays_well_under_the_function_memory(
    tmp_path: Path, fmt: str, limit_mb: int,
) -> None:
    # Before: a 7000x7000 PNG peaked at ~600 MB, a 7000x7000 WebP at ~980 MB (512 MB Lambda).
    path = tmp_path / "photo"
    path.write_bytes(decode_memory.max_size_photo(fmt))
    found = decode_memory.peak_memory(path, min(decode_memory.BUDGET, path.stat().st_size // 2))
    assert found["peak_mb"] < limit_mb, found
    assert (found["refused"] == "image_too_large") == (fmt == "WEBP-refused")


def test_pillow_is_held_to_the_handler_pixel_limit() -> None:
    # A JPEG whose first frame header says 100x100 (what the sniff reads) but whose last one,
    # the one Pillow decodes, says 20000x20000: refused before decoding, not decoded.
    lying = _jpeg_header(100, 100)[:-2] + _jpeg_header(20_000, 20_000)[2:]
    with pytest.raises(errors.BadImage) as refused:
        resize._shrink(lying, 10_000, 50_000_000)
    assert refused.value.code == "image_too_large"
    from PIL import Image

    assert Image.MAX_IMAGE_PIXELS != 50_000_000  # restored afterwards


# -- 3. result keys over S3's 1,024-byte limit ------------------------------------------------


class KeyTooLong(HTTPException):
    code = 400

    def get_body(self, *args: Any, **kwargs: Any) -> str:
        return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>KeyTooLongError</Code>'
                "<Message>Your key is too long</Message></Error>")

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [("Content-Type", "application/xml")]


@pytest.fixture
def s3_key_limit() -> Any:
    """moto's server refuses keys over 1,024 UTF-8 bytes, as S3 does (moto does not)."""

    def before(bucket_name: str, key: str) -> None:
        if len(key.encode()) > 1024:
            raise KeyTooLong()

    moto_patches.hook_put_object(before=before)
    yield
    moto_patches.unhook_put_object()


def test_a_result_key_over_1024_bytes_is_shortened_deterministically(
    s3: Any, bucket: str, server: RecordingServer, s3_key_limit: None,
    reliability_tally: dict[str, Any],
) -> None:
    key = "input/" + "é" * 505 + "-xyz.jpg"  # 1,024 bytes: the longest key S3 takes
    assert len(key.encode()) == 1024
    s3.put_object(Bucket=bucket, Key=key, Body=photo_jpeg())
    event = event_for(bucket, s3, key)

    line = run(event)["records"][0]

    out = line["result_key"]
    lost = 0 if out and out in set(output_keys(s3, bucket)) else 1
    tally(reliability_tally, photos=1, lost=lost,
          line=f"over-long key: a 1,024-byte input key, result under {len(out.encode())} "
               f"bytes, {1 - lost} record, {lost} lost")
    assert line["status"] == "ok"
    assert len(out.encode()) <= 1024 and out.startswith("output/éé") and out.endswith(".json")
    assert out == records.result_key(key)  # the CLI and a redelivery find the same key
    assert result(s3, bucket, out)["input"]["key"] == key
    assert run(event)["records"][0]["status"] == "duplicate"
    assert len(server.calls) == 1
    other = records.result_key(key[:-8] + "-abc.jpg")
    assert other != out and len(other.encode()) <= 1024


# -- 4. foreign text in records and logs; the answer's length and characters -------------------

PRESIGNED = ("https://vt-bucket.s3.amazonaws.com/input/a.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Credential=ASIAABCDEFGHIJKLMNOP%2F20261207%2Fus-east-1%2Fs3%2Faws4_request"
             "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLETOKEN&X-Amz-Signature=deadbeef")


class LeakyServer(RecordingServer):
    """A container whose error quotes the presigned URL, the account, and goes on and on."""

    def _container(self, body: bytes | None, content_type: str | None, *_: Any) -> Any:
        message = (f"Failed to fetch {PRESIGNED} for arn:aws:iam::123456789012:role/x "
                   + "detail " * 2000)
        return model_server._Outcome(model_server.InvocationError(422, message).response())


def test_container_error_text_is_scrubbed_and_capped(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch, moto_server: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    s3.put_object(Bucket=bucket, Key="input/a.jpg", Body=photo_jpeg())
    with LeakyServer(endpoint_exists=lambda name: True) as leaky:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", leaky.url)
        run(event_for(bucket, s3, "input/a.jpg"))
    body = result(s3, bucket, "output/a.jpg.json")
    message = body["error"]["message"]
    assert body["error"]["code"] == "model_rejected_input"
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "lambda_code")
    for text in (message, logged):
        for secret in ("X-Amz-Signature=deadbeef", "EXAMPLETOKEN", "ASIAABCDEFGHIJKLMNOP",
                       "123456789012", "X-Amz-Credential=ASIA"):
            assert secret not in text
    assert "https://vt-bucket.s3.amazonaws.com/input/a.jpg?<query removed>" in message
    assert len(message) <= 2 * errors.ERROR_TEXT_MAX_CHARS


def test_scrub_units() -> None:
    text = errors.scrub("a\x1b[31m 210987654321 X-Amz-Signature=abc&b=1 " + "z" * 900)
    assert "\x1b" not in text and "210987654321" not in text and "abc" not in text
    assert len(text) == errors.ERROR_TEXT_MAX_CHARS and text.endswith("\u2026")


class RunawayServer(RecordingServer):
    def _generate_tgi(self, request: dict[str, Any], outcome: Any, *_: Any) -> list[dict[str, str]]:
        outcome.images = 2
        return [{"generated_text": " Rome.\x00\x07\x1b[2J\nLine\ttwo " + "more " * 3000}]


def test_the_answer_is_capped_and_has_no_control_characters(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3.put_object(Bucket=bucket, Key="input/a.jpg", Body=photo_jpeg())
    with RunawayServer(endpoint_exists=lambda name: True) as runaway:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runaway.url)
        run(event_for(bucket, s3, "input/a.jpg"))
    answer = result(s3, bucket, "output/a.jpg.json")["answer"]
    assert answer.startswith("Rome.[2J\nLine\ttwo more")
    assert len(answer) <= handler_answer.ANSWER_MAX_CHARS
    assert not any(ord(c) < 32 and c not in "\n\t" for c in answer)


# -- 5. re-reads pinned to the ETag; an answer never describes a newer upload ------------------


def test_a_re_read_is_pinned_to_the_etag_and_bounded(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGE_TRANSPORT", "data-uri")
    big = image_bytes("BMP", (400, 300))  # 360 KB: past the first 256 KiB read
    s3.put_object(Bucket=bucket, Key="input/a.bmp", Body=big)
    older = event_for(bucket, s3, "input/a.bmp")
    reads: list[dict[str, Any]] = []

    def replace_before_the_second_read(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == "input/a.bmp":
            reads.append(dict(params))
            if len(reads) == 2:  # the photo is replaced between the two reads
                s3.put_object(Bucket=bucket, Key="input/a.bmp",
                              Body=image_bytes("BMP", (500, 300)))

    monkeypatch.setattr(clients, "_clients", {})
    clients.client("s3").meta.events.register(
        "provide-client-params.s3.GetObject", replace_before_the_second_read)

    line = run(older)["records"][0]

    assert line["status"] == "superseded"
    assert server.calls == [] and output_keys(s3, bucket) == []
    etag = older["Records"][0]["s3"]["object"]["eTag"]
    assert reads[1]["IfMatch"].strip('"') == etag
    assert reads[1]["Range"] == f"bytes=0-{len(big) - 1}"
    newer = event_for(bucket, s3, "input/a.bmp")  # the newer upload's own event answers it
    assert run(newer)["records"][0]["status"] == "ok"
    assert result(s3, bucket, "output/a.bmp.json")["image"]["width"] == 500


def test_an_answer_about_a_photo_replaced_during_inference_is_not_kept(
    s3: Any, bucket: str, server: RecordingServer,
) -> None:
    # url transport: the endpoint fetches the photo after the handler read it. The newer
    # upload's event has not run yet: without the check after inference, the older event
    # would store an answer about the newer photo under the older ETag.
    s3.put_object(Bucket=bucket, Key="input/a.jpg", Body=photo_jpeg())
    older = event_for(bucket, s3, "input/a.jpg")
    hold = server.faults.hold(n=1)  # the endpoint fetches the images once released
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(run, older)
        assert hold.arrived.wait(30)
        s3.put_object(Bucket=bucket, Key="input/a.jpg", Body=image_bytes("PNG", (90, 60)))
        hold.release()
        assert slow.result()["records"][0]["status"] == "superseded"
    assert output_keys(s3, bucket) == []
    newer = event_for(bucket, s3, "input/a.jpg")
    assert run(newer)["records"][0]["status"] == "ok"
    body = result(s3, bucket, "output/a.jpg.json")
    assert "90x60 pixels" in body["answer"]
    assert body["input"]["etag"] == newer["Records"][0]["s3"]["object"]["eTag"]


# -- 6. records naming another bucket ------------------------------------------------------------


def test_records_for_another_bucket_are_ignored_without_touching_it(
    s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, reliability_tally: dict[str, Any],
) -> None:
    other = f"vt-other-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="input/a.jpg", Body=photo_jpeg())
    s3.put_object(Bucket=bucket, Key="input/b.jpg", Body=photo_jpeg())
    event = event_for(other, s3, "input/a.jpg")
    event["Records"] += event_for(bucket, s3, "input/b.jpg")["Records"]
    touched: list[str] = []
    monkeypatch.setattr(clients, "_clients", {})
    clients.client("s3").meta.events.register(
        "provide-client-params.s3.*", lambda params, **_: touched.append(params.get("Bucket")))
    caplog.set_level(logging.INFO, logger="lambda_code")

    foreign, own = run(event)["records"]
    lost = 0 if "output/b.jpg.json" in set(output_keys(s3, bucket)) else 1
    tally(reliability_tally, photos=1, lost=lost,
          line=f"foreign-bucket record: ignored ({foreign['status']}), nothing read or written "
               f"there ({'untouched' if other not in touched else 'TOUCHED'}); the stack's own "
               f"photo in the same event answered, {lost} lost")

    assert (foreign["status"], foreign["reason"]) == ("ignored", "foreign_bucket")
    assert own["status"] == "ok"
    assert other not in touched
    assert all_keys(s3, other) == ["input/a.jpg"]
    assert len(server.calls) == 1
    assert any("Ignoring a record for bucket " + other in r.getMessage() for r in caplog.records)


def tally(reliability: dict[str, Any], line: str, **counts: int) -> None:
    """Adds to the run's "reliability" section (tests/conftest.py)."""
    for name, n in counts.items():
        reliability[name] += n
    reliability["lines"].append(line)


def test_png_header_helper_is_valid() -> None:  # the bombs above are well-formed headers
    data = png_header(10, 10)
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    assert json.dumps(sniff.sniff_image(_webp_header(100, 50))) == '["webp", 100, 50]'
