"""Targeting conditions (spec/bucketing.md §3.2): pure predicates over a unit's attributes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OPERATORS = ("eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Condition:
    """``attribute op values``; equality ops use ``values[0]``, set ops use all values."""

    attribute: str
    op: str
    values: tuple[Any, ...]


def condition_from_document(doc: Mapping[str, Any]) -> Condition:
    """Build a condition from its JSON form ``{"attribute", "op", "values"}``."""
    return Condition(attribute=doc["attribute"], op=doc["op"], values=tuple(doc.get("values") or ()))


def _is_number(value: Any) -> bool:
    # bool is a subclass of int in Python; JSON booleans are not numbers (spec §3.2).
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(left: Any, right: Any) -> bool:
    """JSON equality: numbers by value, never a string equal to a number, booleans only to booleans."""
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if type(left) is not type(right):
        return False
    return bool(left == right)


def _contains(values: Sequence[Any], item: Any) -> bool:
    return any(json_equal(item, candidate) for candidate in values)


def matches(condition: Condition, attributes: Mapping[str, Any]) -> bool:
    """Whether one condition holds for the attributes; a missing attribute holds only for neq/not_in."""
    value = attributes.get(condition.attribute, _MISSING)
    op = condition.op
    if value is _MISSING:
        return op in ("neq", "not_in")
    values = condition.values
    if op == "in":
        return _contains(values, value)
    if op == "not_in":
        return not _contains(values, value)
    if not values:
        return False
    target = values[0]
    if op == "eq":
        return json_equal(value, target)
    if op == "neq":
        return not json_equal(value, target)
    if not (_is_number(value) and _is_number(target)):
        return False
    if op == "gt":
        return bool(value > target)
    if op == "gte":
        return bool(value >= target)
    if op == "lt":
        return bool(value < target)
    if op == "lte":
        return bool(value <= target)
    return False


def matches_all(conditions: Iterable[Condition], attributes: Mapping[str, Any]) -> bool:
    """Logical AND of the conditions (an empty list holds)."""
    return all(matches(condition, attributes) for condition in conditions)
