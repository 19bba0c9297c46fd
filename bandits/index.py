"""An index over many running experiments so one unit is assigned to all of them in O(layers), not O(experiments).

Within a layer at most one experiment owns any bucket (spec/bucketing.md §3.3), so the layer's hash is
computed once per unit and a binary search finds the only experiment that can include the unit. The result
is exactly ``[assign(c, unit, attrs) for c in configs]`` without the ``None``s, in the index's order (layers
by name, then the rest in the order given) — the spec is unchanged.

Why the layers are compiled into plain tuples: at 10,000 experiments the unit lands in a different experiment
of each of 200 layers, so every evaluation reads cold memory; reading one flat tuple per experiment (the encoded
variant seed, the boundaries, one shared :class:`Assignment` per variant) instead of the config's dataclasses,
and allocating nothing per experiment, is what keeps the cost per layer close to the 700-experiment figure
(bench/RESULTS.md, "Catalogue scale"). The unit is known to be in the layer range once the layer is searched,
so the range is not hashed a second time (``in_experiment_traffic`` would).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, NamedTuple, cast

from bandits.bucketing import BUCKETS, Assignment, ExperimentConfig, assign, layer_seed
from bandits.targeting import Condition, matches_all

# uint64_be of the digest's first 8 bytes (spec §1) without slicing: a precompiled Struct that skips the rest.
_U64_PREFIX = cast(Callable[[bytes], tuple[int]], struct.Struct(">Q24x").unpack)

#: One indexed experiment: (targeting or None, UTF-8 of ``salt + "."``, search boundaries, the config when
#: its boundaries depend on attributes (contextual, spec §3.6) else None, one Assignment per variant).
_Entry = tuple[tuple[Condition, ...] | None, bytes, tuple[int, ...], ExperimentConfig | None, tuple[Assignment, ...]]


class _Layer(NamedTuple):
    """One layer: UTF-8 of ``layer_seed(name) + "."``, its experiments' sorted, disjoint, non-empty ranges
    (a tuple, so the hot loop unpacks it instead of loading attributes)."""

    prefix: bytes
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    entries: tuple[_Entry, ...]
    configs: tuple[ExperimentConfig, ...]


@dataclass(frozen=True, slots=True)
class ExperimentIndex:
    """Experiments grouped for fast all-experiment assignment: running layered ones by layer, the rest flat."""

    layers: tuple[_Layer, ...]
    others: tuple[ExperimentConfig, ...]


def search_boundaries(boundaries: Sequence[int]) -> tuple[int, ...]:
    """Running maximum of the boundaries, so ``min(bisect_right(s, v), n - 1)`` is ``variant_index(v, b)``.

    ``variant_index`` takes the first ``i`` with ``v < c_i``; that is the first ``i`` with ``max(c_0..c_i) > v``,
    which bisection finds in the non-decreasing running maximum (valid weights give it unchanged).
    """
    out: list[int] = []
    high = -1
    for boundary in boundaries:
        high = max(high, boundary)
        out.append(high)
    return tuple(out)


def _entry(config: ExperimentConfig) -> _Entry:
    results = tuple(Assignment(config.key, v.key, v.payload, config.allocation_version, True)
                    for v in config.variants)
    return (config.targeting or None, (config.salt + ".").encode(), search_boundaries(config.boundaries),
            config if config.context_attribute is not None else None, results)


def _disjoint(members: list[ExperimentConfig]) -> bool:
    """Whether the (sorted, non-empty) ranges of a layer's members never overlap."""
    end = None
    for config in members:
        if end is not None and (config.layer_start or 0) < end:
            return False
        end = config.layer_end
    return True


def build_index(configs: Iterable[ExperimentConfig]) -> ExperimentIndex:
    """Group configs: running experiments with a layer range go to their layer, everything else is evaluated
    one by one (unlayered, shipped, rolled back). Linear in the experiments (plus a sort per layer).

    An empty range (start ≥ end) admits no unit and is left out; a layer whose ranges overlap (never written by
    the service, which keeps a layer's ranges disjoint) is evaluated experiment by experiment, so the answer
    stays exactly the spec's.
    """
    by_layer: dict[str, list[ExperimentConfig]] = {}
    others: list[ExperimentConfig] = []
    for config in configs:
        if (config.status == "running" and config.layer is not None and config.layer_start is not None
                and config.layer_end is not None):
            if config.layer_start < config.layer_end:
                by_layer.setdefault(config.layer, []).append(config)
        else:
            others.append(config)
    layers = []
    for name, members in sorted(by_layer.items()):
        members.sort(key=lambda c: c.layer_start or 0)
        if not _disjoint(members):
            others.extend(members)
            continue
        layers.append(_Layer(
            prefix=(layer_seed(name) + ".").encode(),
            starts=tuple(c.layer_start or 0 for c in members),
            ends=tuple(c.layer_end or 0 for c in members),
            entries=tuple(_entry(c) for c in members),
            configs=tuple(members),
        ))
    return ExperimentIndex(layers=tuple(layers), others=tuple(others))


def assign_all(index: ExperimentIndex, unit_id: str, attributes: Mapping[str, Any] | None) -> list[Assignment]:
    """Every assignment of ``unit_id`` across the indexed experiments (spec/bucketing.md §3).

    Per layer: ``b = uint64_be(SHA-256(layer_seed + "." + unit)[:8]) mod 10000`` once; the experiment whose range
    holds ``b`` (if any) is the only candidate; it answers after its targeting with the variant of
    ``uint64_be(SHA-256(salt + "." + unit)[:8]) mod 10000`` — the spec's hashes, byte for byte.
    """
    results: list[Assignment] = []
    attrs: Mapping[str, Any] = attributes if attributes is not None else {}
    if index.layers:
        unit = unit_id.encode()  # the hashes' input is UTF-8(seed + "." + unit) = prefix + UTF-8(unit)
        append = results.append
        for prefix, starts, ends, entries, _ in index.layers:
            layer_bucket = _U64_PREFIX(sha256(prefix + unit).digest())[0] % BUCKETS
            position = bisect_right(starts, layer_bucket) - 1
            if position < 0 or layer_bucket >= ends[position]:
                continue
            targeting, variant_prefix, bounds, contextual, by_variant = entries[position]
            if targeting is not None and not matches_all(targeting, attrs):
                continue
            if contextual is not None:
                bounds = search_boundaries(contextual.boundaries_for(attrs))
            variant_bucket = _U64_PREFIX(sha256(variant_prefix + unit).digest())[0] % BUCKETS
            chosen = bisect_right(bounds, variant_bucket)
            append(by_variant[chosen if chosen < len(by_variant) else len(by_variant) - 1])
    for config in index.others:
        result = assign(config, unit_id, attrs)
        if result is not None:
            results.append(result)
    return results
