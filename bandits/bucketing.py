"""Deterministic bucketing: the published spec in ``spec/bucketing.md`` (version 1).

A unit's bucket is ``uint64_be(SHA-256(seed + "." + unit_id)[:8]) mod 10000``; experiments gate traffic
and map weights to cumulative bucket ranges. Everything here is pure and allocation-free on the hot
path so the server's ``/v1/assign`` and SDKs in any language reproduce the same answer.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bandits.targeting import Condition, matches_all

BUCKETS = 10_000
#: The newest spec version implemented here; a document declares the lowest version that evaluates it (spec §4).
SPEC_VERSION = 2
#: Spec version 2 added contextual weights (§3.6); documents without them stay version 1.
CONTEXT_SPEC_VERSION = 2

_sha256 = hashlib.sha256
_from_bytes = int.from_bytes


def bucket(seed: str, unit_id: str) -> int:
    """Return ``uint64_be(SHA-256(UTF-8(seed + "." + unit_id))[0:8]) mod 10000`` (spec §1)."""
    digest = _sha256(f"{seed}.{unit_id}".encode()).digest()
    return _from_bytes(digest[:8], "big") % BUCKETS


def traffic_seed(salt: str) -> str:
    """Seed of the traffic gate hash (spec §2)."""
    return salt + ":traffic"


def layer_seed(layer: str) -> str:
    """Seed of a layer's hash (spec §2)."""
    return "layer:" + layer


def traffic_threshold(traffic: float) -> int:
    """Buckets admitted by a traffic fraction: ``floor(traffic × 10000 + 0.5)`` (spec §3.4)."""
    return min(BUCKETS, max(0, math.floor(traffic * BUCKETS + 0.5)))


def cumulative_boundaries(weights: Sequence[float]) -> tuple[int, ...]:
    """Cumulative bucket boundaries ``c_i = floor((w_0 + … + w_i) × 10000 + 0.5)``; the last is 10000.

    Why left-to-right float summation: it is what every language's naive loop does in IEEE-754
    doubles, so SDKs need no decimal arithmetic to agree with the server (spec §3.5).
    """
    boundaries: list[int] = []
    total = 0.0
    for weight in weights:
        total += weight
        boundaries.append(min(BUCKETS, math.floor(total * BUCKETS + 0.5)))
    if boundaries:
        boundaries[-1] = BUCKETS
    return tuple(boundaries)


def variant_index(variant_bucket: int, boundaries: Sequence[int]) -> int:
    """Index of the first variant whose boundary exceeds the bucket (spec §3.5)."""
    for index, boundary in enumerate(boundaries):
        if variant_bucket < boundary:
            return index
    return len(boundaries) - 1


@dataclass(frozen=True, slots=True)
class VariantConfig:
    """One variant as published to assignment: its key, weight in the current allocation and payload."""

    key: str
    weight: float
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    """What assignment needs to know about one experiment (spec §4)."""

    key: str
    salt: str
    status: str
    variants: tuple[VariantConfig, ...]
    control: str
    traffic: float = 1.0
    targeting: tuple[Condition, ...] = ()
    layer: str | None = None
    layer_start: int | None = None
    layer_end: int | None = None
    allocation_version: int = 1
    shipped_variant: str | None = None
    boundaries: tuple[int, ...] = ()
    #: contextual weights (spec §3.6): the attribute, and per declared value the variants' weights in order
    context_attribute: str | None = None
    context_weights: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    context_boundaries: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.boundaries:
            object.__setattr__(self, "boundaries", cumulative_boundaries([v.weight for v in self.variants]))
        if self.context_weights and not self.context_boundaries:
            for value, weights in self.context_weights.items():
                if len(weights) != len(self.variants):
                    raise ValueError(f"context value {value!r} has {len(weights)} weights for "
                                     f"{len(self.variants)} variants")
            object.__setattr__(self, "context_boundaries", {
                value: cumulative_boundaries(weights) for value, weights in self.context_weights.items()})

    def boundaries_for(self, attributes: Mapping[str, Any]) -> tuple[int, ...]:
        """The boundaries that apply to a unit with ``attributes``: its context value's when the experiment is
        contextual and the value is a declared string, otherwise the experiment's (spec §3.6)."""
        if self.context_attribute is not None:
            value = attributes.get(self.context_attribute)
            if type(value) is str:
                return self.context_boundaries.get(value, self.boundaries)
        return self.boundaries

    def variant_by_key(self, key: str) -> VariantConfig | None:
        """The variant called ``key`` or None."""
        for variant in self.variants:
            if variant.key == key:
                return variant
        return None


@dataclass(frozen=True, slots=True)
class Assignment:
    """The outcome of assignment for one unit and experiment; ``exposed`` is False for shipped/rolled back."""

    experiment: str
    variant: str
    payload: Mapping[str, Any]
    allocation_version: int
    exposed: bool


def in_experiment_traffic(config: ExperimentConfig, unit_id: str) -> bool:
    """Layer range or traffic gate (spec §3.3–3.4)."""
    if config.layer is not None:
        if config.layer_start is None or config.layer_end is None:
            return False
        layer_bucket = bucket(layer_seed(config.layer), unit_id)
        return config.layer_start <= layer_bucket < config.layer_end
    threshold = traffic_threshold(config.traffic)
    if threshold >= BUCKETS:
        return True
    return bucket(traffic_seed(config.salt), unit_id) < threshold


def assign(config: ExperimentConfig, unit_id: str, attributes: Mapping[str, Any] | None = None) -> Assignment | None:
    """Assign ``unit_id`` to a variant of ``config`` or return None when the unit is not in it (spec §3)."""
    attrs = attributes if attributes is not None else {}
    status = config.status
    if status == "running":
        if config.targeting and not matches_all(config.targeting, attrs):
            return None
        if not in_experiment_traffic(config, unit_id):
            return None
        boundaries = config.boundaries if config.context_attribute is None else config.boundaries_for(attrs)
        index = variant_index(bucket(config.salt, unit_id), boundaries)
        chosen = config.variants[index]
        return Assignment(config.key, chosen.key, chosen.payload, config.allocation_version, True)
    if status in ("shipped", "rolled_back"):
        if config.targeting and not matches_all(config.targeting, attrs):
            return None
        key = config.shipped_variant if status == "shipped" and config.shipped_variant else config.control
        fixed = config.variant_by_key(key)
        if fixed is None:
            return None
        return Assignment(config.key, fixed.key, fixed.payload, config.allocation_version, False)
    return None


def experiment_config_from_document(doc: Mapping[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from one experiment of the SDK config document (spec §4)."""
    from bandits.targeting import condition_from_document

    context = doc.get("context")
    return ExperimentConfig(
        key=doc["key"],
        salt=doc["salt"],
        status=doc["status"],
        variants=tuple(
            VariantConfig(key=v["key"], weight=float(v["weight"]), payload=v.get("payload") or {})
            for v in doc["variants"]
        ),
        control=doc["control"],
        traffic=float(doc.get("traffic", 1.0)),
        targeting=tuple(condition_from_document(c) for c in doc.get("targeting") or ()),
        layer=doc.get("layer"),
        layer_start=doc.get("layer_start"),
        layer_end=doc.get("layer_end"),
        allocation_version=int(doc.get("allocation_version", 1)),
        shipped_variant=doc.get("shipped_variant"),
        context_attribute=context["attribute"] if context else None,
        context_weights={value: tuple(float(w) for w in weights)
                         for value, weights in (context["weights"] if context else {}).items()},
    )
