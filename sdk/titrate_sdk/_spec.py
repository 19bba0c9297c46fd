"""The titrate bucketing spec, versions 1 and 2 (``spec/bucketing.md``; 2 adds contextual weights, §3.6),
implemented with the standard library only.

This module is deliberately independent of the service's ``bandits`` package: the SDK is a second
implementation of the published spec, and the test-suite proves both agree on the published vectors and
on random units.

The configuration document is compiled once per fetch into immutable :class:`CompiledExperiment` objects
(seed prefixes encoded, boundaries precomputed, targeting turned into predicates, one shared
:class:`Assignment` per variant), so evaluating a unit is two dictionary look-ups, one or two SHA-256
calls and a table look-up.
"""

from __future__ import annotations

import gc
import math
import struct
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import sha256
from itertools import pairwise
from types import MappingProxyType
from typing import Any, cast

BUCKETS = 10_000
SPEC_VERSION = 2
#: Document spec versions this SDK evaluates (a document declares the lowest version that evaluates it).
SUPPORTED_SPEC_VERSIONS = (1, 2)

# The first 8 bytes of the 32-byte digest as an unsigned big-endian 64-bit integer (spec §1). A
# precompiled Struct that skips the other 24 bytes is the fastest way to read them in CPython (no slice).
_U64_PREFIX = cast(Callable[[bytes], tuple[int]], struct.Struct(">Q24x").unpack)

RUNNING = "running"
SHIPPED = "shipped"
ROLLED_BACK = "rolled_back"

_MISSING = object()


def bucket(seed: str, unit_id: str) -> int:
    """Return ``uint64_be(SHA-256(UTF-8(seed + "." + unit_id))[0:8]) mod 10000`` (spec §1)."""
    return _U64_PREFIX(sha256(f"{seed}.{unit_id}".encode()).digest())[0] % BUCKETS


def seed_prefix(seed: str) -> bytes:
    """UTF-8 of ``seed + "."``: prepended to the encoded unit id, so the hot path concatenates bytes once."""
    return (seed + ".").encode()


def traffic_threshold(traffic: float) -> int:
    """Buckets admitted by a traffic fraction: ``floor(traffic × 10000 + 0.5)`` clamped to [0, 10000]."""
    return min(BUCKETS, max(0, math.floor(traffic * BUCKETS + 0.5)))


def cumulative_boundaries(weights: Sequence[float]) -> tuple[int, ...]:
    """Cumulative boundaries ``c_i = floor((w_0 + … + w_i) × 10000 + 0.5)``, the last forced to 10000.

    Why left-to-right float summation: it is what a naive loop does in IEEE-754 doubles in any language,
    so no decimal arithmetic is needed to agree with the server (spec §3.5).
    """
    boundaries: list[int] = []
    total = 0.0
    for weight in weights:
        total += weight
        boundaries.append(min(BUCKETS, math.floor(total * BUCKETS + 0.5)))
    if boundaries:
        boundaries[-1] = BUCKETS
    return tuple(boundaries)


def search_boundaries(boundaries: Sequence[int]) -> tuple[int, ...]:
    """Running maximum of the boundaries, so ``bisect_right`` finds "the first i with v < c_i".

    Valid weights give non-decreasing boundaries already; the running maximum only matters for a
    malformed config (a negative weight), where it keeps bisection equal to the spec's linear scan:
    the first i with ``max(c_0..c_i) > v`` is the first i with ``c_i > v``.
    """
    out: list[int] = []
    high = -1
    for boundary in boundaries:
        high = max(high, boundary)
        out.append(high)
    return tuple(out)


def variant_index(variant_bucket: int, boundaries: Sequence[int]) -> int:
    """Index of the first variant ``i`` with ``variant_bucket < c_i`` (spec §3.5)."""
    return min(bisect_right(search_boundaries(boundaries), variant_bucket), len(boundaries) - 1)


# --------------------------------------------------------------------------------------------- targeting


def _is_number(value: Any) -> bool:
    # bool is a subclass of int in Python; JSON booleans are not numbers (spec §3.2).
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(left: Any, right: Any) -> bool:
    """JSON equality: numbers by value, a string never equals a number, booleans only equal booleans."""
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if type(left) is not type(right):
        return False
    return bool(left == right)


def _contains(values: tuple[Any, ...], item: Any) -> bool:
    return any(json_equal(item, candidate) for candidate in values)


Predicate = Callable[[Mapping[str, Any]], bool]


def compile_condition(doc: Mapping[str, Any]) -> Predicate:
    """Turn ``{"attribute", "op", "values"}`` into a predicate over attributes (spec §3.2).

    A missing attribute holds only for ``neq``/``not_in``; an unknown operator never holds; ``eq``/``neq``
    and the comparisons use ``values[0]`` and fail when ``values`` is empty.
    """
    attribute = doc["attribute"]
    op = doc["op"]
    values = tuple(doc.get("values") or ())
    missing_holds = op in ("neq", "not_in")
    # Exact-str members go to a frozenset for O(1) checks of the common "country in [...]" case; a value
    # whose type is exactly str can only JSON-equal a candidate whose type is exactly str.
    str_values = frozenset(v for v in values if type(v) is str)
    other_values = tuple(v for v in values if type(v) is not str)

    def contains(value: Any) -> bool:
        if type(value) is str:
            return value in str_values
        return _contains(other_values, value)

    target = values[0] if values else None

    def predicate(attributes: Mapping[str, Any]) -> bool:
        value = attributes.get(attribute, _MISSING)
        if value is _MISSING:
            return missing_holds
        if op == "in":
            return contains(value)
        if op == "not_in":
            return not contains(value)
        if not values:
            return False
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

    return predicate


def matches_all(predicates: tuple[Predicate, ...], attributes: Mapping[str, Any] | None) -> bool:
    """Logical AND of the predicates; ``None`` attributes are an empty mapping."""
    attrs = attributes if attributes is not None else {}
    for predicate in predicates:
        if not predicate(attrs):
            return False
    return True


# --------------------------------------------------------------------------------------------- compiling


@dataclass(frozen=True, slots=True)
class Assignment:
    """One unit's variant in one experiment.

    Attributes:
        experiment: the experiment key.
        variant: the variant key.
        payload: the variant's payload, a read-only mapping shared by every unit in the variant
            (``dict(a.payload)`` gives a mutable copy).
        allocation_version: the allocation version whose weights produced the answer; ``None`` when the
            server did not say (remote assignment).
    """

    experiment: str
    variant: str
    payload: Mapping[str, Any]
    allocation_version: int | None = None


class CompiledExperiment:
    """An experiment of the config document prepared for fast, lock-free evaluation (immutable by use)."""

    __slots__ = (
        "key",
        "status",
        "running",
        "control",
        "targeting",
        "gate_prefix",
        "gate_low",
        "gate_high",
        "variant_prefix",
        "boundaries",
        "index_table",
        "keys",
        "assignments",
        "fixed",
        "allocation_version",
        "context",
        "hot",
        "layered",
        "_table",
    )

    key: str
    status: str
    running: bool
    control: str
    targeting: tuple[Predicate, ...] | None
    gate_prefix: bytes | None
    gate_low: int
    gate_high: int
    variant_prefix: bytes
    boundaries: tuple[int, ...]
    index_table: bytes | array[int]
    keys: tuple[str, ...]
    assignments: tuple[Assignment, ...]
    fixed: Assignment | None
    allocation_version: int
    context: ContextTables | None
    hot: HotTuple
    #: running with a layer range: ``gate_prefix`` is the layer's seed and [gate_low, gate_high) its range
    layered: bool
    _table: list[str] | None

    def evaluate(self, unit: bytes, attributes: Mapping[str, Any] | None) -> Assignment | None:
        """Spec §3 for one UTF-8-encoded unit id: the unit's assignment or None when it is not in."""
        if self.targeting is not None and not matches_all(self.targeting, attributes):
            return None
        if not self.running:
            return self.fixed
        if self.gate_prefix is not None:
            gate = _U64_PREFIX(sha256(self.gate_prefix + unit).digest())[0] % BUCKETS
            if not self.gate_low <= gate < self.gate_high:
                return None
        variant = _U64_PREFIX(sha256(self.variant_prefix + unit).digest())[0] % BUCKETS
        return self.assignments[self.table_for(attributes)[variant]]

    def evaluate_in_range(self, unit: bytes, attributes: Mapping[str, Any] | None) -> Assignment | None:
        """:meth:`evaluate` of a running experiment for a unit already known to pass its gate (the layer index
        found the unit's layer bucket in this experiment's range): targeting, then the variant hash."""
        if self.targeting is not None and not matches_all(self.targeting, attributes):
            return None
        variant = _U64_PREFIX(sha256(self.variant_prefix + unit).digest())[0] % BUCKETS
        return self.assignments[self.table_for(attributes)[variant]]

    def table_for(self, attributes: Mapping[str, Any] | None) -> bytes | array[int]:
        """The bucket → variant index table for a unit with ``attributes`` (its context value's, spec §3.6)."""
        if self.context is None:
            return self.index_table
        return context_table(self.context, attributes, self.index_table)

    def variant_table(self, attributes: Mapping[str, Any] | None = None) -> list[str]:
        """Variant key of each of the 10000 buckets for units with ``attributes`` (for batch assignment; the
        experiment's own table is built on first use and kept)."""
        keys = self.keys
        if self.context is not None:
            own = self.table_for(attributes)
            if own is not self.index_table:
                return [keys[i] for i in own]
        table = self._table
        if table is None:
            table = [keys[i] for i in self.index_table]
            self._table = table
        return table


# Contextual weights compiled (spec §3.6): the attribute and, per declared value, its bucket → variant table.
ContextTables = tuple[str, Mapping[str, "bytes | array[int]"]]


def context_table(
    context: ContextTables, attributes: Mapping[str, Any] | None, default: bytes | array[int]
) -> bytes | array[int]:
    """The declared value's table when ``attributes[attribute]`` is a string with contextual weights, else the
    experiment's own ``default`` (spec §3.6)."""
    if attributes is None:
        return default
    value = attributes.get(context[0])
    if type(value) is not str:
        return default
    return context[1].get(value, default)


# What get_variant needs, in one tuple so the hot path does one dict look-up and one unpack instead of
# a dozen attribute loads: (targeting, running, gate_prefix, gate_low, gate_high, variant_prefix,
# index_table, keys, control, fixed variant key or None, contextual tables or None).
HotTuple = tuple[
    tuple[Predicate, ...] | None,
    bool,
    bytes | None,
    int,
    int,
    bytes,
    "bytes | array[int]",
    tuple[str, ...],
    str,
    str | None,
    "ContextTables | None",
]


def index_table(boundaries: Sequence[int]) -> bytes | array[int]:
    """Variant index of each bucket: ``table[v]`` = first ``i`` with ``v < c_i`` (spec §3.5).

    Why a table rather than bisection: indexing 10 kB of bytes is faster than ``bisect_right`` on the
    hot path and the answer is identical by construction; more than 256 variants use 16-bit entries.
    Byte tables are shared between experiments with the same boundaries (immutable ``bytes``): a catalogue
    of 10,000 two-variant experiments holds a handful of tables, not 100 MB, and they stay in cache.
    """
    if len(boundaries) <= 256:
        return _shared_byte_table(tuple(boundaries))
    return _build_index_table(boundaries)


@lru_cache(maxsize=1024)
def _shared_byte_table(boundaries: tuple[int, ...]) -> bytes | array[int]:
    return _build_index_table(boundaries)


def _build_index_table(boundaries: Sequence[int]) -> bytes | array[int]:
    out = array("H", bytes(2 * BUCKETS)) if len(boundaries) > 256 else bytearray(BUCKETS)
    low = 0
    for i, high in enumerate(search_boundaries(boundaries)):
        for b in range(low, min(high, BUCKETS)):
            out[b] = i
        low = max(low, high)
    return bytes(out) if isinstance(out, bytearray) else out


def _freeze(payload: Any) -> Mapping[str, Any]:
    if payload is None:
        return MappingProxyType({})
    if not isinstance(payload, Mapping):
        raise TypeError("variant payload must be an object")
    return MappingProxyType(dict(payload))


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError("layer range bounds must be numbers")
    return int(value)


def compile_experiment(doc: Mapping[str, Any]) -> CompiledExperiment | None:
    """Compile one experiment of the config document (spec §4); None when its status is not served.

    Raises:
        KeyError, TypeError, ValueError: the document is malformed (the caller skips the experiment).
    """
    if not isinstance(doc, Mapping):
        raise TypeError("experiment must be an object")
    key = doc["key"]
    status = doc["status"]
    if not isinstance(key, str) or not isinstance(status, str):
        raise TypeError("experiment key and status must be strings")
    if status not in (RUNNING, SHIPPED, ROLLED_BACK):
        return None
    salt = doc.get("salt")
    if salt is None:
        salt = key
    if not isinstance(salt, str):
        raise TypeError("salt must be a string")
    variant_docs = doc["variants"]
    if not isinstance(variant_docs, list | tuple) or not variant_docs:
        raise ValueError("variants must be a non-empty list")
    allocation_version = doc.get("allocation_version", 1)
    allocation_version = int(allocation_version) if allocation_version is not None else 1
    keys: list[str] = []
    weights: list[float] = []
    assignments: list[Assignment] = []
    for variant in variant_docs:
        variant_key = variant["key"]
        if not isinstance(variant_key, str):
            raise TypeError("variant key must be a string")
        weight = variant["weight"]
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise TypeError("variant weight must be a number")
        keys.append(variant_key)
        weights.append(float(weight))
        assignments.append(Assignment(key, variant_key, _freeze(variant.get("payload")), allocation_version))
    control = doc.get("control")
    if not isinstance(control, str):
        control = keys[0]
    conditions = doc.get("targeting") or ()
    if not isinstance(conditions, list | tuple):
        raise TypeError("targeting must be a list")
    targeting = tuple(compile_condition(c) for c in conditions) or None

    exp = CompiledExperiment()
    exp.key = key
    exp.status = status
    exp.running = status == RUNNING
    exp.control = control
    exp.targeting = targeting
    exp.allocation_version = allocation_version
    exp.assignments = tuple(assignments)
    exp.boundaries = cumulative_boundaries(weights)  # raises on NaN/inf weights
    exp.index_table = index_table(exp.boundaries)
    exp.context = compile_context(doc.get("context"), len(keys)) if status == RUNNING else None
    exp.keys = tuple(keys)
    exp.variant_prefix = seed_prefix(salt)
    exp._table = None
    exp.gate_prefix = None
    exp.gate_low = 0
    exp.gate_high = BUCKETS
    exp.fixed = None
    exp.layered = False
    if status == RUNNING:
        layer = doc.get("layer")
        if layer is not None:
            if not isinstance(layer, str):
                raise TypeError("layer must be a string")
            start = _optional_int(doc.get("layer_start"))
            end = _optional_int(doc.get("layer_end"))
            exp.gate_prefix = seed_prefix("layer:" + layer)
            if start is None or end is None:
                # A layered experiment without a range has no units (as the server treats it).
                exp.gate_low, exp.gate_high = 0, 0
            else:
                exp.gate_low, exp.gate_high = start, end
                exp.layered = start < end
        else:
            traffic = doc.get("traffic", 1.0)
            traffic = 1.0 if traffic is None else traffic
            if isinstance(traffic, bool) or not isinstance(traffic, int | float):
                raise TypeError("traffic must be a number")
            threshold = traffic_threshold(float(traffic))  # raises on NaN
            if threshold < BUCKETS:
                exp.gate_prefix = seed_prefix(salt + ":traffic")
                exp.gate_high = threshold
    else:
        shipped = doc.get("shipped_variant")
        fixed_key = shipped if status == SHIPPED and shipped else control
        exp.fixed = next((a for a in assignments if a.variant == fixed_key), None)
    exp.hot = (
        exp.targeting,
        exp.running,
        exp.gate_prefix,
        exp.gate_low,
        exp.gate_high,
        exp.variant_prefix,
        exp.index_table,
        exp.keys,
        exp.control,
        None if exp.fixed is None else exp.fixed.variant,
        exp.context,
    )
    return exp


def compile_context(doc: Any, variants: int) -> ContextTables | None:
    """Spec §3.6: ``{"attribute": a, "weights": {value: [w_0 … w_{k-1}]}}`` → (a, value → index table)."""
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise TypeError("context must be an object")
    attribute = doc["attribute"]
    weights_by_value = doc["weights"]
    if not isinstance(attribute, str) or not isinstance(weights_by_value, Mapping):
        raise TypeError("context needs a string attribute and a weights object")
    tables: dict[str, bytes | array[int]] = {}
    for value, weights in weights_by_value.items():
        if not isinstance(weights, list | tuple) or len(weights) != variants:
            raise ValueError(f"context value {value!r} needs one weight per variant ({variants})")
        if any(isinstance(w, bool) or not isinstance(w, int | float) for w in weights):
            raise TypeError("context weights must be numbers")
        tables[str(value)] = index_table(cumulative_boundaries([float(w) for w in weights]))
    return attribute, MappingProxyType(tables)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable compiled config document, swapped atomically by the client."""

    version: Any
    etag: str | None
    experiments: Mapping[str, CompiledExperiment]
    skipped: tuple[str, ...] = ()
    hot: Mapping[str, HotTuple] = field(default_factory=dict)
    #: the layer index of :func:`build_layers`: ``assign`` hashes each layer once per unit, not each experiment
    layers: tuple[LayerIndex, ...] = ()
    #: (document position, experiment) of the experiments the layer index does not hold, evaluated one by one
    flat: tuple[tuple[int, CompiledExperiment], ...] = ()


#: One layer: UTF-8 of ``"layer:" + name + "."``, its bucket → experiment table (``slots[b]`` = 1 + the index of
#: the experiment whose range holds bucket ``b``, 0 for none), the experiments and their positions in the
#: document (``assign`` answers in document order), and per experiment a flat :data:`LayerEntry`. Why a table
#: and flat entries: at 200 layers each unit lands in a different experiment of every layer, so each object read
#: is a likely cache miss; one byte read and one tuple per layer replace a binary search over scattered int
#: objects and a dozen attribute loads.
LayerIndex = tuple[bytes, "bytes | array[int]", tuple[CompiledExperiment, ...], tuple["LayerEntry", ...]]
#: (document position, key, targeting or None, UTF-8 of ``salt + "."``, bucket → variant table, contextual
#: tables or None, then the Assignment of each variant).
LayerEntry = tuple[Any, ...]
#: Offset of the first variant's Assignment in a :data:`LayerEntry`.
ENTRY_FIRST_VARIANT = 6


def layer_slots(members: Sequence[CompiledExperiment]) -> bytes | array[int]:
    """The bucket → 1 + member index table of a layer whose members' [gate_low, gate_high) are disjoint."""
    if len(members) < 256:
        table = bytearray(BUCKETS)
        for slot, exp in enumerate(members, start=1):
            low, high = max(0, exp.gate_low), min(BUCKETS, exp.gate_high)
            if low < high:
                table[low:high] = bytes((slot,)) * (high - low)
        return bytes(table)
    wide = array("H", bytes(2 * BUCKETS))
    for slot, exp in enumerate(members, start=1):
        low, high = max(0, exp.gate_low), min(BUCKETS, exp.gate_high)
        if low < high:
            wide[low:high] = array("H", (slot,)) * (high - low)
    return wide


def build_layers(
    experiments: Iterable[CompiledExperiment],
) -> tuple[tuple[LayerIndex, ...], tuple[tuple[int, CompiledExperiment], ...]]:
    """Group running layered experiments by layer; the rest (and any layer whose ranges overlap, which the
    service never writes) stay flat. Within a layer at most one experiment owns a bucket (spec §3.3), so one
    layer hash and a binary search find the only experiment a unit can be in: answers stay the spec's."""
    by_layer: dict[bytes, list[tuple[int, CompiledExperiment]]] = {}
    flat: list[tuple[int, CompiledExperiment]] = []
    for position, exp in enumerate(experiments):
        if exp.layered and exp.gate_prefix is not None:
            by_layer.setdefault(exp.gate_prefix, []).append((position, exp))
        else:
            flat.append((position, exp))
    layers: list[LayerIndex] = []
    for prefix, members in sorted(by_layer.items()):
        members.sort(key=lambda item: item[1].gate_low)
        if any(later[1].gate_low < earlier[1].gate_high for earlier, later in pairwise(members)):
            flat.extend(members)
            continue
        experiments_in = tuple(e for _, e in members)
        entries = tuple((p, e.key, e.targeting, e.variant_prefix, e.index_table, e.context, *e.assignments)
                        for p, e in members)
        layers.append((prefix, layer_slots(experiments_in), experiments_in, entries))
    flat.sort(key=lambda item: item[0])
    return tuple(layers), tuple(flat)


EMPTY_SNAPSHOT = Snapshot(version=None, etag=None, experiments={})


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block; re-enabled only if it was enabled.

    Why: compiling allocates ~20 tracked objects per experiment while the previous snapshot is alive, and the
    collector's full passes over that heap made compiling 10,000 experiments cost 41 µs each vs 16 µs at 700;
    paused, 17 µs (bench/RESULTS.md). Refcounting still frees everything acyclic meanwhile.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_document(doc: Any, etag: str | None = None) -> Snapshot:
    """Compile the ``GET /v1/sdk/config`` document; malformed experiments are skipped and named (linear in the
    experiments: the cyclic collector is paused meanwhile, see :func:`gc_paused`).

    Raises:
        ValueError: the document as a whole is unusable (not an object, no experiment list, or a spec
            version / bucket count this SDK does not implement) — the caller keeps its previous snapshot.
    """
    if not isinstance(doc, Mapping):
        raise ValueError("config document must be a JSON object")
    spec_version = doc.get("spec_version", 1)
    if spec_version not in SUPPORTED_SPEC_VERSIONS:
        raise ValueError(f"unsupported bucketing spec_version {spec_version!r} (this SDK implements 1 and 2)")
    buckets = doc.get("buckets", BUCKETS)
    if buckets != BUCKETS:
        raise ValueError(f"unsupported bucket count {buckets!r} (spec v1 uses {BUCKETS})")
    experiment_docs = doc.get("experiments")
    if not isinstance(experiment_docs, list | tuple):
        raise ValueError("config document has no experiments list")
    with gc_paused():
        return _compile_experiments(doc, experiment_docs, etag)


def _compile_experiments(doc: Mapping[str, Any], experiment_docs: Sequence[Any], etag: str | None) -> Snapshot:
    experiments: dict[str, CompiledExperiment] = {}
    skipped: list[str] = []
    for item in experiment_docs:
        try:
            compiled = compile_experiment(item)
        except Exception as exc:  # noqa: BLE001 - one bad experiment must not hide the others
            name = item.get("key") if isinstance(item, Mapping) else None
            skipped.append(f"{name!r}: {type(exc).__name__}: {exc}")
            continue
        if compiled is not None and compiled.key not in experiments:
            experiments[compiled.key] = compiled
    layers, flat = build_layers(experiments.values())
    return Snapshot(
        version=doc.get("version"),
        etag=etag,
        experiments=experiments,  # never mutated after this point
        skipped=tuple(skipped),
        hot={key: exp.hot for key, exp in experiments.items()},
        layers=layers,
        flat=flat,
    )
