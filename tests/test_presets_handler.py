"""Answer presets on the handler's side: the preset and language an upload asks for (S3
metadata), one cached GetItem, validation at read time, few-shot requests with up to three
examples, the answer language, and structured answers.

Most tests drive ``lambda_code.lambda_handler`` in this process against moto's server (S3 and
DynamoDB) and the local model server, which checks each request as the profile's container
does; the last ones run local mode end to end (the stack's own table, seeds and trigger).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from typing import Any

import boto3
import pytest
import test_async_inference
import test_handler
from test_async_inference import FakeQueue, _queue_upload
from test_handler import ENDPOINT, IMAGES, RecordingServer, event_for, result, run

from photo_handler import answer as handler_answer
from photo_handler import (
    asynchronous,
    budget,
    clients,
    presets,
    presets_schema,
)
from photo_handler import model as handler_model
from photo_handler import request as handler_request
from photo_handler import settings as handler_settings
from photo_handler import upload as handler_upload
from visual_tourism.local.backends import STAND_IN_VALUE, Backend
from visual_tourism.profiles import PROFILES

# test_handler's fixtures: the bucket (holding example/trevi.jpeg) on moto's S3, image fetches.
s3, bucket, fetched = test_handler.s3, test_handler.bucket, test_handler.fetched
queue = test_async_inference.queue  # InvokeEndpointAsync as SageMaker answers it

IDEFICS = PROFILES["idefics-9b-instruct"]  # TGI 1.4.5, prompt style
QWEN_TGI = PROFILES["qwen2.5-vl-7b-instruct"]  # TGI 3.3.6, messages
SMOLVLM = PROFILES["smolvlm-instruct"]  # vLLM, messages
ENV = {  # the function's own prompt: the `default` seed is built from it
    "INSTRUCTION": handler_settings.DEFAULT_INSTRUCTION, "EXAMPLE_KEY": "example/trevi.jpeg",
    "EXAMPLE_ANSWER": handler_settings.DEFAULT_EXAMPLE_ANSWER,
    "GENERATION_PARAMETERS": json.dumps(handler_settings.DEFAULT_GENERATION, sort_keys=True),
}
EXAMPLE_PHOTOS = ("neuschwanstein.jpeg", "santiago_cathedral.jpeg", "no_landmark.jpg")
PHOTO = "tour_eiffel.jpeg"


def use_profile(monkeypatch: pytest.MonkeyPatch, profile: Any) -> None:
    monkeypatch.setenv("CONTAINER_LIMITS", profile.limits.to_env())
    monkeypatch.setenv("REQUEST_STYLE", profile.request_style)
    monkeypatch.setenv("MODEL_PROFILE", profile.name)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, fetched: list[str],
           moto_server: str) -> Any:
    """The endpoint, checking requests as the idefics profile's container (TGI 1.4.5)."""
    with RecordingServer(endpoint_exists=lambda name: name == ENDPOINT,
                         fetch_origins=[moto_server], limits=IDEFICS.limits) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", running.url)
        use_profile(monkeypatch, IDEFICS)
        yield running


class Table:
    def __init__(self, db: Any, name: str) -> None:
        self.db, self.name = db, name

    def get(self, name: str) -> dict[str, Any]:
        item = self.db.get_item(TableName=self.name, Key={"name": {"S": name}})["Item"]
        return presets_schema.from_dynamodb(item)

    def put(self, item: dict[str, Any]) -> None:
        """As someone editing in the console would: no validation, version + 1."""
        item = {**item, "version": int(item.get("version") or 0) + 1}
        self.db.put_item(TableName=self.name, Item=presets_schema.to_dynamodb(item))

    def edit(self, name: str, **changes: Any) -> dict[str, Any]:
        item = {**self.get(name), **changes}
        self.put(item)
        return self.get(name)


def new_container() -> None:
    """Forget what a warm container keeps: the presets read, the example photos checked."""
    presets.clear_cache()
    budget.clear_cache()


@pytest.fixture
def table(moto_server: str, monkeypatch: pytest.MonkeyPatch, s3: Any, bucket: str) -> Any:
    """A presets table on moto with the seeds, their example photos in the bucket."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_server)
    name = f"vt-presets-{uuid.uuid4().hex[:10]}"
    db = boto3.client("dynamodb", endpoint_url=moto_server)
    db.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": presets_schema.KEY, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": presets_schema.KEY,
                                           "AttributeType": "S"}])
    for item in presets_schema.seed_presets(ENV):
        db.put_item(TableName=name, Item=presets_schema.to_dynamodb(
            {**item, "version": 1, "schema": presets_schema.SCHEMA_VERSION}))
    for photo in EXAMPLE_PHOTOS:
        s3.put_object(Bucket=bucket, Key=f"example/{photo}", Body=(IMAGES / photo).read_bytes())
    monkeypatch.setenv(presets_schema.ENV_VAR, name)
    new_container()
    yield Table(db, name)
    new_container()


def upload(s3: Any, bucket: str, key: str, photo: str = PHOTO, **metadata: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=(IMAGES / photo).read_bytes(),
                  Metadata=metadata)


def ask(s3: Any, bucket: str, name: str = "a.jpg", **metadata: str) -> dict[str, Any]:
    key = f"input/{name}"
    upload(s3, bucket, key, **metadata)
    run(event_for(bucket, s3, key))
    return result(s3, bucket, f"output/{name}.json")


def without_urls(request: dict[str, Any]) -> str:
    """The request's bytes with every image URL (presigned: signed at a time) blanked."""
    text = json.dumps(request)
    text = re.sub(r"!\[\]\([^)\s]+\)", "![](URL)", text)
    return re.sub(r'"url": "[^"]+"', '"url": "URL"', text)


@pytest.fixture
def get_items(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The presets read with GetItem by the handler's own DynamoDB client (botocore events)."""
    names: list[str] = []
    monkeypatch.setattr(clients, "_clients", {})
    client = clients.client("dynamodb", presets.PRESET_READ_TIMEOUT)
    client.meta.events.register(
        "before-parameter-build.dynamodb.GetItem",
        lambda params, **_: names.append(params["Key"]["name"]["S"]))
    return names


# -- choosing a preset and a language ----------------------------------------------------------


def test_family_in_french_answers_with_the_family_prompt_its_examples_and_french(
    s3: Any, bucket: str, server: RecordingServer, table: Table, fetched: list[str],
) -> None:
    record = ask(s3, bucket, preset="family", language="French")

    assert record["status"] == "ok"
    assert record["preset"] == {"name": "family", "version": 1, "language": "French"}
    assert "[stand-in answer in French]" in record["answer"]
    (request,) = server.requests
    family = table.get("family")
    prompt = request["inputs"]
    assert prompt.count(family["instruction"]) == 4  # three examples' turns and the photo's
    for example in family["examples"]:
        assert f"Assistant: {example['answer']}<end_of_utterance>" in prompt
    assert prompt.endswith(f"{family['instruction']} Answer in French.![]("
                           + prompt.rsplit("![](", 1)[1])
    assert request["parameters"] == {"return_full_text": False, "stop": handler_request.TGI_STOP,
                                     **family["generation"], "max_new_tokens": 200}
    # The endpoint fetched the three example photos, then the upload.
    assert [url.split("?")[0].rsplit("/", 2)[-2:] for url in fetched] == [
        ["example", "trevi.jpeg"], ["example", "neuschwanstein.jpeg"],
        ["example", "no_landmark.jpg"], ["input", "a.jpg"]]


def test_the_same_photo_asked_again_with_another_choice_is_answered_again(
    s3: Any, bucket: str, server: RecordingServer, table: Table,
) -> None:
    """A redelivery is answered once, even after the preset was edited; the same bytes
    uploaded again with another preset or language, or after an edit, are a new question (the
    ETag alone is not)."""
    key = "input/same.jpg"
    upload(s3, bucket, key, preset="family", language="French")
    event = event_for(bucket, s3, key)
    run(event)
    assert run(event)["records"][0]["status"] == "duplicate"  # Lambda's redelivery
    assert len(server.requests) == 1

    upload(s3, bucket, key, preset="history", language="French")  # same bytes, same ETag
    again = event_for(bucket, s3, key)
    assert again["Records"][0]["s3"]["object"]["eTag"] == event["Records"][0]["s3"]["object"][
        "eTag"]
    run(again)
    record = result(s3, bucket, "output/same.jpg.json")
    assert record["preset"]["name"] == "history" and len(server.requests) == 2

    upload(s3, bucket, key, preset="history", language="German")
    run(event_for(bucket, s3, key))
    assert result(s3, bucket, "output/same.jpg.json")["preset"]["language"] == "German"
    assert len(server.requests) == 3

    table.edit("history", max_new_tokens=150)  # version 2
    new_container()  # past the cache time
    redelivered = run(event_for(bucket, s3, key))["records"][0]  # that upload: answered
    assert redelivered["status"] == "duplicate" and len(server.requests) == 3
    next_second()  # S3 dates an upload to the second: this one is a new upload
    upload(s3, bucket, key, preset="history", language="German")
    run(event_for(bucket, s3, key))
    assert result(s3, bucket, "output/same.jpg.json")["preset"]["version"] == 2
    assert len(server.requests) == 4
    assert run(event_for(bucket, s3, key))["records"][0]["status"] == "duplicate"
    assert len(server.requests) == 4



def _while_answering_the_first(monkeypatch: pytest.MonkeyPatch, meanwhile: Any) -> list[int]:
    """Run ``meanwhile()`` inside the first model call, before its answer comes back (that
    invocation then finishes last); later calls go straight to the endpoint."""
    real, calls = handler_model.invoke_model, []

    def gated(body: bytes, settings: Any, deadline: float) -> Any:
        calls.append(len(calls))
        if len(calls) == 1:
            meanwhile()
        return real(body, settings, deadline)

    monkeypatch.setattr(handler_model, "invoke_model", gated)
    return calls


@pytest.mark.parametrize("first, second, edit", [
    ({"preset": "family"}, {"preset": "history"}, False),
    ({"preset": "history", "language": "French"}, {"preset": "history", "language": "German"},
     False),
    ({"preset": "history"}, {"preset": "history"}, True),  # the same choice, preset edited
    ({"preset": "history"}, {"preset": "history"}, "same second"),
], ids=["preset", "language", "edited-preset", "edited-preset-same-second"])
@pytest.mark.parametrize("transport", ["url", "data-uri"])
def test_a_reask_with_another_choice_ends_with_the_newest_choice_when_the_first_ends_last(
    s3: Any, bucket: str, server: RecordingServer, table: Table,
    monkeypatch: pytest.MonkeyPatch, first: dict[str, str], second: dict[str, str],
    edit: bool | str, transport: str,
) -> None:
    """The same bytes (same ETag) asked again while the first answer is still being made."""
    monkeypatch.setenv("IMAGE_TRANSPORT", transport)
    if edit == "same second":  # S3 dates uploads to the second: both uploads then look alike
        real_upload_of = handler_upload.upload_of
        monkeypatch.setattr(handler_upload, "upload_of",
                            lambda response: {**real_upload_of(response), "modified": ""})
    key = "input/reask.jpg"
    newest: list[dict[str, Any]] = []

    def reask() -> None:
        if edit:
            table.edit("history", max_new_tokens=150)  # version 2
            new_container()
        upload(s3, bucket, key, **second)
        assert run(event_for(bucket, s3, key))["records"][0]["status"] == "ok"
        newest.append(result(s3, bucket, "output/reask.jpg.json"))

    calls = _while_answering_the_first(monkeypatch, reask)
    upload(s3, bucket, key, **first)
    older = run(event_for(bucket, s3, key))["records"][0]
    assert len(calls) == 2 and older["status"] == "superseded"
    record = result(s3, bucket, "output/reask.jpg.json")
    assert record == newest[0]  # the newer choice's record, untouched
    assert record["preset"]["name"] == second["preset"]
    assert record["preset"]["language"] == second.get("language", "English")
    assert record["preset"]["version"] == (2 if edit else 1)


def test_asking_again_for_the_answer_already_there_is_not_undone_by_an_older_choice(
    s3: Any, bucket: str, server: RecordingServer, table: Table,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """history, then family (still being answered), then history again: the last upload is a
    duplicate of the record there (no model call), and family's late answer must not win."""
    key = "input/back.jpg"
    upload(s3, bucket, key, preset="history")
    run(event_for(bucket, s3, key))
    answered = result(s3, bucket, "output/back.jpg.json")
    assert answered["preset"]["name"] == "history"

    def back_to_history() -> None:
        upload(s3, bucket, key, preset="history")
        assert run(event_for(bucket, s3, key))["records"][0]["status"] == "duplicate"

    calls = _while_answering_the_first(monkeypatch, back_to_history)
    upload(s3, bucket, key, preset="family")
    assert run(event_for(bucket, s3, key))["records"][0]["status"] == "superseded"
    assert len(calls) == 1
    assert result(s3, bucket, "output/back.jpg.json") == answered


def test_default_in_english_sends_exactly_todays_request(
    s3: Any, bucket: str, server: RecordingServer, table: Table, monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = ask(s3, bucket, "with.jpg")  # no metadata: `default`, in its language
    monkeypatch.delenv(presets_schema.ENV_VAR)
    before = ask(s3, bucket, "without.jpg")

    assert record["preset"] == {"name": "default", "version": 1, "language": "English"}
    assert "preset" not in before
    with_table, without_table = server.requests
    assert without_urls(with_table) == without_urls(without_table)
    # And byte for byte with the same URLs, for both request styles.
    settings = handler_settings.load_settings({**os.environ, "BUCKET_NAME": bucket})
    default = table.get("default")
    for style in handler_settings.STYLES:
        styled = handler_settings.Settings(**{**settings.__dict__, "request_style": style})
        prompt = presets.preset_prompt(styled, default, None)
        urls = (["https://example/e.jpeg"], "https://example/p.jpeg")
        assert json.dumps(handler_request.prompt_request(styled, prompt, *urls)) == json.dumps(
            handler_request.build_request(style, styled.instruction, styled.example_answer,
                                      urls[0][0], urls[1], styled.generation))


def test_without_a_presets_table_nothing_changes(
    s3: Any, bucket: str, server: RecordingServer, get_items: list[str],
) -> None:
    record = ask(s3, bucket, preset="family", language="French")  # metadata is ignored

    assert "preset" not in record and "fields" not in record
    assert get_items == []
    settings = handler_settings.load_settings()
    assert server.requests[0]["parameters"] == {**settings.generation, "return_full_text": False,
                                                "stop": handler_request.TGI_STOP}
    assert "Answer in" not in server.requests[0]["inputs"]


def test_an_unknown_preset_is_answered_with_default_and_says_so(
    s3: Any, bucket: str, server: RecordingServer, table: Table,
) -> None:
    record = ask(s3, bucket, preset="pirate", language="Spanish")

    assert record["status"] == "ok"
    assert record["preset"]["name"] == "default" and record["preset"]["requested"] == "pirate"
    assert record["preset"]["language"] == "Spanish"
    assert "'pirate' does not exist" in record["preset"]["note"]
    assert "Answer in Spanish." in server.requests[0]["inputs"]


def test_a_language_the_preset_does_not_offer_is_answered_in_its_own_with_a_note(
    s3: Any, bucket: str, server: RecordingServer, table: Table,
) -> None:
    record = ask(s3, bucket, preset="history", language="Klingon")

    assert record["status"] == "ok"
    assert record["preset"]["language"] == "English"
    assert record["preset"]["requested_language"] == "Klingon"
    assert "'Klingon' is not offered" in record["preset"]["note"]
    assert "Answer in" not in server.requests[0]["inputs"]
    # Names are matched whatever their case.
    assert ask(s3, bucket, "b.jpg", preset="history",
               language="german")["preset"]["language"] == "German"


@pytest.mark.parametrize("asked", ["fr", "FR", "fr-FR"])
def test_a_language_code_is_answered_in_the_language_the_preset_names(
    s3: Any, bucket: str, server: RecordingServer, table: Table, asked: str,
) -> None:
    """x-amz-meta-language as a code (a web client, a script): the record says "French"."""
    record = ask(s3, bucket, preset="family", language=asked)

    assert record["status"] == "ok"
    assert record["preset"]["language"] == "French"
    assert "requested_language" not in record["preset"] and "note" not in record["preset"]
    assert "Answer in French." in server.requests[0]["inputs"]


# -- a preset edited by hand -------------------------------------------------------------------


@pytest.mark.parametrize("change, field", [
    ({"generation": {"do_sample": True, "top_p": 1.0}}, "generation: top_p=1.0"),
    ({"max_new_tokens": 5000}, "max_new_tokens"),
    ({"examples": [{"photo": "input/secret.jpg", "answer": "x"}]}, "examples[0].photo"),
    ({"language": "Latin"}, "language: 'Latin'"),
    # Types the container refuses (TGI GenerateParameters: do_sample bool, seed u64, and an
    # empty stop ends every answer at once): refused here, not by a 422 after a model call.
    ({"generation": {"do_sample": "yes"}}, "generation: do_sample='yes'"),
    ({"generation": {"seed": -1}}, "generation: seed=-1"),
    ({"generation": {"seed": 1.5}}, "generation: seed=1.5"),
    ({"generation": {"seed": "abc"}}, "generation: seed='abc'"),
    ({"generation": {"stop": [""]}}, "generation: stop=['']"),
])
def test_a_broken_preset_is_an_error_record_naming_it_and_the_field_without_a_model_call(
    s3: Any, bucket: str, server: RecordingServer, table: Table, change: dict, field: str,
) -> None:
    table.edit("family", **change)

    record = ask(s3, bucket, preset="family")

    assert record["status"] == "error" and record["error"]["code"] == "preset_invalid"
    assert "'family' (version 2)" in record["error"]["message"]
    assert field in record["error"]["message"]
    assert "model was not called" in record["error"]["message"]
    assert record["preset"]["name"] == "family" and record["preset"]["version"] == 2
    assert server.calls == []
    # Not final: once the preset is fixed, the same upload is answered.
    head = s3.head_object(Bucket=bucket, Key="output/a.jpg.json")
    assert head["Metadata"]["final"] == "false"


@pytest.mark.parametrize("transport", ["url", "data-uri"])
def test_an_example_photo_missing_from_the_bucket_is_an_error_record_without_a_model_call(
    s3: Any, bucket: str, server: RecordingServer, table: Table, transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGE_TRANSPORT", transport)
    examples = table.get("food")["examples"]
    examples[1]["photo"] = "example/gone.jpeg"
    table.edit("food", examples=examples)

    record = ask(s3, bucket, preset="food")

    assert record["error"]["code"] == "preset_invalid"
    assert "'food' (version 2)" in record["error"]["message"]
    assert "examples[1].photo" in record["error"]["message"]
    assert "example/gone.jpeg" in record["error"]["message"]
    assert server.calls == []


# -- structured answers ------------------------------------------------------------------------


def make_structured(table: Table, name: str, examples: int = 2) -> None:
    """On idefics (MAX_INPUT_TOKENS 1536) a seed with three examples and the JSON line is too
    long in its longest language (validate_preset says so): two examples then."""
    table.edit(name, structured=True, examples=table.get(name)["examples"][:examples])


def check_fields(record: dict[str, Any]) -> None:
    fields = record["fields"]
    assert set(fields) == set(presets_schema.STRUCTURED_FIELDS)
    assert fields["place"] == STAND_IN_VALUE and fields["recognised"] is False
    assert record["answer"] == " ".join(fields[k] for k in ("description", "story",
                                                            "where_to_eat"))
    assert "fields_error" not in record


def test_a_structured_preset_asks_tgi_for_its_grammar_and_records_the_fields(
    s3: Any, bucket: str, server: RecordingServer, table: Table,
) -> None:
    make_structured(table, "history")

    record = ask(s3, bucket, preset="history", language="Italian")

    assert record["status"] == "ok", record.get("error")
    assert record["preset"]["structured"] is True
    check_fields(record)
    assert "[stand-in answer in Italian]" in record["fields"]["description"]
    request = server.requests[0]
    assert request["parameters"]["grammar"] == {"type": "json",
                                                "value": presets_schema.structured_schema()}
    assert presets_schema.STRUCTURED_LINE in request["inputs"]


@pytest.mark.parametrize("profile, response_format", [
    (QWEN_TGI, {"type": "json_object", "value": presets_schema.structured_schema()}),
    (SMOLVLM, {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": presets_schema.structured_schema()}}),
])
def test_a_structured_preset_asks_a_chat_container_in_its_own_shape(
    s3: Any, bucket: str, table: Table, monkeypatch: pytest.MonkeyPatch, moto_server: str,
    profile: Any, response_format: dict,
) -> None:
    use_profile(monkeypatch, profile)
    make_structured(table, "history", examples=1)  # vLLM: 2 images per request
    with RecordingServer(endpoint_exists=lambda name: name == ENDPOINT,
                         fetch_origins=[moto_server], limits=profile.limits) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", server.url)
        record = ask(s3, bucket, preset="history")

    assert record["status"] == "ok", record.get("error")
    check_fields(record)
    assert server.requests[0]["response_format"] == response_format


class Answering(Backend):
    """A backend that answers a fixed text."""

    name = description = "fixed answer"
    thread_safe = True

    def __init__(self, text: str) -> None:
        self.text = text

    def generate(self, conversation: Any, params: Any) -> str:
        return self.text


@pytest.mark.parametrize("text, fields, why", [
    ('{"place": "Trevi Fountain", "city": "Rome", "country": "Ital', None, "no complete JSON"),
    ("I think this is Rome.", None, "no complete JSON"),
    ('Sure: {"answer": "Rome"}', None, "none of the fields"),
    ('```json\n{"place": "Trevi Fountain", "city": 7, "recognised": "yes", "extra": 1,\n'
     ' "description": "A fountain in Rome."}\n```',
     {"place": "Trevi Fountain", "city": None, "country": None,
      "description": "A fountain in Rome.", "story": None, "where_to_eat": None,
      "recognised": None}, None),
])
def test_the_models_json_is_read_leniently_and_a_bad_one_keeps_the_text(
    s3: Any, bucket: str, table: Table, monkeypatch: pytest.MonkeyPatch, moto_server: str,
    text: str, fields: dict | None, why: str | None,
) -> None:
    make_structured(table, "family")
    with RecordingServer(backend=Answering(text), endpoint_exists=lambda name: name == ENDPOINT,
                         fetch_origins=[moto_server]) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", server.url)
        use_profile(monkeypatch, IDEFICS)
        record = ask(s3, bucket, preset="family")

    assert record["status"] == "ok"
    assert record["fields"] == fields
    if why:
        assert why in record["fields_error"]
        assert record["answer"] == text.strip()
    else:
        assert "fields_error" not in record and record["answer"] == "A fountain in Rome."


def test_async_mode_sends_the_same_request_and_parses_the_answer_the_same_way(
    s3: Any, bucket: str, server: RecordingServer, table: Table,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_structured(table, "history")
    ask(s3, bucket, "realtime.jpg", preset="history")
    realtime = server.requests[0]

    monkeypatch.setenv("INFERENCE_MODE", "async")
    monkeypatch.setenv("IMAGE_TRANSPORT", "data-uri")
    queued: list[dict] = []

    def invoke(settings: Any, **params: Any) -> dict[str, Any]:
        queued.append(params)
        return {"OutputLocation": f"s3://{bucket}/async/outputs/x.out", "InferenceId": "x"}

    monkeypatch.setattr(asynchronous, "_invoke", invoke)
    upload(s3, bucket, "input/queued.jpg", preset="history")
    run(event_for(bucket, s3, "input/queued.jpg"))
    (params,) = queued
    payload_key = params["InputLocation"].split(f"{bucket}/", 1)[1]
    request = json.loads(s3.get_object(Bucket=bucket, Key=payload_key)["Body"].read())
    assert without_urls(request) == without_urls(realtime)

    # SageMaker writes the container's answer: here, one with the schema's fields.
    output = [{"generated_text": json.dumps({
        "place": "Trevi Fountain", "city": "Rome", "country": "Italy",
        "description": "A fountain.", "story": "Coins.", "where_to_eat": "Nearby.",
        "recognised": True})}]
    s3.put_object(Bucket=bucket, Key="async/outputs/x.out", Body=json.dumps(output).encode())
    run(event_for(bucket, s3, "async/outputs/x.out"))
    record = result(s3, bucket, "output/queued.jpg.json")
    assert record["status"] == "ok"
    assert record["fields"]["city"] == "Rome" and record["fields"]["recognised"] is True
    assert record["answer"] == "A fountain. Coins. Nearby."
    assert record["preset"]["name"] == "history" and record["preset"]["structured"] is True



def test_async_a_reask_with_another_preset_ends_with_the_newest_whatever_finishes_last(
    s3: Any, bucket: str, server: RecordingServer, table: Table, queue: FakeQueue,
) -> None:
    """The same bytes queued twice, family then history: each request keeps its own payload,
    and SageMaker finishing family last does not bring family back."""
    first = _queue_upload(s3, bucket, "input/q.jpg", PHOTO, preset="family")
    second = _queue_upload(s3, bucket, "input/q.jpg", PHOTO, preset="history")
    assert first == second  # same bytes, same ETag
    locations = [params["InputLocation"] for params in queue.queued]
    assert len(set(locations)) == 2  # the first request is not overwritten by the second
    assert queue.finish(1, answer="History.")["status"] == "ok"
    assert queue.finish(0, answer="Family.")["status"] == "superseded"
    record = result(s3, bucket, "output/q.jpg.json")
    assert record["answer"] == "History." and record["preset"]["name"] == "history"
    assert s3.list_objects_v2(Bucket=bucket, Prefix="async/").get("KeyCount") == 0


# -- the cache ---------------------------------------------------------------------------------


def test_a_warm_container_reads_a_preset_once_then_again_after_the_cache_time(
    s3: Any, bucket: str, server: RecordingServer, table: Table, get_items: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRESET_CACHE_SECONDS", "60")
    now = [1000.0]  # the cache's clock, moved by the test: no photo races the cache time
    monkeypatch.setattr(presets, "clock", lambda: now[0])
    ask(s3, bucket, "a.jpg", preset="family")
    now[0] += 59
    record = ask(s3, bucket, "b.jpg", preset="family", language="Japanese")
    assert get_items == ["family"]
    assert record["preset"] == {"name": "family", "version": 1, "language": "Japanese"}

    table.edit("family", max_new_tokens=150)
    now[0] += 1.5  # past the 60 s since it was read
    record = ask(s3, bucket, "c.jpg", preset="family")
    assert get_items == ["family", "family"]
    assert record["preset"]["version"] == 2
    assert server.requests[-1]["parameters"]["max_new_tokens"] == 150

    # An unknown name: one read for it, one for default; then both are remembered.
    ask(s3, bucket, "d.jpg", preset="nope")
    ask(s3, bucket, "e.jpg", preset="nope")
    assert get_items == ["family", "family", "nope", "default"]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_dynamodb_down_serves_the_copy_this_container_has_else_the_built_in_prompt(
    s3: Any, bucket: str, server: RecordingServer, table: Table, get_items: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRESET_CACHE_SECONDS", "0")  # every photo asks the table
    ask(s3, bucket, "a.jpg", preset="food", language="French")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", closed_port_url())

    stale = ask(s3, bucket, "b.jpg", preset="food", language="French")
    assert stale["status"] == "ok"
    assert stale["preset"]["name"] == "food" and stale["preset"]["language"] == "French"
    assert "could not be read" in stale["preset"]["note"]
    assert "this function's copy" in stale["preset"]["note"]

    new_container()  # a new container: no copy
    fresh = ask(s3, bucket, "c.jpg", preset="food", language="French")
    assert fresh["status"] == "ok"
    assert fresh["preset"]["name"] == "default" and fresh["preset"]["version"] is None
    assert fresh["preset"]["requested"] == "food"
    assert "built-in prompt" in fresh["preset"]["note"]
    assert "Answer in French." in server.requests[-1]["inputs"]
    assert len(server.requests) == 3  # no photo lost


def test_a_redelivery_while_the_table_cannot_be_read_keeps_the_answer_there(
    s3: Any, bucket: str, server: RecordingServer, table: Table,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen under load: a redelivered event reached a new container while the table did not
    answer; the built-in prompt's choice differed from the answer's, so the photo was asked
    again and its answer replaced. The answer to this upload stands instead (the result
    names the upload it answers)."""
    key = "input/kept.jpg"
    upload(s3, bucket, key, preset="food", language="French")
    event = event_for(bucket, s3, key)
    run(event)
    first = s3.head_object(Bucket=bucket, Key="output/kept.jpg.json")["ETag"]
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", closed_port_url())
    new_container()  # no copy of the preset
    summary = run(event)["records"][0]
    assert summary["status"] == "duplicate", summary
    assert len(server.requests) == 1  # not asked again
    assert s3.head_object(Bucket=bucket, Key="output/kept.jpg.json")["ETag"] == first
    # A new upload of the key is still answered (with the built-in prompt, saying why).
    upload(s3, bucket, key, photo="trevi.jpeg", preset="food", language="French")
    record_summary = run(event_for(bucket, s3, key))["records"][0]
    assert record_summary["status"] != "duplicate" and len(server.requests) == 2


def test_an_answer_made_while_the_table_could_not_be_read_is_not_asked_again_on_redelivery(
    s3: Any, bucket: str, server: RecordingServer, table: Table,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The mirror case, also seen under load: the first pass could not read the table (its
    read timed out) and answered with the built-in prompt; the redelivery, with the table
    readable again, chose the table's preset and asked the model a second time."""
    key = "input/outage.jpg"
    upload(s3, bucket, key, preset="food", language="French")
    event = event_for(bucket, s3, key)
    table_url = os.environ["AWS_ENDPOINT_URL_DYNAMODB"]
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", closed_port_url())
    new_container()
    run(event)
    first = result(s3, bucket, "output/outage.jpg.json")
    assert first["status"] == "ok" and "could not be read" in first["preset"]["note"]
    etag = s3.head_object(Bucket=bucket, Key="output/outage.jpg.json")["ETag"]

    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", table_url)
    new_container()  # the redelivery reaches another container, the table answering
    summary = run(event)["records"][0]
    assert summary["status"] == "duplicate", summary
    assert len(server.requests) == 1
    assert s3.head_object(Bucket=bucket, Key="output/outage.jpg.json")["ETag"] == etag
    # Uploading it again is a new question, answered with the preset now.
    next_second()
    upload(s3, bucket, key, preset="food", language="French")
    run(event_for(bucket, s3, key))
    again = result(s3, bucket, "output/outage.jpg.json")
    assert again["preset"]["name"] == "food" and "note" not in again["preset"]
    assert len(server.requests) == 2


def next_second() -> None:
    """Wait for the clock's next whole second (at most one): S3 dates an object to the
    second, so an upload after it is told from the one before by its date alone."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.02)


# -- units -------------------------------------------------------------------------------------


def test_structured_request_per_container() -> None:
    schema = presets_schema.structured_schema()
    assert handler_request.structured_request(IDEFICS.limits, "tgi") == {
        "grammar": {"type": "json", "value": schema}}
    assert handler_request.structured_request(QWEN_TGI.limits, "messages") == {
        "response_format": {"type": "json_object", "value": schema}}
    assert handler_request.structured_request(SMOLVLM.limits, "messages")["response_format"][
        "json_schema"] == {"name": "answer", "schema": schema}
    assert handler_request.structured_request(IDEFICS.limits, "messages") is None  # TGI 1.x chat
    assert handler_request.structured_request(None, "tgi") is not None


def test_structured_fields_find_the_object_anywhere() -> None:
    fields, why = handler_answer.structured_fields(
        'Here: {"note": 1} then {"place": "X", "recognised": false} done')
    assert why is None and fields["place"] == "X" and fields["recognised"] is False
    assert fields["city"] is None
    assert handler_answer.structured_fields("{" * 500)[0] is None  # bounded work


# -- local mode end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from visual_tourism.local.stack import LocalStack

    # Local IAM on: the function reads the preset with its role's credentials, and local mode
    # authorizes DynamoDB on the table's ARN (iam_enforcement._dynamodb_table_arn).
    with LocalStack(model="stand-in", work_dir=tmp_path_factory.mktemp("local")) as running:
        yield running


def test_local_mode_presets_end_to_end(local: Any, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Any) -> None:
    """`up` makes the table and seeds; `ask --preset --language` uploads with metadata; the
    function (its own process, its role) reads the preset and answers; an unknown preset
    falls back; a preset broken by hand in the table is an error record without a model call."""
    from visual_tourism import stack
    from visual_tourism.aws import Aws
    from visual_tourism.config import load_config

    for key, value in local.env.items():
        monkeypatch.setenv(key, value)
    bodies: list[dict] = []
    real = local.model_server.handle_post

    def recording(path: str, headers: Any, body: bytes | None) -> Any:
        if body is not None:
            bodies.append(json.loads(body))
        return real(path, headers, body)

    monkeypatch.setattr(local.model_server, "handle_post", recording)
    cfg = load_config(prefix="t" + os.urandom(3).hex(), state_dir=str(tmp_path / "state"))
    aws = Aws(cfg.region)
    stack.up(cfg, aws, endpoint_poll=0.1)
    try:
        record = stack.ask(IMAGES / PHOTO, cfg, aws, preset="family", language="French",
                           timeout=60)
        assert record["status"] == "ok", record.get("error")
        assert record["preset"]["name"] == "family", record["preset"].get("note")
        assert record["preset"]["language"] == "French"
        assert isinstance(record["preset"]["version"], int)
        assert "[stand-in answer in French]" in record["answer"]
        family = presets_schema.from_dynamodb(aws.client("dynamodb").get_item(
            TableName=cfg.presets_table, Key={"name": {"S": "family"}})["Item"])
        prompt = bodies[-1]["inputs"]
        assert f"{family['instruction']} Answer in French." in prompt
        assert all(example["answer"] in prompt for example in family["examples"])
        assert prompt.count("![](") == len(family["examples"]) + 1

        bucket = cfg.bucket_name(aws.account_id)
        aws.s3.put_object(Bucket=bucket, Key="input/pirate.jpeg",
                          Body=(IMAGES / PHOTO).read_bytes(), Metadata={"preset": "pirate"})
        assert local.runtime.wait_idle(60)
        record = json.loads(aws.s3.get_object(Bucket=bucket,
                                              Key="output/pirate.jpeg.json")["Body"].read())
        assert record["status"] == "ok"
        assert record["preset"]["name"] == "default" and record["preset"]["requested"] == "pirate"

        history = presets_schema.from_dynamodb(aws.client("dynamodb").get_item(
            TableName=cfg.presets_table, Key={"name": {"S": "history"}})["Item"])
        history["generation"]["top_p"] = 1.0  # what TGI refuses
        aws.client("dynamodb").put_item(TableName=cfg.presets_table,
                                        Item=presets_schema.to_dynamodb(history))
        calls = len(local.model_server.calls)
        record = stack.ask(IMAGES / PHOTO, cfg, aws, preset="history", timeout=60,
                           key="input/broken.jpeg")
        assert record["error"]["code"] == "preset_invalid"
        assert "'history'" in record["error"]["message"]
        assert "generation: top_p=1.0" in record["error"]["message"]
        assert len(local.model_server.calls) == calls
    finally:
        local.runtime.wait_idle(60)
        stack.down(cfg, aws, delete_bucket=True)


def test_the_handler_reads_the_table_name_from_presets_schemas_variable() -> None:
    # The settings name PRESETS_TABLE themselves (presets_schema is imported only with presets).
    assert handler_settings.ENV_NAMES[presets_schema.ENV_VAR] == "presets_table"
