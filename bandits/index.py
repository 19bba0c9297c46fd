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
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, NamedTuple, cast

from bandits.bucketing import BUCKETS, Assignment, ExperimentConfig, VariantConfig, assign, layer_seed
from bandits.targeting import matches_all

# uint64_be of the digest's first 8 bytes (spec §1) without slicing: a precompiled Struct that skips the rest.
_U64_PREFIX = cast(Callable[[bytes], tuple[int]], struct.Struct(">Q24x").unpack)

#: One indexed experiment, flat: (targeting or None, UTF-8 of ``salt + "."``, search boundaries (one shared tuple
#: per distinct boundaries), the config when its boundaries depend on attributes (contextual, spec §3.6) else
#: None, then one Assignment per variant).
_Entry = tuple[Any, ...]
#: Offset of the first variant's Assignment in an entry.
_FIRST = 4


class _Layer(NamedTuple):
    """One layer: UTF-8 of ``layer_seed(name) + "."``, the bucket → experiment table (``slots[b]`` is the
    position + 1 of the experiment whose range holds bucket ``b``, 0 for none), the entries and configs by
    position (a tuple, so the hot loop unpacks it instead of loading attributes).

    Why a table rather than a binary search over the ranges: one read of one byte (of 10 kB per layer) instead
    of ~6 comparisons against int objects scattered in memory, which at 200 layers were cache misses."""

    prefix: bytes
    slots: bytes | array[int]
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


def exposed_assignment(config: ExperimentConfig, variant: VariantConfig) -> Assignment:
    """The answer of a running experiment for a unit in ``variant`` (what ``assign`` returns)."""
    return Assignment(config.key, variant.key, variant.payload, config.allocation_version, True)


def _entry(config: ExperimentConfig, shared: dict[tuple[int, ...], tuple[int, ...]],
           answer: Callable[[ExperimentConfig, VariantConfig], Assignment]) -> _Entry:
    bounds = search_boundaries(config.boundaries)
    bounds = shared.setdefault(bounds, bounds)  # experiments with the same split read one (cached) tuple
    return (config.targeting or None, (config.salt + ".").encode(), bounds,
            config if config.context_attribute is not None else None,
            *(answer(config, v) for v in config.variants))


def _slot_table(members: list[ExperimentConfig]) -> bytes | array[int]:
    """``table[b]`` = 1 + position of the member whose [start, end) holds bucket ``b``, else 0."""
    table = bytearray(BUCKETS) if len(members) < 256 else array("H", bytes(2 * BUCKETS))
    for position, config in enumerate(members, start=1):
        start, end = max(0, config.layer_start or 0), min(BUCKETS, config.layer_end or 0)
        if start < end:
            if isinstance(table, bytearray):
                table[start:end] = bytearray((position,)) * (end - start)
            else:
                table[start:end] = array("H", (position,)) * (end - start)
    return bytes(table) if isinstance(table, bytearray) else table


def _disjoint(members: list[ExperimentConfig]) -> bool:
    """Whether the (sorted, non-empty) ranges of a layer's members never overlap."""
    end = None
    for config in members:
        if end is not None and (config.layer_start or 0) < end:
            return False
        end = config.layer_end
    return True


def build_index(configs: Iterable[ExperimentConfig],
                answer: Callable[[ExperimentConfig, VariantConfig], Assignment] = exposed_assignment,
                ) -> ExperimentIndex:
    """Group configs: running experiments with a layer range go to their layer, everything else is evaluated
    one by one (unlayered, shipped, rolled back). Linear in the experiments (plus a sort per layer).

    ``answer`` makes the Assignment returned for each (experiment, variant) of a layer, once: a caller may give a
    subclass carrying what it needs per answer (the service: the answer's pre-encoded JSON).

    An empty range (start ≥ end) admits no unit and is left out; a layer whose ranges overlap (never written by
    the service, which keeps a layer's ranges disjoint) is evaluated experiment by experiment, so the answer
    stays exactly the spec's.
    """
    by_layer: dict[str, list[ExperimentConfig]] = {}
    others: list[ExperimentConfig] = []
    for config in configs:
        if (config.status == "running" and config.layer is not None and config.layer_start is not None
                and config.layer_end is not None and config.variants):
            if config.layer_start < config.layer_end:
                by_layer.setdefault(config.layer, []).append(config)
        else:
            others.append(config)
    layers = []
    shared: dict[tuple[int, ...], tuple[int, ...]] = {}
    for name, members in sorted(by_layer.items()):
        members.sort(key=lambda c: c.layer_start or 0)
        if not _disjoint(members):
            others.extend(members)
            continue
        layers.append(_Layer(
            prefix=(layer_seed(name) + ".").encode(),
            slots=_slot_table(members),
            entries=tuple(_entry(c, shared, answer) for c in members),
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
        for prefix, slots, entries, _ in index.layers:
            position = slots[_U64_PREFIX(sha256(prefix + unit).digest())[0] % BUCKETS]
            if not position:
                continue
            entry = entries[position - 1]
            targeting, variant_prefix, bounds, contextual = entry[:_FIRST]
            if targeting is not None and not matches_all(targeting, attrs):
                continue
            if contextual is not None:
                bounds = search_boundaries(contextual.boundaries_for(attrs))
            chosen = _FIRST + bisect_right(bounds, _U64_PREFIX(sha256(variant_prefix + unit).digest())[0] % BUCKETS)
            append(entry[chosen if chosen < len(entry) else -1])
    for config in index.others:
        result = assign(config, unit_id, attrs)
        if result is not None:
            results.append(result)
    return results
