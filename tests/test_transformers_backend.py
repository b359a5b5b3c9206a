"""TransformersBackend and load_backend with a real (tiny, random) model: no download needed."""

from __future__ import annotations

import base64
import json
import logging
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_model import (  # noqa: E402
    IMAGE_SEQ_LEN,
    IMAGE_SIZE,
    SMOLVLM_CHAT_TEMPLATE,
    build_tiny_model,
    build_tiny_smolvlm,
)
from transformers.utils import is_num2words_available, is_torchvision_available  # noqa: E402

from visual_tourism.local import backends  # noqa: E402
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
# Without these, transformers cannot build a SmolVLMProcessor (its video processor needs
# torchvision; the processor itself needs num2words): the project's default install.
SMOLVLM_PROCESSOR_LOADS = is_torchvision_available() and is_num2words_available()


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


def test_unknown_model_falls_back_to_the_stand_in() -> None:
    # Not a folder, not cached; with no internet the Hub is unreachable (with internet the
    # download fails: the repository does not exist). Either way: the stand-in, with why.
    backend, reason = load_backend("some/unknown-model")
    assert isinstance(backend, StandInBackend)
    assert "some/unknown-model" in reason
    # The extra is installed here: the hint names what is missing, not the extra.
    assert "pip install" not in reason
    assert "the model's weights" in reason or "choose another model" in reason


def test_the_hint_names_the_extra_only_when_it_is_missing(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "transformers", None)
        _, reason = load_backend("HuggingFaceTB/SmolVLM-256M-Instruct")
    assert ".venv/bin/pip install -e '.[model]'" in reason
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, reason = load_backend("some/unknown-model")
    assert "the model extra is installed; what is missing is the model's weights" in reason
    assert "VT_LOCAL_MODEL=<folder>" in reason


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


# -- SmolVLM (the default model's architecture) ----------------------------------------------


@pytest.fixture(scope="module", params=["hub", "transformers5"])
def tiny_smolvlm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_smolvlm(tmp_path_factory.mktemp(f"tiny-smolvlm-{request.param}"),
                              layout=request.param)


def test_smolvlm_loads_and_describes_a_photo(
    tiny_smolvlm: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=backends.__name__):
        backend = TransformersBackend(str(tiny_smolvlm))
    assert type(backend.model).__name__ == "SmolVLMForConditionalGeneration"
    processor = backend.processor
    if SMOLVLM_PROCESSOR_LOADS:
        assert type(processor).__name__ == "SmolVLMProcessor"
    else:
        assert type(processor).__name__ == "Idefics3Processor"
        assert "using Idefics3Processor" in caplog.text
        assert "torchvision" in caplog.text.lower() or "num2words" in caplog.text
    # The checkpoint's own settings, not Idefics3's defaults.
    assert processor.chat_template == SMOLVLM_CHAT_TEMPLATE
    assert processor.image_seq_len == IMAGE_SEQ_LEN
    assert type(processor.image_processor).__name__.startswith("SmolVLMImageProcessor")
    assert processor.image_processor.max_image_size["longest_edge"] == IMAGE_SIZE

    # The preprocessing generate() runs: the SmolVLM prompt, the photo split into tiles (plus
    # the whole photo), and IMAGE_SEQ_LEN <image> tokens for each.
    trevi = photo("trevi.jpeg")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "image"}]}],
        add_generation_prompt=True,
    )
    assert prompt == "<|im_start|>User: Describe<image><end_of_utterance>\nAssistant:"
    inputs = processor(text=[prompt], images=[[trevi.convert("RGB")]], return_tensors="pt")
    tiles = inputs["pixel_values"].shape[1]
    assert tiles > 1 and inputs["pixel_values"].shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)
    image_tokens = (inputs["input_ids"] == processor.image_token_id).sum().item()
    assert image_tokens == tiles * IMAGE_SEQ_LEN
    assert "<row_1_col_2>" in processor.decode(inputs["input_ids"][0])

    text = backend.generate([Turn("user", ("Describe", trevi))],
                            generation_params(max_new_tokens=4))
    assert 1 <= len(text.split()) <= 4  # one word per token


def test_load_backend_picks_the_model_for_a_smolvlm_folder(tiny_smolvlm: Path) -> None:
    backend, reason = load_backend(str(tiny_smolvlm))
    assert isinstance(backend, TransformersBackend), reason
    assert "local path" in reason


@pytest.mark.skipif(SMOLVLM_PROCESSOR_LOADS, reason="AutoProcessor does not fail here")
def test_processor_fallback_is_only_for_the_idefics3_family(
    tiny_smolvlm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "_IDEFICS3_FAMILY", frozenset())
    with pytest.raises(ImportError):
        TransformersBackend(str(tiny_smolvlm))
