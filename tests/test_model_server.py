"""The local model server against real clients: boto3's sagemaker-runtime and urllib."""

from __future__ import annotations

import base64
import functools
import io
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from PIL import Image

from visual_tourism.config import EXAMPLE_ANSWER, INSTRUCTION
from visual_tourism.local.backends import (
    STAND_IN_LABEL,
    Backend,
    GenerationParams,
    StandInBackend,
    Turn,
    generation_params,
)
from visual_tourism.local.model_server import ModelServer, parse_tgi_prompt

IMAGES = Path(__file__).resolve().parent.parent / "images"
ENDPOINT = "visual-tourism-endpoint"
STOP = ["User:", "<end_of_utterance>"]
# What an iPhone photo starts with: an ISO-BMFF box of brand "heic" (Pillow cannot read it).
HEIC_BYTES = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)


# -- helpers and fixtures -------------------------------------------------------------------------


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def idefics_prompt(example_url: str, image_url: str) -> str:
    """The one-shot prompt exactly as the handler builds it."""
    return (
        f"User:{INSTRUCTION}![]({example_url})<end_of_utterance>\n"
        f"Assistant: {EXAMPLE_ANSWER}<end_of_utterance>\n"
        f"User:{INSTRUCTION}![]({image_url})<end_of_utterance>\nAssistant:"
    )


def tgi_request(image_url: str, example_url: str | None = None, **parameters: Any) -> dict:
    prompt = idefics_prompt(example_url or image_url, image_url)
    return {"inputs": prompt, "parameters": {
        "do_sample": True, "top_p": 0.2, "temperature": 0.4, "top_k": 50,
        "max_new_tokens": 512, "stop": STOP, **parameters}}


def chat_request(image_url: str, **options: Any) -> dict:
    return {"messages": [
        {"role": "system", "content": "You are a travel agent."},
        {"role": "user", "content": [
            {"type": "text", "text": INSTRUCTION},
            {"type": "image_url", "image_url": {"url": image_url}},
        ]},
    ], "max_tokens": 512, "temperature": 0.4, "top_p": 0.2, **options}


def runtime_client(server: ModelServer, **config: Any) -> Any:
    # total_max_attempts=1: no retries, so each injected fault is seen as it is.
    config.setdefault("retries", {"mode": "standard", "total_max_attempts": 1})
    return boto3.client("sagemaker-runtime", endpoint_url=server.url, config=Config(**config))


def invoke(client: Any, payload: Any, endpoint: str = ENDPOINT, **kwargs: Any) -> Any:
    kwargs.setdefault("ContentType", "application/json")
    response = client.invoke_endpoint(EndpointName=endpoint, Body=json.dumps(payload), **kwargs)
    return json.loads(response["Body"].read())


def post(server: ModelServer, body: Any, content_type: str = "application/json",
         path: str = "/invocations") -> tuple[int, Any]:
    """POST to the container path with urllib; returns (status, decoded JSON)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain HTTP server with photos, as TGI would fetch them; yields its base URL."""
    folder = tmp_path_factory.mktemp("photos")
    for image in IMAGES.glob("*.jpeg"):
        (folder / image.name).write_bytes(image.read_bytes())
    trevi = (IMAGES / "trevi.jpeg").read_bytes()
    (folder / "truncated.jpeg").write_bytes(trevi[: len(trevi) // 2])
    (folder / "iphone.heic").write_bytes(HEIC_BYTES)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(photos: str, moto_server: str) -> Iterator[ModelServer]:
    with ModelServer(endpoint_exists=lambda name: name == ENDPOINT,
                     fetch_origins=[photos, moto_server]) as started:
        yield started


@pytest.fixture
def runtime(server: ModelServer) -> Any:
    return runtime_client(server)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# -- the two paths and the two styles -------------------------------------------------------------


def test_ping_and_unknown_routes(server: ModelServer) -> None:
    with urllib.request.urlopen(server.url + "/ping", timeout=5) as response:
        assert response.status == 200
    status, body = post(server, {"inputs": "x"}, path="/predict")
    assert status == 404 and "no route" in body["error"]


def test_tgi_style_on_the_runtime_path(server: ModelServer, runtime: Any, photos: str) -> None:
    request = tgi_request(f"{photos}/tour_eiffel.jpeg", f"{photos}/trevi.jpeg",
                          return_full_text=False)
    answer = invoke(runtime, request)
    assert isinstance(answer, list) and len(answer) == 1 and list(answer[0]) == ["generated_text"]
    text = answer[0]["generated_text"]
    assert text.startswith(f" {STAND_IN_LABEL}")
    assert "portrait photo of 800x1481 pixels" in text  # the last image, not the example
    assert text.endswith("User:")  # the stop sequence that ended the answer, as TGI returns it
    assert server.calls == [{"endpoint": ENDPOINT, "style": "tgi", "status": 200,
                             "seconds": server.calls[0]["seconds"], "images": 2}]


def test_return_full_text_defaults_to_true(server: ModelServer, photos: str) -> None:
    request = tgi_request(f"{photos}/trevi.jpeg")
    del request["parameters"]["stop"]
    status, answer = post(server, request)
    assert status == 200
    text = answer[0]["generated_text"]
    assert text.startswith(request["inputs"] + f" {STAND_IN_LABEL}")
    assert not text.endswith("User:")  # no stop sequence asked, none added


def test_return_full_text_default_can_be_changed(photos: str) -> None:
    request = tgi_request(f"{photos}/trevi.jpeg")
    with ModelServer(default_return_full_text=False, fetch_origins=[photos]) as server:
        status, answer = post(server, request)
    assert status == 200 and answer[0]["generated_text"].startswith(f" {STAND_IN_LABEL}")


def test_image_from_a_presigned_s3_url(
    server: ModelServer, runtime: Any, moto_server: str
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server)
    bucket = f"model-server-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    key = "input/château été.jpeg"  # a key that needs quoting in the URL
    s3.put_object(Bucket=bucket, Key=key, Body=(IMAGES / "neuschwanstein.jpeg").read_bytes())
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                    ExpiresIn=300)
    answer = invoke(runtime, tgi_request(url, return_full_text=False))
    assert "landscape photo of 1200x897 pixels" in answer[0]["generated_text"]


def test_image_from_a_data_uri(server: ModelServer, runtime: Any) -> None:
    uri = data_uri((IMAGES / "santiago_cathedral.jpeg").read_bytes())
    answer = invoke(runtime, tgi_request(uri, return_full_text=False))
    assert "portrait photo of 560x840 pixels" in answer[0]["generated_text"]


def test_max_new_tokens_caps_the_answer(server: ModelServer, photos: str) -> None:
    request = tgi_request(f"{photos}/trevi.jpeg", return_full_text=False, max_new_tokens=5)
    status, answer = post(server, request)
    text = answer[0]["generated_text"]
    assert status == 200
    assert text.startswith(f" {STAND_IN_LABEL}")  # the label is always there
    assert len(text.removeprefix(f" {STAND_IN_LABEL}").split()) == 5
    assert not text.endswith("User:")  # stopped by length, not by the stop sequence


def test_messages_style_on_both_paths(server: ModelServer, runtime: Any, photos: str) -> None:
    request = chat_request(f"{photos}/neuschwanstein.jpeg")
    status, direct = post(server, request)
    via_runtime = invoke(runtime, request)
    assert status == 200
    for answer in (direct, via_runtime):
        assert answer["object"] == "chat.completion"
        assert answer["model"] == "stand-in"
        assert isinstance(answer["created"], int) and answer["id"]
        (choice,) = answer["choices"]
        assert choice["index"] == 0 and choice["finish_reason"] == "stop"
        assert choice["message"]["role"] == "assistant"
        assert "1200x897 pixels" in choice["message"]["content"]
        usage = answer["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert direct["choices"] == via_runtime["choices"]  # deterministic
    assert [(c["endpoint"], c["style"], c["images"]) for c in server.calls] == [
        (None, "messages", 1), (ENDPOINT, "messages", 1)]


def test_messages_with_plain_string_content(server: ModelServer) -> None:
    status, answer = post(server, {"messages": [{"role": "user", "content": "Hello"}]})
    assert status == 200
    assert "no image" in answer["choices"][0]["message"]["content"]


def test_parse_the_one_shot_prompt() -> None:
    sizes = {"example": (10, 20), "photo": (30, 40)}
    turns = parse_tgi_prompt(idefics_prompt("example", "photo"),
                             lambda url: Image.new("RGB", sizes[url]))
    assert [turn.role for turn in turns] == ["user", "assistant", "user"]
    assert [turn.text for turn in turns] == [INSTRUCTION, EXAMPLE_ANSWER, INSTRUCTION]
    assert [[image.size for image in turn.images] for turn in turns] == [[(10, 20)], [],
                                                                         [(30, 40)]]
    assert parse_tgi_prompt("What is 2+2?", lambda url: pytest.fail()) == [
        Turn("user", ("What is 2+2?",))]


# -- errors ---------------------------------------------------------------------------------


def bad_image_url(kind: str, photos: str) -> str:
    trevi = (IMAGES / "trevi.jpeg").read_bytes()
    return {
        "heic-url": f"{photos}/iphone.heic",
        "heic-data-uri": data_uri(HEIC_BYTES, "image/heic"),
        "truncated-url": f"{photos}/truncated.jpeg",
        "truncated-data-uri": data_uri(trevi[: len(trevi) // 2]),
        "404-url": f"{photos}/missing.jpeg",
        "refused-url": "http://127.0.0.1:9/photo.jpeg",
        "bad-base64": "data:image/jpeg;base64,@@@",
        "ftp-url": "ftp://127.0.0.1/photo.jpeg",
    }[kind]


BAD_IMAGES = ["heic-url", "heic-data-uri", "truncated-url", "truncated-data-uri", "404-url",
              "refused-url", "bad-base64", "ftp-url"]


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_bad_image_is_a_422_on_the_container(server: ModelServer, photos: str, kind: str) -> None:
    status, body = post(server, tgi_request(bad_image_url(kind, photos)))
    assert status == 422
    assert body["error_type"] == "validation"
    assert body["error"].startswith("Input validation error: ")
    assert any(word in body["error"] for word in ("cannot fetch", "cannot decode", "image URL",
                                                  "base64"))


@pytest.mark.parametrize("kind", ["heic-url", "truncated-data-uri", "404-url"])
def test_bad_image_is_a_model_error_on_the_runtime_path(
    server: ModelServer, runtime: Any, photos: str, kind: str
) -> None:
    with pytest.raises(runtime.exceptions.ModelError) as caught:
        invoke(runtime, chat_request(bad_image_url(kind, photos)))
    response = caught.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 422
    assert json.loads(response["OriginalMessage"])["error_type"] == "validation"
    assert response["Error"]["Message"].startswith("Received client error (422) from primary")
    assert response["LogStreamArn"] == (
        f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/{ENDPOINT}")


def test_heic_message_says_what_to_do(server: ModelServer, photos: str) -> None:
    _, body = post(server, tgi_request(bad_image_url("heic-url", photos)))
    assert "HEIC" in body["error"] and "JPEG" in body["error"]
    assert "/iphone.heic" in body["error"]


def test_presigned_query_strings_stay_out_of_messages(server: ModelServer, photos: str) -> None:
    _, body = post(server, tgi_request(f"{photos}/missing.jpeg?X-Amz-Signature=secret"))
    assert "404" in body["error"] and "secret" not in body["error"]


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "Failed to parse the request body as JSON"),
    ({"prompt": "hi"}, "missing field `inputs`"),
    ({"inputs": ""}, "`inputs` must be a non-empty string"),
    ({"inputs": "hi", "parameters": {"temperature": 0}}, "`temperature` must be strictly"),
    ({"inputs": "hi", "parameters": {"top_p": 1.0}}, "`top_p` must be > 0.0 and < 1.0"),
    ({"inputs": "hi", "parameters": {"max_new_tokens": 0}}, "`max_new_tokens` must be"),
    ({"inputs": "hi", "parameters": {"max_new_tokens": "many"}}, "must be an integer"),
    ({"inputs": "hi", "parameters": {"stop": list("abcde")}}, "up to 4 stop sequences"),
    ({"messages": []}, "`messages` must be a non-empty list"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "role must be"),
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "unsupported content"),
])
def test_bad_requests_are_422(server: ModelServer, body: Any, message: str) -> None:
    status, answer = post(server, body)
    assert status == 422
    assert answer["error_type"] == "validation"
    assert message in answer["error"]


def test_json_content_type_is_required(server: ModelServer, runtime: Any) -> None:
    status, answer = post(server, {"inputs": "hi"}, content_type="text/plain")
    assert status == 415 and "application/json" in answer["error"]
    with pytest.raises(ClientError) as caught:
        invoke(runtime, {"inputs": "hi"}, ContentType="image/jpeg")
    assert caught.value.response["OriginalStatusCode"] == 415
    # Without any ContentType the runtime path accepts the body (and logs a warning).
    response = runtime.invoke_endpoint(EndpointName=ENDPOINT, Body=json.dumps({"inputs": "hi"}))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_payload_over_the_limit_is_413(photos: str) -> None:
    """TGI's router refuses it before any handler: 413, axum's plain-text message."""
    request = tgi_request(data_uri((IMAGES / "trevi.jpeg").read_bytes()))
    with ModelServer(payload_limit=100_000) as server:
        req = urllib.request.Request(server.url + "/invocations", data=json.dumps(request).encode(),
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(req, timeout=30)
    assert caught.value.code == 413
    assert caught.value.headers["Content-Type"].startswith("text/plain")
    assert caught.value.read() == b"Failed to buffer the request body: length limit exceeded"


class BrokenBackend(Backend):
    name = "broken"
    description = "a backend that always fails"
    thread_safe = True

    def generate(self, conversation: Sequence[Turn], params: GenerationParams) -> str:
        raise RuntimeError("CUDA out of memory")


def test_backend_failure_is_a_generation_error() -> None:
    with ModelServer(BrokenBackend()) as server:
        status, body = post(server, {"inputs": "hi"})
        with pytest.raises(ClientError) as caught:
            invoke(runtime_client(server), {"inputs": "hi"})
    assert status == 424
    assert body == {"error": "Request failed during generation: CUDA out of memory",
                    "error_type": "generation"}
    assert caught.value.response["Error"]["Code"] == "ModelError"
    assert caught.value.response["OriginalStatusCode"] == 424


def test_unknown_endpoint_is_a_validation_error(server: ModelServer, runtime: Any) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(runtime, {"inputs": "hi"}, endpoint="Idefics-2023-10-01")
    error = caught.value.response
    assert error["Error"]["Code"] == "ValidationError"
    assert error["Error"]["Message"] == (
        "Endpoint Idefics-2023-10-01 of account 123456789012 not found.")
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_endpoint_names_are_unquoted_and_any_name_works_by_default() -> None:
    with ModelServer() as server:
        invoke(runtime_client(server), {"inputs": "hi"}, endpoint="odd name:1")
        assert server.calls[0]["endpoint"] == "odd name:1"


def test_stopped_server_is_down() -> None:
    server = ModelServer().start()
    url = server.url
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/ping", timeout=5)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url


# -- fault injection ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [
    (424, "ModelError"), (500, "InternalFailure"), (503, "ServiceUnavailable"),
    (429, "ThrottlingException"),
])
def test_injected_failures(server: ModelServer, runtime: Any, status: int, code: str) -> None:
    server.faults.fail(n=2, status=status)
    for _ in range(2):
        with pytest.raises(ClientError) as caught:
            invoke(runtime, {"inputs": "hi"})
        assert caught.value.response["Error"]["Code"] == code
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert invoke(runtime, {"inputs": "hi"})  # n=2 used up: back to normal
    assert [call["status"] for call in server.calls] == [status, status, 200]


def test_unsupported_fault_status_is_refused(server: ModelServer) -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        server.faults.fail(status=404)


@pytest.mark.parametrize(("status", "retried"), [
    (424, False), (500, True), (503, True), (429, True),
])
def test_what_botocore_standard_retries_do(
    server: ModelServer, status: int, retried: bool
) -> None:
    client = runtime_client(server, retries={"mode": "standard", "total_max_attempts": 2})
    server.faults.fail(n=1, status=status)
    if retried:
        assert invoke(client, {"inputs": "hi"})
    else:
        with pytest.raises(client.exceptions.ModelError):
            invoke(client, {"inputs": "hi"})
    assert [call["status"] for call in server.calls] == ([status, 200] if retried else [status])


def test_dropped_connection(server: ModelServer, runtime: Any) -> None:
    server.faults.drop()
    with pytest.raises(ConnectionClosedError):
        invoke(runtime, {"inputs": "hi"})
    assert invoke(runtime, {"inputs": "hi"})
    assert [call["status"] for call in server.calls] == [None, 200]


def test_dropped_connection_is_retried_by_default(server: ModelServer) -> None:
    server.faults.drop()
    client = boto3.client("sagemaker-runtime", endpoint_url=server.url)  # default retries
    assert invoke(client, {"inputs": "hi"})
    assert [call["status"] for call in server.calls] == [None, 200]


def test_delay_past_the_read_timeout(server: ModelServer, runtime: Any) -> None:
    client = runtime_client(server, read_timeout=0.3)
    server.faults.delay(3.0, n=1)
    with pytest.raises(ReadTimeoutError):
        invoke(client, {"inputs": "hi"})
    assert invoke(runtime, {"inputs": "hi"})
    assert server.faults.delayed == 1  # only one request was delayed


def test_delay_for_all_requests_until_cleared(server: ModelServer, runtime: Any) -> None:
    server.faults.delay(0.2)
    for _ in range(2):
        started = time.perf_counter()
        invoke(runtime, {"inputs": "hi"})
        assert time.perf_counter() - started >= 0.2  # a lower bound: no machine beats it
    server.faults.clear()
    invoke(runtime, {"inputs": "hi"})
    assert server.faults.delayed == 0 and len(server.calls) == 3


def test_a_held_request_stays_in_flight_until_released(server: ModelServer) -> None:
    """The hold lets a test decide when an answer comes, without a timer to race."""
    client = runtime_client(server)
    hold = server.faults.hold(n=1)
    answers: list[Any] = []
    first = threading.Thread(target=lambda: answers.append(invoke(client, {"inputs": "hi"})))
    first.start()
    assert hold.arrived.wait(30)
    assert answers == [] and server.calls == []
    assert invoke(client, {"inputs": "hi"})  # n=1: the next request is not held
    hold.release()
    first.join(30)
    assert len(answers) == 1 and hold.held == 1 and len(server.calls) == 2


def test_faults_do_not_touch_the_container_path(server: ModelServer) -> None:
    server.faults.fail(status=503)
    assert post(server, {"inputs": "hi"})[0] == 200


# -- concurrency ---------------------------------------------------------------------------------


class CountingBackend(Backend):
    """Records how many generate calls overlap; waits a little in each."""

    name = "counting"
    description = "test backend"

    def __init__(self, thread_safe: bool, wait: Any) -> None:
        self.thread_safe = thread_safe
        self.wait = wait
        self.active = self.most_active = 0
        self.lock = threading.Lock()

    def generate(self, conversation: Sequence[Turn], params: GenerationParams) -> str:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            self.wait()
            return f" answer to {conversation[-1].text}"
        finally:
            with self.lock:
                self.active -= 1


def ask_concurrently(server: ModelServer, count: int) -> list[str]:
    client = runtime_client(server, max_pool_connections=count)

    def ask(number: int) -> str:
        return invoke(client, {"inputs": f"question {number}",
                               "parameters": {"return_full_text": False}})[0]["generated_text"]

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(ask, range(count)))


def test_requests_run_in_parallel_on_a_thread_safe_backend() -> None:
    barrier = threading.Barrier(5, timeout=10)  # passes only if 5 requests are in at once
    backend = CountingBackend(thread_safe=True, wait=barrier.wait)
    with ModelServer(backend) as server:
        answers = ask_concurrently(server, 20)
    assert answers == [f" answer to question {n}" for n in range(20)]
    assert backend.most_active >= 5


def test_a_backend_that_is_not_thread_safe_is_queued_not_dropped() -> None:
    backend = CountingBackend(thread_safe=False, wait=lambda: time.sleep(0.01))
    with ModelServer(backend) as server:
        answers = ask_concurrently(server, 20)
        calls = server.calls
    assert answers == [f" answer to question {n}" for n in range(20)]
    assert backend.most_active == 1
    assert len(calls) == 20 and {call["status"] for call in calls} == {200}


# -- the stand-in --------------------------------------------------------------------------------


def stand_in_answer(image: Image.Image | None, **params: Any) -> str:
    parts = ("Describe", image) if image is not None else ("Describe",)
    return StandInBackend().generate([Turn("user", parts)], generation_params(**params))


def open_photo(name: str) -> Image.Image:
    image = Image.open(IMAGES / name)
    image.load()
    return image


def test_stand_in_is_deterministic_and_tells_photos_apart() -> None:
    names = sorted(path.name for path in IMAGES.glob("*.jpeg"))
    answers = [stand_in_answer(open_photo(name)) for name in names]
    assert answers == [stand_in_answer(open_photo(name)) for name in names]
    assert len(set(answers)) == len(names)


def test_stand_in_is_labelled_and_says_how_to_get_a_model() -> None:
    for answer in (stand_in_answer(open_photo("trevi.jpeg")), stand_in_answer(None),
                   stand_in_answer(open_photo("trevi.jpeg"), max_new_tokens=1)):
        assert answer.startswith(f" {STAND_IN_LABEL}")
    full = stand_in_answer(open_photo("trevi.jpeg"))
    assert "pip install -e '.[model]'" in full and "VT_LOCAL_MODEL" in full
    # Three sentences after the label, as the task asks: what, a story, where to eat.
    assert full.removeprefix(f" {STAND_IN_LABEL}").count(". ") + 1 == 3
    assert "User:" not in full  # must not contain a stop sequence by itself


def test_stand_in_reads_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 400x300, shown rotated a quarter turn: 300x400
    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), "red").save(buffer, "JPEG", exif=exif)
    assert "portrait photo of 300x400 pixels, mostly red" in stand_in_answer(Image.open(buffer))


def test_stand_in_describes_a_12_megapixel_photo() -> None:
    # How fast it does so is a benchmark (benchmarks/local_mode.py), not a test.
    big = Image.open(io.BytesIO(_jpeg(open_photo("neuschwanstein.jpeg").resize((4000, 3000)))))
    big.load()  # the server hands over decoded images
    answer = stand_in_answer(big)
    assert "landscape photo of 4000x3000 pixels" in answer


def test_importing_the_server_does_not_import_torch() -> None:
    code = ("import sys, visual_tourism.local.model_server; "
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("status", [429, 503])
def test_an_instance_over_capacity_refuses_the_extra_request(
    server: ModelServer, photos: str, status: int
) -> None:
    """One instance with room for one request: a second one at the same time is refused."""
    server.capacity, server.overload_status = 1, status
    client = runtime_client(server)
    request = tgi_request(f"{photos}/trevi.jpeg")
    hold = server.faults.hold(n=1)  # the first request keeps the instance busy until released
    first = threading.Thread(target=invoke, args=(client, request))
    first.start()
    assert hold.arrived.wait(30)
    code = "ModelError" if status == 429 else "ServiceUnavailable"
    try:
        with pytest.raises(client.exceptions.ClientError) as caught:
            invoke(client, request)
    finally:
        hold.release()
    first.join()
    response = caught.value.response
    assert response["Error"]["Code"] == code
    if status == 429:  # TGI's own refusal, passed on by SageMaker
        assert response["OriginalStatusCode"] == 429
        assert json.loads(response["OriginalMessage"])["error_type"] == "overloaded"
    assert (server.overloads, server.peak_in_flight) == (1, 1)
    assert invoke(client, request)[0]["generated_text"]  # room again once the first is done


# -- constrained generation: grammar (TGI) and response_format (chat) ----------------------------


def _post(server: ModelServer, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(f"{server.url}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    """The subset of JSON Schema presets_schema.structured_schema() uses."""
    kinds = {"string": str, "boolean": bool, "object": dict}
    if not isinstance(value, kinds[schema["type"]]):
        return False
    if schema["type"] != "object":
        return True
    properties = schema["properties"]
    return (set(schema["required"]) <= set(value) and set(value) <= set(properties)
            and all(_valid(value[k], properties[k]) for k in value))


def _limits(name: str) -> Any:
    from visual_tourism.profiles import PROFILES

    return PROFILES[name].limits


def test_stand_in_follows_a_json_grammar_and_the_answer_language() -> None:
    from photo_handler import presets_schema

    schema = presets_schema.structured_schema()
    prompt = (f"User:Describe. {presets_schema.LANGUAGE_LINE.format(language='French')}"
              "<end_of_utterance>\nAssistant:")
    for limits in (None, _limits("idefics-9b-instruct")):
        with ModelServer(limits=limits) as server:
            status, body = _post(server, {"inputs": prompt, "parameters": {
                "max_new_tokens": 300, "grammar": {"type": "json", "value": schema}}})
        assert status == 200, body
        answer = json.loads(body[0]["generated_text"].removeprefix(prompt))
        assert _valid(answer, schema)
        assert answer["place"] == "(stand-in: no model)" and answer["recognised"] is False
        assert "[stand-in answer in French]" in answer["description"]
    # Without the grammar: free text, in the language asked for, labelled.
    text = StandInBackend().generate(
        [Turn("user", (f"Describe. {presets_schema.LANGUAGE_LINE.format(language='Japanese')}",))],
        generation_params(max_new_tokens=50))
    assert STAND_IN_LABEL in text and "[stand-in answer in Japanese]" in text


def test_a_constrained_answer_longer_than_max_new_tokens_is_cut_like_a_models() -> None:
    from photo_handler import presets_schema

    text = StandInBackend().generate([Turn("user", ("Describe",))], generation_params(
        max_new_tokens=5, grammar={"type": "json", "schema": presets_schema.structured_schema()}))
    with pytest.raises(ValueError):
        json.loads(text)


@pytest.mark.parametrize("profile, response_format, status", [
    # TGI 3.3.6: its own shape; OpenAI's has no `value` and is refused.
    ("qwen2.5-vl-7b-instruct", {"type": "json_object", "value": "SCHEMA"}, 200),
    ("qwen2.5-vl-7b-instruct", {"type": "json_schema",
                                "value": {"name": "answer", "schema": "SCHEMA"}}, 200),
    ("qwen2.5-vl-7b-instruct", {"type": "json_schema",
                                "json_schema": {"name": "answer", "schema": "SCHEMA"}}, 422),
    ("qwen2.5-vl-7b-instruct", {"type": "json", "value": {"type": "object"}}, 422),
    # vLLM: OpenAI's shapes.
    ("smolvlm-instruct", {"type": "json_schema",
                          "json_schema": {"name": "answer", "schema": "SCHEMA"}}, 200),
    ("smolvlm-instruct", {"type": "json_schema"}, 400),
    ("smolvlm-instruct", {"type": "grammar"}, 400),
    # TGI 1.4.5's chat route has no response_format: ignored (free text).
    ("idefics-9b-instruct", {"type": "json_schema", "json_schema": {}}, 200),
])
def test_response_format_is_taken_as_each_container_takes_it(
    profile: str, response_format: dict, status: int,
) -> None:
    from photo_handler import presets_schema

    schema = presets_schema.structured_schema()
    response_format = json.loads(json.dumps(response_format).replace('"SCHEMA"',
                                                                     json.dumps(schema)))
    with ModelServer(limits=_limits(profile)) as server:
        got, body = _post(server, {"messages": [{"role": "user", "content": "Describe"}],
                                   "max_tokens": 300, "response_format": response_format})
    assert got == status, body
    if status == 200:
        content = body["choices"][0]["message"]["content"]
        if profile == "idefics-9b-instruct":
            assert STAND_IN_LABEL in content and not content.lstrip().startswith("{")
        else:
            assert _valid(json.loads(content), schema)
    elif status == 422:
        assert "value" in json.dumps(body) or "properties" in json.dumps(body)


@pytest.mark.parametrize("version_profile, grammar, status", [
    ("idefics-9b-instruct", {"type": "json_object", "value": {"properties": {}}}, 422),  # 1.4.5
    ("idefics-9b-instruct", {"type": "regex", "value": "[a-z]+"}, 200),
    ("idefics-9b-instruct", {"type": "json"}, 422),
    (None, {"type": "json", "value": {"type": "object"}}, 422),  # 3.x: needs properties
    (None, {"type": "json_object", "value": {"properties": {"a": {"type": "string"}}}}, 200),
])
def test_tgi_grammar_is_checked_as_the_container_checks_it(
    version_profile: str | None, grammar: dict, status: int,
) -> None:
    limits = _limits(version_profile) if version_profile else None
    with ModelServer(limits=limits) as server:
        got, body = _post(server, {"inputs": "User:Describe<end_of_utterance>\nAssistant:",
                                   "parameters": {"max_new_tokens": 20, "grammar": grammar}})
    assert got == status, body


def test_the_transformers_backend_fills_in_a_flat_schema_or_says_it_cannot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from visual_tourism.local import backends

    class Fake(backends.TransformersBackend):
        """The fill-in logic without a model: each value 'generated' is a fixed text."""

        def __init__(self) -> None:
            self.name = "fake"
            self.prefixes: list[str] = []

        def _inputs(self, conversation: Any, prefix: str = "") -> Any:
            self.prefixes.append(prefix)
            return prefix

        def _run(self, inputs: Any, params: Any, max_new_tokens: int, stops: Any) -> str:
            return 'Rome, "Italy"' if inputs.endswith('"') else " true"

    from photo_handler import presets_schema

    schema = presets_schema.structured_schema()
    backend = Fake()
    text = backend.generate([Turn("user", ("Describe",))], generation_params(
        max_new_tokens=70, grammar={"type": "json", "schema": schema}))
    assert _valid(json.loads(text), schema)
    assert json.loads(text)["recognised"] is True
    caplog.set_level("WARNING", logger=backends.__name__)
    text = backend.generate([Turn("user", ("Describe",))], generation_params(
        grammar={"type": "regex", "pattern": "[a-z]+"}))
    assert "cannot be constrained locally" in caplog.text and "generating free text" in caplog.text
