"""Unit and event attributes as stored: one compact JSON encoding and one size rule for every path that accepts
them (``/v1/assign``, ``/v1/exposures``, ``/predict``, ``/v1/events``), so a payload near the limit gets the same
answer everywhere."""

from __future__ import annotations

import json
from collections.abc import Sequence

import orjson

from api.errors import InvalidInput
from api.json_types import JsonObject

#: Compact, non-ASCII kept (one C-accelerated encoder built once: this runs on the assignment hot path).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

#: Every digit as ``0``, to look for digit patterns with plain substring searches (``bytes.translate`` and ``in``
#: are single C passes; a regular expression over a 10k-event batch cost ~10x more).
DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _may_differ(listed: bytes) -> bool:
    """Whether orjson's text may differ from ``_encode``'s: only floats json spells with an exponent do (json
    ``1e-05``, ``1e+16``; orjson ``0.00001``/``1e-5``, ``1e16``), and orjson then writes ``0.0000``, a digit
    followed by ``e`` and a digit or ``-``, or 17+ digits in a row. Everything else (strings and their escapes,
    ints, other floats, separators, key order) is spelled the same — checked on 10^6 random doubles and every
    character below U+0800 when this was written, and by tests/api/events/test_event_parsing.py."""
    if b"0.0000" in listed:
        return True
    digits = listed.translate(DIGITS_AS_ZERO)
    return b"0e0" in digits or b"0e-" in digits or b"0" * 17 in digits


def encode_attributes(attributes: JsonObject) -> str:
    """The attributes as the compact JSON text that is stored (``{}`` when empty)."""
    return _encode(attributes) if attributes else "{}"


def encode_attributes_list(values: Sequence[JsonObject]) -> bytes | None:
    """The JSON array of ``values`` as orjson writes it compactly (UTF-8) in one C call, or None where orjson
    refuses a value (an integer beyond 64 bits, a lone surrogate). NaN and ±Infinity come out as ``null``."""
    try:
        return orjson.dumps(values)
    except TypeError:  # orjson.JSONEncodeError
        return None


def encode_attributes_many(values: Sequence[JsonObject], listed: bytes | None) -> list[str]:
    """``[encode_attributes(v) for v in values]``, byte for byte, cut from ``listed`` (the array text
    :func:`encode_attributes_list` gave for the same ``values``) when that is provably the same text.

    Cut at each ``},{`` when there are exactly ``len(values) - 1`` of them: the boundaries between the objects
    are such places, so there is then no other (inside a string or a nested list of objects), and each piece is
    one object's text. Otherwise, or where orjson's spelling may differ (:func:`_may_differ`), each value is
    encoded on its own. Precondition: no NaN or ±Infinity in ``values`` (the attribute rules refuse them first;
    orjson would write ``null`` where json writes ``NaN``).
    """
    if listed is None or listed.count(b"},{") != len(values) - 1 or _may_differ(listed):
        return [encode_attributes(value) for value in values]
    if not values:
        return []
    # why NUL as the cut mark: JSON text never holds a raw NUL (it is escaped as \u0000 inside strings)
    return listed[1:-1].decode().replace("},{", "}\x00{").split("\x00")


def check_attributes_size(encoded: str, max_bytes: int, loc: tuple[str | int, ...]) -> None:
    """Refuse encoded attributes longer than ``max_bytes`` UTF-8 bytes (422 naming the field)."""
    # why isascii first: it is O(1) on CPython strings, and for ASCII text the length in characters is the size
    size = len(encoded) if encoded.isascii() else len(encoded.encode())
    if size > max_bytes:
        raise InvalidInput(loc, f"attributes exceed {max_bytes} bytes of JSON ({size} bytes)")


def check_attributes_sizes(encoded: Sequence[str], max_bytes: int, loc: tuple[str | int, ...]) -> None:
    """:func:`check_attributes_size` on each of ``encoded`` in order (the first too large is refused, located at
    ``(*loc, index, "attributes")``), with one C pass when no text can be too large: a character is at most 4
    UTF-8 bytes, so texts of at most ``max_bytes / 4`` characters all fit."""
    if not encoded or max(map(len, encoded)) * 4 <= max_bytes:
        return
    for i, text in enumerate(encoded):
        check_attributes_size(text, max_bytes, (*loc, i, "attributes"))
