"""The local model server enforces each deployed container's limits, as that container does.

Requests shaped as the handler builds them (the one-shot prompt, the profile's request style)
go through the real SageMaker runtime path (boto3 ``invoke_endpoint``) to an endpoint per
profile; the server learns each endpoint's ContainerLimits from ``limits_for`` (local mode reads
them from the SageMaker model ``up`` created, see the last tests). Over-budget requests,
settings the container refuses, a payload over its limit and images it cannot fetch all come
back with that container's status and body, wrapped by SageMaker as a 424 ModelError.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from PIL import Image

from photo_handler import serving_limits
from visual_tourism import stack
from visual_tourism.aws import Aws
from visual_tourism.config import EXAMPLE_ANSWER, INSTRUCTION, load_config
from visual_tourism.local.model_server import ModelServer
from visual_tourism.local.stack import LocalStack, container_limits
from visual_tourism.profiles import PROFILES, STYLE_TGI

IMAGES = Path(__file__).resolve().parent.parent / "images"

# One endpoint per profile (endpoint names may not contain dots).
# The hosted profiles (a container on an endpoint); managed ones: tests/test_bedrock.py.
ENDPOINTS = {name.replace(".", "-"): profile for name, profile in PROFILES.items()
             if not profile.managed}
IDEFICS, QWEN_TGI = "idefics-9b-instruct", "qwen2-5-vl-7b-instruct"
SMOLVLM, QWEN_VLLM = "smolvlm-instruct", "qwen2-5-vl-7b-instruct-vllm"
TGI_ENDPOINTS, VLLM_ENDPOINTS = [IDEFICS, QWEN_TGI], [SMOLVLM, QWEN_VLLM]
GENERATION = {"do_sample": True, "top_p": 0.2, "temperature": 0.4, "top_k": 50,
              "max_new_tokens": 512}
TGI_STOP = ["User:", "<end_of_utterance>"]
QWEN_TOTAL = ENDPOINTS[QWEN_TGI].limits.max_total_tokens


# -- requests as the handler builds them ----------------------------------------------------------


def jpeg_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def photo(name: str, size: tuple[int, int] | None = None) -> Image.Image:
    image = Image.open(IMAGES / name)
    image.load()
    return image.resize(size) if size else image


def build_request(endpoint: str, example_url: str, image_url: str, **generation: Any) -> dict:
    """The handler's request body for this endpoint's profile (request.build_request)."""
    params = {**GENERATION, **generation}
    if ENDPOINTS[endpoint].request_style == STYLE_TGI:
        prompt = (f"User:{INSTRUCTION}![]({example_url})<end_of_utterance>\n"
                  f"Assistant: {EXAMPLE_ANSWER}<end_of_utterance>\n"
                  f"User:{INSTRUCTION}![]({image_url})<end_of_utterance>\nAssistant:")
        return {"inputs": prompt,
                "parameters": {"return_full_text": False, "stop": list(TGI_STOP), **params}}

    def user(url: str) -> dict:
        return {"role": "user", "content": [{"type": "text", "text": INSTRUCTION},
                                            {"type": "image_url", "image_url": {"url": url}}]}

    body: dict[str, Any] = {"messages": [
        user(example_url), {"role": "assistant", "content": EXAMPLE_ANSWER}, user(image_url)]}
    body.update({chat: params[name] for name, chat in serving_limits.CHAT_PARAMETERS.items()
                 if name in params})
    return body


def small_request(endpoint: str, **generation: Any) -> dict:
    """Within every profile's budget: both photos at 448x336 (768 tokens on TGI's router)."""
    return build_request(endpoint, jpeg_uri(photo("trevi.jpeg", (448, 336))),
                         jpeg_uri(photo("tour_eiffel.jpeg", (336, 448))), **generation)


def expected_input_tokens(endpoint: str, request: dict) -> int:
    """The request's input tokens by serving_limits' accounting, from the test's side."""
    profile = ENDPOINTS[endpoint]
    if "inputs" in request:  # the prompt's text without its ![](...) images
        prompt, pieces, sizes = request["inputs"], [], []
        while "![](" in prompt:
            before, _, rest = prompt.partition("![](")
            url, _, prompt = rest.partition(")")
            pieces.append(before)
            sizes.append(_size(url))
        texts, messages = ["".join(pieces) + prompt], 0
    else:
        texts, sizes = [], []
        for message in request["messages"]:
            content = message["content"]
            for part in [content] if isinstance(content, str) else content:
                if isinstance(part, str):
                    texts.append(part)
                elif part["type"] == "text":
                    texts.append(part["text"])
                else:
                    sizes.append(_size(part["image_url"]["url"]))
        messages = len(request["messages"])
    return serving_limits.request_budget(profile.limits, texts, sizes, 0,
                                         messages=messages).input_tokens


def _size(uri: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size


# -- the server and the runtime client ----------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    def limits_for(name: str) -> serving_limits.ContainerLimits | None:
        return ENDPOINTS[name].limits if name in ENDPOINTS else None

    with ModelServer(endpoint_exists=lambda name: name in ENDPOINTS or name == "unknown",
                     limits_for=limits_for, fetch_origins=["http://127.0.0.1:9"]) as started:
        yield started


@pytest.fixture(scope="module")
def runtime(server: ModelServer) -> Any:
    return boto3.client("sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def invoke(runtime: Any, endpoint: str, body: dict | bytes) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body)
    response = runtime.invoke_endpoint(EndpointName=endpoint, Body=data,
                                       ContentType="application/json")
    return json.loads(response["Body"].read())


def refused(runtime: Any, endpoint: str, body: dict | bytes) -> tuple[int, Any]:
    """(the container's status, its body) from SageMaker's ModelError."""
    with pytest.raises(runtime.exceptions.ModelError) as caught:
        invoke(runtime, endpoint, body)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424  # SageMaker's wrapping
    status, original = error["OriginalStatusCode"], error["OriginalMessage"]
    assert error["Error"]["Message"].startswith(f"Received client error ({status}) from primary")
    try:
        return status, json.loads(original)
    except ValueError:
        return status, original


def tgi_validation(message: str) -> dict:
    return {"error": f"Input validation error: {message}", "error_type": "validation"}


def vllm_error(message: str) -> dict:
    return {"object": "error", "message": message, "type": "BadRequestError", "param": None,
            "code": 400}


# -- within limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_a_request_within_the_limits_is_answered(runtime: Any, endpoint: str) -> None:
    answer = invoke(runtime, endpoint, small_request(endpoint))
    text = (answer[0]["generated_text"] if isinstance(answer, list)
            else answer["choices"][0]["message"]["content"])
    assert "336x448 pixels" in text


def test_the_default_profile_counts_one_token_per_image_whatever_its_size(runtime: Any) -> None:
    """Idefics on TGI 1.4.5: full-size photos cost 1 token each, so they pass."""
    request = build_request(IDEFICS, jpeg_uri(photo("trevi.jpeg")),
                            jpeg_uri(photo("tour_eiffel.jpeg")))
    assert expected_input_tokens(IDEFICS, request) < 1536
    assert invoke(runtime, IDEFICS, request)[0]["generated_text"]


# -- token budgets --------------------------------------------------------------------------------


def test_full_size_photos_are_over_the_qwen_tgi_budget(runtime: Any) -> None:
    """TGI 3.3.6 counts a Qwen2.5-VL image as h*w/14^2 on the image as sent: 422."""
    request = build_request(QWEN_TGI, jpeg_uri(photo("trevi.jpeg")),
                            jpeg_uri(photo("tour_eiffel.jpeg")))
    tokens = expected_input_tokens(QWEN_TGI, request)
    assert tokens > QWEN_TOTAL - 512  # 3,985 + 6,044 image tokens and the text
    status, body = refused(runtime, QWEN_TGI, request)
    assert status == 422
    assert body == tgi_validation(
        f"`inputs` tokens + `max_new_tokens` must be <= {QWEN_TOTAL}. Given: {tokens} `inputs` "
        "tokens and 512 `max_new_tokens`")


def test_one_too_large_upload_is_refused_and_the_same_photo_sized_to_the_budget_is_not(
    runtime: Any,
) -> None:
    example = jpeg_uri(photo("trevi.jpeg", (600, 326)))  # ~1,000 tokens
    big = Image.new("RGB", (3000, 2000), (90, 120, 200))  # 6 MP: 30,612 tokens
    status, body = refused(runtime, QWEN_TGI, build_request(QWEN_TGI, example, jpeg_uri(big)))
    assert status == 422 and f"`inputs` tokens + `max_new_tokens` must be <= {QWEN_TOTAL}" in (
        body["error"])
    fitted = serving_limits.fit_image(3000, 2000, 7000, "qwen2-vl-router")
    assert fitted is not None
    request = build_request(QWEN_TGI, example, jpeg_uri(big.resize(fitted)))
    assert invoke(runtime, QWEN_TGI, request)["choices"][0]["message"]["content"]


def test_a_12_megapixel_photo_is_over_the_vllm_qwen_budget(runtime: Any) -> None:
    """vLLM counts the processor's tokens (smart_resize, 28x28 cells): 15,303 > 8,192."""
    big = Image.new("RGB", (4000, 3000), (200, 180, 90))
    request = build_request(QWEN_VLLM, jpeg_uri(photo("trevi.jpeg", (448, 336))), jpeg_uri(big))
    tokens = expected_input_tokens(QWEN_VLLM, request)
    context = ENDPOINTS[QWEN_VLLM].limits.max_total_tokens
    assert tokens + 512 > context
    status, body = refused(runtime, QWEN_VLLM, request)
    assert status == 400
    assert body == vllm_error(
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{tokens + 512} tokens ({tokens} in the messages, 512 in the completion). Please "
        "reduce the length of the messages or completion.")


def test_smolvlm_caps_an_image_at_a_fixed_cost(runtime: Any) -> None:
    """Idefics3/SmolVLM resizes to 1536 px first: a 12 MP photo costs what a 2 MP one does."""
    big = jpeg_uri(Image.new("RGB", (4000, 3000), (20, 160, 90)))
    assert invoke(runtime, SMOLVLM, build_request(SMOLVLM, big, big))["choices"]


def test_input_limit_is_checked_after_the_total_as_tgi_does() -> None:
    limits = serving_limits.ContainerLimits(
        engine="tgi", container_version="3.3.6", max_input_tokens=100, max_total_tokens=1000,
        payload_limit_bytes=2_000_000, max_stop_sequences=4, image_formula="qwen2-vl-router")
    with ModelServer(limits=limits) as direct:
        runtime = boto3.client("sagemaker-runtime", endpoint_url=direct.url,
                               region_name="us-east-1")
        text = "a" * 200
        tokens = 200 + serving_limits.TEMPLATE_TOKENS
        status, body = refused(runtime, "any", {"inputs": text,
                                                "parameters": {"max_new_tokens": 10}})
        assert (status, body) == (422, tgi_validation(
            f"`inputs` must have less than 100 tokens. Given: {tokens}"))
        status, body = refused(runtime, "any", {"inputs": text,
                                                "parameters": {"max_new_tokens": 900}})
        assert body == tgi_validation(
            f"`inputs` tokens + `max_new_tokens` must be <= 1000. Given: {tokens} `inputs` "
            "tokens and 900 `max_new_tokens`")


# -- generation parameters ---------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_five_stop_sequences(runtime: Any, endpoint: str) -> None:
    request = small_request(endpoint, stop=["User:", "<end_of_utterance>", "a", "b", "c"])
    if endpoint in VLLM_ENDPOINTS:  # vLLM has no limit on stop sequences
        assert invoke(runtime, endpoint, request)["choices"]
        return
    assert ENDPOINTS[endpoint].limits.max_stop_sequences == 4  # TGI's default
    status, body = refused(runtime, endpoint, request)
    assert (status, body) == (422, tgi_validation(
        "`stop` supports up to 4 stop sequences. Given: 5"))


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_top_p_of_one(runtime: Any, endpoint: str) -> None:
    request = small_request(endpoint, top_p=1.0)
    if endpoint in VLLM_ENDPOINTS:  # vLLM: 0 < top_p <= 1
        assert invoke(runtime, endpoint, request)["choices"]
        return
    status, body = refused(runtime, endpoint, request)
    assert (status, body) == (422, tgi_validation("`top_p` must be > 0.0 and < 1.0"))


def test_temperature_zero_is_refused_in_the_prompt_style_and_greedy_in_chat(
    runtime: Any,
) -> None:
    status, body = refused(runtime, IDEFICS, small_request(IDEFICS, temperature=0))
    assert (status, body) == (422, tgi_validation("`temperature` must be strictly positive"))
    for endpoint in (QWEN_TGI, QWEN_VLLM):
        assert invoke(runtime, endpoint, small_request(endpoint, temperature=0))["choices"]


@pytest.mark.parametrize(("generation", "message"), [
    ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5."),
    ({"temperature": -0.5}, "temperature must be non-negative, got -0.5."),
    ({"max_new_tokens": 0}, "max_tokens must be at least 1, got 0."),
    ({"frequency_penalty": 3}, "frequency_penalty must be in [-2, 2], got 3.0."),
])
def test_vllm_refuses_bad_settings_with_its_400(
    runtime: Any, generation: dict, message: str,
) -> None:
    status, body = refused(runtime, SMOLVLM, small_request(SMOLVLM, **generation))
    assert (status, body) == (400, vllm_error(message))


def test_vllm_takes_at_most_limit_mm_per_prompt_images(runtime: Any) -> None:
    request = small_request(SMOLVLM)
    request["messages"][0]["content"].append(request["messages"][2]["content"][1])  # 3 images
    assert ENDPOINTS[SMOLVLM].limits.max_images == 2
    status, body = refused(runtime, SMOLVLM, request)
    assert (status, body) == (400, vllm_error(
        "At most 2 image(s) may be provided in one request."))


def test_vllm_answers_a_malformed_request_with_its_400(runtime: Any) -> None:
    status, body = refused(runtime, QWEN_VLLM, {"messages": [{"role": "robot", "content": "x"}]})
    assert status == 400 and body["type"] == "BadRequestError" and "role" in body["message"]


# -- payload size -------------------------------------------------------------------------------


def test_payload_limit_is_the_endpoints_own(runtime: Any) -> None:
    """2,050,000 bytes: over TGI 3.3.6's PAYLOAD_LIMIT (2,000,000), under 1.4.5's 2 MiB."""
    assert (ENDPOINTS[QWEN_TGI].limits.payload_limit_bytes < 2_050_000
            < ENDPOINTS[IDEFICS].limits.payload_limit_bytes)
    body = json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": 5},
                       "padding": "x" * 2_050_000}).encode()
    status, original = refused(runtime, QWEN_TGI, body)
    assert (status, original) == (413, "Failed to buffer the request body: length limit exceeded")
    assert invoke(runtime, IDEFICS, body)[0]["generated_text"]


# -- images the container cannot fetch or decode -------------------------------------------------


def cut_jpeg_uri() -> str:
    data = (IMAGES / "trevi.jpeg").read_bytes()
    return "data:image/jpeg;base64," + base64.b64encode(data[: len(data) // 2]).decode()


@pytest.mark.parametrize("kind", ["refused-url", "cut-jpeg"])
def test_an_image_that_cannot_be_fetched(runtime: Any, kind: str) -> None:
    url = "http://127.0.0.1:9/photo.jpeg" if kind == "refused-url" else cut_jpeg_uri()
    example = jpeg_uri(photo("trevi.jpeg", (448, 336)))
    # TGI 1.4.5 with Idefics fetches in the Python shard: a generation error, 424.
    status, body = refused(runtime, IDEFICS, build_request(IDEFICS, example, url))
    assert status == 424 and body["error_type"] == "generation"
    assert body["error"].startswith("Request failed during generation: Server error: cannot ")
    # TGI 3.3.6 fetches in the router: a validation error, 422.
    status, body = refused(runtime, QWEN_TGI, build_request(QWEN_TGI, example, url))
    assert status == 422 and body["error_type"] == "validation"
    # vLLM: its 400.
    status, body = refused(runtime, QWEN_VLLM, build_request(QWEN_VLLM, example, url))
    assert status == 400 and body["type"] == "BadRequestError"
    assert body["message"].startswith("cannot ")


def test_idefics_validates_before_it_fetches(runtime: Any) -> None:
    """On 1.4.5 a bad setting is found by the router before the shard fetches the image."""
    request = build_request(IDEFICS, "http://127.0.0.1:9/a.jpeg", "http://127.0.0.1:9/b.jpeg",
                            top_p=1.0)
    assert refused(runtime, IDEFICS, request)[0] == 422


# -- no known limits: today's behaviour ---------------------------------------------------------


def test_an_endpoint_without_known_limits_keeps_the_default_rules(runtime: Any) -> None:
    big = jpeg_uri(Image.new("RGB", (4000, 3000)))
    assert invoke(runtime, "unknown", build_request(QWEN_TGI, big, big))["choices"]
    status, body = refused(runtime, "unknown", small_request(SMOLVLM, top_p=1.0))
    assert (status, body["error_type"]) == (422, "validation")  # TGI 3.x rules by default


# -- where local mode reads the limits from ------------------------------------------------------


def test_container_limits_come_from_the_image_and_the_environment() -> None:
    for profile in (p for p in PROFILES.values() if not p.managed):
        uri = profile.image_uri("eu-west-1")
        assert container_limits(uri, profile.container_env()) == profile.limits
    qwen = PROFILES["qwen2.5-vl-7b-instruct"]
    env = {**qwen.container_env(), "MAX_INPUT_TOKENS": "4000", "MAX_TOTAL_TOKENS": "4096",
           "PAYLOAD_LIMIT": "1000000"}
    limits = container_limits(qwen.image_uri("us-east-1"), env)
    assert (limits.max_input_tokens, limits.max_total_tokens, limits.payload_limit_bytes) == (
        4000, 4096, 1_000_000)
    assert limits.image_formula == "qwen2-vl-router"
    vllm = PROFILES["smolvlm-instruct"]
    env = {**vllm.container_env(), "OPTION_MAX_MODEL_LEN": "4096",
           "OPTION_LIMIT_MM_PER_PROMPT": "image=1"}
    limits = container_limits(vllm.image_uri("us-east-1"), env)
    assert (limits.max_total_tokens, limits.max_input_tokens, limits.max_images) == (
        4096, 4095, 1)
    # The same model in another container, or an image no profile uses: nothing known.
    assert container_limits(qwen.image_uri("us-east-1"),
                            {"HF_MODEL_ID": vllm.model_id}) is None
    assert container_limits("123.dkr.ecr.us-east-1.amazonaws.com/other:1", env) is None


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("limits")) as running:
        yield running


def test_up_deploys_a_profile_whose_limits_the_local_endpoint_enforces(
    local: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
) -> None:
    for key, value in local.env.items():
        monkeypatch.setenv(key, value)
    # moto refuses ml.g5.* instance types: the same profile on a g4dn instance.
    cfg = load_config(prefix="t" + os.urandom(3).hex(), state_dir=str(tmp_path / "state"),
                      model_profile="qwen2.5-vl-7b-instruct", instance_type="ml.g4dn.12xlarge")
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)
    try:
        assert local.endpoint_limits(cfg.endpoint_name) == PROFILES[cfg.model_profile].limits
        runtime = boto3.client("sagemaker-runtime")
        assert invoke(runtime, cfg.endpoint_name, small_request(QWEN_TGI))["choices"]
        # Built by hand, as a handler that does not size images would: the full-size photos.
        request = build_request(QWEN_TGI, jpeg_uri(photo("trevi.jpeg")),
                                jpeg_uri(photo("tour_eiffel.jpeg")))
        status, body = refused(runtime, cfg.endpoint_name, request)
        tokens = expected_input_tokens(QWEN_TGI, request)
        assert (status, body) == (422, tgi_validation(
            f"`inputs` tokens + `max_new_tokens` must be <= {QWEN_TOTAL}. Given: {tokens} "
            "`inputs` tokens and 512 `max_new_tokens`"))
        status, body = refused(runtime, cfg.endpoint_name, small_request(QWEN_TGI, top_p=1.0))
        assert status == 422 and "`top_p`" in body["error"]
    finally:
        local.runtime.wait_idle(60)
        stack.down(cfg, aws, delete_bucket=True)


def test_up_with_the_default_profile_gets_idefics_on_tgi_1_4_5(
    local: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
) -> None:
    for key, value in local.env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(prefix="t" + os.urandom(3).hex(), state_dir=str(tmp_path / "state"))
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)
    try:
        assert local.endpoint_limits(cfg.endpoint_name) == PROFILES[cfg.model_profile].limits
        runtime = boto3.client("sagemaker-runtime")
        request = build_request(IDEFICS, jpeg_uri(photo("trevi.jpeg")), cut_jpeg_uri())
        status, body = refused(runtime, cfg.endpoint_name, request)
        assert (status, body["error_type"]) == (424, "generation")
    finally:
        local.runtime.wait_idle(60)
        stack.down(cfg, aws, delete_bucket=True)
