"""Security review, local model server: it fetches only from allowed origins without following
redirects, decides on a body's size from Content-Length before reading it, and refuses to
decode images over the pixel limit."""

from __future__ import annotations

import json
import socket
import struct
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from visual_tourism.local.model_server import MAX_IMAGE_PIXELS, ModelServer

IMAGES = Path(__file__).resolve().parent.parent / "images"


class _Site(BaseHTTPRequestHandler):
    """Serves the Trevi photo at /photo.jpeg, redirects /moved to ``target``; counts hits."""

    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", self.server.target + "/photo.jpeg")  # type: ignore
            self.end_headers()
            return
        body = (IMAGES / "trevi.jpeg").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sites() -> Iterator[tuple[Any, Any]]:
    """Two web servers: an allowed one and a 'private service' the model must never reach."""
    started = []
    for _ in range(2):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
        httpd.hits, httpd.target = [], ""  # type: ignore[attr-defined]
        httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
    allowed, private = started
    allowed.target = private.url  # type: ignore[attr-defined]
    yield allowed, private
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def post(server: ModelServer, payload: Any) -> tuple[int, Any]:
    request = urllib.request.Request(server.url + "/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def ask(url: str) -> dict[str, Any]:
    return {"inputs": f"User:What is this?![]({url})<end_of_utterance>\nAssistant:",
            "parameters": {"max_new_tokens": 8}}


def test_fetches_only_from_allowed_origins(sites):
    allowed, private = sites
    with ModelServer(fetch_origins=[allowed.url]) as server:
        assert post(server, ask(allowed.url + "/photo.jpeg"))[0] == 200
        status, body = post(server, ask(private.url + "/photo.jpeg"))
    assert status == 422 and "not on an allowed origin" in body["error"]
    assert private.hits == []  # never contacted


def test_a_redirect_is_not_followed(sites):
    allowed, private = sites
    with ModelServer(fetch_origins=[allowed.url]) as server:
        status, body = post(server, ask(allowed.url + "/moved"))
    assert status == 422 and "cannot fetch image" in body["error"] and "302" in body["error"]
    assert allowed.hits == ["/moved"] and private.hits == []


def test_the_default_fetches_nothing_but_data_uris(sites):
    allowed, _ = sites
    with ModelServer() as server:
        status, body = post(server, ask(allowed.url + "/photo.jpeg"))
    assert status == 422 and allowed.hits == []


def test_a_huge_content_length_is_refused_without_reading_the_body():
    """10 GB announced, nothing sent: the answer comes at once, from the header alone."""
    # A server that waited for the body would never answer (one byte of it is sent): the
    # reply itself, before the socket's generous timeout, is the proof.
    with ModelServer() as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=60) as conn:
        conn.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: 10000000000\r\n\r\n{")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 413")
    assert body == b"Failed to buffer the request body: length limit exceeded"


def test_the_runtime_path_wraps_the_413_as_sagemaker_does():
    import boto3

    with ModelServer(payload_limit=1000) as server:
        runtime = boto3.client("sagemaker-runtime", endpoint_url=server.url)
        with pytest.raises(runtime.exceptions.ModelError) as caught:
            runtime.invoke_endpoint(EndpointName="e", ContentType="application/json",
                                    Body=json.dumps({"inputs": "x" * 5000}))
    assert caught.value.response["OriginalStatusCode"] == 413
    assert "length limit exceeded" in caught.value.response["OriginalMessage"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that announces width x height RGB pixels but carries almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(8000, 7000), (12000, 12000), (60000, 60000)],
                         ids=["56MP", "144MP", "3600MP"])
def test_images_over_the_pixel_limit_are_not_decoded(size):
    import base64

    assert size[0] * size[1] > MAX_IMAGE_PIXELS
    uri = "data:image/png;base64," + base64.b64encode(_png_header(*size)).decode()
    with ModelServer() as server:
        status, body = post(server, ask(uri))
    assert status == 422
    # Under Pillow's own bomb limit (2 x 89.5 MP) only ours refuses it; above, both would.
    assert (f"{size[0]}x{size[1]} pixels, over the {MAX_IMAGE_PIXELS:,} pixel limit"
            in body["error"]) or "decompression bomb" in body["error"]


