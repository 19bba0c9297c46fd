"""Shapes of the experiment dicts the registry builds for its responses and audit rows (``TypedDict``s: plain
dicts, the JSON unchanged; ``api.experiments.schemas`` holds the pydantic models that validate them)."""

from __future__ import annotations

from typing import TypedDict

from api.json_types import JsonObject


class RegisteredVariantJson(TypedDict):
    """A variant as registered, in bucket order."""

    key: str
    control: bool
    weight: float
    model: str | None
    payload: JsonObject
    shadow: bool
    description: str | None


class GuardrailRefJson(TypedDict):
    """A guardrail metric of the experiment with its margin."""

    metric: str
    margin: float | None


class MetricsByRoleJson(TypedDict):
    """The ``metrics`` object of the REST contract."""

    primary: str | None
    secondary: list[str]
    guardrails: list[GuardrailRefJson]
