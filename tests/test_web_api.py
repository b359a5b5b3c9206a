"""The web API function (web_function/app.py) with payload-2.0 events from tests/events/,
against moto, and the web step of `up`/`down` (visual_tourism/web.py)."""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from visual_tourism import packaging, web
from visual_tourism.aws import Aws
from visual_tourism.config import STACK_TAG, load_config
from visual_tourism.state import State
from web_function import app

EVENTS = Path(__file__).resolve().parent / "events"
REGION = "us-east-1"

BUCKET = "vt-web-test-bucket"
CODE = "abcd-efgh-jkmn"


def event(name: str, code: str | None = CODE, **changes: Any) -> dict[str, Any]:
    data = json.loads((EVENTS / name).read_text())
    if code is None:
        data["headers"].pop("x-access-code", None)
    elif "x-access-code" in data["headers"]:
        data["headers"]["x-access-code"] = code
    for key, value in changes.items():
        data[key] = value
    return data


def result_event(photo_id: str, code: str | None = CODE) -> dict[str, Any]:
    return event("api_get_result.json", code, rawPath=f"/results/{photo_id}",
                 pathParameters={"id": photo_id})


@pytest.fixture
def env(mocked_aws) -> dict[str, str]:
    app.clear_cache()
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/vt/web/access-code", Value=CODE, Type="SecureString")
    yield {"BUCKET_NAME": BUCKET, "CODE_PARAMETER": "/vt/web/access-code",
           "AWS_REGION": REGION, "MAX_PHOTO_BYTES": "5000000"}
    app.clear_cache()


def body(response: dict[str, Any]) -> Any:
    text = response["body"]
    if response.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    return json.loads(text)


def test_the_page_needs_no_code_and_allows_only_the_api_and_the_bucket(env):
    response = app.handle(event("api_get_page.json", code=None), env)
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"].startswith("text/html")
    html = response["body"]
    assert "<title>Visual Tourism" in html and "__MAX_PHOTO_BYTES__" not in html
    assert 'Number("5000000")' in html
    csp = response["headers"]["content-security-policy"]
    assert "connect-src 'self' https://" in csp and "default-src 'none'" in csp
    assert "http" not in html.split("<script>")[1].split("fetch(")[0].lower().replace(
        "xmlhttprequest", "")  # no third-party address in the script


@pytest.mark.parametrize("code, status, error", [
    (None, 401, "missing_code"), ("", 401, "missing_code"), ("abcd-efgh-jkmx", 403, "wrong_code"),
])
def test_every_api_route_refuses_a_missing_or_wrong_code(env, code, status, error):
    for name in ("api_post_upload.json", "api_get_results.json", "api_get_presets.json"):
        ev = event(name)
        if code is None:
            del ev["headers"]["x-access-code"]
        else:
            ev["headers"]["x-access-code"] = code
        response = app.handle(ev, env)
        assert response["statusCode"] == status, name
        assert body(response)["error"] == error
        assert "teacher" in body(response)["message"]


def test_an_upload_form_is_for_one_new_key_under_input_web_with_size_and_type_limits(env):
    before = datetime.now(UTC)
    response = app.handle(event("api_post_upload.json"), env)
    assert response["statusCode"] == 201
    answer = body(response)
    photo_id = answer["id"]
    assert app.ID_RE.match(photo_id) and photo_id.endswith(".jpg")
    fields = answer["upload"]["fields"]
    assert fields["key"] == f"input/web/{photo_id}"
    assert fields["Content-Type"] == "image/jpeg"
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert ["content-length-range", 1, 5000000] in policy["conditions"]
    # Exactly the type asked for (S3 then stores and serves it as that type), never a prefix.
    assert {"Content-Type": "image/jpeg"} in policy["conditions"]
    assert not any(isinstance(c, list) and c[0] == "starts-with" and "Content-Type" in c[1]
                   for c in policy["conditions"])
    assert {"key": f"input/web/{photo_id}"} in policy["conditions"]
    # As short as a phone upload needs: the page asks for the form just before it sends.
    expires = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    assert timedelta(seconds=100) < expires - before <= timedelta(seconds=125)
    assert answer["expires_in"] == 120
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    # Two forms never share a key.
    again = body(app.handle(event("api_post_upload.json"), env))
    assert again["id"] != photo_id


def test_a_base64_body_with_preset_and_language_signs_them_as_metadata(env):
    answer = body(app.handle(event("api_post_upload_base64.json"), env))
    fields = answer["upload"]["fields"]
    assert answer["id"].endswith(".png")
    assert fields["x-amz-meta-preset"] == "food" and fields["x-amz-meta-language"] == "French"
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert {"x-amz-meta-preset": "food"} in policy["conditions"]


def test_only_the_image_types_the_page_offers_get_a_form_each_signed_exactly(env):
    page = app.PAGE.read_text()
    offered = re.search(r'<input id="photo"[^>]*accept="([^"]+)"', page).group(1).split(",")
    assert offered == list(app.EXTENSIONS) and "image/svg+xml" not in offered
    for content_type in offered:
        response = app.handle(event("api_post_upload.json", body=json.dumps(
            {"content_type": content_type, "size": 10})), env)
        assert response["statusCode"] == 201, content_type
        fields = body(response)["upload"]["fields"]
        policy = json.loads(base64.b64decode(fields["policy"]))
        assert fields["Content-Type"] == content_type
        assert {"Content-Type": content_type} in policy["conditions"]
    for refused in ("image/svg+xml", "image/svg+xml; charset=utf-8", "image/", "image/x-icon",
                    "image/jpeg; x=<script>", "text/html", "IMAGE/SVG+XML"):
        response = app.handle(event("api_post_upload.json", body=json.dumps(
            {"content_type": refused, "size": 10})), env)
        assert response["statusCode"] == 415, refused
        assert body(response)["error"] == "not_an_image" and "upload" not in body(response)


@pytest.mark.parametrize("request_body, status, error", [
    ({"content_type": "text/plain", "size": 10}, 415, "not_an_image"),
    ({"content_type": "image/jpeg", "size": 6_000_000}, 413, "photo_too_large"),
    ({"content_type": "image/jpeg"}, 400, "bad_request"),
    ({"content_type": "image/jpeg", "size": 10, "preset": "../../etc"}, 400, "bad_request"),
    ("not json", 400, "bad_request"),
    ({"content_type": "image/jpeg", "size": 10, "pad": "x" * 5000}, 413, "request_too_large"),
])
def test_bad_upload_requests_get_a_clear_answer_and_no_form(env, request_body, status, error):
    text = request_body if isinstance(request_body, str) else json.dumps(request_body)
    response = app.handle(event("api_post_upload.json", body=text), env)
    assert response["statusCode"] == status
    answer = body(response)
    assert answer["error"] == error and len(answer["message"]) > 20
    assert "upload" not in answer


def test_a_result_is_unknown_then_pending_then_answered_without_naming_the_account(env):
    s3 = boto3.client("s3", region_name=REGION)
    photo_id = app.new_id("image/jpeg")
    unknown = app.handle(result_event(photo_id), env)
    assert unknown["statusCode"] == 404 and body(unknown)["error"] == "unknown_id"
    assert app.handle(result_event("../../secret"), env)["statusCode"] == 404

    s3.put_object(Bucket=BUCKET, Key=f"input/web/{photo_id}", Body=b"photo")
    pending = app.handle(result_event(photo_id), env)
    assert pending["statusCode"] == 200 and body(pending)["status"] == "pending"

    record = {"status": "ok", "answer": "The Eiffel Tower.",
              "input": {"bucket": BUCKET, "key": f"input/web/{photo_id}"},
              "model": {"endpoint": "vt-endpoint", "profile": "smolvlm", "model_id": "m/x"},
              "timing": {"total_seconds": 2.5}, "request_id": "r-1"}
    s3.put_object(Bucket=BUCKET, Key=f"output/web/{photo_id}.json", Body=json.dumps(record))
    answered = body(app.handle(result_event(photo_id), env))
    assert answered["status"] == "ok" and answered["record"]["answer"] == "The Eiffel Tower."
    assert BUCKET not in json.dumps(answered["record"]) and "endpoint" not in answered["record"]
    assert answered["record"]["model"] == {"profile": "smolvlm", "model_id": "m/x"}
    # The gallery's small copy (made by the handler, without metadata), never the original.
    assert answered["photo_url"].split("?")[0].endswith(f"thumbnails/web/{photo_id}.jpg")


def _query(url: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(url).query))


def test_photo_urls_are_safe_typed_and_stable_for_a_window_so_browsers_cache_them(
        env, monkeypatch):
    """Each URL names the small copy, is served as image/jpeg inline (whatever the object
    says), says how long to cache it, and is the same URL for the whole signing window, so a
    gallery refreshed every 60 s finds its images in the browser's cache."""
    import botocore.auth

    s3 = boto3.client("s3", region_name=REGION)
    photo_id = app.new_id("image/jpeg")
    s3.put_object(Bucket=BUCKET, Key=f"output/web/{photo_id}.json",
                  Body=json.dumps({"status": "ok", "answer": "x"}))
    window = app.PHOTO_URL_WINDOW_SECONDS
    start = 1_700_000_000 // window * window
    urls = []
    for offset in (5, 65, window - 1, window + 5):
        monkeypatch.setattr(app, "_clock", lambda offset=offset: start + offset)
        listed = body(app.handle(event("api_get_results.json"), env))["results"]
        single = body(app.handle(result_event(photo_id), env))
        assert listed[0]["photo_url"] == single["photo_url"]
        urls.append(single["photo_url"])
    assert urls[0] == urls[1] == urls[2] != urls[3]  # one URL per window
    query = _query(urls[0])
    assert query["response-content-type"] == "image/jpeg"
    assert query["response-content-disposition"] == f'inline; filename="{photo_id}.jpg"'
    assert query["response-cache-control"] == f"private, max-age={window}, immutable"
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert signed_at.timestamp() == start
    # Valid for at least a window after it was last handed out.
    assert int(query["X-Amz-Expires"]) >= 2 * window
    # The very URL botocore signs at that instant: a valid SigV4 signature.
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: signed_at.replace(
        tzinfo=None))
    expected = boto3.client("s3", region_name=REGION, config=app.Config(
        signature_version="s3v4")).generate_presigned_url("get_object", Params={
            "Bucket": BUCKET, "Key": f"thumbnails/web/{photo_id}.jpg",
            "ResponseContentType": "image/jpeg",
            "ResponseContentDisposition": f'inline; filename="{photo_id}.jpg"',
            "ResponseCacheControl": f"private, max-age={window}, immutable"},
        ExpiresIn=int(query["X-Amz-Expires"]))
    assert _query(expected) == query
    assert expected.split("?")[0] == urls[0].split("?")[0]


def test_an_error_record_is_passed_on_as_the_handler_wrote_it(env):
    s3 = boto3.client("s3", region_name=REGION)
    photo_id = app.new_id("image/jpeg")
    error = {"code": "not_an_image", "message": "This file is text, not a photo."}
    s3.put_object(Bucket=BUCKET, Key=f"output/web/{photo_id}.json",
                  Body=json.dumps({"status": "error", "error": error}))
    answer = body(app.handle(result_event(photo_id), env))
    assert answer["status"] == "error" and answer["record"]["error"] == error


def test_the_gallery_lists_the_newest_results_of_the_last_day(env):
    s3 = boto3.client("s3", region_name=REGION)
    now = datetime.now(UTC)
    ids = [app.new_id("image/jpeg", now - timedelta(minutes=n)) for n in range(30)]
    old = app.new_id("image/jpeg", now - timedelta(days=2))
    for photo_id in [*ids, old]:
        s3.put_object(Bucket=BUCKET, Key=f"output/web/{photo_id}.json",
                      Body=json.dumps({"status": "ok", "answer": photo_id}))
    s3.put_object(Bucket=BUCKET, Key="output/other.jpg.json", Body=b"{}")  # not the web's
    answer = body(app.handle(event("api_get_results.json"), env))
    listed = [item["id"] for item in answer["results"]]
    assert listed == ids[:24]  # newest first, at most gallery_size, nothing older than a day


def test_presets_are_null_without_a_table_and_listed_with_one(env):
    answer = body(app.handle(event("api_get_presets.json"), env))
    assert answer == {"presets": None, "languages": None}
    db = boto3.client("dynamodb", region_name=REGION)
    db.create_table(TableName="vt-presets", BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}])
    for name, language in (("food", "French"), ("default", "English")):
        db.put_item(TableName="vt-presets",
                    Item={"name": {"S": name}, "language": {"S": language}})
    answer = body(app.handle(event("api_get_presets.json"),
                                 {**env, "PRESETS_TABLE": "vt-presets"}))
    assert [p["id"] for p in answer["presets"]] == ["default", "food"]
    assert answer["languages"] == ["English", "French"]


def test_a_rotated_code_replaces_the_old_one(env):
    env = {**env, "CODE_CACHE_SECONDS": "0"}
    assert app.handle(event("api_get_presets.json"), env)["statusCode"] == 200
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/vt/web/access-code", Value="new-code-0000", Type="SecureString", Overwrite=True)
    assert app.handle(event("api_get_presets.json"), env)["statusCode"] == 403
    assert app.handle(event("api_get_presets.json", "new-code-0000"), env)[
        "statusCode"] == 200


def test_the_code_is_never_logged(env, caplog):
    # botocore's own DEBUG lines show response bodies (the parameter's value among them);
    # Lambda logs at INFO unless told otherwise, so only our lines and INFO+ are checked.
    caplog.set_level(logging.DEBUG)
    for code in (CODE, "wrong-code-1234"):
        app.handle(event("api_post_upload.json", code), env)
    ours = [r for r in caplog.records if r.name == app.__name__ or r.levelno >= logging.INFO]
    assert ours and all(c not in r.getMessage() for r in ours for c in (CODE, "wrong-code-1234"))


def test_an_unreadable_code_parameter_is_503_in_words(env):
    env = {**env, "CODE_PARAMETER": "/missing"}
    response = app.handle(event("api_get_presets.json"), env)
    assert response["statusCode"] == 503 and "access code" in body(response)["message"]


# -- the web step of up/down --------------------------------------------------------------------


@pytest.fixture
def stack(mocked_aws, tmp_path):
    cfg = load_config(region=REGION, prefix="vt-web", state_dir=str(tmp_path / "state"))
    aws = Aws(REGION, sleep=lambda _: None)
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": [
        {"ID": "someone-else", "AllowedOrigins": ["https://example.org"],
         "AllowedMethods": ["GET"]}]})
    return cfg, aws


def test_deploy_creates_the_api_with_routes_throttling_code_and_cors(stack):
    cfg, aws = stack
    api = web.deploy(aws, cfg, BUCKET)
    gw = aws.client("apigatewayv2")
    routes = {r["RouteKey"] for r in gw.get_routes(ApiId=api["id"])["Items"]}
    assert routes == set(app.ROUTES)
    (integration,) = gw.get_integrations(ApiId=api["id"])["Items"]
    assert integration["PayloadFormatVersion"] == "2.0"
    assert integration["IntegrationType"] == "AWS_PROXY"
    stage = gw.get_stage(ApiId=api["id"], StageName="$default")
    assert stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == cfg.web_rate_limit
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == cfg.web_burst_limit
    assert stage["RouteSettings"]["POST /uploads"]["ThrottlingRateLimit"] == 1.0
    fn = aws.lambda_.get_function(FunctionName=web.function_name(cfg))
    assert fn["Configuration"]["Handler"] == "web_function.app.lambda_handler"
    policy = json.loads(aws.lambda_.get_policy(FunctionName=web.function_name(cfg))["Policy"])
    assert policy["Statement"][0]["Principal"] == {"Service": "apigateway.amazonaws.com"}
    param = aws.client("ssm").get_parameter(Name=web.code_parameter(cfg))["Parameter"]
    assert param["Type"] == "SecureString"
    code = web.get_code(aws, cfg)
    assert len(code) == 14 and code not in cfg.state_path.read_text()
    rules = aws.s3.get_bucket_cors(Bucket=BUCKET)["CORSRules"]
    assert {r.get("ID") for r in rules} == {"someone-else", web.CORS_RULE_ID}
    ours = next(r for r in rules if r.get("ID") == web.CORS_RULE_ID)
    assert ours["AllowedOrigins"] == [web.origin_of(api["url"])]
    assert State(cfg.state_path).get("web", "url") == api["url"]
    assert web.link(aws, cfg) == f"{api['url']}#code={code}"

    # Idempotent: same API, same code, nothing duplicated.
    again = web.deploy(aws, cfg, BUCKET)
    assert again == api and web.get_code(aws, cfg) == code
    assert len(gw.get_routes(ApiId=api["id"])["Items"]) == len(app.ROUTES)
    assert len(aws.s3.get_bucket_cors(Bucket=BUCKET)["CORSRules"]) == 2


def test_the_role_may_upload_only_under_input_web_and_read_only_web_folders(stack):
    cfg, aws = stack
    policy = web.web_policy(cfg, account="000000000000", bucket=BUCKET)
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["SignUploadFormsForWebPhotos"]["Resource"].endswith(f"{BUCKET}/input/web/*")
    # The results and the small copies; never the originals (they may carry a position).
    assert sorted(r.split(BUCKET)[1] for r in by_sid["ReadResultsAndSmallCopies"]["Resource"]
                  ) == ["/output/web/*", "/thumbnails/web/*"]
    assert not any("input/" in str(s["Resource"]) for s in policy["Statement"]
                   if "s3:GetObject" in s["Action"])
    assert "ReadPresets" not in by_sid
    with_table = web.web_policy(cfg, account="000000000000", bucket=BUCKET, table="t")
    assert with_table["Statement"][-1]["Action"] == ["dynamodb:Scan"]
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert not any(a.endswith("*") for a in actions)


def test_rotate_changes_the_code_and_remove_leaves_only_what_is_not_ours(stack):
    cfg, aws = stack
    web.deploy(aws, cfg, BUCKET)
    old = web.get_code(aws, cfg)
    assert web.rotate_code(aws, cfg) not in (old, None)
    removed = web.remove(aws, cfg, BUCKET)
    assert "HTTP API vt-web-web" in removed and "access code parameter" in removed
    assert web.find_api(aws, cfg) is None and web.get_code(aws, cfg) is None
    assert [r.get("ID") for r in aws.s3.get_bucket_cors(Bucket=BUCKET)["CORSRules"]] == [
        "someone-else"]
    assert web.remove(aws, cfg, BUCKET) == []  # twice is fine
    assert State(cfg.state_path).get("web", "url") is None


def test_an_api_of_that_name_not_ours_is_refused(stack):
    cfg, aws = stack
    aws.client("apigatewayv2").create_api(Name=web.api_name(cfg), ProtocolType="HTTP",
                                          Tags={STACK_TAG: "someone-else"})
    from visual_tourism.errors import NotOwnedError

    with pytest.raises(NotOwnedError):
        web.deploy(aws, cfg, BUCKET)


def test_the_zip_holds_the_function_folder_only():
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(packaging.build_zip("web"))).namelist()
    assert names == ["web_function/__init__.py", "web_function/app.py", "web_function/page.html"]


def test_the_cli_prints_the_link_and_a_qr_code_and_rotates_the_code(stack, capsys,
                                                                     monkeypatch):
    from visual_tourism.cli import main

    cfg, aws = stack
    web.deploy(aws, cfg, BUCKET)
    args = ["--prefix", "vt-web", "--region", REGION]
    assert main(["web", *args]) == 0
    out = capsys.readouterr().out
    link = web.link(aws, cfg)
    assert link in out and "#code=" in link
    assert "\u2588" in out or "\u2580" in out  # block characters of the terminal QR code
    assert main(["web", "--rotate-code", "--no-qr", *args]) == 0
    out = capsys.readouterr().out
    assert "New access code" in out and link not in out and web.link(aws, cfg) in out


def test_the_notebook_shows_the_link_as_a_qr_image(stack, monkeypatch):
    from visual_tourism.notebook import web as web_notebook

    cfg, aws = stack
    web.deploy(aws, cfg, BUCKET)
    link = web_notebook.web_link(cfg, aws, local=False)
    assert link == web.link(aws, cfg)
    page = web_notebook.web_link_html(link + "&<x>")
    assert '<img src="data:image/png;base64,' in page and "&amp;&lt;x&gt;" in page
    png = base64.b64decode(web_notebook.qr_data_uri(link).split(",", 1)[1])
    assert png.startswith(b"\x89PNG")
    # Local mode: only while `local serve` serves the page where it recorded.
    assert web_notebook.web_link(cfg, aws, local=True) is None
    from visual_tourism.local.web_front import WebFront

    state = State(cfg.state_path)
    with WebFront(lambda event: {}, app.ROUTES) as front:
        state.record("web", **{**state.steps["web"], "local_url": front.url})
        assert web_notebook.web_link(cfg, aws, local=True) == (
            f"{front.url}#code={web.get_code(aws, cfg)}")
    assert web_notebook.web_link(cfg, aws, local=True) is None  # recorded, but stopped
    assert web_notebook.web_link(cfg.replace(web_api="off"), aws, local=False) is None


def _page_explanations() -> set[str]:
    script = app.PAGE.read_text()
    block = script.split("const EXPLAIN = {", 1)[1].split("};", 1)[0]
    return set(re.findall(r"^\s*([a-z_]+):", block, re.M))


def _record_error_codes() -> set[str]:
    """Every error code a result record can carry, read from the code that writes them: every
    module zipped into the photo function (the handler, its presets, images and async
    completion) and this API's own stand-in for a record it cannot read (web_function/app.py)."""
    codes: set[str] = set()
    for _, path in packaging.code_files("photo") + packaging.code_files("web"):
        if path.suffix != ".py":
            continue
        text = path.read_text()
        codes |= set(re.findall(r'(?:Failure|BadImage)\(\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'"code":\s*"([a-z_]+)"', text))
    return codes


def test_the_page_explains_every_error_code_a_result_record_can_carry():
    codes = _record_error_codes()
    # The collection works (the handler's sync and async codes are found) ...
    assert {"not_an_image", "model_timeout", "queue_expired", "model_failed"} <= codes
    # ... and the page has words for each, the gallery's included (the same table).
    assert codes - _page_explanations() == set()


# -- nearby places: the uploader's position, never in the gallery ------------------------------

def test_a_location_is_rounded_and_signed_with_the_form(env):
    request_body = {"content_type": "image/jpeg", "size": 1000, "near": "41.900912,12.483312"}
    answer = body(app.handle(event("api_post_upload.json", body=json.dumps(request_body)), env))
    fields = answer["upload"]["fields"]
    assert fields["x-amz-meta-near"] == "41.901,12.483"  # about 100 m, no finer
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert {"x-amz-meta-near": "41.901,12.483"} in policy["conditions"]
    plain = body(app.handle(event("api_post_upload.json"), env))  # off unless sent
    assert "x-amz-meta-near" not in plain["upload"]["fields"]


@pytest.mark.parametrize("near", ["91,0", "0,181", "12.4", "41.9;12.4", "lat,lon", 41.9])
def test_a_location_that_is_not_one_is_refused(env, near):
    request_body = {"content_type": "image/jpeg", "size": 1000, "near": near}
    response = app.handle(event("api_post_upload.json", body=json.dumps(request_body)), env)
    assert response["statusCode"] == 400 and "location" in body(response)["message"]


def test_no_position_reaches_the_gallery_and_ones_own_result_has_places_only(env):
    s3 = boto3.client("s3", region_name=REGION)
    photo_id = app.new_id("image/jpeg")
    places = {"status": "ok", "position": {"lat": 41.901, "lon": 12.483, "source": "user"},
              "position_source": "user", "radius_m": 800,
              "nearby": [{"name": "Da Mario", "distance_m": 120}]}
    s3.put_object(Bucket=BUCKET, Key=f"output/web/{photo_id}.json",
                  Body=json.dumps({"status": "ok", "answer": "Trevi.", "places": places}))
    own = body(app.handle(result_event(photo_id), env))["record"]
    assert own["places"]["nearby"] == places["nearby"] and "position" not in own["places"]
    gallery = body(app.handle(event("api_get_results.json"), env))
    (item,) = [i for i in gallery["results"] if i["id"] == photo_id]
    assert "places" not in item["record"] and "41.901" not in json.dumps(gallery)
