"""Managed models (Amazon Bedrock, Converse) as profiles: a photo answered without an endpoint,
end to end in local mode; `up`/`down` without SageMaker resources; the function's role
limited to its one model; the local Converse as strict as Bedrock's documented limits; errors
as records."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image

from photo_handler import converse as handler_converse
from photo_handler.errors import Failure
from photo_handler.settings import load_settings
from visual_tourism import iam, lambda_fn, profiles, stack
from visual_tourism.aws import Aws
from visual_tourism.cli import main
from visual_tourism.config import load_config
from visual_tourism.local.model_server import ModelServer

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "images" / "trevi.jpeg"
NOVA = "amazon.nova-lite-v1:0"
LLAMA_PROFILE = "us.meta.llama3-2-11b-instruct-v1:0"


def _jpeg(width: int, height: int, quality: int = 85) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def _noise_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG")
    return out.getvalue()


def _client(url: str, region: str = "us-east-1"):
    return boto3.client("bedrock-runtime", endpoint_url=url, region_name=region,
                        config=Config(retries={"total_max_attempts": 1}))


def _message(image: bytes, fmt: str = "jpeg", text: str = "Describe it."):
    return [{"role": "user", "content": [{"image": {"format": fmt, "source": {"bytes": image}}},
                                         {"text": text}]}]


# -- profiles ---------------------------------------------------------------------------------


def test_managed_profiles_listed_with_terms_and_token_prices(capsys):
    rows = {row["name"]: row for row in profiles.lineup()}
    nova, llama = rows["nova-lite"], rows["llama3.2-11b-vision"]
    assert nova["kind"] == llama["kind"] == "bedrock"
    assert nova["idle_cost_per_hour_usd"] == 0.0
    assert nova["token_prices_usd_per_million"] == {"input": 0.06, "output": 0.24}
    assert "unverified" in nova["price_basis"]
    assert "Llama 3.2 Community License" in llama["licence"]
    assert llama["inference_profile"] and nova["limits"]["max_images"] == 20
    assert main(["profiles", "--wide"]) == 0
    out = capsys.readouterr().out
    assert "nova-lite" in out and "+$0.24/1M tok" in out and "8,000 px a side" in out
    assert "Llama 3.2 Community License" in out


def test_invoke_ids_and_arns_follow_the_region():
    nova, llama = profiles.get_profile("nova-lite"), profiles.get_profile("llama3.2-11b-vision")
    assert nova.invoke_id("us-east-1") == NOVA
    assert llama.invoke_id("us-west-2") == LLAMA_PROFILE
    assert llama.invoke_id("eu-west-1").startswith("eu.")
    assert nova.invoke_arns("us-east-1", "111122223333") == [
        f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA}"]
    assert llama.invoke_arns("us-east-1", "111122223333") == [
        f"arn:aws:bedrock:us-east-1:111122223333:inference-profile/{LLAMA_PROFILE}",
        "arn:aws:bedrock:*::foundation-model/meta.llama3-2-11b-instruct-v1:0"]


def test_function_role_may_invoke_only_its_model():
    cfg = load_config(model_profile="nova-lite")
    policy = iam.lambda_policy(cfg, account="111122223333", bucket="b")
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert not any(a.startswith("sagemaker:") for a in actions)
    (invoke,) = [s for s in policy["Statement"] if "bedrock:InvokeModel" in s["Action"]]
    assert invoke["Action"] == ["bedrock:InvokeModel"]
    assert invoke["Resource"] == [f"arn:aws:bedrock:{cfg.region}::foundation-model/{NOVA}"]


def test_function_environment_names_the_model_and_its_prices():
    cfg = load_config(model_profile="nova-lite")
    env = lambda_fn.function_environment(cfg, "bucket")
    assert env["MODEL_KIND"] == "bedrock" and env["MODEL_ID"] == NOVA
    assert env["REQUEST_STYLE"] == "converse" and env["STRUCTURED_OUTPUT"] == "tool"
    assert json.loads(env["MODEL_PRICES"])["input_per_million"] == 0.06
    settings = load_settings(env)  # what the handler reads back: valid, no endpoint needed
    assert settings.model_kind == "bedrock" and settings.endpoint == ""


def test_managed_profile_refuses_async_mode():
    from visual_tourism.errors import ConfigError

    with pytest.raises(ConfigError, match="managed"):
        load_config(model_profile="nova-lite", inference_mode="async")


# -- the local Converse: as strict as Bedrock --------------------------------------------------


@pytest.fixture(scope="module")
def server():
    with ModelServer() as running:  # the labelled stand-in
        yield running


def test_local_converse_answers_in_the_real_shape(server):
    response = _client(server.url).converse(
        modelId=NOVA, messages=_message(PHOTO.read_bytes()),
        inferenceConfig={"maxTokens": 200, "temperature": 0.4, "topP": 0.2})
    text = response["output"]["message"]["content"][0]["text"]
    assert "stand-in" in text.lower()
    assert response["usage"]["inputTokens"] > 0 and response["usage"]["outputTokens"] > 0
    assert response["usage"]["totalTokens"] == (response["usage"]["inputTokens"]
                                                + response["usage"]["outputTokens"])
    assert response["stopReason"] == "end_turn" and "latencyMs" in response["metrics"]


@pytest.mark.parametrize("image, fmt, error", [
    (None, "jpeg", "3.75 MB"),  # a 4 MB image
    (b"GIF89a-not-really", "gif", "cannot be decoded"),
    ("png-as-jpeg", "jpeg", "format says"),
    ("9000", "jpeg", "8,000 pixels"),
])
def test_local_converse_refuses_what_bedrock_refuses(server, image, fmt, error):
    if image is None:
        image = _noise_png(1200)  # ~4.3 MB of noise
        assert len(image) > 4_000_000
        fmt = "png"
    elif image == "png-as-jpeg":
        image = _noise_png(16)
    elif image == "9000":
        image = _jpeg(9000, 100)
    with pytest.raises(ClientError) as caught:
        _client(server.url).converse(modelId=NOVA, messages=_message(image, fmt))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert error in caught.value.response["Error"]["Message"]


def test_local_converse_checks_the_service_model_and_the_conversation(server):
    client = _client(server.url)
    small = _jpeg(64, 64)
    with pytest.raises(ClientError, match="alternate"):
        client.converse(modelId=NOVA, messages=[
            {"role": "assistant", "content": [{"text": "hi"}]}, *_message(small)])
    with pytest.raises(ClientError, match="only in user messages"):
        client.converse(modelId=NOVA, messages=[
            *_message(small), {"role": "assistant", "content": [
                {"image": {"format": "jpeg", "source": {"bytes": small}}}]}, *_message(small)])
    with pytest.raises(ClientError, match="model identifier is invalid"):
        client.converse(modelId="amazon.nova-nonsense-v9:0", messages=_message(small))
    with pytest.raises(ClientError, match="inference profile"):  # the bare ID, on demand
        client.converse(modelId="meta.llama3-2-11b-instruct-v1:0", messages=_message(small))
    with pytest.raises(ClientError, match="at most 1"):  # Llama 3.2 Vision: one image
        client.converse(modelId=LLAMA_PROFILE, messages=[{"role": "user", "content": [
            {"image": {"format": "jpeg", "source": {"bytes": small}}},
            {"image": {"format": "jpeg", "source": {"bytes": small}}}, {"text": "x"}]}])
    # botocore validates client-side too; the server's own check is what a raw call meets.
    import urllib.request

    body = json.dumps({"messages": _message_json(small), "inferenceConfig": {"topP": 2}})
    request = urllib.request.Request(f"{server.url}/model/{NOVA}/converse", body.encode(),
                                     {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 400
    assert caught.value.headers["x-amzn-ErrorType"] == "ValidationException"
    assert "topP" in json.loads(caught.value.read())["message"]


def _message_json(image: bytes):
    return [{"role": "user", "content": [
        {"image": {"format": "jpeg", "source": {"bytes": base64.b64encode(image).decode()}}},
        {"text": "Describe it."}]}]


def test_forced_tool_call_answers_with_tool_use(server):
    from photo_handler import presets_schema

    response = _client(server.url).converse(
        modelId=NOVA, messages=_message(_jpeg(64, 64)), toolConfig={
            "tools": [{"toolSpec": {"name": "answer", "inputSchema": {
                "json": presets_schema.structured_schema()}}}],
            "toolChoice": {"tool": {"name": "answer"}}})
    (block,) = response["output"]["message"]["content"]
    assert set(block["toolUse"]["input"]) == set(presets_schema.STRUCTURED_FIELDS)
    assert response["stopReason"] == "tool_use"
    fields = handler_converse.read_answer(response, structured=True)
    assert fields["fields"]["description"] and fields["answer"]


# -- the handler's images and errors ----------------------------------------------------------


def test_images_sized_to_bedrock_limits():
    settings = load_settings({"BUCKET_NAME": "b", "MODEL_KIND": "bedrock", "MODEL_ID": NOVA,
                              "REQUEST_STYLE": "converse"})
    small = _jpeg(300, 200)
    assert handler_converse.fit_image(small, "jpeg", (300, 200), settings).data == small
    wide = handler_converse.fit_image(_jpeg(9000, 300), "jpeg", (9000, 300), settings)
    assert wide.resized and max(wide.width, wide.height) <= 8000
    big = _noise_png(1200)
    sent = handler_converse.fit_image(big, "png", (1200, 1200), settings)
    assert sent.resized and sent.format == "jpeg" and len(sent.data) <= 3_750_000
    bmp = io.BytesIO()
    Image.new("RGB", (40, 40)).save(bmp, "BMP")
    assert handler_converse.fit_image(bmp.getvalue(), "bmp", (40, 40), settings).format == "jpeg"


@pytest.mark.parametrize("code, expected", [
    ("AccessDeniedException", "model_access_denied"),
    ("ValidationException", "model_rejected_input"),
    ("ResourceNotFoundException", "model_not_found"),
])
def test_refusals_become_clear_failures(code, expected):
    settings = load_settings({"BUCKET_NAME": "b", "MODEL_KIND": "bedrock", "MODEL_ID": NOVA,
                              "REQUEST_STYLE": "converse"})
    exc = ClientError({"Error": {"Code": code, "Message": "no"}}, "Converse")
    failure = handler_converse.refusal(exc, settings, 1)
    assert isinstance(failure, Failure) and failure.code == expected
    if code == "AccessDeniedException":
        assert "visual-tourism check" in failure.message


def test_throttling_is_retried_then_said(monkeypatch):
    settings = load_settings({"BUCKET_NAME": "b", "MODEL_KIND": "bedrock", "MODEL_ID": NOVA,
                              "REQUEST_STYLE": "converse", "MAX_ATTEMPTS": "3"})
    calls = []

    class Throttled:
        def converse(self, **request):
            calls.append(request)
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}},
                              "Converse")

    monkeypatch.setattr(handler_converse.clients, "client", lambda *a, **k: Throttled())
    slept = []
    import time

    with pytest.raises(Failure) as caught:
        handler_converse.converse({"modelId": NOVA}, settings, time.monotonic() + 600,
                                  sleep=slept.append)
    assert caught.value.code == "model_throttled" and len(calls) == 3 and len(slept) == 2
    assert "quota" in caught.value.message


# -- local mode end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    from visual_tourism.local.stack import LocalStack

    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("local")) as running:
        yield running


def _deploy(env, tmp_path, profile="nova-lite", **settings):
    cfg = load_config(prefix="b" + os.urandom(3).hex(), state_dir=str(tmp_path / "state"),
                      model_profile=profile, **settings)
    aws = Aws(cfg.region)
    lines: list[str] = []
    stack.up(cfg, aws, progress=lines.append, endpoint_poll=0.1)
    return cfg, aws, lines


def test_photo_answered_through_converse_and_down_leaves_nothing(env, tmp_path, capsys):
    cfg, aws, lines = _deploy(env, tmp_path, web_api="off")
    assert any("no SageMaker model, endpoint" in line for line in lines)
    assert aws.sagemaker.list_endpoints()["Endpoints"] == []
    assert aws.sagemaker.list_models()["Models"] == []
    assert aws.sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    targets = boto3.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker")["ScalableTargets"]
    assert targets == []
    status = stack.status(cfg, aws)
    assert status["model"]["kind"] == "bedrock" and status["cost_per_hour_usd"] is None
    assert "per photo" in status["cost"]
    capsys.readouterr()
    assert main(["status", "--prefix", cfg.prefix, "--model-profile", "nova-lite"]) == 0
    out = capsys.readouterr().out
    assert "nothing to stop" in out and '"kind": "bedrock"' in out

    record = stack.ask(PHOTO, cfg, aws, timeout=120)
    assert record["status"] == "ok", record
    assert "stand-in" in record["answer"].lower()
    assert record["usage"]["input_tokens"] > 0 and record["usage"]["cost_usd"] > 0
    assert record["model"]["model_id"] == NOVA
    # Where the photo was taken (given with the upload): the real places nearby, in the
    # prompt as on the endpoint path.
    record = stack.ask(PHOTO, cfg, aws, timeout=120, near=(48.8584, 2.2945))
    assert record["status"] == "ok", record
    assert record["places"]["status"] == "ok" and record["places"]["in_prompt"] > 0, record

    # A structured preset in French: Nova Lite's forced tool call gives the fields.
    from visual_tourism import presets

    family = presets.get_preset(aws, cfg, "family")
    presets.put_preset(aws, cfg, {**family, "structured": True},
                       expected_version=family["version"])
    record = stack.ask(PHOTO, cfg, aws, timeout=120, key=f"{cfg.input_prefix}family.jpeg",
                       preset="family", language="French")
    assert record["status"] == "ok", record
    assert record["preset"]["name"] == "family" and record["preset"]["language"] == "French"
    assert record["fields"]["description"] and "fields_error" not in record
    assert "French" in record["answer"]  # the stand-in says which language it was asked for

    removed = stack.down(cfg, aws, delete_bucket=True)
    assert f"Lambda {cfg.function_name}" in removed
    assert aws.sagemaker.list_endpoints()["Endpoints"] == []
    assert stack.status(cfg, aws)["function"]["state"] == "absent"


def test_role_for_one_model_is_denied_another(env, tmp_path):
    """The function's role may invoke Nova Lite only: its Converse call for another model is
    refused by local mode's IAM, as Bedrock refuses it."""
    cfg, aws, _ = _deploy(env, tmp_path, web_api="off", presets="off")
    try:
        credentials = env.credentials.for_function(cfg.function_name)
        client = boto3.client("bedrock-runtime", endpoint_url=env.model_server.url,
                              region_name=cfg.region,
                              config=Config(retries={"total_max_attempts": 1}),
                              **_keys(credentials))
        small = _jpeg(64, 64)
        assert client.converse(modelId=NOVA, messages=_message(small))["usage"]
        with pytest.raises(ClientError) as caught:
            client.converse(modelId=LLAMA_PROFILE, messages=_message(small))
        assert caught.value.response["Error"]["Code"] == "AccessDeniedException"

        # The handler asking for a model its role may not invoke: an error record saying what
        # to do, not a lost photo.
        fn = aws.lambda_.get_function_configuration(FunctionName=cfg.function_name)
        aws.lambda_.update_function_configuration(
            FunctionName=cfg.function_name, Environment={"Variables": {
                **fn["Environment"]["Variables"], "MODEL_ID": LLAMA_PROFILE}})
        record = stack.ask(PHOTO, cfg, aws, timeout=120)
        assert record["status"] == "error"
        assert record["error"]["code"] == "model_access_denied"
        assert "visual-tourism check" in record["error"]["message"]
    finally:
        stack.down(cfg, aws, delete_bucket=True)


def _keys(credentials):
    return {"aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
            "aws_session_token": credentials["AWS_SESSION_TOKEN"]}


# -- model access (check, and up before anything is created) ---------------------------------


def _stubbed(monkeypatch, answer=None, error=None):
    from botocore.stub import Stubber

    aws = Aws("us-east-1")
    client = aws.client("bedrock")
    stub = Stubber(client)
    if error:
        stub.add_client_error("get_foundation_model_availability", error, "no",
                              expected_params={"modelId": NOVA})
    else:
        stub.add_response("get_foundation_model_availability", answer,
                          expected_params={"modelId": NOVA})
    stub.activate()
    monkeypatch.setattr(Aws, "is_local", property(lambda self: False))
    return aws


AVAILABLE = {"modelId": NOVA, "agreementAvailability": {"status": "AVAILABLE"},
             "authorizationStatus": "AUTHORIZED", "entitlementAvailability": "AVAILABLE",
             "regionAvailability": "AVAILABLE"}


def test_model_access_says_what_to_do(monkeypatch):
    from visual_tourism import bedrock
    from visual_tourism.errors import ModelAccessError

    cfg = load_config(model_profile="nova-lite")
    access = bedrock.model_access(_stubbed(monkeypatch, AVAILABLE), cfg)
    assert access.state == bedrock.AVAILABLE

    denied = {**AVAILABLE, "authorizationStatus": "NOT_AUTHORIZED"}
    access = bedrock.model_access(_stubbed(monkeypatch, denied), cfg)
    assert access.state == bedrock.NEEDS_ACCESS and "Model access" in access.text
    with pytest.raises(ModelAccessError, match="Nothing was created"):
        bedrock.require_access(_stubbed(monkeypatch, denied), cfg, print)

    elsewhere = {**AVAILABLE, "regionAvailability": "NOT_AVAILABLE"}
    access = bedrock.model_access(_stubbed(monkeypatch, elsewhere), cfg)
    assert access.state == bedrock.NOT_OFFERED and "us-east-1" in access.text

    access = bedrock.model_access(_stubbed(monkeypatch, error="AccessDeniedException"), cfg)
    assert access.state == bedrock.UNKNOWN
    lines: list[str] = []
    bedrock.require_access(_stubbed(monkeypatch, error="AccessDeniedException"), cfg,
                           lines.append)
    assert "Going ahead" in lines[0]
    assert bedrock.model_access(Aws("us-east-1"), load_config()) is None  # hosted: n/a


def test_check_reports_model_access_in_local_mode(env, capsys, monkeypatch):
    monkeypatch.setenv("VT_MODEL_PROFILE", "nova-lite")
    code = main(["check"])
    out = capsys.readouterr().out
    assert "Model access (nova-lite): local mode" in out
    # The limits need no endpoint instances and no container image for a managed model.
    assert "SHORT" not in out, out
    assert "none needed: a managed model" in out
    assert code == 0, out


# -- eval: hosted and managed side by side ---------------------------------------------------


def test_eval_costs_managed_by_tokens_and_hosted_by_the_day():
    from visual_tourism import evaluation

    label = evaluation.Label("tour_eiffel.jpeg", "Eiffel Tower", "Paris", "France")
    managed = {"status": "ok", "answer": "The Eiffel Tower in Paris, France.",
               "timing": {"model_seconds": 0.8}, "seen_after_seconds": 1.5,
               "usage": {"input_tokens": 2900, "output_tokens": 250, "cost_usd": 0.000234}}
    hosted = {**managed, "usage": None, "timing": {"model_seconds": 3.6}}
    nova = evaluation.summarise("nova-lite", "", [evaluation.photo_result(label, managed, None)],
                                local=False)
    smol = evaluation.summarise("smolvlm-instruct", "ml.g4dn.xlarge",
                                [evaluation.photo_result(label, hosted, 0.736)], local=False)
    assert nova["kind"] == "bedrock" and nova["idle_cost_per_day_usd"] == 0.0
    assert nova["cost_per_photo_per_day_usd"] == {"10": 0.000234, "100": 0.000234,
                                                  "1000": 0.000234}
    assert smol["idle_cost_per_day_usd"] == pytest.approx(0.736 * 24)
    assert smol["cost_per_photo_per_day_usd"]["100"] == pytest.approx(0.736 * 24 / 100, abs=1e-6)
    text = evaluation.format_report(evaluation.report([smol, nova]))
    assert "idle included" in text and "@1,000/day" in text
    estimate = evaluation.estimate_compare_cost(["nova-lite", "smolvlm-instruct"], local=False)
    assert "nothing to start" in estimate["lines"][0]


def test_eval_profiles_hosted_and_managed_side_by_side(env, tmp_path, capsys, monkeypatch):
    """`eval --profiles smolvlm-instruct,nova-lite` in local mode: both profiles on the same
    labelled photos, in one table, the managed one costed from its records' usage; the
    managed stack that ran before is restored."""
    prefix = "c" + os.urandom(3).hex()
    monkeypatch.setenv("VT_PREFIX", prefix)
    monkeypatch.setenv("VT_STATE_DIR", str(tmp_path / "state"))
    cfg = load_config(model_profile="nova-lite")
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)  # a managed stack runs already
    out_file = tmp_path / "side-by-side.json"
    try:
        capsys.readouterr()
        code = main(["eval", "--model-profile", "nova-lite", "--profiles",
                     "smolvlm-instruct,nova-lite", "--yes", "--out", str(out_file),
                     "--timeout", "120"])
        out = capsys.readouterr().out
        assert code == 0, out[-3000:]
        report = json.loads(out_file.read_text())
        hosted, managed = report["profiles"]
        assert (hosted["kind"], managed["kind"]) == ("sagemaker", "bedrock")
        assert hosted["n_photos"] == managed["n_photos"] == 3
        assert managed["idle_cost_per_day_usd"] == 0.0
        assert all(p["tokens"]["input"] > 0 for p in managed["photos"])
        assert managed["cost_per_photo_usd_estimate"] > 0
        assert hosted["idle_cost_per_day_usd"] > 0
        assert "cost per photo by photos a day, idle included" in out
        assert report["restored_profile"] == "nova-lite"
        fn = aws.lambda_.get_function_configuration(FunctionName=cfg.function_name)
        assert fn["Environment"]["Variables"]["MODEL_KIND"] == "bedrock"
        assert stack.status(cfg, aws)["endpoint"]["state"] == "absent"
    finally:
        env.runtime.wait_idle(60)
        stack.down(cfg, aws, delete_bucket=True)


def test_one_image_models_get_the_examples_as_text():
    """Llama 3.2 Vision takes one image: the example's answer goes in the system prompt, the
    photo alone is sent, and a structured answer is asked for in the text (no forced tool)."""
    from photo_handler.request import Prompt

    env = lambda_fn.function_environment(load_config(model_profile="llama3.2-11b-vision"), "b")
    settings = load_settings(env)
    assert settings.model_id == LLAMA_PROFILE and settings.structured_output == "text"
    prompt = Prompt("Describe it.", (("example/trevi.jpeg", "The Trevi Fountain."),),
                    {"max_new_tokens": 100, "do_sample": False, "top_k": 50}, structured=True)
    photo = handler_converse.ImagePart(_jpeg(32, 32), "jpeg", 32, 32)
    assert handler_converse.max_images(settings) == 1
    request = handler_converse.build_request(settings, prompt, [], photo)
    assert "toolConfig" not in request
    assert "The Trevi Fountain." in request["system"][0]["text"]
    (message,) = request["messages"]
    assert [list(block) for block in message["content"]] == [["image"], ["text"]]
    assert request["inferenceConfig"] == {"maxTokens": 100, "temperature": 0}


def test_the_photo_turn_names_the_nearby_places_with_or_without_a_preset():
    """places.ground's grounding reaches a managed model as it reaches an endpoint: the
    photo's own turn ends with the real places nearby (the examples' turns never do)."""
    from photo_handler.request import Prompt

    env = lambda_fn.function_environment(load_config(model_profile="nova-lite"), "b")
    settings = load_settings(env)
    grounding = "Real places to eat within 800 m: Chez Test (restaurant, 120 m)."
    photo = handler_converse.ImagePart(_jpeg(32, 32), "jpeg", 32, 32)
    example = handler_converse.ImagePart(_jpeg(16, 16), "jpeg", 16, 16)
    plain = Prompt("Describe it.", (("example/trevi.jpeg", "The Trevi Fountain."),),
                   {"max_new_tokens": 100}, grounding=grounding)
    preset = Prompt("Describe it for a family.", plain.examples, {"max_new_tokens": 100},
                    preset={"name": "family", "instruction": "Describe it for a family."},
                    language="French", grounding=grounding)
    for prompt in (plain, preset):
        request = handler_converse.build_request(settings, prompt, [example], photo)
        *turns, last = [m for m in request["messages"] if m["role"] == "user"]
        assert last["content"][-1]["text"].endswith(grounding), prompt
        assert all(grounding not in block.get("text", "") for m in turns
                   for block in m["content"])


def test_nothing_to_wake_or_sleep_for_a_managed_model():
    from visual_tourism import async_inference
    from visual_tourism.errors import ConfigError

    cfg = load_config(model_profile="nova-lite")
    for action in (async_inference.wake, async_inference.sleep):
        with pytest.raises(ConfigError, match="nothing is billed while idle"):
            action(object(), cfg)
