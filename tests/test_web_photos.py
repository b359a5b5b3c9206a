"""Photos from the web page, in the handler: one photo per upload form, and the gallery's
small copy without metadata (issue 23, items 4 and 7).

The handler runs as in tests/test_handler.py: S3 on moto's server, the local model server,
nothing faked inside the handler.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import test_handler
from PIL import Image
from test_handler import IMAGES, RecordingServer, event_for, result, run

from photo_handler import web_photos

# The handler's fixtures: S3 on moto's server, a bucket with the example, the model server.
s3 = test_handler.s3
bucket = test_handler.bucket
fetched = test_handler.fetched
server = test_handler.server

PHOTO_ID = "20261207T101500Z-0123456789abcdef0123.jpg"
KEY = f"input/web/{PHOTO_ID}"
THUMB = f"thumbnails/web/{PHOTO_ID}.jpg"
RECORD = f"output/web/{PHOTO_ID}.json"


@pytest.fixture(autouse=True)
def thumbnails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THUMBNAIL_PREFIX", "thumbnails/")  # as `up` sets it with the page on


def phone_photo(seed: int = 0, size: tuple[int, int] = (1600, 1200)) -> bytes:
    """A JPEG as a phone writes it: EXIF with a GPS position, the camera's serial number and
    owner, taken sideways (Orientation 6), and a comment."""
    image = Image.open(IMAGES / "tour_eiffel.jpeg").convert("RGB").resize(size)
    image.putpixel((seed, seed), (seed % 256, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    exif[0x010F] = "PhoneMaker"
    exif[0x0110] = "Phone 15"
    exif[0x013B] = "Ada Lovelace"  # Artist
    exif.get_ifd(0x8769)[0xA431] = "SERIAL-0042"  # BodySerialNumber
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.6), 3: "E", 4: (2.0, 17.0, 40.2)})
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif.tobytes(), comment=b"at home, Rue X")
    data = out.getvalue()
    assert b"SERIAL-0042" in data and b"Ada Lovelace" in data
    return data


def jpeg_segments(data: bytes) -> list[int]:
    """The marker of every segment before the image data (0xE0-0xEF: APPn, 0xFE: comment)."""
    assert data[:2] == b"\xff\xd8"
    markers, at = [], 2
    while at < len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: the pixels follow
            break
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return markers


def upload(s3: Any, bucket: str, data: bytes) -> dict[str, Any]:
    s3.put_object(Bucket=bucket, Key=KEY, Body=data, ContentType="image/jpeg")
    return event_for(bucket, s3, KEY)


def test_a_web_photo_gets_a_small_copy_without_any_metadata(
        s3: Any, bucket: str, server: RecordingServer) -> None:
    summary = run(upload(s3, bucket, phone_photo()))
    assert summary["records"][0]["status"] == "ok"
    stored = s3.get_object(Bucket=bucket, Key=THUMB)
    assert stored["ContentType"] == "image/jpeg"
    small = stored["Body"].read()
    # No EXIF (position, serial, owner), no XMP or other APPn but JFIF's, no comment.
    assert [m for m in jpeg_segments(small) if 0xE1 <= m <= 0xEF or m == 0xFE] == []
    for secret in (b"SERIAL-0042", b"Ada Lovelace", b"PhoneMaker", b"Rue X", b"Exif"):
        assert secret not in small
    with Image.open(io.BytesIO(small)) as image:
        assert image.format == "JPEG" and not image.getexif()
        # Small, and upright as the camera was held (1600x1200 taken sideways).
        assert max(image.size) == web_photos.THUMBNAIL_SIDE and image.height > image.width
    assert len(small) < 60_000
    # The original is untouched, and the record says nothing of the copy's whereabouts.
    assert s3.head_object(Bucket=bucket, Key=KEY)["ContentLength"] > len(small)
    assert "thumbnails" not in json.dumps(result(s3, bucket, RECORD))


def test_a_photo_outside_the_web_folder_gets_no_copy(
        s3: Any, bucket: str, server: RecordingServer) -> None:
    s3.put_object(Bucket=bucket, Key="input/trip.jpg", Body=phone_photo())
    assert run(event_for(bucket, s3, "input/trip.jpg"))["records"][0]["status"] == "ok"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="thumbnails/")
    assert listed.get("KeyCount", 0) == 0


def test_an_upload_form_answers_one_photo_a_later_upload_costs_no_model_call(
        s3: Any, bucket: str, server: RecordingServer) -> None:
    """A form signs one key: a second photo posted with it replaces the first under that key.
    It gets a final record saying the form was used, and no model call."""
    assert run(upload(s3, bucket, phone_photo(1)))["records"][0]["status"] == "ok"
    first_copy = s3.get_object(Bucket=bucket, Key=THUMB)["Body"].read()
    assert len(server.calls) == 1
    for seed in (2, 3):  # again and again with the same form
        summary = run(upload(s3, bucket, phone_photo(seed)))
        assert summary["records"][0]["status"] == "error"
        assert summary["records"][0]["error_code"] == "upload_form_used"
    assert len(server.calls) == 1  # no model call for either
    record = result(s3, bucket, RECORD)
    assert record["status"] == "error" and record["error"]["code"] == "upload_form_used"
    assert "one photo" in record["error"]["message"]
    assert s3.head_object(Bucket=bucket, Key=RECORD)["Metadata"]["final"] == "true"
    # The copy is still the first photo's: later uploads never replace it.
    assert s3.get_object(Bucket=bucket, Key=THUMB)["Body"].read() == first_copy
    # A redelivery of the first upload's own event is still its own (no claim against it).
    assert run(upload(s3, bucket, phone_photo(3)))["records"][0]["status"] == "duplicate"


def test_a_second_upload_while_the_first_is_being_answered_costs_no_model_call(
        s3: Any, bucket: str, server: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The form posted again while the model answers the first photo: the second upload's
    invocation finds the first one's claim, and the first answer, for a photo replaced
    meanwhile, is superseded: one model call, and the record says the form was used."""
    first = upload(s3, bucket, phone_photo(4))
    later: list[dict[str, Any]] = []
    asked: list[str] = []
    real = server.handle_post

    def meanwhile(path: str, headers: Any, body: bytes | None) -> Any:
        asked.append(path)
        if len(asked) == 1:  # the first photo's model call, under way
            later.append(run(upload(s3, bucket, phone_photo(5))))
        return real(path, headers, body)

    monkeypatch.setattr(server, "handle_post", meanwhile)
    summary = run(first)
    assert later[0]["records"][0]["error_code"] == "upload_form_used"
    assert summary["records"][0]["status"] == "superseded"
    assert len(asked) == 1
    assert result(s3, bucket, RECORD)["error"]["code"] == "upload_form_used"
