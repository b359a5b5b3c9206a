"""TransformersBackend and load_backend with a real (tiny, random) model: no download needed."""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_model import build_tiny_model  # noqa: E402

from visual_tourism.local.backends import (  # noqa: E402
    StandInBackend,
    TransformersBackend,
    Turn,
    cut_at_stop,
    generation_params,
    load_backend,
)
from visual_tourism.local.model_server import ModelServer  # noqa: E402

IMAGES = Path(__file__).resolve().parent.parent / "images"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-idefics3"))


@pytest.fixture(scope="module")
def backend(tiny_model: Path) -> TransformersBackend:
    return TransformersBackend(str(tiny_model))


def data_uri(name: str) -> str:
    return "data:image/jpeg;base64," + base64.b64encode((IMAGES / name).read_bytes()).decode()


def photo(name: str) -> Image.Image:
    image = Image.open(IMAGES / name)
    image.load()
    return image


def test_backend_describes_itself(backend: TransformersBackend, tiny_model: Path) -> None:
    assert backend.description == f"transformers: {tiny_model} on cpu"
    assert backend.thread_safe is False
    assert type(backend.model).__name__ == "Idefics3ForConditionalGeneration"


def test_generation_respects_max_new_tokens(backend: TransformersBackend) -> None:
    conversation = [Turn("user", ("Describe", photo("tour_eiffel.jpeg")))]
    text = backend.generate(conversation, generation_params(max_new_tokens=3))
    # The word-level tokenizer makes one word per token.
    assert 1 <= len(text.split()) <= 3


def test_stop_sequence_ends_the_answer_and_is_kept(backend: TransformersBackend) -> None:
    conversation = [Turn("user", ("Describe", photo("trevi.jpeg")))]
    free = backend.generate(conversation, generation_params(max_new_tokens=8))  # greedy
    stop = free.split()[1]
    stopped = backend.generate(conversation, generation_params(max_new_tokens=8, stop=[stop]))
    assert stopped == cut_at_stop(free, [stop])
    assert stopped.endswith(stop)
    assert len(stopped) < len(free)


def test_one_shot_conversation_with_two_images(backend: TransformersBackend) -> None:
    conversation = [
        Turn("user", ("Describe", photo("trevi.jpeg"))),
        Turn("assistant", ("The Trevi Fountain .",)),
        Turn("user", ("Describe", photo("neuschwanstein.jpeg"))),
    ]
    params = generation_params(max_new_tokens=5, do_sample=True, temperature=0.4, top_p=0.2,
                               top_k=50)
    assert backend.generate(conversation, params).strip()


def test_model_server_answers_both_styles_with_the_model(backend: TransformersBackend) -> None:
    instruction = "Describe in 1 sentence what is in the image."
    prompt = (
        f"User:{instruction}![]({data_uri('trevi.jpeg')})<end_of_utterance>\n"
        "Assistant: The Trevi Fountain is in Rome.<end_of_utterance>\n"
        f"User:{instruction}![]({data_uri('santiago_cathedral.jpeg')})<end_of_utterance>\n"
        "Assistant:"
    )
    with ModelServer(backend) as server:
        runtime = boto3.client("sagemaker-runtime", endpoint_url=server.url)
        response = runtime.invoke_endpoint(
            EndpointName="visual-tourism-endpoint", ContentType="application/json",
            Body=json.dumps({"inputs": prompt, "parameters": {
                "max_new_tokens": 6, "do_sample": True, "top_p": 0.2, "temperature": 0.4,
                "top_k": 50, "stop": ["User:", "<end_of_utterance>"],
                "return_full_text": False}}),
        )
        tgi = json.loads(response["Body"].read())

        chat_request = {
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": instruction},
                {"type": "image_url", "image_url": {"url": data_uri("tour_eiffel.jpeg")}},
            ]}],
            "max_tokens": 6,
        }
        request = urllib.request.Request(
            f"{server.url}/invocations", data=json.dumps(chat_request).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            chat = json.load(answer)
        calls = server.calls

    assert isinstance(tgi, list) and list(tgi[0]) == ["generated_text"]
    assert tgi[0]["generated_text"].strip()
    assert not tgi[0]["generated_text"].startswith("User:")  # return_full_text false
    assert chat["object"] == "chat.completion"
    assert chat["model"] == backend.name
    assert chat["choices"][0]["message"]["content"].strip()
    assert [(c["style"], c["images"], c["status"]) for c in calls] == [
        ("tgi", 2, 200), ("messages", 1, 200)]


def test_load_backend_from_a_local_folder(tiny_model: Path) -> None:
    backend, reason = load_backend(str(tiny_model))
    assert isinstance(backend, TransformersBackend)
    assert "local path" in reason


def test_load_backend_reads_the_environment(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VT_LOCAL_MODEL", str(tiny_model))
    backend, _ = load_backend()
    assert isinstance(backend, TransformersBackend)
    monkeypatch.setenv("VT_LOCAL_MODEL", "stand-in")
    assert isinstance(load_backend()[0], StandInBackend)


def test_unknown_model_falls_back_to_the_stand_in_quickly() -> None:
    # Not a folder, not cached; with no internet the Hub is unreachable (with internet the
    # download fails: the repository does not exist). Either way: the stand-in, in seconds.
    started = time.perf_counter()
    backend, reason = load_backend("some/unknown-model")
    assert time.perf_counter() - started < 10
    assert isinstance(backend, StandInBackend)
    assert "some/unknown-model" in reason and "pip install -e '.[model]'" in reason


def test_offline_hub_falls_back_without_trying_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("visual_tourism.local.backends._hub_reachable",
                        lambda *a: pytest.fail("must not touch the network when offline"))
    backend, reason = load_backend("some/unknown-model")
    assert isinstance(backend, StandInBackend)
    assert "HF_HUB_OFFLINE" in reason


def test_missing_transformers_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    backend, reason = load_backend("HuggingFaceTB/SmolVLM-256M-Instruct")
    assert isinstance(backend, StandInBackend)
    assert "torch/transformers cannot be imported" in reason
