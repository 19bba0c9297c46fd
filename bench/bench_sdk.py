"""Benchmark of the Python SDK's local evaluation against the GrowthBook Python SDK, in the same run.

What is measured (one process pinned to one core, no background threads, no network):
- ``Client.get_variant`` calls/s on a 2-variant experiment, with exposure logging off and on (on: the
  units were already exposed, i.e. the steady state where the in-memory de-duplication answers);
- ``get_variant`` with 50 running experiments in the config (2-way, 3-way and 50 %-traffic ones), cycling
  over them; ``Client.assign`` of all 50 per unit;
- GrowthBook evaluating the equivalent: ``gb.run(Experiment(key, variations=[0, 1]))`` on one reused
  ``GrowthBook`` whose attributes are set per unit (its fastest use; building a ``GrowthBook`` per request,
  as its docs show, is also reported), and features holding the 50 equivalent experiment rules;
- ``Client.assign_many`` units/s over 1M ids (2-variant, and 50 % traffic gate = two hashes per unit).
  A process pool was tried for very large inputs and dropped: on the 2-core machine pickling the ids to
  two spawned workers cost what the second core saved (2.5 vs 2.5 M units/s over 4M ids).

Each figure is the median of ``--repeats`` (≥ 5) timed repeats. Results are printed and, unless
``--no-write``, appended as a "## SDK" section to ``bench/RESULTS.md`` (append only).

    .venv/bin/python bench/bench_sdk.py [--repeats 7] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from titrate_sdk import Client
from titrate_sdk import __version__ as sdk_version

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
N_EXPERIMENTS = 50


def machine() -> str:
    """``uname -m``, cores and the CPU model (from /proc/cpuinfo when present)."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.machine()}, nproc {os.cpu_count()}, CPU {model}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def pin_to_one_core() -> str:
    """Pin this process to one CPU so "calls/s on one core" means that."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def experiment(key: str, weights: list[float], traffic: float = 1.0) -> dict[str, Any]:
    """One running experiment of the SDK config document (spec §4)."""
    names = ["control", "treatment", "t2", "t3"]
    return {
        "key": key,
        "salt": key,
        "status": "running",
        "type": "ab",
        "traffic": traffic,
        "layer": None,
        "layer_start": None,
        "layer_end": None,
        "targeting": [],
        "allocation_version": 1,
        "control": "control",
        "shipped_variant": None,
        "variants": [{"key": names[i], "weight": w, "payload": {}} for i, w in enumerate(weights)],
    }


def shape(i: int) -> tuple[list[float], float]:
    """Weights and traffic of the i-th of the 50 experiments: 2-way, 3-way and 50 %-traffic ones."""
    if i % 5 == 1:
        return [0.5, 0.3, 0.2], 1.0
    if i % 5 == 2:
        return [0.5, 0.5], 0.5
    return [0.5, 0.5], 1.0


def rate(fn: Callable[[], int], repeats: int) -> float:
    """Median over ``repeats`` of operations per second; ``fn`` runs once and returns its operation count."""
    fn()  # warm-up (caches, lazily built tables)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_titrate(units: list[str], batch: list[str], repeats: int) -> dict[str, float]:
    one = {"version": 1, "experiments": [experiment("exp", [0.5, 0.5])]}
    many_doc = {
        "version": 1,
        "experiments": [experiment(f"exp{i}", *shape(i)) for i in range(N_EXPERIMENTS)],
    }
    keys = [f"exp{i}" for i in range(N_EXPERIMENTS)]
    out: dict[str, float] = {}

    off = Client("http://127.0.0.1:9", "bench", start=False, log_exposures=False, config=one)
    get = off.get_variant

    def two_variant() -> int:
        for unit in units:
            get("exp", unit)
        return len(units)

    out["get_variant_2v"] = rate(two_variant, repeats)

    on = Client(
        "http://127.0.0.1:9",
        "bench",
        start=False,
        config=one,
        max_buffer=len(units) + 1,
        exposure_dedup_size=4 * len(units),
    )
    get_logged = on.get_variant
    for unit in units:  # first exposures: enqueued once, then the steady state is measured
        get_logged("exp", unit)

    def two_variant_logged() -> int:
        for unit in units:
            get_logged("exp", unit)
        return len(units)

    out["get_variant_2v_logged"] = rate(two_variant_logged, repeats)
    on._events.clear()
    on._exposures.clear()
    on.close(timeout=0)

    fifty = Client("http://127.0.0.1:9", "bench", start=False, log_exposures=False, config=many_doc)
    get50 = fifty.get_variant
    n_keys = len(keys)

    def fifty_one() -> int:
        for unit in units:
            get50("exp0", unit)
        return len(units)

    def fifty_cycle() -> int:
        for i, unit in enumerate(units):
            get50(keys[i % n_keys], unit)
        return len(units)

    assign = fifty.assign
    few = units[: len(units) // 10]

    def fifty_all() -> int:
        for unit in few:
            assign(unit)
        return len(few)

    out["get_variant_50_one"] = rate(fifty_one, repeats)
    out["get_variant_50_cycle"] = rate(fifty_cycle, repeats)
    out["assign_all_50"] = rate(fifty_all, repeats)

    gated = Client(
        "http://127.0.0.1:9",
        "bench",
        start=False,
        log_exposures=False,
        config={"version": 1, "experiments": [experiment("exp", [0.5, 0.5]), experiment("g", [0.5, 0.5], 0.5)]},
    )
    out["assign_many_2v"] = rate(lambda: len(off.assign_many("exp", batch)), repeats)
    out["assign_many_gated"] = rate(lambda: len(gated.assign_many("g", batch)), repeats)
    for client in (off, fifty, gated):
        client.close(timeout=0)
    return out


def bench_growthbook(units: list[str], repeats: int) -> tuple[dict[str, float], str]:
    try:
        import growthbook
        from growthbook import Experiment, GrowthBook
    except ImportError:
        return {}, "not installed"
    version = getattr(growthbook, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("growthbook")
    out: dict[str, float] = {}
    n = len(units)
    gb = GrowthBook(attributes={"id": units[0]})
    exp = Experiment(key="exp", variations=[0, 1])

    def run_two() -> int:
        for unit in units:
            gb.set_attributes({"id": unit})
            gb.run(exp)
        return n

    out["get_variant_2v"] = rate(run_two, repeats)

    def per_request() -> int:
        for unit in units[: n // 10]:
            GrowthBook(attributes={"id": unit}).run(exp)
        return n // 10

    out["per_request_2v"] = rate(per_request, repeats)

    features = {}
    for i in range(N_EXPERIMENTS):
        weights, traffic = shape(i)
        features[f"exp{i}"] = {
            "defaultValue": -1,
            "rules": [
                {
                    "key": f"exp{i}",
                    "variations": list(range(len(weights))),
                    "weights": weights,
                    "coverage": traffic,
                    "hashAttribute": "id",
                }
            ],
        }
    gb50 = GrowthBook(attributes={"id": units[0]}, features=features)
    keys = list(features)
    n_keys = len(keys)
    probe = gb50.eval_feature("exp0")
    assert probe.source == "experiment", probe  # the rules really are experiments

    def fifty_one() -> int:
        for unit in units:
            gb50.set_attributes({"id": unit})
            gb50.eval_feature("exp0")
        return n

    def fifty_cycle() -> int:
        for i, unit in enumerate(units):
            gb50.set_attributes({"id": unit})
            gb50.eval_feature(keys[i % n_keys])
        return n

    few = units[: n // 10]

    def fifty_all() -> int:
        for unit in few:
            gb50.set_attributes({"id": unit})
            for key in keys:
                gb50.eval_feature(key)
        return len(few)

    out["get_variant_50_one"] = rate(fifty_one, repeats)
    out["get_variant_50_cycle"] = rate(fifty_cycle, repeats)
    out["assign_all_50"] = rate(fifty_all, repeats)
    return out, str(version)


ROWS = [
    ("get_variant_2v", "get_variant, 2-variant experiment (exposure logging off)", "calls/s"),
    ("get_variant_2v_logged", "get_variant, 2-variant, exposure logging on (units already exposed)", "calls/s"),
    ("get_variant_50_one", "get_variant, 50 running experiments in config, same experiment", "calls/s"),
    ("get_variant_50_cycle", "get_variant, 50 running experiments in config, cycling over them", "calls/s"),
    ("assign_all_50", "all 50 experiments for one unit (`assign` / 50 × `eval_feature`)", "units/s"),
    ("per_request_2v", "GrowthBook built per request (`GrowthBook(attributes=…).run(…)`)", "calls/s"),
    ("assign_many_2v", "assign_many, 2-variant, {batch} ids per call", "units/s"),
    ("assign_many_gated", "assign_many, 50 % traffic gate (two hashes per unit), {batch} ids per call", "units/s"),
]


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    return f"{value / 1e3:.1f} k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per figure (median; >= 5)")
    parser.add_argument("--units", type=int, default=100_000, help="distinct unit ids per get_variant repeat")
    parser.add_argument("--batch", type=int, default=1_000_000, help="ids per assign_many call")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    repeats = max(5, args.repeats)

    pinning = pin_to_one_core()
    rng = random.Random(20261123)
    units = [f"user-{rng.getrandbits(48):x}" for _ in range(args.units)]
    batch = [f"user-{rng.getrandbits(48):x}" for _ in range(args.batch)]

    titrate = bench_titrate(units, batch, repeats)
    gb, gb_version = bench_growthbook(units[: max(1, args.units // 5)], repeats)

    lines = [
        "",
        "## SDK",
        "",
        f"`bench/bench_sdk.py`, {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. "
        f"Machine: {machine()}; {pinning}. titrate_sdk {sdk_version}, growthbook {gb_version}. "
        f"Median of {repeats} repeats; local evaluation only (no network, no background threads).",
        "",
        "| measurement | titrate_sdk | GrowthBook | ratio (same run) |",
        "|---|---:|---:|---:|",
    ]
    for key, label, unit in ROWS:
        t, g = titrate.get(key), gb.get(key)
        ratio = f"{t / g:.1f}×" if t is not None and g else "—"
        label = label.format(batch=f"{args.batch:,}")
        lines.append(f"| {label} | {fmt(t)} {unit if t else ''} | {fmt(g)} {unit if g else ''} | {ratio} |")
    lines += [
        "",
        "GrowthBook evaluates on one reused `GrowthBook` whose attributes are set per unit (its fastest use)"
        " with inline `Experiment`s or features holding equivalent experiment rules (weights, coverage);"
        " `assign_many` has no GrowthBook equivalent. The logged row measures the steady state: the units"
        " were exposed in a warm-up pass, so the in-memory de-duplication answers.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        # Append mode, never a rewrite: other benchmarks own the other sections of the file.
        with RESULTS.open("a", encoding="utf-8") as results:
            results.write(text)
        print(f"appended to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
