"""Unit and event attributes as stored: one compact JSON encoding and one size rule for every path that accepts
them (``/v1/assign``, ``/v1/exposures``, ``/predict``, ``/v1/events``), so a payload near the limit gets the same
answer everywhere."""

from __future__ import annotations

import json

from api.errors import InvalidInput
from api.json_types import JsonObject

#: Compact, non-ASCII kept (one C-accelerated encoder built once: this runs on the assignment hot path).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_attributes(attributes: JsonObject) -> str:
    """The attributes as the compact JSON text that is stored (``{}`` when empty)."""
    return _encode(attributes) if attributes else "{}"


def check_attributes_size(encoded: str, max_bytes: int, loc: tuple[str | int, ...]) -> None:
    """Refuse encoded attributes longer than ``max_bytes`` UTF-8 bytes (422 naming the field)."""
    # why isascii first: it is O(1) on CPython strings, and for ASCII text the length in characters is the size
    size = len(encoded) if encoded.isascii() else len(encoded.encode())
    if size > max_bytes:
        raise InvalidInput(loc, f"attributes exceed {max_bytes} bytes of JSON ({size} bytes)")
