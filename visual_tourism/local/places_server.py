"""Local mode's Amazon Location Service Places API v2 (``geo-places``): a stand-in on loopback.

moto has no geo-places, so local mode serves it here, reached as the SDK reaches any service
with its own endpoint setting: ``AWS_ENDPOINT_URL_GEO_PLACES`` (botocore's rule: the service
id "Geo Places", upper-cased, spaces as underscores).

Strict as the service: every request is checked against botocore's own ``geo-places`` model
(required members, unknown members, types, string and list lengths, number ranges, enums) and
the rules its API reference states beyond the model (a position is [longitude, latitude],
longitude within -180..180 and latitude within -90..90; SearchText takes exactly one of
QueryText and QueryId and exactly one of BiasPosition, Filter.BoundingBox and Filter.Circle;
Geocode needs QueryText or QueryComponents), answering ValidationException (400) with the
service's ``reason`` and ``fieldList``. Requests signed by a role are authorized on
``arn:aws:geo-places:REGION::provider/default`` from its policies (``iam_enforcement``), as
the function's role is on AWS; the signature itself is not verified.

Answers have the real response shape (``PricingBucket`` in the ``x-amz-geo-pricing-bucket``
header, ``ResultItems``), but the places are made up around the asked position and say so in
every name and address: "Stand-in café 1 (not a real place)". Nothing here is ever passed off
as a real place.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import zlib
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import botocore.session

from . import iam_enforcement

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account: the roles local mode creates live there
ENV_VAR = "AWS_ENDPOINT_URL_GEO_PLACES"
STAND_IN = "(not a real place)"
MAX_BODY = 1_000_000
_OPERATIONS = ("SearchNearby", "Geocode", "SearchText")
_EARTH_RADIUS_M = 6_371_000.0
_REGION = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")


class Invalid(Exception):
    def __init__(self, reason: str, fields: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in fields))
        self.reason, self.fields = reason, fields


_model_lock = threading.Lock()
_model: Any = None


def service_model() -> Any:
    """botocore's geo-places service model (loaded once)."""
    global _model
    with _model_lock:
        if _model is None:
            _model = botocore.session.get_session().get_service_model("geo-places")
        return _model


# -- validation: botocore's model, then the API reference's rules ---------------------------


def _check(shape: Any, value: Any, path: str, problems: list[tuple[str, str]],
           unknown: list[tuple[str, str]]) -> None:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append((path, "must be an object"))
            return
        body_members = {name: member for name, member in shape.members.items()
                        if member.serialization.get("location") is None}
        for name in shape.required_members:
            if name in body_members and value.get(name) is None:
                problems.append((_join(path, name), "is required"))
        for name, item in value.items():
            if name not in body_members:
                unknown.append((_join(path, name), "is not a member of " + shape.name))
            elif item is not None:
                _check(body_members[name], item, _join(path, name), problems, unknown)
        return
    if kind == "list":
        if not isinstance(value, list):
            problems.append((path, "must be a list"))
            return
        _bounds(len(value), meta, path, "items", problems)
        for index, item in enumerate(value):
            _check(shape.member, item, f"{path}[{index}]", problems, unknown)
        return
    if kind == "string":
        if not isinstance(value, str):
            problems.append((path, "must be a string"))
            return
        _bounds(len(value), meta, path, "characters", problems)
        if shape.enum and value not in shape.enum:
            problems.append((path, f"must be one of {', '.join(shape.enum)}"))
        return
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append((path, "must be an integer"))
            return
        _bounds(value, meta, path, "", problems)
        return
    if kind in ("double", "float"):
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(
                value):
            problems.append((path, "must be a number"))
        return
    if kind == "boolean" and not isinstance(value, bool):
        problems.append((path, "must be true or false"))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _bounds(number: int, meta: Mapping[str, Any], path: str, unit: str,
            problems: list[tuple[str, str]]) -> None:
    low, high = meta.get("min"), meta.get("max")
    what = f" {unit}" if unit else ""
    if low is not None and number < low:
        problems.append((path, f"must be at least {low}{what}"))
    if high is not None and number > high:
        problems.append((path, f"must be at most {high}{what}"))


def _position(value: Any, path: str, problems: list[tuple[str, str]]) -> None:
    """[longitude, latitude] in range (the model only says two doubles)."""
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        return  # the model's check reported it
    lon, lat = value
    if not -180 <= lon <= 180:
        problems.append((path, f"longitude {lon} (first) must be within -180..180"))
    if not -90 <= lat <= 90:
        problems.append((path, f"latitude {lat} (second) must be within -90..90: a position "
                         "is [longitude, latitude]"))


def _one_of(body: Mapping[str, Any], names: tuple[str, ...],
            problems: list[tuple[str, str]]) -> None:
    given = [name for name in names if _get(body, name) is not None]
    if len(given) != 1:
        problems.append((" | ".join(names),
                         f"exactly one of {', '.join(names)} is required ({len(given)} given)"))


def _get(body: Mapping[str, Any], dotted: str) -> Any:
    value: Any = body
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def validate(operation: str, body: Any) -> None:
    """Raise Invalid as the service would for this request body."""
    model = service_model()
    shape = model.operation_model(operation).input_shape
    problems: list[tuple[str, str]] = []
    unknown: list[tuple[str, str]] = []
    _check(shape, body, "", problems, unknown)
    if unknown:
        raise Invalid("UnknownField", unknown)
    if isinstance(body, dict):
        for path in ("QueryPosition", "BiasPosition"):
            if path in body:
                _position(body[path], path, problems)
        if isinstance(_get(body, "Filter.Circle"), dict):
            _position(_get(body, "Filter.Circle.Center"), "Filter.Circle.Center", problems)
        if operation == "SearchText":
            _one_of(body, ("QueryText", "QueryId"), problems)
            _one_of(body, ("BiasPosition", "Filter.BoundingBox", "Filter.Circle"), problems)
        if operation == "Geocode" and body.get("QueryText") is None \
                and body.get("QueryComponents") is None:
            problems.append(("QueryText | QueryComponents", "one of them is required"))
    if problems:
        missing = all(message == "is required" for _, message in problems)
        raise Invalid("Missing" if missing else "FieldValidationFailed", problems)


# -- made-up answers, labelled -------------------------------------------------------------------


def _offset(lon: float, lat: float, distance: float, bearing: float) -> list[float]:
    """The point ``distance`` metres from (lon, lat) towards ``bearing`` degrees."""
    d = distance / _EARTH_RADIUS_M
    b, p1, l1 = math.radians(bearing), math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1),
                         math.cos(d) - math.sin(p1) * math.sin(p2))
    return [round((math.degrees(l2) + 540) % 360 - 180, 6), round(math.degrees(p2), 6)]


_KINDS = {  # category id -> (name, what the stand-in calls such a place)
    "restaurant": ("Restaurant", "restaurant"), "casual_dining": ("Casual Dining", "bistro"),
    "fine_dining": ("Fine Dining", "dining room"), "coffee_shop": ("Coffee Shop", "café"),
    "bar_or_pub": ("Bar or Pub", "bar"),
    "bakery_and_baked_goods_store": ("Bakery and Baked Goods Store", "bakery"),
}


def search_nearby(body: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    lon, lat = body["QueryPosition"]
    radius = body.get("QueryRadius") or 1000
    count = min(body.get("MaxResults") or 20, 6)
    wanted = [c for c in (_get(body, "Filter.IncludeCategories") or []) if c in _KINDS] \
        or ["restaurant"]
    contact = "Contact" in (body.get("AdditionalFeatures") or [])
    items = []
    for index in range(count):
        category = wanted[index % len(wanted)]
        name, noun = _KINDS[category]
        distance = int(radius * (index + 1) / (count + 1))
        item: dict[str, Any] = {
            "PlaceId": f"stand-in-{zlib.crc32(f'{lon},{lat},{index}'.encode()):08x}",
            "PlaceType": "PointOfInterest",
            "Title": f"Stand-in {noun} {index + 1} {STAND_IN}",
            "Address": {"Label": f"Stand-in address {index + 1}, {STAND_IN}",
                        "Country": {"Code2": "ZZ", "Name": "Stand-in country"}},
            "Position": _offset(lon, lat, distance, 360 * index / max(count, 1)),
            "Distance": distance,
            "Categories": [{"Id": category, "Name": name, "Primary": True}],
        }
        if contact:
            item["OpeningHours"] = [{"Display": ["Mon-Sun: 08:00 - 22:00"],
                                     "OpenNow": index % 2 == 0}]
        items.append(item)
    return {"ResultItems": items}, "Advanced" if body.get("AdditionalFeatures") else (
        "Stored" if body.get("IntendedUse") == "Storage" else "Core")


def _text_position(text: str) -> list[float]:
    """A made-up but repeatable position for a query text."""
    digest = zlib.crc32(text.encode())
    return [round((digest % 36000) / 100 - 180, 5), round(((digest >> 16) % 14000) / 100 - 70, 5)]


def geocode(body: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    text = body.get("QueryText") or ", ".join(
        str(v) for v in (body.get("QueryComponents") or {}).values())
    item = {"PlaceId": f"stand-in-{zlib.crc32(text.encode()):08x}",
            "PlaceType": "PointOfInterest",
            "Title": f"Stand-in match for {text[:120]} {STAND_IN}",
            "Address": {"Label": f"Stand-in address {STAND_IN}"},
            "Position": _text_position(text)}
    return {"ResultItems": [item]}, "Stored" if body.get("IntendedUse") == "Storage" else "Core"


def search_text(body: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    centre = body.get("BiasPosition") or _get(body, "Filter.Circle.Center")
    text = body.get("QueryText") or body.get("QueryId") or ""
    position = centre or _text_position(text)
    item = {"PlaceId": f"stand-in-{zlib.crc32(text.encode()):08x}",
            "PlaceType": "PointOfInterest",
            "Title": f"Stand-in match for {text[:120]} {STAND_IN}",
            "Address": {"Label": f"Stand-in address {STAND_IN}"},
            "Position": list(position)}
    return {"ResultItems": [item]}, "Stored" if body.get("IntendedUse") == "Storage" else "Core"


_ROUTES = {"/v2/search-nearby": ("SearchNearby", search_nearby),
           "/v2/geocode": ("Geocode", geocode),
           "/v2/search-text": ("SearchText", search_text)}


# -- the server ---------------------------------------------------------------------------------


class PlacesServer:
    """``with PlacesServer() as places:`` serves on ``places.url`` until closed.

    ``faults``: error codes the next requests answer with, one each (tests of the handler's
    "never at the answer's expense": ThrottlingException, InternalServerException, ...).
    ``calls``: (operation, request body) of every valid request, in order.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.faults: list[str] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        service_model()  # load the model before the first request

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> PlacesServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="places-stand-in")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> PlacesServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, path: str, headers: Mapping[str, str],
               raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        """(status, headers, body) for one request: what the service would answer."""
        route = _ROUTES.get(path.split("?")[0])
        if route is None:
            return _error(404, "ResourceNotFoundException", f"No such operation: {path}")
        operation, respond = route
        found = _REGION.search(headers.get("authorization") or headers.get("Authorization")
                               or "")
        region = found.group(1) if found else "us-east-1"
        try:
            iam_enforcement.authorize(headers, f"geo-places:{operation}",
                                      f"arn:aws:geo-places:{region}::provider/default",
                                      ACCOUNT_ID)
        except iam_enforcement.Denied as denied:
            return _error(403, "AccessDeniedException", str(denied))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return _error(400, "ValidationException", "The request body is not JSON.",
                          reason="CannotParse", fields=[])
        try:
            validate(operation, body)
        except Invalid as exc:
            return _error(400, "ValidationException", str(exc), reason=exc.reason,
                          fields=exc.fields)
        with self._lock:
            fault = self.faults.pop(0) if self.faults else None
            self.calls.append((operation, body))
        if fault:
            status = {"ThrottlingException": 429, "AccessDeniedException": 403,
                      "ValidationException": 400}.get(fault, 500)
            return _error(status, fault, f"The stand-in was told to fail with {fault}.",
                          **({"reason": "Other", "fields": []}
                             if fault == "ValidationException" else {}))
        answer, bucket = respond(body)
        return 200, {"x-amz-geo-pricing-bucket": bucket}, answer

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "visual-tourism-local-places"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("%s %s", self.command, self.path)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_BODY:
                    self.close_connection = True
                    self._send(*_error(413, "ValidationException", "Request too large",
                                       reason="Other", fields=[]))
                    return
                raw = self.rfile.read(length) if length else b""
                try:
                    self._send(*server.answer(self.path, dict(self.headers.items()), raw))
                except Exception:  # noqa: BLE001 - the service answers 500, never hangs
                    log.exception("places stand-in failed on %s", self.path)
                    self._send(*_error(500, "InternalServerException", "stand-in failure"))

            def do_GET(self) -> None:  # noqa: N802
                self._send(*_error(404, "ResourceNotFoundException", "POST only"))

            def _send(self, status: int, headers: Mapping[str, str],
                      body: Mapping[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _error(status: int, code: str, message: str, reason: str | None = None,
           fields: list[tuple[str, str]] | None = None,
           ) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A rest-json error as the service sends it (botocore reads x-amzn-ErrorType)."""
    body: dict[str, Any] = {"message": message}
    if reason is not None:
        body["reason"] = reason
        body["fieldList"] = [{"name": name, "message": text} for name, text in fields or []]
    return status, {"x-amzn-ErrorType": code}, body
