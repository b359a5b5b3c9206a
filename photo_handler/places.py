"""Where to eat, for real: places near where the photo was taken, from Amazon Location
Service (Places API v2, ``geo-places``), in the prompt and in the record.

Where the photo was taken, first found wins:

1. ``user``: a position the uploader gave, S3 object metadata ``x-amz-meta-near`` =
   ``"LAT,LON"`` (the web page's "use my location" choice and ``ask --near``; signed with
   the upload, so nobody else can change it);
2. ``photo``: the photo's own EXIF GPS, read from the header bytes the handler already has
   (all-zero values mean "no position", as cameras write them without a fix);
3. ``landmark``: the place the model recognised (a structured answer's ``place``, ``city``,
   ``country``), geocoded after the answer (one Geocode call).

With a position before the model is asked (1, 2), SearchNearby's places to eat go into the
photo's turn of the prompt, as many as fit the container's token budget (fewer places rather
than a refused request), and the model is asked to recommend one of them; with the landmark's
position (3), the list is attached to the record after the answer.

Never at the answer's expense: a Places failure (a region without the service, a missing
permission, throttling, the SDK's network errors) leaves the answer as it is; the record's
``places.status`` and ``places.reason`` say why there are no nearby places. PLACES=off turns
the feature off (no call, no cost). Positions in the record are rounded to 3 decimals (about
100 m); the gallery never shows the record's places (web_function/app.py).

Requests: ``QueryPosition`` is [longitude, latitude]; ``IntendedUse=Storage`` because the
results are stored in the record (billed as the Stored tier, see visual_tourism/prices.py).
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, UnknownServiceError

from . import clients
from .errors import CONTROL, describe, scrub
from .logs import log
from .request import Prompt
from .settings import Settings

SERVICE = "geo-places"
METADATA = "near"  # x-amz-meta-near: "LAT,LON" (decimal degrees), from the uploader
# Category ids SearchNearby filters on (Filter.IncludeCategories, at most 10).
EAT_CATEGORIES = ("restaurant", "casual_dining", "fine_dining", "coffee_shop", "bar_or_pub",
                  "bakery_and_baked_goods_store")
ROUND_DIGITS = 3  # 0.001 degree of latitude is 111 m: what the record keeps of a position
_PROMPT_LANGUAGE = "English"  # presets_schema.PROMPT_LANGUAGE: the answer's without a preset
ATTRIBUTION = "Nearby places: Amazon Location Service and its data providers"
TITLE_MAX = 80  # a place's name in the prompt and the record
ADDRESS_MAX = 200
# The photo's turn of the prompt gets this line (each place costs ~15 tokens).
PROMPT_LINE = ("Real places to eat within {radius} m of where this photo was taken "
               "(Amazon Location Service): {places}. Recommend one of these by its name as the "
               "place to eat.")
_EXIF_MARK = re.compile(rb"Exif\x00\x00|eXIf|EXIF")
_PROMPT_UNSAFE = re.compile(r"[<>\[\]]|User:|Assistant:")
_NEAR = re.compile(r"^\s*(-?\d{1,2}(?:\.\d+)?)\s*,\s*(-?\d{1,3}(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Position:
    lat: float
    lon: float
    source: str  # "user", "photo" or "landmark"

    def rounded(self) -> dict[str, Any]:
        return {"lat": round(self.lat, ROUND_DIGITS), "lon": round(self.lon, ROUND_DIGITS),
                "source": self.source}


def valid(lat: float, lon: float) -> bool:
    return (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90
            and -180 <= lon <= 180)


def parse_near(text: str) -> tuple[float, float] | None:
    """"LAT,LON" in decimal degrees -> (lat, lon); None when it is not a valid position."""
    match = _NEAR.match(text or "")
    if not match:
        return None
    lat, lon = float(match.group(1)), float(match.group(2))
    return (lat, lon) if valid(lat, lon) else None


def format_near(lat: float, lon: float) -> str:
    """The metadata value for a position, rounded as the record keeps it (about 100 m)."""
    if not valid(lat, lon):
        raise ValueError(f"not a position: latitude {lat} must be within -90..90 and "
                         f"longitude {lon} within -180..180")
    return f"{lat:.{ROUND_DIGITS}f},{lon:.{ROUND_DIGITS}f}"


# -- where the photo was taken ------------------------------------------------------------


def _degrees(value: Any) -> float | None:
    """EXIF's (degrees, minutes, seconds) rationals -> decimal degrees."""
    try:
        d, m, s = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return d + m / 60 + s / 3600 if all(map(math.isfinite, (d, m, s))) else None


def photo_position(head: bytes) -> Position | None:
    """The EXIF GPS position in the photo's header bytes; None without one (no GPS IFD,
    all-zero values, out of range, unreadable, or no Pillow in this deployment)."""
    # Most uploads carry no EXIF GPS block (browsers and pickers strip it): tell from the
    # bytes, without importing Pillow on every cold start. The GPS IFD pointer is tag 0x8825
    # in an EXIF block (JPEG APP1 "Exif", PNG "eXIf", WebP "EXIF"), either byte order.
    if not (_EXIF_MARK.search(head) and (b"\x88\x25" in head or b"\x25\x88" in head)):
        return None
    try:
        from PIL import ExifTags, Image, UnidentifiedImageError
    except ImportError:  # a zip without Pillow: no EXIF position
        return None
    try:
        with Image.open(io.BytesIO(head)) as img:
            gps = img.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, KeyError, TypeError,
            struct.error):  # a damaged EXIF block: no position, the photo still answered
        return None
    lat, lon = _degrees(gps.get(2)), _degrees(gps.get(4))
    if lat is None or lon is None or (lat == 0 and lon == 0):  # all zero: no fix
        return None
    if str(gps.get(1, "N")).strip().upper().startswith("S"):
        lat = -lat
    if str(gps.get(3, "E")).strip().upper().startswith("W"):
        lon = -lon
    return Position(lat, lon, "photo") if valid(lat, lon) else None


def user_position(metadata: Mapping[str, str], notes: list[str]) -> Position | None:
    raw = (metadata.get(METADATA) or "").strip()
    if not raw:
        return None
    parsed = parse_near(raw)
    if parsed is None:
        notes.append(f"the position given with the upload ({scrub(raw, 40)!r}) is not "
                     "LAT,LON in decimal degrees: ignored")
        return None
    return Position(*parsed, "user")


# -- the service -------------------------------------------------------------------------


class PlacesUnavailable(Exception):
    """Why there are no nearby places: ``status`` for the record, ``reason`` for people."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _call(operation: str, settings: Settings, **params: Any) -> dict[str, Any]:
    try:
        client = clients.client(SERVICE,
                                read_timeout=max(1, int(settings.places_timeout_seconds)))
    except UnknownServiceError:  # the runtime's SDK predates geo-places (botocore 1.35.52)
        raise PlacesUnavailable("unsupported", (
            "the Lambda runtime's AWS SDK has no geo-places (it came with botocore 1.35.52): "
            "use a newer runtime or bundle boto3 with the function, or set places = off"),
        ) from None
    try:
        return getattr(client, operation)(**params)
    except ClientError as exc:
        code = clients.error_code(exc)
        if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
            raise PlacesUnavailable("not_permitted", (
                f"the function may not call {SERVICE} ({code}): give its role "
                f"{SERVICE}:{_action(operation)} on the provider (visual-tourism up does), "
                "or set places = off")) from None
        raise PlacesUnavailable("error", f"Amazon Location Service refused {operation} "
                                f"({describe(exc)})") from None
    except BotoCoreError as exc:  # no endpoint in this region, network trouble, timeouts
        raise PlacesUnavailable("unreachable", (
            f"Amazon Location Service could not be reached ({describe(exc)}): its Places API "
            "may not be offered in this region")) from None


def _action(operation: str) -> str:
    return "".join(part.title() for part in operation.split("_"))


def language_tag(language: str | None) -> str | None:
    """The answer's language as the BCP 47 tag the service takes ("French" -> "fr")."""
    if not language:
        return None
    from .presets_schema import LANGUAGE_CODES, language_id

    codes = LANGUAGE_CODES.get(language_id(language))
    return codes[0] if codes else None


def search_nearby(settings: Settings, position: Position,
                  language: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """(places to eat near ``position``, the pricing bucket the service billed)."""
    params: dict[str, Any] = {
        "QueryPosition": [position.lon, position.lat],  # longitude first
        "QueryRadius": settings.places_radius_meters,
        "MaxResults": settings.places_max_results,
        "Filter": {"IncludeCategories": list(EAT_CATEGORIES)},
        "IntendedUse": "Storage",  # the results are stored in the record
    }
    tag = language_tag(language)
    if tag:
        params["Language"] = tag
    if settings.places_opening_hours:
        params["AdditionalFeatures"] = ["Contact"]  # opening hours come with Contact
    response = _call("search_nearby", settings, **params)
    return ([_place(item, settings.places_opening_hours)
             for item in response.get("ResultItems") or []],
            response.get("PricingBucket"))


def _clean(text: Any, limit: int) -> str:
    text = CONTROL.sub("", str(text or "")).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _place(item: Mapping[str, Any], opening_hours: bool) -> dict[str, Any]:
    categories = item.get("Categories") or []
    primary = next((c for c in categories if c.get("Primary")), categories[0] if categories
                   else {})
    place: dict[str, Any] = {
        "name": _clean(item.get("Title"), TITLE_MAX),
        "category": _clean(primary.get("LocalizedName") or primary.get("Name")
                           or primary.get("Id"), 60) or None,
        "distance_m": item.get("Distance"),
        "address": _clean((item.get("Address") or {}).get("Label"), ADDRESS_MAX) or None,
    }
    if opening_hours:
        hours = item.get("OpeningHours") or []
        now = next((h.get("OpenNow") for h in hours if "OpenNow" in h), None)
        place["open_now"] = now if isinstance(now, bool) else None
    return place


def geocode(settings: Settings, fields: Mapping[str, Any],
            language: str | None) -> Position | None:
    """The recognised place's position: one Geocode of "place, city, country"."""
    parts = [str(fields.get(name) or "").strip() for name in ("place", "city", "country")]
    text = _clean(", ".join(p for p in parts if p), 200)
    if not parts[0] or fields.get("recognised") is False:
        return None
    params: dict[str, Any] = {"QueryText": text, "MaxResults": 1, "IntendedUse": "Storage"}
    tag = language_tag(language)
    if tag:
        params["Language"] = tag
    items = _call("geocode", settings, **params).get("ResultItems") or []
    position = items[0].get("Position") if items else None
    if not position or len(position) != 2:
        return None
    lon, lat = float(position[0]), float(position[1])
    return Position(lat, lon, "landmark") if valid(lat, lon) else None


# -- into the prompt, within the budget -------------------------------------------------------


def prompt_line(settings: Settings, places: list[dict[str, Any]]) -> str:
    """The photo's turn's line naming ``places``. Names are foreign text: nothing in them
    can open an image or a turn of the prompt (TGI's ``![](url)``, ``<end_of_utterance>``)."""
    listed = "; ".join(
        f"{_PROMPT_UNSAFE.sub('', p['name'])} "
        f"({', '.join(x for x in (p.get('category'), _metres(p)) if x)})"
        for p in places)
    return PROMPT_LINE.format(radius=settings.places_radius_meters, places=listed)


def _metres(place: Mapping[str, Any]) -> str:
    distance = place.get("distance_m")
    return f"{distance} m" if isinstance(distance, int) else ""


def fit(settings: Settings, prompt: Prompt,
        places: list[dict[str, Any]]) -> tuple[Prompt, int]:
    """(``prompt`` with as many of ``places``, nearest first, as the container's budget
    allows while the photo keeps at least the tokens it needs, how many); with none the
    prompt is unchanged."""
    limits = settings.container_limits
    for count in range(len(places), 0, -1):
        grounded = replace(prompt, grounding=prompt_line(settings, places[:count]))
        if limits is None or _fits(settings, grounded):
            return grounded, count
    return prompt, 0


def _fits(settings: Settings, prompt: Prompt) -> bool:
    """Whether the container would still take the request: the budget's own check
    (budget.image_allowances), each example counted at its full allowance (their real sizes
    are read later, and can only need less)."""
    from . import budget
    from .errors import Failure

    largest = (16384, 16384)
    try:
        budget.image_allowances(settings, [largest] * len(prompt.examples), prompt)
    except Failure:
        return False
    return True


# -- the handler's two hooks ----------------------------------------------------------------


def ground(settings: Settings, prompt: Prompt, head: bytes, metadata: Mapping[str, str],
           result: dict[str, Any]) -> Prompt:
    """Before the model: find the position (user, then photo) and, with one, put the nearby
    places into the prompt. Sets the record's ``places``; never raises: whatever goes wrong
    here, the photo is still answered, without places."""
    try:
        return _ground(settings, prompt, head, metadata, result)
    except Exception as exc:  # noqa: BLE001 - a bug here must not cost the answer
        _failed(result, exc)
        return prompt


def _failed(result: dict[str, Any], exc: Exception) -> None:
    log.error("Nearby places failed unexpectedly: %s", scrub(repr(exc), 400))
    result["places"] = {"status": "error", "reason": f"nearby places failed unexpectedly "
                        f"({describe(exc)}): the answer is not affected"}


def _ground(settings: Settings, prompt: Prompt, head: bytes, metadata: Mapping[str, str],
            result: dict[str, Any]) -> Prompt:
    if not settings.places:
        result["places"] = {"status": "off", "reason": "PLACES=off: nearby places are not "
                            "looked up"}
        return prompt
    notes: list[str] = []
    position = user_position(metadata, notes) or photo_position(head)
    info: dict[str, Any] = {"status": "pending"}
    result["places"] = info
    if notes:
        info["note"] = "; ".join(notes)
    if position is None:
        info["reason"] = "no position yet: the upload gave none and the photo has no GPS"
        return prompt
    _lookup(settings, position, prompt.language or _PROMPT_LANGUAGE, info)
    nearby = info.get("nearby") or []
    if not nearby:
        return prompt
    grounded, info["in_prompt"] = fit(settings, prompt, nearby)
    return grounded


def complete(settings: Settings, result: dict[str, Any]) -> None:
    """After the answer: without a position yet, geocode the recognised landmark and attach
    its nearby places; then say which nearby place the answer recommends, if any. Never
    raises (see ground)."""
    try:
        _complete(settings, result)
    except Exception as exc:  # noqa: BLE001 - a bug here must not cost the answer
        _failed(result, exc)


def _complete(settings: Settings, result: dict[str, Any]) -> None:
    info = result.get("places")
    if not isinstance(info, dict) or info.get("status") == "off":
        return
    language = (result.get("preset") or {}).get("language") or _PROMPT_LANGUAGE
    if info.get("status") == "pending":
        fields = result.get("fields") or {}
        try:
            position = geocode(settings, fields, language) if fields else None
        except PlacesUnavailable as exc:
            info.update(status=exc.status, reason=exc.reason)
            return
        if position is None:
            info.update(status="no_position", reason=(
                "no position: none given with the upload, no GPS in the photo, and no "
                "recognised place to look up" + ("" if fields else
                                                 " (a structured preset names the place)")))
            return
        _lookup(settings, position, language, info)
    info["recommended"] = recommended(result.get("fields") or {}, result.get("answer", ""),
                                      info.get("nearby") or [])


def _lookup(settings: Settings, position: Position, language: str | None,
            info: dict[str, Any]) -> None:
    info.update(position=position.rounded(), position_source=position.source,
                radius_m=settings.places_radius_meters)
    try:
        nearby, bucket = search_nearby(settings, position, language)
    except PlacesUnavailable as exc:
        log.warning("No nearby places: %s", exc.reason)
        info.update(status=exc.status, reason=exc.reason)
        return
    info.update(status="ok" if nearby else "none", nearby=nearby, attribution=ATTRIBUTION)
    info.pop("reason", None)
    if bucket:
        info["pricing_bucket"] = bucket
    if not nearby:
        info["reason"] = f"no places to eat within {settings.places_radius_meters} m"


def recommended(fields: Mapping[str, Any], answer: str,
                nearby: list[dict[str, Any]]) -> str | None:
    """The nearby place the answer names (its where_to_eat field, else the whole text)."""
    text = str(fields.get("where_to_eat") or answer or "").casefold()
    for place in nearby:
        name = str(place.get("name") or "").casefold()
        if len(name) >= 3 and name in text:
            return str(place["name"])
    return None
