"""The photo handler's pure helpers (photo_handler/): image sniffing, limits, keys, requests,
answers, settings."""

from __future__ import annotations

import io
import json
import struct
import time
from pathlib import Path

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from PIL import Image

from photo_handler import answer as handler_answer
from photo_handler import (
    clients,
    errors,
    model,
    records,
    request,
    sniff,
    upload,
)
from photo_handler import settings as handler_settings

IMAGES = Path(__file__).resolve().parent.parent / "images"


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(size: tuple[int, int] = (640, 480), mode: str = "RGB") -> Image.Image:
    return Image.linear_gradient("L").resize(size).convert(mode)


def settings(**changes: object) -> handler_settings.Settings:
    return handler_settings.Settings(bucket="b", endpoint="e", **changes)  # type: ignore[arg-type]


# -- sniff_image: accepted formats ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "mode", "expected"),
    [
        ("JPEG", {}, "RGB", "jpeg"),
        ("JPEG", {"progressive": True}, "RGB", "jpeg"),  # SOF2
        ("JPEG", {"exif": b"Exif\x00\x00" + b"\x00" * 5000}, "RGB", "jpeg"),  # APP1 first
        ("PNG", {}, "RGB", "png"),
        ("GIF", {}, "P", "gif"),
        ("WEBP", {"lossless": False}, "RGB", "webp"),  # VP8
        ("WEBP", {"lossless": True}, "RGB", "webp"),  # VP8L
        ("WEBP", {"lossless": False}, "RGBA", "webp"),  # VP8X (alpha)
        ("BMP", {}, "RGB", "bmp"),
    ],
)
def test_sniff_reads_the_size_of_each_accepted_format(
    fmt: str, options: dict[str, object], mode: str, expected: str
) -> None:
    data = encode(photo((641, 479), mode), fmt, **options)
    assert sniff.sniff_image(data) == (expected, 641, 479)


@pytest.mark.parametrize("name", ["trevi.jpeg", "tour_eiffel.jpeg", "neuschwanstein.jpeg",
                                  "santiago_cathedral.jpeg"])
def test_sniff_agrees_with_pillow_on_the_project_photos(name: str) -> None:
    data = (IMAGES / name).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        assert sniff.sniff_image(data[: upload.HEAD_BYTES]) == ("jpeg", *image.size)


def test_sniff_reads_top_down_and_os2_bitmaps() -> None:
    data = bytearray(encode(photo((40, 30)), "BMP"))
    struct.pack_into("<i", data, 22, -30)  # top-down rows
    assert sniff.sniff_image(bytes(data)) == ("bmp", 40, 30)
    os2 = b"BM" + b"\x00" * 12 + struct.pack("<IHHHH", 12, 50, 60, 1, 24)
    assert sniff.sniff_image(os2) == ("bmp", 50, 60)


def test_sniff_skips_fill_bytes_before_a_jpeg_marker() -> None:
    data = encode(photo((64, 48)), "JPEG")
    padded = data[:2] + b"\xff\xff" + data[2:]
    assert sniff.sniff_image(padded) == ("jpeg", 64, 48)


# -- sniff_image: rejected content ----------------------------------------------------------

HEIC = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 64
HEIF_MIF1 = struct.pack(">I", 20) + b"ftypmif1" + b"\x00\x00\x00\x00" + b"mif1" + b"\x00" * 64
AVIF = struct.pack(">I", 28) + b"ftypavif" + b"\x00\x00\x00\x00" + b"avifmif1miaf" + b"\x00" * 64
MP4 = struct.pack(">I", 24) + b"ftypisom" + b"\x00\x00\x02\x00" + b"isomiso2" + b"\x00" * 64


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"", "empty_file", "empty"),
        (b"Dear diary, today we saw the Trevi fountain.\n" * 3, "not_an_image", "text"),
        (b"BMW 320d, one owner\n", "not_an_image", "text"),  # "BM" but no bitmap header
        (HEIC, "unsupported_format", "Most Compatible"),
        (HEIF_MIF1, "unsupported_format", "HEIC"),
        (AVIF, "unsupported_format", "AVIF"),
        (MP4, "not_an_image", "video"),
        (b"II*\x00\x08\x00\x00\x00" + b"\x00" * 32, "unsupported_format", "TIFF"),
        (b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 32, "unsupported_format", "TIFF"),
        (b"\xff\x0a\xfa\x7f" + b"\x00" * 32, "unsupported_format", "JPEG XL"),
        (bytes(range(256)) * 4, "not_an_image", "JPEG, PNG"),
    ],
)
def test_sniff_rejects_what_the_model_server_cannot_read(
    data: bytes, code: str, words: str
) -> None:
    with pytest.raises(errors.BadImage) as caught:
        sniff.sniff_image(data)
    assert caught.value.code == code
    assert words in caught.value.message
    assert "upload" in caught.value.message  # every message says what to do


def test_truncated_headers_are_told_apart_from_short_files() -> None:
    jpeg = encode(photo(), "JPEG")
    sof = jpeg.index(b"\xff\xc0")
    png = encode(photo(), "PNG")
    webp = encode(photo(), "WEBP")
    for cut in (jpeg[:3], jpeg[: sof - 10], jpeg[: sof + 5], png[:20], webp[:22],
                encode(photo(mode="P"), "GIF")[:8]):
        with pytest.raises(errors.BadImage) as caught:
            sniff.sniff_image(cut)
        assert caught.value.code == "truncated_image", cut[:12]


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 5 + b"garbage, not a marker",
        b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 32,  # scan data before any frame header
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + b"\x00" * 16,
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + struct.pack(">II", 0, 10) + b"\x08\x02",
        b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20,  # no key frame start code
    ],
)
def test_damaged_headers_are_corrupt(data: bytes) -> None:
    with pytest.raises(errors.BadImage) as caught:
        sniff.sniff_image(data)
    assert caught.value.code == "corrupt_image"


def test_limits() -> None:
    s = settings(max_image_bytes=1000, max_image_pixels=100 * 100, min_image_side=32)
    sniff.check_limits(100, 100, 1000, s)
    for width, height, size, code, words in [
        (100, 100, 1001, "image_too_large", "MB"),
        (101, 100, 10, "image_too_large", "megapixel"),
        (31, 100, 10, "image_too_small", "31x100"),
        (100, 1, 10, "image_too_small", "100x1"),
    ]:
        with pytest.raises(errors.BadImage) as caught:
            sniff.check_limits(width, height, size, s)
        assert caught.value.code == code
        assert words in caught.value.message


# -- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("input/a.jpg", "output/a.jpg.json"),
        ("input/a.png", "output/a.png.json"),
        ("input/trips/2024/Tōkyō tower.v2.JPG", "output/trips/2024/Tōkyō tower.v2.JPG.json"),
        ("input/", None),
        ("input/new folder/", None),
        ("photos/a.jpg", None),
        ("output/a.jpg.json", None),
        ("inputs/a.jpg", None),
    ],
)
def test_result_key(key: str, expected: str | None) -> None:
    assert records.result_key(key, "input/", "output/") == expected


# -- requests and answers ---------------------------------------------------------------------


def test_tgi_request_is_the_one_shot_idefics_prompt() -> None:
    body = request.build_request("tgi", "Describe.", "A fountain.", "https://ex", "https://ph",
                            handler_settings.DEFAULT_GENERATION)
    assert body["inputs"] == (
        "User:Describe.![](https://ex)<end_of_utterance>\n"
        "Assistant: A fountain.<end_of_utterance>\n"
        "User:Describe.![](https://ph)<end_of_utterance>\nAssistant:"
    )
    assert body["parameters"] == {
        "do_sample": True, "top_p": 0.2, "temperature": 0.4, "top_k": 50,
        "max_new_tokens": 512, "return_full_text": False, "stop": ["User:", "<end_of_utterance>"],
    }


def test_messages_request_maps_the_generation_parameters() -> None:
    body = request.build_request("messages", "Describe.", "A fountain.", "https://ex", "https://ph",
                            {**handler_settings.DEFAULT_GENERATION, "stop": ["\nUser"], "seed": 7})
    assert body == {
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Describe."},
                {"type": "image_url", "image_url": {"url": "https://ex"}},
            ]},
            {"role": "assistant", "content": "A fountain."},
            {"role": "user", "content": [
                {"type": "text", "text": "Describe."},
                {"type": "image_url", "image_url": {"url": "https://ph"}},
            ]},
        ],
        "max_tokens": 512, "temperature": 0.4, "top_p": 0.2, "stop": ["\nUser"], "seed": 7,
    }
    greedy = request.build_request("messages", "i", "a", "u", "v", {"do_sample": False})
    assert greedy["temperature"] == 0


TGI_REQUEST = request.build_request("tgi", "Describe.", "A.", "https://ex", "https://ph", {})


@pytest.mark.parametrize(
    ("generated", "answer"),
    [
        (" The Colosseum. Story. Eat at Luzzi.", "The Colosseum. Story. Eat at Luzzi."),
        (" The Colosseum.<end_of_utterance>", "The Colosseum."),
        (" The Colosseum.\nUser:", "The Colosseum."),
        (" The Colosseum.<end_of_utterance>\nUser:", "The Colosseum."),
        (TGI_REQUEST["inputs"] + " The Colosseum.\nUser:", "The Colosseum."),  # echoed prompt
        ("User: and User: inside stay.", "User: and User: inside stay."),
    ],
)
def test_tgi_answer_is_the_text_alone(generated: str, answer: str) -> None:
    parsed = handler_answer.parse_answer("tgi", [{"generated_text": generated}], TGI_REQUEST)
    assert parsed == answer


def test_messages_answer() -> None:
    payload = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                    "content": " Big Ben.\n"}}]}
    assert handler_answer.parse_answer("messages", payload, {"messages": []}) == "Big Ben."


@pytest.mark.parametrize(
    ("style", "payload"),
    [
        ("tgi", []),
        ("tgi", {"error": "boom"}),
        ("tgi", [{"generated_text": None}]),
        ("tgi", "plain text"),
        ("messages", [{"generated_text": "wrong style"}]),
        ("messages", {"choices": []}),
    ],
)
def test_wrong_shapes_are_bad_model_responses(style: str, payload: object) -> None:
    with pytest.raises(errors.Failure) as caught:
        handler_answer.parse_answer(style, payload, TGI_REQUEST)
    assert caught.value.code == "bad_model_response"
    assert "REQUEST_STYLE" in caught.value.message


def test_an_answer_of_only_a_stop_sequence_is_empty() -> None:
    with pytest.raises(errors.Failure) as caught:
        handler_answer.parse_answer("tgi", [{"generated_text": "<end_of_utterance>"}], TGI_REQUEST)
    assert caught.value.code == "empty_answer"


# -- settings -------------------------------------------------------------------------------


def test_two_variables_give_the_original_design() -> None:
    s = handler_settings.load_settings({"BUCKET_NAME": "b", "ENDPOINT_NAME": "e"})
    assert (s.input_prefix, s.output_prefix, s.example_key) == (
        "input/", "output/", "example/trevi.jpeg")
    assert s.instruction.startswith("You are a travel agent. Describe in 1 sentence")
    assert s.example_answer.endswith("the Pinsitaly Trevi restaurant.")
    assert s.generation == {"do_sample": True, "top_p": 0.2, "temperature": 0.4, "top_k": 50,
                            "max_new_tokens": 512}
    assert (s.request_style, s.image_transport, s.url_expires_seconds) == ("tgi", "url", 900)
    assert (s.max_attempts, s.model_timeout_seconds, s.max_payload_bytes) == (4, 60, 1_900_000)
    assert (s.max_image_bytes, s.max_image_pixels, s.min_image_side) == (
        20_000_000, 50_000_000, 32)


def test_every_variable_is_read() -> None:
    env = {
        "BUCKET_NAME": "b", "ENDPOINT_NAME": "e", "INPUT_PREFIX": "in/", "OUTPUT_PREFIX": "out/",
        "EXAMPLE_KEY": "ex/x.png", "EXAMPLE_ANSWER": "A.", "INSTRUCTION": "I.",
        "REQUEST_STYLE": "messages", "GENERATION_PARAMETERS": '{"max_new_tokens": 64}',
        "IMAGE_TRANSPORT": "data-uri", "URL_EXPIRES_SECONDS": "60", "MAX_PAYLOAD_BYTES": "1000",
        "MODEL_PROFILE": "p", "MODEL_ID": "m/m", "MAX_ATTEMPTS": "2",
        "MODEL_TIMEOUT_SECONDS": "30", "RETRY_BASE_SECONDS": "0.5",
        "RESULT_MARGIN_SECONDS": "2", "MAX_IMAGE_BYTES": "10", "MAX_IMAGE_PIXELS": "20",
        "MIN_IMAGE_SIDE": "3", "INFERENCE_MODE": "async", "ASYNC_PREFIX": "q/",
        "ASYNC_TTL_SECONDS": "120", "ASYNC_INVOCATION_TIMEOUT_SECONDS": "30",
        "PRESETS_TABLE": "t-presets", "PRESET_CACHE_SECONDS": "5", "THUMBNAIL_PREFIX": "th/",
        "PLACES": "off", "PLACES_RADIUS_METERS": "250", "PLACES_MAX_RESULTS": "3",
        "PLACES_OPENING_HOURS": "on", "PLACES_TIMEOUT_SECONDS": "2",
        "MODEL_KIND": "sagemaker", "MODEL_PRICES": '{"input_per_million": 1}',
        "STRUCTURED_OUTPUT": "tool",
    }
    s = handler_settings.load_settings(env)
    assert set(handler_settings.ENV_NAMES) == set(env)
    assert [getattr(s, handler_settings.ENV_NAMES[var]) for var in env] == [
        "b", "e", "in/", "out/", "ex/x.png", "A.", "I.", "messages", {"max_new_tokens": 64},
        "data-uri", 60, 1000, "p", "m/m", 2, 30.0, 0.5, 2.0, 10, 20, 3, "async", "q/", 120, 30,
        "t-presets", 5.0, "th/", False, 250, 3, True, 2.0,
        "sagemaker", '{"input_per_million": 1}', "tool",
    ]


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"ENDPOINT_NAME": ""}, "ENDPOINT_NAME"),
        ({"ENDPOINT_NAME": "e", "BUCKET_NAME": ""}, "BUCKET_NAME"),
        ({"GENERATION_PARAMETERS": "[1]"}, "GENERATION_PARAMETERS"),
        ({"GENERATION_PARAMETERS": "{oops"}, "GENERATION_PARAMETERS"),
        ({"MAX_ATTEMPTS": "four"}, "MAX_ATTEMPTS"),
        ({"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS"),
        ({"REQUEST_STYLE": "openai"}, "REQUEST_STYLE"),
        ({"IMAGE_TRANSPORT": "s3"}, "IMAGE_TRANSPORT"),
        ({"OUTPUT_PREFIX": "input/results/"}, "OUTPUT_PREFIX"),  # results would re-trigger
        ({"INPUT_PREFIX": "input"}, "INPUT_PREFIX"),
    ],
)
def test_bad_configuration_names_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(errors.ConfigError, match=words):
        handler_settings.load_settings({"BUCKET_NAME": "b", "ENDPOINT_NAME": "e", **env})


# -- retries --------------------------------------------------------------------------------


def client_error(code: str, status: int, **extra: object) -> ClientError:
    response = {"Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status}, **extra}
    return ClientError(response, "InvokeEndpoint")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (client_error("ThrottlingException", 400), True),
        (client_error("ModelNotReadyException", 429), True),
        (client_error("ModelError", 424, OriginalStatusCode=500), True),
        (client_error("ModelError", 424), True),
        (client_error("ModelError", 424, OriginalStatusCode=422), False),  # bad request
        (client_error("ModelError", 424, OriginalStatusCode=413), False),
        (client_error("InternalFailure", 500), True),
        (client_error("ServiceUnavailable", 503), True),
        (client_error("InternalDependencyException", 530), True),
        (client_error("SomethingNew", 502), True),
        (client_error("ValidationError", 400), False),
        (client_error("AccessDeniedException", 403), False),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (ConnectTimeoutError(endpoint_url="http://x"), True),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ConnectionClosedError(endpoint_url="http://x"), True),
    ],
)
def test_what_is_retried(exc: Exception, retry: bool) -> None:
    assert model.retryable(exc) is retry


class FlakyEndpoint:
    """Fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def invoke_endpoint(self, **_: object) -> dict[str, object]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return {"Body": io.BytesIO(b'[{"generated_text": " Fine."}]')}


def test_backoff_is_exponential_with_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = FlakyEndpoint(3, client_error("ThrottlingException", 400))
    monkeypatch.setattr(clients, "client", lambda service, timeout=None: endpoint)
    sleeps: list[float] = []
    s = settings(retry_base_seconds=1.0, result_margin_seconds=0)
    payload, attempts = model.invoke_model(b"{}", s, time.monotonic() + 600, sleep=sleeps.append)
    assert (payload, attempts) == ([{"generated_text": " Fine."}], 4)
    assert [0.5 <= d / 2**n <= 1.0 for n, d in enumerate(sleeps)] == [True] * 3
    assert len(set(sleeps)) == 3


def test_retries_stop_at_max_attempts_and_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = FlakyEndpoint(99, client_error("ServiceUnavailable", 503))
    monkeypatch.setattr(clients, "client", lambda service, timeout=None: endpoint)
    with pytest.raises(errors.Failure) as caught:
        model.invoke_model(b"{}", settings(max_attempts=3), time.monotonic() + 600,
                        sleep=lambda _: None)
    assert (caught.value.code, caught.value.attempts, endpoint.calls) == (
        "model_unavailable", 3, 3)

    # Backoffs of 0.5-1 s, 1-2 s, 2-4 s and 4 s left before the margin kept for writing the
    # result: the third wait (plus a second for the attempt) no longer fits, so it stops.
    class Clock:
        now = 1000.0

        def monotonic(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            self.now += seconds

    clock = Clock()
    monkeypatch.setattr(model, "time", clock)
    endpoint.calls = 0
    with pytest.raises(errors.Failure) as caught:
        model.invoke_model(b"{}", settings(retry_base_seconds=1, result_margin_seconds=2),
                        clock.now + 6, sleep=clock.sleep)
    assert (caught.value.code, caught.value.attempts, endpoint.calls) == (
        "model_timeout", 3, 3)
    assert "ServiceUnavailable" in caught.value.message
    assert 1001.5 <= clock.now <= 1003


# -- container limits and image failures -----------------------------------------------------


def test_container_limits_set_the_payload_limit() -> None:
    from visual_tourism.profiles import PROFILES

    base = {"BUCKET_NAME": "b", "ENDPOINT_NAME": "e"}
    # A deployment without CONTAINER_LIMITS: no limits, images sized by bytes only.
    assert handler_settings.load_settings(base).container_limits is None
    for profile in PROFILES.values():
        env = {**base, "CONTAINER_LIMITS": profile.limits.to_env(),
               "REQUEST_STYLE": profile.request_style,
               **({"MODEL_KIND": "bedrock", "MODEL_ID": profile.model_id}
                  if profile.managed else {})}
        s = handler_settings.load_settings(env)
        assert s.container_limits == profile.limits
        assert s.max_payload_bytes == profile.limits.payload_limit_bytes * 95 // 100
        # MAX_PAYLOAD_BYTES may lower it, never raise it past the container's limit.
        lower = handler_settings.load_settings({**env, "MAX_PAYLOAD_BYTES": "1000"})
        assert lower.max_payload_bytes == 1000
        higher = handler_settings.load_settings({**env, "MAX_PAYLOAD_BYTES": "99000000"})
        assert higher.max_payload_bytes == s.max_payload_bytes
    with pytest.raises(errors.ConfigError, match="CONTAINER_LIMITS"):
        handler_settings.load_settings({**base, "CONTAINER_LIMITS": "{not json"})


def model_error(original_status: int, message: str) -> ClientError:
    return client_error("ModelError", 424, OriginalStatusCode=original_status,
                        OriginalMessage=json.dumps({"error": message}))


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (424, "Server error: Could not load image from url https://b/x.jpg", "decode"),
        (424, "Server error: cannot identify image file <_io.BytesIO object>", "decode"),
        (424, "Server error: 403 Client Error: Forbidden for url: https://b/x.jpg", "decode"),
        (424, "Server error: 503 Server Error: Slow Down for url: https://b/x.jpg", "fetch"),
        (424, "Server error: HTTPSConnectionPool(host='b', port=443): Read timed out.", "fetch"),
        (424, "Server error: CUDA out of memory", None),
        (500, "Server error: Could not load image from url https://b/x.jpg", None),
        (422, "Input validation error: cannot decode image", None),  # not Idefics' status
    ],
)
def test_idefics_image_failures_are_told_apart(status: int, message: str,
                                               kind: str | None) -> None:
    from visual_tourism.profiles import PROFILES

    settings = handler_settings.Settings(bucket="b", endpoint="e",
                           container_limits=PROFILES["idefics-9b-instruct"].limits)
    assert model.image_failure(model_error(status, message), settings) == kind


def test_a_vllm_image_failure_is_a_refused_request() -> None:
    from visual_tourism.profiles import PROFILES

    limits = PROFILES["smolvlm-instruct"].limits
    assert limits.image_failure_status == 400
    settings = handler_settings.Settings(bucket="b", endpoint="e", container_limits=limits)
    error = model_error(400, "cannot decode image: cannot identify image file")
    assert model.image_failure(error, settings) == "decode"
    assert not model.retryable(error)  # and never retried either way
