"""Catalogue scale, in process: 700 running experiments in 20 layers vs 10,000 in 200 layers (issue 18, item 5).

For each catalogue (synthetic SDK config documents of the shape ``api.assignment.snapshot.experiment_document``
writes: 2 variants with a small payload, one targeting-free experiment per layer slot, contiguous layer ranges):

* the config document: JSON bytes, gzip bytes (level 6), encode + ETag (sha256 of the sorted docs) seconds;
* the snapshot build without the database: ``experiment_config_from_document`` + ``build_index`` + the
  ``/v1/assign`` fragments (``assignment_fragments``) seconds;
* ``/v1/assign``'s evaluation for one unit across the whole catalogue (``assign_all``: one experiment per layer)
  and its answer (``assign_unit_encoded``'s join), µs per unit and per experiment evaluated (= per layer);
* the SDK (``titrate_sdk.Client`` with the document installed, no exposures logged): ``get_variant`` of one
  experiment and ``assign`` of one unit across all, µs per call and per experiment evaluated.

Per-experiment figures are compared between the catalogues (goal: 10,000 within 1.5× of 700). Not measured here:
the HTTP round trip of ``/v1/assign`` and ``/v1/sdk/config`` and the scheduler's pass over bandits (follow-ups).
Usage: ``python bench/catalogue_scale.py [--units 2000]``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.assignment.snapshot import assignment_fragments  # noqa: E402
from bandits.bucketing import BUCKETS, experiment_config_from_document  # noqa: E402
from bandits.index import assign_all, build_index  # noqa: E402
from bench.bench_assign import machine  # noqa: E402


def documents(experiments: int, layers: int) -> list[dict[str, Any]]:
    """``experiments`` running 2-variant experiments spread evenly over ``layers`` layers (contiguous ranges)."""
    per_layer = experiments // layers
    width = BUCKETS // per_layer
    docs = []
    for i in range(experiments):
        layer, slot = i % layers, i // layers
        docs.append({
            "key": f"l{layer}-e{slot}", "salt": f"l{layer}-e{slot}", "status": "running", "type": "ab",
            "traffic": width / BUCKETS, "layer": f"layer-{layer}", "layer_start": slot * width,
            "layer_end": (slot + 1) * width, "targeting": [], "allocation_version": 1, "control": "control",
            "shipped_variant": None,
            "variants": [{"key": "control", "weight": 0.5, "payload": {}},
                         {"key": "treatment", "weight": 0.5, "payload": {"threshold": 0.4}}]})
    return sorted(docs, key=lambda d: d["key"])


def timed(function: Any, repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(experiments: int, layers: int, units: int) -> dict[str, float]:
    from titrate_sdk import Client

    docs = documents(experiments, layers)
    body = {"version": 1, "generated_at": "2026-11-30T00:00:00Z", "buckets": BUCKETS, "spec_version": 1,
            "experiments": docs}
    document = json.dumps(body, separators=(",", ":")).encode()

    def encode() -> None:
        json.dumps(body, separators=(",", ":")).encode()
        hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()

    def build() -> Any:
        configs = {d["key"]: experiment_config_from_document(d) for d in docs}
        return configs, build_index(configs.values()), assignment_fragments(configs)

    configs, index, fragments = build()
    ids = [f"unit-{i}" for i in range(units)]

    def assign_server() -> None:
        for unit in ids:
            results = assign_all(index, unit, {})
            b",".join([fragments[(r.experiment, r.variant)] for r in results])

    client = Client("http://127.0.0.1:9", "tk_none", start=False, log_exposures=False, config=body)
    one = docs[len(docs) // 2]["key"]

    def sdk_get_variant() -> None:
        for unit in ids:
            client.get_variant(one, unit)

    def sdk_assign() -> None:
        for unit in ids:
            client.assign(unit)

    evaluated = len(index.layers) + len(index.others)
    server_s = timed(assign_server, 3) / units
    sdk_assign_s = timed(sdk_assign, 3) / units
    return {
        "experiments": experiments, "layers": layers, "doc_bytes": len(document),
        "gzip_bytes": len(gzip.compress(document, 6)), "encode_s": timed(encode, 3), "build_s": timed(build, 3),
        "evaluated": evaluated, "assign_us": server_s * 1e6, "assign_us_per": server_s * 1e6 / evaluated,
        "get_variant_us": timed(sdk_get_variant, 3) / units * 1e6,
        "sdk_assign_us": sdk_assign_s * 1e6, "sdk_assign_us_per": sdk_assign_s * 1e6 / evaluated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=2000)
    args = parser.parse_args()
    small, large = measure(700, 20, args.units), measure(10_000, 200, args.units)
    print(f"\n### Catalogue scale, in process ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"Machine: {machine()}. {args.units} units per timing, median of 3.\n")
    rows = (("config document, bytes", "doc_bytes", "{:,.0f}"), ("config document gzip -6, bytes", "gzip_bytes",
            "{:,.0f}"), ("document encode + ETag, s", "encode_s", "{:.3f}"),
            ("snapshot build without the DB (configs, index, fragments), s", "build_s", "{:.3f}"),
            ("experiments evaluated per unit (one per layer)", "evaluated", "{:,.0f}"),
            ("`/v1/assign` evaluation + answer, µs per unit", "assign_us", "{:.1f}"),
            ("… µs per experiment evaluated", "assign_us_per", "{:.2f}"),
            ("SDK `get_variant` (one experiment), µs", "get_variant_us", "{:.2f}"),
            ("SDK `assign` (all), µs per unit", "sdk_assign_us", "{:.1f}"),
            ("… µs per experiment evaluated", "sdk_assign_us_per", "{:.2f}"))
    print("| measure | 700 in 20 layers | 10,000 in 200 layers | ratio |\n|---|---:|---:|---:|")
    for label, key, fmt in rows:
        print(f"| {label} | {fmt.format(small[key])} | {fmt.format(large[key])} | {large[key] / small[key]:.2f} |")


if __name__ == "__main__":
    main()
