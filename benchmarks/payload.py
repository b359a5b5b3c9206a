"""Bytes sent to the model for one 12-megapixel photo, per image transport.

The handler runs in this process against moto's S3 and a local model server that keeps the
size of every request body it receives. With ``url`` the body carries two presigned URLs
and the endpoint downloads both images from S3 itself; with ``data-uri`` both images travel
inside the body, the photo re-encoded to fit MAX_PAYLOAD_BYTES.
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

TGI_PAYLOAD_LIMIT = 2_000_000  # TGI 3.x default PAYLOAD_LIMIT
SAGEMAKER_LIMIT = 6 * 1024 * 1024  # real-time InvokeEndpoint payload


def _recording_server() -> type:
    from visual_tourism.local.model_server import ModelServer

    class Recording(ModelServer):
        """Keeps the body of every request on the Runtime path."""

        bodies: list[bytes]

        def handle_post(self, path: str, headers: Any, body: bytes) -> Any:
            if path.startswith("/endpoints/"):
                self.bodies.append(body)
            return super().handle_post(path, headers, body)

    Recording.bodies = []
    return Recording


def _sent_photo_size(body: bytes) -> tuple[int, int] | None:
    from PIL import Image

    uris = re.findall(r"data:image/[a-z]+;base64,([A-Za-z0-9+/=]+)", json.loads(body)["inputs"])
    if not uris:
        return None
    with Image.open(io.BytesIO(base64.b64decode(uris[-1]))) as image:
        return image.size


def run(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    import lambda_code

    photo = make_photo()
    server_class = _recording_server()
    measured: dict[str, dict[str, Any]] = {}
    with handler_rig(instant_backend(), server_class=server_class) as rig:
        example_bytes = rig.s3.head_object(Bucket=rig.bucket,
                                           Key="example/trevi.jpeg")["ContentLength"]
        # Warm-up: the first call of a process creates the boto3 clients.
        rig.s3.put_object(Bucket=rig.bucket, Key="input/warm-up.jpeg",
                          Body=photos()[0].read_bytes())
        lambda_code.lambda_handler(s3_event(rig.s3, rig.bucket, "input/warm-up.jpeg"),
                                   Context())
        for transport in lambda_code.TRANSPORTS:
            key = f"input/12-megapixels-{transport}.jpg"
            rig.s3.put_object(Bucket=rig.bucket, Key=key, Body=photo)
            event = s3_event(rig.s3, rig.bucket, key)
            server_class.bodies.clear()
            calls_before = len(rig.server.calls)
            with environment({"IMAGE_TRANSPORT": transport}):
                started = time.perf_counter()
                summary = lambda_code.lambda_handler(event, Context())["records"][0]
                seconds = time.perf_counter() - started
            # The model server's own time (with url: downloading and decoding the photo).
            seconds -= sum(c["seconds"] for c in rig.server.calls[calls_before:])
            if summary["status"] != "ok":
                raise RuntimeError(f"{transport}: the photo was not answered: {summary}")
            (body,) = server_class.bodies
            measured[transport] = {
                "request_bytes": len(body), "handler_seconds": round(seconds, 3),
                "photo_sent_as": _sent_photo_size(body),
                # With url the endpoint GETs both objects from S3 in full.
                "fetched_by_endpoint_bytes": len(photo) + example_bytes
                if transport == "url" else 0,
            }

    url, inline = measured["url"], measured["data-uri"]
    limit = min(TGI_PAYLOAD_LIMIT, SAGEMAKER_LIMIT)
    sent = inline["photo_sent_as"]
    rows = [
        Row("payload", "12 MP photo, url transport: request body", "",
            f"{url['request_bytes']:,} B; the endpoint then downloads "
            f"{url['fetched_by_endpoint_bytes']:,} B from S3", None, url["request_bytes"], "B",
            f"photo {len(photo):,} B (4000x3000 JPEG) + example {example_bytes:,} B"),
        Row("payload", "12 MP photo, data-uri transport: request body",
            f"<= {limit:,} B (TGI's PAYLOAD_LIMIT)",
            f"{inline['request_bytes']:,} B, photo re-encoded to "
            f"{sent[0]}x{sent[1]}" if sent else f"{inline['request_bytes']:,} B",
            inline["request_bytes"] <= limit, inline["request_bytes"], "B",
            f"handler time, model server's excluded: {inline['handler_seconds']:.2f} s "
            f"(downscaling included) vs {url['handler_seconds']:.2f} s with url"),
    ]
    return rows, {"photo_bytes": len(photo), "example_bytes": example_bytes, **measured}
