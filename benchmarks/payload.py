"""Bytes sent to the model for one 12-megapixel photo, per profile and image transport.

The handler runs in this process against moto's S3 and a local model server that keeps the
size of every request body it receives, with each profile's environment as `up` sets it
(``lambda_fn.function_environment``: CONTAINER_LIMITS, REQUEST_STYLE, ...). With ``url`` the
body carries presigned URLs and the endpoint downloads the images from S3 itself, unless an
image is over its share of the container's token budget: it is then resized here and sent
inline. With ``data-uri`` both images travel inside the body, sized for the token budget and
the payload limit. Handler time is for a warm function (the sized example is cached), the model
server's own time taken out. Images resized: of the 8 images (example + photo) sent for the
three bundled photos and the 12 MP photo.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from typing import Any

from .common import Context, Row, environment, handler_rig, instant_backend, photos, s3_event
from .common import twelve_megapixel_jpeg as make_photo

_IMAGE_URL = re.compile(r"!\[\]\(([^)\s]+)\)|\"url\": \"([^\"]+)\"")


def _recording_server() -> type:
    from visual_tourism.local.model_server import ModelServer
    from visual_tourism.profiles import PROFILES

    largest = max(p.limits.payload_limit_bytes for p in PROFILES.values())

    class Recording(ModelServer):
        """Keeps the body of every request on the Runtime path; takes bodies up to the largest
        profile payload limit (each is measured against its own profile's limit)."""

        bodies: list[bytes]

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(payload_limit=largest, **kwargs)

        def handle_post(self, path: str, headers: Any, body: bytes | None) -> Any:
            if path.startswith("/endpoints/") and body is not None:
                self.bodies.append(body)
            return super().handle_post(path, headers, body)

    Recording.bodies = []
    return Recording


def _images_sent(body: bytes) -> list[tuple[int, int] | None]:
    """Each image of the request (example, photo): its size if inline, None if by URL."""
    from PIL import Image

    sizes: list[tuple[int, int] | None] = []
    for a, b in _IMAGE_URL.findall(json.dumps(json.loads(body))):
        url = a or b
        if not url.startswith("data:"):
            sizes.append(None)
            continue
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
            sizes.append(image.size)
    return sizes


def _profile_env(name: str, transport: str, bucket: str, endpoint: str) -> dict[str, str]:
    from visual_tourism import lambda_fn
    from visual_tourism.config import Config

    cfg = Config(model_profile=name, image_transport=transport)
    return {**lambda_fn.function_environment(cfg, bucket), "ENDPOINT_NAME": endpoint}


def run(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    import lambda_code
    from photo_handler.settings import TRANSPORTS
    from visual_tourism.profiles import DEFAULT_PROFILE, PROFILES

    from .common import ENDPOINT

    photo = make_photo()
    bundled = [p.read_bytes() for p in photos()]
    server_class = _recording_server()
    measured: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    with handler_rig(instant_backend(), server_class=server_class) as rig:
        example_bytes = rig.s3.head_object(Bucket=rig.bucket,
                                           Key="example/trevi.jpeg")["ContentLength"]
        for number, data in enumerate([*bundled, photo]):
            rig.s3.put_object(Bucket=rig.bucket, Key=f"input/{number}.jpg", Body=data)
        rig.s3.put_object(Bucket=rig.bucket, Key="input/12-megapixels.jpg", Body=photo)
        for name in sorted(PROFILES, key=lambda n: (n != DEFAULT_PROFILE, n)):
            limits = PROFILES[name].limits
            for transport in TRANSPORTS:
                with environment(_profile_env(name, transport, rig.bucket, ENDPOINT)):
                    # The bundled photos and the 12 MP one once (warms the function and its
                    # cached example), counting the images resized...
                    keys = [f"input/{n}.jpg" for n in range(len(bundled) + 1)]
                    for key in keys:  # not a duplicate of the previous profile's answer
                        rig.s3.delete_object(Bucket=rig.bucket, Key=f"output/{key[6:]}.json")
                    event = s3_event(rig.s3, rig.bucket, *keys)
                    lines = lambda_code.lambda_handler(event, Context())["records"]
                    if any(line["status"] != "ok" for line in lines):
                        raise RuntimeError(f"{name} {transport}: not answered: {lines}")
                    resized = sum(line["images_resized"] for line in lines)
                    # ...then the 12 MP photo again, timed (best of 3, or 1 with --quick).
                    seconds = []
                    for _ in range(1 if quick else 3):
                        server_class.bodies.clear()
                        calls_before = len(rig.server.calls)
                        event = s3_event(rig.s3, rig.bucket, "input/12-megapixels.jpg")
                        rig.s3.delete_object(Bucket=rig.bucket,
                                             Key="output/12-megapixels.jpg.json")
                        started = time.perf_counter()
                        (line,) = lambda_code.lambda_handler(event, Context())["records"]
                        spent = time.perf_counter() - started
                        # The model server's own time (with url: downloading, decoding).
                        spent -= sum(c["seconds"] for c in rig.server.calls[calls_before:])
                        seconds.append(spent)
                        if line["status"] != "ok":
                            raise RuntimeError(f"{name} {transport}: 12 MP photo: {line}")
                (body,) = server_class.bodies
                example_sent, size = _images_sent(body)
                # With url the endpoint GETs each image sent by URL from S3, in full.
                fetched = (example_bytes if example_sent is None else 0) + (
                    len(photo) if size is None else 0)
                measured[f"{name} {transport}"] = {
                    "request_bytes": len(body), "handler_seconds": round(min(seconds), 3),
                    "photo_sent_as": size, "example_sent_as": example_sent,
                    "fetched_by_endpoint_bytes": fetched, "images_resized": resized,
                    "images": 2 * (len(bundled) + 1),
                    "payload_limit_bytes": limits.payload_limit_bytes,
                }
                sent = f"photo inline at {size[0]}x{size[1]}" if size else (
                    f"photo by URL; the endpoint downloads {fetched:,} B")
                rows.append(Row(
                    "payload", f"{name}, 12 MP photo, {transport}: request body",
                    f"<= {limits.payload_limit_bytes:,} B",
                    f"{len(body):,} B, {sent}; handler {min(seconds):.2f} s",
                    len(body) <= limits.payload_limit_bytes, len(body), "B"))
            url, inline = measured[f"{name} url"], measured[f"{name} data-uri"]
            rows.append(Row(
                "payload", f"{name}: images resized (3 photos + 12 MP, example included)", "",
                f"url {url['images_resized']} of {url['images']}, data-uri "
                f"{inline['images_resized']} of {inline['images']}", None,
                url["images_resized"], "images",
                f"{name}: {limits.image_formula} image tokens, MAX_INPUT_TOKENS "
                f"{limits.max_input_tokens}, MAX_TOTAL_TOKENS {limits.max_total_tokens}, "
                f"example at most {limits.example_image_tokens} tokens. Handler time: warm "
                "function, model server's time excluded, best of "
                f"{1 if quick else 3}."))
    return rows, {"photo_bytes": len(photo), "example_bytes": example_bytes, **measured}
