"""Local mode's web parts without a browser: the HTTP front (payload 2.0 events, API
Gateway's own answers, stage throttling) and S3's POST policy checks that moto lacks."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import requests
from botocore.config import Config

from visual_tourism.local import moto_patches
from visual_tourism.local.post_policy import PolicyViolation, check
from visual_tourism.local.web_front import TokenBucket, WebFront, payload_v2

ROUTES = ("GET /", "POST /uploads", "GET /results/{id}")


def test_payload_v2_events_carry_what_api_gateway_sends():
    event = payload_v2(
        method="POST", target="/results/abc?x=1&x=2&y=",
        headers=[("Content-Type", "application/json"), ("X-Access-Code", "k"),
                 ("Accept", "a"), ("accept", "b"), ("Cookie", "a=1; b=2")],
        body=b'{"size": 1}', route_key="GET /results/{id}", path_parameters={"id": "abc"},
    )
    assert event["version"] == "2.0" and event["routeKey"] == "GET /results/{id}"
    assert event["rawPath"] == "/results/abc" and event["rawQueryString"] == "x=1&x=2&y="
    assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
    assert event["headers"]["x-access-code"] == "k" and event["headers"]["accept"] == "a,b"
    assert event["cookies"] == ["a=1", "b=2"] and "cookie" not in event["headers"]
    assert event["pathParameters"] == {"id": "abc"}
    assert event["body"] == '{"size": 1}' and event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["http"]["method"] == "POST" and ctx["stage"] == "$default"
    again = payload_v2(method="GET", target="/", headers={}, body=b"\xff\x00",
                       route_key="GET /", path_parameters=None)
    assert again["requestContext"]["requestId"] != ctx["requestId"]  # per request
    assert again["isBase64Encoded"] and base64.b64decode(again["body"]) == b"\xff\x00"
    assert "queryStringParameters" not in again and "pathParameters" not in again


def test_the_front_routes_throttles_and_answers_like_api_gateway():
    seen = []

    def invoke(event):
        seen.append(event)
        if event["rawPath"] == "/results/boom":
            raise RuntimeError("the function failed")
        return {"statusCode": 201, "headers": {"content-type": "text/plain", "x-a": "1"},
                "body": base64.b64encode(b"hello").decode(), "isBase64Encoded": True,
                "cookies": ["c=1"]}

    with WebFront(invoke, ROUTES, rate=0.001, burst=4) as front:
        r = requests.post(front.url + "uploads", data=b"{}", timeout=5,
                          headers={"content-type": "application/json", "x-access-code": "s"})
        assert (r.status_code, r.text, r.headers["x-a"]) == (201, "hello", "1")
        assert r.headers["set-cookie"] == "c=1"
        assert seen[-1]["routeKey"] == "POST /uploads" and seen[-1]["body"] == "{}"
        missing = requests.get(front.url + "nowhere", timeout=5)
        assert (missing.status_code, missing.json()) == (404, {"message": "Not Found"})
        failed = requests.get(front.url + "results/boom", timeout=5)
        assert (failed.status_code, failed.json()) == (500, {"message": "Internal Server Error"})
        assert seen[-1]["pathParameters"] == {"id": "boom"}
        # Burst of 4 spent (the 404 does not count: API Gateway throttles routes), then 429.
        requests.get(front.url, timeout=5)
        requests.get(front.url, timeout=5)
        throttled = requests.get(front.url, timeout=5)
        assert throttled.status_code == 429
        assert throttled.json() == {"message": "Too Many Requests"}
        assert front.requests["GET /"] == 2 and front.link("x-y") == front.url + "#code=x-y"


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] += 0.5
    assert bucket.take() and not bucket.take()


# -- POST policies -----------------------------------------------------------------------------

SECRETS = {"testing": "testing"}


@pytest.fixture
def s3_form(moto_server):
    moto_patches.patch_post_policies(SECRETS)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1",
                      config=Config(signature_version="s3v4"))
    name = f"vt-post-{time.monotonic_ns()}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["http://page.test"], "AllowedMethods": ["POST"]}]})

    def form(expires: int = 60, key: str = "input/web/a.jpg") -> dict:
        return s3.generate_presigned_post(
            name, key, Fields={"Content-Type": "image/jpeg", "x-amz-meta-preset": "food"},
            Conditions=[["content-length-range", 1, 1000],
                        ["starts-with", "$Content-Type", "image/"], {"x-amz-meta-preset": "food"}],
            ExpiresIn=expires)

    yield s3, name, form
    moto_patches.unpatch_post_policies()


def _post(form: dict, data: bytes, **changes: str) -> requests.Response:
    fields = {**form["fields"], **changes}
    return requests.post(form["url"], data=fields, files={"file": ("a.jpg", data)},
                         headers={"Origin": "http://page.test"}, timeout=10)


def _code(response: requests.Response) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0]


def _stored(s3, name: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", [])]


def test_a_good_upload_is_stored_with_its_type_metadata_and_cors_headers(s3_form):
    s3, name, form = s3_form
    ok = _post(form(), b"x" * 500)
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == "http://page.test"
    head = s3.head_object(Bucket=name, Key="input/web/a.jpg")
    assert head["ContentType"] == "image/jpeg" and head["Metadata"] == {"preset": "food"}


@pytest.mark.parametrize("data, changes, status, code, words", [
    (b"x" * 1001, {}, 400, "EntityTooLarge", "<MaxSizeAllowed>1000</MaxSizeAllowed>"),
    (b"", {}, 400, "EntityTooSmall", "<MinSizeAllowed>1</MinSizeAllowed>"),
    (b"x", {"Content-Type": "text/plain"}, 403, "AccessDenied",
     'Policy Condition failed: ["starts-with", "$Content-Type", "image/"]'),
    (b"x", {"key": "input/elsewhere.jpg"}, 403, "AccessDenied", "Policy Condition failed"),
    (b"x", {"x-amz-meta-preset": "history"}, 403, "AccessDenied", "Policy Condition failed"),
    (b"x", {"x-amz-meta-extra": "1"}, 403, "AccessDenied", "Extra input fields: x-amz-meta-extra"),
    (b"x", {"x-amz-signature": "0" * 64}, 403, "SignatureDoesNotMatch", "signature"),
])
def test_a_post_that_breaks_its_policy_is_refused_as_s3_does(s3_form, data, changes, status,
                                                             code, words):
    s3, name, form = s3_form
    refused = _post(form(), data, **changes)
    assert (refused.status_code, _code(refused)) == (status, code)
    assert words in refused.text
    assert refused.headers["Access-Control-Allow-Origin"] == "http://page.test"  # readable
    assert _stored(s3, name) == []  # nothing stored


def test_an_expired_form_is_refused(s3_form):
    s3, name, form = s3_form
    policy_form = form(expires=60)
    policy = json.loads(base64.b64decode(policy_form["fields"]["policy"]))
    later = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00")) + timedelta(
        seconds=1)
    fields = {k.lower(): v for k, v in policy_form["fields"].items()}
    with pytest.raises(PolicyViolation) as refused:
        check(fields, 10, name, SECRETS, now=later)
    assert refused.value.status == 403 and "Policy expired" in refused.value.message
    check(fields, 10, name, SECRETS, now=datetime.now(UTC))  # the same form, in time


def test_an_unsigned_post_is_refused(s3_form):
    s3, name, form = s3_form
    r = requests.post(form()["url"], data={"key": "input/web/x.jpg"},
                      files={"file": ("a.jpg", b"x")}, timeout=10)
    assert (r.status_code, _code(r)) == (403, "AccessDenied") and _stored(s3, name) == []


@pytest.mark.parametrize("condition", [
    {"Content-Type": "image/jpeg"}, ["eq", "$Content-Type", "image/jpeg"],
    ["eq", "$content-type", "image/jpeg"],
])
@pytest.mark.parametrize("fields, files", [
    ({"Content-Type": "image/svg+xml"}, None),
    ({"Content-Type": "image/jpeg; charset=utf-8"}, None),
    ({"Content-Type": "IMAGE/JPEG"}, None),
    ({"Content-Type": None}, None),  # no type at all: S3 would store the default one
    # The form's type plus another spelling of the field: S3 refuses a repeated field.
    ({"content-type": "image/svg+xml"}, None),
    ({"CONTENT-TYPE": "image/svg+xml"}, None),
])
def test_an_exact_content_type_condition_is_as_strict_as_s3s(s3_form, condition, fields, files):
    """The web API signs each form for exactly one type: a POST with any other type, a
    missing one or a second Content-Type field stores nothing (S3 answers 403 or 400)."""
    s3, name, _ = s3_form
    form = s3.generate_presigned_post(
        name, "input/web/b.jpg", Fields={"Content-Type": "image/jpeg"},
        Conditions=[["content-length-range", 1, 1000], condition], ExpiresIn=60)
    sent = {**form["fields"]}
    for field, value in fields.items():
        if value is None:
            sent.pop(field, None)
        elif field == "Content-Type":
            sent[field] = value
        else:
            sent[field] = value  # beside the form's own "Content-Type"
    refused = requests.post(form["url"], data=sent, files={"file": ("b.svg", b"<svg/>")},
                            headers={"Origin": "http://page.test"}, timeout=10)
    assert refused.status_code in (400, 403), refused.text
    assert _code(refused) in ("AccessDenied", "InvalidArgument")
    assert _stored(s3, name) == []
    ok = requests.post(form["url"], data=form["fields"], files={"file": ("b.jpg", b"x")},
                       headers={"Origin": "http://page.test"}, timeout=10)
    assert ok.status_code == 204
    assert s3.head_object(Bucket=name, Key="input/web/b.jpg")["ContentType"] == "image/jpeg"
