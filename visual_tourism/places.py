"""Nearby places on the package's side: the position ``ask --near`` and the notebook send with
a photo, and the record's nearby places as people read them (`ask`, the notebook panel).

The handler does the finding (photo_handler/places.py); the function's permission is in
iam.py (``places_statements``), its price in prices.py (``describe_places``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from photo_handler import places as handler_places

from .errors import ConfigError

METADATA = handler_places.METADATA  # x-amz-meta-near
ATTRIBUTION = handler_places.ATTRIBUTION


def near_metadata(near: str | tuple[float, float] | None) -> dict[str, str]:
    """The upload's metadata for a position ("LAT,LON" or a (lat, lon) pair), rounded to
    about 100 m; {} for None. ConfigError for anything that is not a position."""
    if near is None or near == "":
        return {}
    if isinstance(near, str):
        parsed = handler_places.parse_near(near)
        if parsed is None:
            raise ConfigError(f"--near {near!r}: give LAT,LON in decimal degrees, latitude "
                              "first (e.g. 41.9009,12.4833 for the Trevi Fountain)")
        near = parsed
    lat, lon = near
    try:
        return {METADATA: handler_places.format_near(float(lat), float(lon))}
    except ValueError as exc:
        raise ConfigError(f"near: {exc}") from None


def near_key(key: str, metadata: Mapping[str, str]) -> str:
    """``key`` made the question's own when a position goes with the photo: the function
    answers an upload of bytes it answered before with the result it already wrote, whatever
    the metadata says (as for presets, notebook.presets.question_key), so each position
    gets a key: ``input/trevi.jpeg`` near 41.901,12.483 ->
    ``input/trevi.near-41.901_12.483.jpeg``."""
    near = metadata.get(METADATA)
    if not near:
        return key
    folder, _, name = key.rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    tagged = f"{stem}.near-{near.replace(',', '_')}" + (f".{suffix}" if dot else "")
    return f"{folder}/{tagged}" if folder else tagged


def nearby_lines(record: Mapping[str, Any]) -> list[str]:
    """The record's nearby places as lines to print, with their source and attribution; a
    line saying why there are none; [] for a record without places (an older handler)."""
    info = record.get("places")
    if not isinstance(info, Mapping):
        return []
    nearby = info.get("nearby") or []
    if not nearby:
        reason = info.get("reason") or info.get("status") or "none found"
        return [f"Nearby places: none ({reason})."]
    source = {"user": "the position sent with the photo", "photo": "the photo's GPS",
              "landmark": "the recognised place"}.get(str(info.get("position_source")),
                                                      "an unknown source")
    lines = [f"Places to eat within {info.get('radius_m')} m (position from {source}):"]
    for place in nearby:
        details = [str(place[k]) for k in ("category",) if place.get(k)]
        if isinstance(place.get("distance_m"), int):
            details.append(f"{place['distance_m']} m")
        if place.get("open_now") is not None:
            details.append("open now" if place["open_now"] else "closed now")
        mark = " <- recommended" if place.get("name") == info.get("recommended") else ""
        lines.append(f"  - {place.get('name')} ({', '.join(details)})"
                     + (f", {place['address']}" if place.get("address") else "") + mark)
    lines.append(f"({info.get('attribution') or ATTRIBUTION})")
    return lines
