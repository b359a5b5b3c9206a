"""Visual Tourism web API: the traveller's front door (API Gateway HTTP API, payload 2.0).

Routes (the HTTP API has exactly these; visual_tourism/web.py creates them from ``ROUTES``):

- ``GET /``                  the page (page.html, beside this file in its folder); no code needed
- ``GET /presets``           the answer presets and languages, or nulls when there are none
- ``POST /uploads``          an S3 presigned POST for one new, unguessable key under input/web/
- ``GET /results/{id}``      one result: pending, the answer, or the error record
- ``GET /results``           the class's recent results, newest first, for the gallery

Every route but the page needs the class access code in the ``x-access-code`` header. The
code lives in an SSM SecureString; it is compared in constant time and never logged. Photos
go straight from the browser to S3 (never through Lambda's 6 MB payload limit); the upload
trigger then answers them as any other photo under input/, once per upload form, and writes a
small copy without metadata under thumbnails/web/: the only image this function hands out
(its role cannot read the originals).

Standard library and boto3 only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
ROUTES = ("GET /", "GET /presets", "POST /uploads", "GET /results", "GET /results/{id}")
CODE_HEADER = "x-access-code"
# The image types the page offers (its file field's ``accept``, the same list) and the handler
# reads, with the extension the key gets (the handler reads the content, not the name; the
# extension only helps a person browsing the bucket). Each upload form is signed for exactly
# the one type asked for: S3 stores the photo with that type, so nothing else (an SVG with a
# script, HTML) can be uploaded through a form. HEIC is not offered: phones' browsers convert
# it to JPEG for a field that does not accept it.
EXTENSIONS = {
    "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif",
    "image/bmp": "bmp",
}
ID_RE = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]{20}\.(?:" + "|".join(
    sorted(set(EXTENSIONS.values()) | {"img"})) + r")$")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
MAX_REQUEST_BODY = 4096  # an upload request is a few dozen bytes of JSON
GALLERY_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class Settings:
    bucket: str
    code_parameter: str
    input_prefix: str = "input/"
    output_prefix: str = "output/"
    web_folder: str = "web/"
    max_photo_bytes: int = 20_000_000  # the handler's max_image_bytes
    # The page asks for a form just before it sends (after any downscaling): two minutes
    # carry a 20 MB photo at 1.5 Mbit/s; a photo answers once per form anyway (the handler).
    upload_expires_seconds: int = 120
    gallery_size: int = 24
    # The handler's small copies of web photos, without metadata: what the gallery shows.
    thumbnail_prefix: str = "thumbnails/"
    presets_table: str = ""
    code_cache_seconds: float = 60.0

    @property
    def input_folder(self) -> str:
        return self.input_prefix + self.web_folder

    @property
    def output_folder(self) -> str:
        return self.output_prefix + self.web_folder

    @property
    def thumbnail_folder(self) -> str:
        return self.thumbnail_prefix + self.web_folder


_ENV = {
    "BUCKET_NAME": "bucket", "CODE_PARAMETER": "code_parameter", "INPUT_PREFIX": "input_prefix",
    "OUTPUT_PREFIX": "output_prefix", "WEB_FOLDER": "web_folder",
    "MAX_PHOTO_BYTES": "max_photo_bytes", "UPLOAD_EXPIRES_SECONDS": "upload_expires_seconds",
    "THUMBNAIL_PREFIX": "thumbnail_prefix", "GALLERY_SIZE": "gallery_size",
    "PRESETS_TABLE": "presets_table", "CODE_CACHE_SECONDS": "code_cache_seconds",
}


def load_settings(env: Mapping[str, str]) -> Settings:
    values: dict[str, Any] = {}
    for name, field_name in _ENV.items():
        raw = env.get(name)
        if raw in (None, ""):
            continue
        kind = Settings.__dataclass_fields__[field_name].type
        values[field_name] = int(raw) if kind == "int" else float(raw) if kind == "float" else raw
    missing = [n for n in ("bucket", "code_parameter") if n not in values]
    if missing:
        raise ValueError(f"web API misconfigured: {', '.join(missing)} not set")
    return Settings(**values)


class ApiError(Exception):
    """An answer other than 2xx: status, a short code and a sentence a student understands."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


# -- AWS clients (one set per endpoint configuration, reused by warm containers) ----------

_CLIENT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SSM",
               "AWS_ENDPOINT_URL_DYNAMODB", "AWS_REGION", "AWS_DEFAULT_REGION",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_clients: dict[tuple[Any, ...], Any] = {}
_sessions: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _session(env: Mapping[str, str]) -> Any:
    """The boto3 session of ``env``'s credentials (local mode), else boto3's defaults
    (Lambda's role). Call with ``_clients_lock`` held."""
    values = tuple(env.get(name) for name in _CLIENT_ENV)
    if values not in _sessions:
        _sessions[values] = boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=env.get("AWS_SESSION_TOKEN"),
            region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        )
    return _sessions[values]


def _client(service: str, env: Mapping[str, str]) -> Any:
    """A client for ``service``; endpoint and credentials from ``env`` when it names them
    (local mode), else boto3's defaults (Lambda's role)."""
    values = tuple(env.get(name) for name in _CLIENT_ENV)
    key = (service, values)
    with _clients_lock:
        if key not in _clients:
            specific = f"AWS_ENDPOINT_URL_{service.upper()}"
            config = Config(signature_version="s3v4", retries={"mode": "standard"},
                            max_pool_connections=16)
            _clients[key] = _session(env).client(
                service, endpoint_url=env.get(specific) or env.get("AWS_ENDPOINT_URL"),
                config=config,
            )
        return _clients[key]


def _frozen_credentials(env: Mapping[str, str]) -> Any:
    with _clients_lock:
        session = _session(env)
    return session.get_credentials().get_frozen_credentials()


def _code_of(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# -- the access code ---------------------------------------------------------------------

_code_cache: dict[str, tuple[str, float]] = {}


def clear_cache() -> None:
    _code_cache.clear()


def access_code(settings: Settings, env: Mapping[str, str], force: bool = False) -> str:
    """The current code, read from SSM at most once per ``code_cache_seconds`` (so a rotated
    code takes effect within that time on every warm container)."""
    now = time.monotonic()
    cached = _code_cache.get(settings.code_parameter)
    if cached and cached[1] > now and not force:
        return cached[0]
    try:
        value = _client("ssm", env).get_parameter(
            Name=settings.code_parameter, WithDecryption=True)["Parameter"]["Value"]
    except (ClientError, BotoCoreError) as exc:
        log.error("Cannot read the access code parameter: %s", type(exc).__name__)
        raise ApiError(503, "code_unavailable", "The class access code cannot be checked right "
                       "now. Try again in a minute; if it persists, ask your teacher to run "
                       "'visual-tourism status'.") from None
    _code_cache[settings.code_parameter] = (value, now + settings.code_cache_seconds)
    return value


def check_code(headers: Mapping[str, str], settings: Settings, env: Mapping[str, str]) -> None:
    given = headers.get(CODE_HEADER, "").strip()
    if not given:
        raise ApiError(401, "missing_code", "This page needs the class access code. Open the "
                       "link or QR code your teacher shared: it carries the code.",
                       {"www-authenticate": 'AccessCode realm="visual-tourism"'})
    expected = access_code(settings, env)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        # The code may have just been rotated: look once more before refusing.
        expected = access_code(settings, env, force=_code_cache_age(settings) > 5.0)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(403, "wrong_code", "That access code is not right (it may have been "
                           "changed). Ask your teacher for the current link or QR code.")


def _code_cache_age(settings: Settings) -> float:
    cached = _code_cache.get(settings.code_parameter)
    if not cached:
        return float("inf")
    return time.monotonic() - (cached[1] - settings.code_cache_seconds)


# -- routes ----------------------------------------------------------------------------------


def new_id(content_type: str, now: datetime | None = None) -> str:
    """Time first (newest results sort last in S3's listing), then 80 random bits."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(10)}.{EXTENSIONS.get(content_type, 'img')}"


def _json_body(event: Mapping[str, Any]) -> dict[str, Any]:
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(raw).decode()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad_request", "The request body is not valid.") from None
    if len(raw) > MAX_REQUEST_BODY:
        raise ApiError(413, "request_too_large", "The request is too large: send only the "
                       "photo's type and size here; the photo itself goes to the upload form.")
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "bad_request", "The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "The request body must be a JSON object.")
    return body


def create_upload(event: Mapping[str, Any], settings: Settings,
                  env: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    body = _json_body(event)
    content_type = str(body.get("content_type") or "")
    if content_type not in EXTENSIONS:
        shown = content_type[:60] or "of an unknown type"
        raise ApiError(415, "not_an_image", f"Only photos can be uploaded (this file is "
                       f"{shown}). Pick a JPEG, PNG or WebP photo.")
    size = body.get("size")
    if not isinstance(size, int) or size < 1:
        raise ApiError(400, "bad_request", "Say the photo's size in bytes (size: a number).")
    limit_mb = settings.max_photo_bytes / 1_000_000
    if size > settings.max_photo_bytes:
        raise ApiError(413, "photo_too_large", f"The photo is {size / 1_000_000:.1f} MB; the "
                       f"limit is {limit_mb:g} MB. Take it at a lower resolution or share a "
                       "smaller copy.")
    fields: dict[str, str] = {"Content-Type": content_type}
    for choice in ("preset", "language"):
        value = body.get(choice)
        if value in (None, ""):
            continue
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise ApiError(400, "bad_request", f"The {choice} name is not valid.")
        fields[f"x-amz-meta-{choice}"] = value
    near = body.get("near")
    if near not in (None, ""):  # "use my location": the uploader's own choice, off by default
        position = _near(near)
        if position is None:
            raise ApiError(400, "bad_request", "The location is not valid: send near as "
                           "\"LAT,LON\" in decimal degrees, or leave it out.")
        fields["x-amz-meta-near"] = position  # signed with the form: nobody else can change it
    photo_id = new_id(content_type)
    key = settings.input_folder + photo_id
    conditions: list[Any] = [
        ["content-length-range", 1, settings.max_photo_bytes],
        *({name: value} for name, value in fields.items()),  # Content-Type: exactly this one
    ]
    form = _client("s3", env).generate_presigned_post(
        Bucket=settings.bucket, Key=key, Fields=fields, Conditions=conditions,
        ExpiresIn=settings.upload_expires_seconds,
    )
    log.info("upload form for %s", photo_id)
    return 201, {
        "id": photo_id,
        "upload": {"url": form["url"], "fields": form["fields"]},
        "expires_in": settings.upload_expires_seconds,
        "max_bytes": settings.max_photo_bytes,
        "result": f"/results/{photo_id}",
    }


NEAR_RE = re.compile(r"^(-?\d{1,2}(?:\.\d{1,6})?),(-?\d{1,3}(?:\.\d{1,6})?)$")


def _near(value: Any) -> str | None:
    """"LAT,LON" rounded to 3 decimals (about 100 m: the handler keeps no finer), or None."""
    found = NEAR_RE.match(value) if isinstance(value, str) else None
    if not found:
        return None
    lat, lon = float(found.group(1)), float(found.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return f"{lat:.3f},{lon:.3f}"


def public_record(record: Mapping[str, Any], gallery: bool = False) -> dict[str, Any]:
    """The handler's record without the bucket, key and endpoint names (they name the
    account); everything a student needs stays. Never a position: the uploader's own result
    keeps the nearby places (not where they were asked from); the class gallery shows none,
    as their distances would tell where a classmate stood."""
    out = {k: v for k, v in record.items() if k not in ("input", "model", "request_id")}
    model = record.get("model") or {}
    out["model"] = {k: model.get(k) for k in ("profile", "model_id") if model.get(k)}
    places = out.pop("places", None)
    if isinstance(places, Mapping) and not gallery:
        out["places"] = {k: v for k, v in places.items() if k != "position"}
    return out


# Photo URLs are signed for a fixed window (SigV4 with the window's start as its time), so
# that every gallery refresh within a window hands out the same URL and the browser serves
# the image from its cache; each URL stays valid for at least a window after it was last
# handed out. 15 minutes: well within the role session's credentials, which sign it.
PHOTO_URL_WINDOW_SECONDS = 900
_clock = time.time  # tests set it


def _quote(text: str) -> str:
    return quote(text, safe="-_.~")


def presign_get(env: Mapping[str, str], bucket: str, key: str, signed_at: int,
                expires: int, params: Mapping[str, str]) -> str:
    """A SigV4 query-string signed GET of ``key`` as S3 checks it (host header signed,
    UNSIGNED-PAYLOAD), with ``signed_at`` (epoch seconds) as its time: botocore always signs
    with the current time. ``params``: response-* overrides, signed with the rest."""
    s3 = _client("s3", env)
    # The object's address as botocore writes it (endpoint, addressing style, key encoding).
    address = urlsplit(s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=1))
    creds = _frozen_credentials(env)
    region = s3.meta.region_name
    stamp = datetime.fromtimestamp(signed_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{stamp[:8]}/{region}/s3/aws4_request"
    query = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256",
             "X-Amz-Credential": f"{creds.access_key}/{scope}", "X-Amz-Date": stamp,
             "X-Amz-Expires": str(expires), "X-Amz-SignedHeaders": "host", **params}
    if creds.token:
        query["X-Amz-Security-Token"] = creds.token
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
    canonical = "\n".join(["GET", address.path or "/", canonical_query,
                           f"host:{address.netloc}", "", "host", "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    signing_key = ("AWS4" + creds.secret_key).encode()
    for part in (stamp[:8], region, "s3", "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (f"{address.scheme}://{address.netloc}{address.path}?{canonical_query}"
            f"&X-Amz-Signature={signature}")


def _photo_url(settings: Settings, env: Mapping[str, str], photo_id: str) -> str:
    """The photo's small copy (the handler's thumbnail: JPEG, no metadata), served as an
    inline JPEG whatever the object says, cacheable for the signing window."""
    window = PHOTO_URL_WINDOW_SECONDS
    start = int(_clock()) // window * window
    params = {"response-cache-control": f"private, max-age={window}, immutable",
              "response-content-disposition": f'inline; filename="{photo_id}.jpg"',
              "response-content-type": "image/jpeg"}
    return presign_get(env, settings.bucket, settings.thumbnail_folder + photo_id + ".jpg",
                       start, 2 * window, params)


# How S3 answers a GetObject of a key that does not exist: 404 NoSuchKey when the caller may
# list the bucket, else 403 AccessDenied. This role may list only under its web folders (an
# s3:prefix condition), which a GetObject does not carry, so on AWS a result not written yet
# is 403. The role may read every key under output/web/, so here a 403 means "not there".
_ABSENT = ("NoSuchKey", "404", "NotFound", "AccessDenied", "403")


def _read_record(settings: Settings, env: Mapping[str, str], photo_id: str
                 ) -> dict[str, Any] | None:
    s3 = _client("s3", env)
    try:
        body = s3.get_object(Bucket=settings.bucket,
                             Key=settings.output_folder + photo_id + ".json")["Body"].read()
    except ClientError as exc:
        if _code_of(exc) in _ABSENT:
            return None
        raise
    try:
        record = json.loads(body)
    except ValueError:
        record = {"status": "error", "error": {"code": "unreadable_result",
                                               "message": "The result could not be read."}}
    return record if isinstance(record, dict) else {"status": "error"}


def _uploaded(settings: Settings, env: Mapping[str, str], photo_id: str) -> bool:
    """Whether the photo was uploaded: one listing of its own key (the role may list under
    input/web/ but never reads an original)."""
    key = settings.input_folder + photo_id
    listed = _client("s3", env).list_objects_v2(Bucket=settings.bucket, Prefix=key, MaxKeys=1)
    return any(item["Key"] == key for item in listed.get("Contents", []))


def _unknown(photo_id: str) -> ApiError:
    return ApiError(404, "unknown_id", f"No photo with the id {photo_id[:60]!r}: it was never "
                    "uploaded, or its upload did not finish (upload forms expire after two "
                    "minutes). Take or pick the photo again.")


def get_result(photo_id: str, settings: Settings, env: Mapping[str, str]
               ) -> tuple[int, dict[str, Any]]:
    if not ID_RE.match(photo_id or ""):
        raise _unknown(photo_id or "")
    record = _read_record(settings, env, photo_id)
    if record is None:
        if not _uploaded(settings, env, photo_id):
            raise _unknown(photo_id)
        return 200, {"id": photo_id, "status": "pending"}
    return 200, {"id": photo_id, "status": record.get("status", "error"),
                 "record": public_record(record),
                 "photo_url": _photo_url(settings, env, photo_id)}


def list_results(event: Mapping[str, Any], settings: Settings, env: Mapping[str, str]
                 ) -> tuple[int, dict[str, Any]]:
    """The newest results of the last day (ids sort by time, so one bounded listing)."""
    s3 = _client("s3", env)
    since = (datetime.now(UTC) - GALLERY_WINDOW).strftime("%Y%m%dT%H%M%SZ")
    keys: list[str] = []
    kwargs = {"Bucket": settings.bucket, "Prefix": settings.output_folder,
              "StartAfter": settings.output_folder + since}
    for page in s3.get_paginator("list_objects_v2").paginate(**kwargs):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json")]
    newest = sorted(keys, reverse=True)[: settings.gallery_size]
    ids = [k[len(settings.output_folder):-len(".json")] for k in newest]
    ids = [i for i in ids if ID_RE.match(i)]

    def one(photo_id: str) -> dict[str, Any] | None:
        record = _read_record(settings, env, photo_id)
        if record is None:
            return None
        return {"id": photo_id, "status": record.get("status", "error"),
                "record": public_record(record, gallery=True),
                "photo_url": _photo_url(settings, env, photo_id)}

    with ThreadPoolExecutor(max_workers=8) as pool:
        items = [item for item in pool.map(one, ids) if item]
    return 200, {"results": items, "window_hours": GALLERY_WINDOW.total_seconds() / 3600}


def list_presets(settings: Settings, env: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """Presets for the pickers; ``null`` lists when no presets table is configured."""
    if not settings.presets_table:
        return 200, {"presets": None, "languages": None}
    from boto3.dynamodb.types import TypeDeserializer

    plain = TypeDeserializer()
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": settings.presets_table}
    db = _client("dynamodb", env)
    while True:
        page = db.scan(**kwargs)
        items += [{k: plain.deserialize(v) for k, v in item.items()} for item in page["Items"]]
        if "LastEvaluatedKey" not in page or len(items) >= 200:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    presets, languages = [], set()
    for item in items:
        name = item.get("name") or item.get("id")
        if not isinstance(name, str):
            continue
        label = item.get("title") or item.get("label") or name
        presets.append({"id": name, "label": str(label),
                        "description": str(item.get("description") or "")})
        for value in (item.get("languages") or [item.get("language")]):
            if isinstance(value, str) and value:
                languages.add(value)
    presets.sort(key=lambda p: (p["id"] != "default", p["id"]))
    return 200, {"presets": presets, "languages": sorted(languages) or None}


# -- responses ---------------------------------------------------------------------------------

_SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def respond(status: int, body: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    out_headers = {"content-type": "application/json", **_SECURITY_HEADERS, **(headers or {})}
    if isinstance(body, bytes):
        return {"statusCode": status, "headers": out_headers, "isBase64Encoded": True,
                "body": base64.b64encode(body).decode()}
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return {"statusCode": status, "headers": out_headers, "isBase64Encoded": False,
            "body": text}


def page_response(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    html = PAGE.read_text(encoding="utf-8")
    html = html.replace("__MAX_PHOTO_BYTES__", str(settings.max_photo_bytes))
    # The page may talk to this API and to the bucket's upload URL, nothing else.
    form_url = _client("s3", env).generate_presigned_post(settings.bucket, "probe")["url"]
    bucket_origin = "/".join(form_url.split("/")[:3])
    csp = (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        f"img-src 'self' blob: data: {bucket_origin}; connect-src 'self' {bucket_origin}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return respond(200, html, {"content-type": "text/html; charset=utf-8",
                               "content-security-policy": csp})


Handler = Callable[[Mapping[str, Any], Settings, Mapping[str, str]], tuple[int, dict[str, Any]]]


def handle(event: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Answer one payload-2.0 event. ``env`` holds the settings (and, locally, endpoints)."""
    route = str(event.get("routeKey") or "")
    started = time.monotonic()
    status = 500
    try:
        settings = load_settings(env)
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        if route == "GET /":
            response = page_response(settings, env)
        else:
            if route not in ROUTES:
                raise ApiError(404, "not_found", "There is nothing at this address.")
            check_code(headers, settings, env)
            params = event.get("pathParameters") or {}
            if route == "POST /uploads":
                result = create_upload(event, settings, env)
            elif route == "GET /results/{id}":
                result = get_result(str(params.get("id", "")), settings, env)
            elif route == "GET /results":
                result = list_results(event, settings, env)
            else:
                result = list_presets(settings, env)
            response = respond(*result)
    except ApiError as exc:
        response = respond(exc.status, {"error": exc.code, "message": exc.message}, exc.headers)
    except Exception:  # noqa: BLE001 - a bug must answer 500 in words, and be logged
        log.exception("web API failure on %s", route)
        response = respond(500, {"error": "internal_error", "message": "Something went wrong "
                                 "on the server. Try again; if it keeps happening, tell your "
                                 "teacher."})
    status = response["statusCode"]
    # Never log headers or bodies: the access code travels in a header.
    log.info(json.dumps({"route": route, "status": status,
                         "ms": round((time.monotonic() - started) * 1000, 1)}))
    return response


def lambda_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, os.environ)


if logging.getLogger().handlers:  # on Lambda the runtime has installed a handler
    logging.getLogger().setLevel(logging.INFO)
