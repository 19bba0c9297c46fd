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

Per-experiment figures are compared between the catalogues (goal: 10,000 within 1.5× of 700). Timings are CPU
seconds of this process (``time.process_time``), median of repeats: the machine is shared, and CPU time does not
count the time another process held the core.

With ``--http`` (real service, SQLite): each catalogue is seeded into its own database with the service's own
functions (``create_experiment`` + ``start``, 500 per transaction, every 10th a Thompson bandit: 70 and 1,000
bandits) — kept under ``--db-dir`` and reused — then measured:

* ``build_snapshot`` from the database, CPU s;
* ``/v1/assign`` over HTTP (one uvicorn worker, scheduler off, ``wrk -t1 -c8``, random unit per request, phases
  alternating between the two servers): requests/s, p50/p99, and the server's CPU per request from
  ``/proc/<pid>/stat`` (utime + stime over the phase), per request and per experiment evaluated;
* the SDK's config refresh over HTTP (``titrate_sdk.Client.refresh``: gzip transfer, JSON decode, compile) and
  the conditional refresh that the ETag answers with 304, wall ms;
* the allocation scheduler's pass over all bandits (``api.allocation.scheduler.run_round``), s and s per bandit.

Usage: ``python bench/catalogue_scale.py [--units 2000] [--http --db-dir DIR --seconds 8 --repeats 2]``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.assignment.snapshot import EncodedAssignment, assignment_fragments, encoded_index, gc_paused  # noqa: E402
from bandits.bucketing import BUCKETS, experiment_config_from_document  # noqa: E402
from bandits.index import assign_all  # noqa: E402
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
    """Median CPU seconds of this process over ``repeats`` calls."""
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        function()
        samples.append(time.process_time() - start)
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
        with gc_paused():  # as build_snapshot does
            configs = {d["key"]: experiment_config_from_document(d) for d in docs}
            fragments = assignment_fragments(configs)
            return configs, encoded_index(configs, fragments), fragments

    configs, index, fragments = build()
    ids = [f"unit-{i}" for i in range(units)]

    def assign_server() -> None:
        for unit in ids:
            results = assign_all(index, unit, {})  # the join of service.assign_unit_encoded
            b",".join([r.fragment if type(r) is EncodedAssignment else fragments[(r.experiment, r.variant)]
                       for r in results])

    client = Client("http://127.0.0.1:9", "tk_none", start=False, log_exposures=False, config=body)
    one = docs[len(docs) // 2]["key"]

    def sdk_get_variant() -> None:
        for unit in ids:
            client.get_variant(one, unit)

    def sdk_assign() -> None:
        for unit in ids:
            client.assign(unit)

    evaluated = len(index.layers) + len(index.others)
    server_s = timed(assign_server, 5) / units
    sdk_assign_s = timed(sdk_assign, 5) / units
    return {
        "experiments": experiments, "layers": layers, "doc_bytes": len(document),
        "gzip_bytes": len(gzip.compress(document, 6)), "encode_s": timed(encode, 3), "build_s": timed(build, 3),
        "evaluated": evaluated, "assign_us": server_s * 1e6, "assign_us_per": server_s * 1e6 / evaluated,
        "get_variant_us": timed(sdk_get_variant, 5) / units * 1e6,
        "sdk_assign_us": sdk_assign_s * 1e6, "sdk_assign_us_per": sdk_assign_s * 1e6 / evaluated,
    }


# ------------------------------------------------------------------------------------------------ over HTTP

def load() -> str:
    """The 1/5/15-minute load averages (the machine is shared)."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def seed(url: str, experiments: int, layers: int) -> str:
    """Migrate and seed ``experiments`` running 2-variant experiments in ``layers`` layers (every 10th a Thompson
    bandit) through the service's functions, 500 per transaction; returns an admin API key."""
    from api import migrate
    from api.auth.keys import create_api_key
    from api.db.engine import Database
    from api.experiments import service
    from api.experiments.schemas import ExperimentCreate
    from api.metrics_catalog.schemas import MetricCreate
    from api.metrics_catalog.service import create_metric
    from bench.bench_assign import BENCH_ACTOR

    migrate.upgrade(url)
    db = Database(url)
    with db.transaction() as session:
        _, key = create_api_key(session, "admin", "bench")
        create_metric(session, MetricCreate(key="conversion", kind="proportion", event="purchase"), BENCH_ACTOR)
    base = {"name": "bench", "owner": "bench", "metrics": {"primary": "conversion"},
            "hypothesis": {"change": "x", "metric": "conversion", "direction": "increase", "rationale": "y"},
            "variants": [{"key": "control", "control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}]}
    per_layer = experiments // layers
    for chunk in range(0, experiments, 500):
        with db.transaction() as session:
            for i in range(chunk, min(chunk + 500, experiments)):
                spec: dict[str, Any] = {**base, "key": f"l{i % layers}-e{i // layers}", "layer": f"layer-{i % layers}",
                                        "traffic": (BUCKETS // per_layer) / BUCKETS}
                if i % 10 == 0:
                    spec["allocation"] = {"strategy": "thompson"}
                service.create_experiment(session, ExperimentCreate.model_validate(spec), BENCH_ACTOR)
                service.start(session, spec["key"], BENCH_ACTOR)
    db.dispose()
    return key


def seeded(db_dir: Path, experiments: int, layers: int) -> tuple[str, str]:
    """The database URL and key of a catalogue, seeded on first use (a seed takes minutes at 10,000)."""
    path, key_file = db_dir / f"catalogue-{experiments}.db", db_dir / f"catalogue-{experiments}.key"
    url = f"sqlite:///{path}"
    if not key_file.exists():
        path.unlink(missing_ok=True)
        started = time.perf_counter()
        key_file.write_text(seed(url, experiments, layers))
        print(f"seeded {experiments:,} experiments in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return url, key_file.read_text()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_http(db_dir: Path, seconds: int, repeats: int) -> dict[str, dict[str, float]]:
    """Snapshot build, ``/v1/assign`` over HTTP, SDK refresh and the scheduler pass for both catalogues."""
    import httpx
    from titrate_sdk import Client

    from api.allocation.scheduler import run_round
    from api.assignment.snapshot import build_snapshot
    from api.db.engine import Database
    from bench.bench_assign import start_server, wrk

    sizes = {"small": (700, 20), "large": (10_000, 200)}
    dbs = {name: seeded(db_dir, *size) for name, size in sizes.items()}
    out: dict[str, dict[str, float]] = {name: {"experiments": size[0], "layers": size[1]}
                                        for name, size in sizes.items()}
    for name, (url, _) in dbs.items():
        db = Database(url)
        out[name]["snapshot_build_s"] = timed(lambda db=db: build_snapshot(db), 3)
        db.dispose()
    env = {"TITRATE_LOG_LEVEL": "WARNING", "TITRATE_LOG_JSON": "false", "TITRATE_SCHEDULER_ENABLED": "false"}
    ports = {"small": 8111, "large": 8112}
    servers = {name: start_server("api.main:app", ports[name], {**env, "TITRATE_DATABASE_URL": dbs[name][0]})
               for name in sizes}
    try:
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in sizes}
        for _ in range(repeats):
            for name in sizes:
                pid = servers[name].pid
                before = cpu_seconds(pid)
                result = wrk(ports[name], dbs[name][1], seconds, 8)
                result["cpu_us"] = (cpu_seconds(pid) - before) / (result["rps"] * seconds) * 1e6
                runs[name].append(result)
        for name in sizes:
            for field in ("rps", "p50", "p99", "cpu_us"):
                out[name][f"http_{field}"] = statistics.median(r[field] for r in runs[name])
            answer = httpx.post(f"http://127.0.0.1:{ports[name]}/v1/assign", json={"unit_id": "u-1"},
                                headers={"Authorization": f"Bearer {dbs[name][1]}"}).json()
            out[name]["http_assignments"] = len(answer["assignments"])
            out[name]["http_cpu_us_per"] = out[name]["http_cpu_us"] / out[name]["layers"]
            base_url = f"http://127.0.0.1:{ports[name]}"
            full, not_modified = [], []
            for _ in range(5):
                client = Client(base_url, dbs[name][1], start=False, log_exposures=False)
                started = time.perf_counter()
                assert client.refresh(), "config refresh failed"
                full.append(time.perf_counter() - started)
                started = time.perf_counter()
                assert not client.refresh()
                not_modified.append(time.perf_counter() - started)
                client.close()
            response = httpx.get(f"{base_url}/v1/sdk/config", headers={"Authorization": f"Bearer {dbs[name][1]}"})
            out[name]["config_bytes"] = len(response.content)
            out[name]["config_wire_bytes"] = int(response.headers.get("content-length", len(response.content)))
            out[name]["refresh_ms"] = statistics.median(full) * 1e3
            out[name]["not_modified_ms"] = statistics.median(not_modified) * 1e3
    finally:
        for server in servers.values():
            server.terminate()
            server.wait()
    for name, (url, _) in dbs.items():
        db = Database(url)
        started, cpu = time.perf_counter(), time.process_time()
        pass_result = run_round(db)
        out[name]["round_s"] = time.perf_counter() - started
        out[name]["round_cpu_s"] = time.process_time() - cpu
        out[name]["bandits"] = len(pass_result.steps) + len(pass_result.skipped)
        out[name]["round_ms_per_bandit"] = out[name]["round_s"] / max(1, out[name]["bandits"]) * 1e3
        db.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--http", action="store_true", help="also measure the service over HTTP (SQLite)")
    parser.add_argument("--db-dir", type=Path, default=Path("/tmp/titrate-catalogue"),
                        help="where the seeded databases are kept and reused")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-inprocess", action="store_true", help="only the HTTP measurements")
    args = parser.parse_args()
    if not args.no_inprocess:
        small, large = measure(700, 20, args.units), measure(10_000, 200, args.units)
        print(f"\n### Catalogue scale, in process ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
        print(f"Machine: {machine()}, load average {load()}. {args.units} units per timing, CPU time, median of 5.\n")
        rows = (("config document, bytes", "doc_bytes", "{:,.0f}"), ("config document gzip -6, bytes",
                "gzip_bytes", "{:,.0f}"), ("document encode + ETag, s", "encode_s", "{:.3f}"),
                ("snapshot build without the DB (configs, index, fragments), s", "build_s", "{:.3f}"),
                ("experiments evaluated per unit (one per layer)", "evaluated", "{:,.0f}"),
                ("`/v1/assign` evaluation + answer, µs per unit", "assign_us", "{:.1f}"),
                ("… µs per experiment evaluated", "assign_us_per", "{:.2f}"),
                ("SDK `get_variant` (one experiment), µs", "get_variant_us", "{:.2f}"),
                ("SDK `assign` (all), µs per unit", "sdk_assign_us", "{:.1f}"),
                ("… µs per experiment evaluated", "sdk_assign_us_per", "{:.2f}"))
        table(rows, small, large)
    if args.http:
        args.db_dir.mkdir(parents=True, exist_ok=True)
        results = measure_http(args.db_dir, args.seconds, args.repeats)
        print(f"\n### Catalogue scale, over HTTP ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
        print(f"Machine: {machine()}, load average {load()}. SQLite; one uvicorn worker per catalogue, scheduler "
              f"off; wrk -t1 -c8, {args.seconds} s per phase, phases alternating, median of {args.repeats}.\n")
        http_rows = (("`build_snapshot` from the database, CPU s", "snapshot_build_s", "{:.3f}"),
                ("`/v1/assign` (all experiments), requests/s", "http_rps", "{:,.0f}"),
                ("… p50 ms", "http_p50", "{:.2f}"), ("… p99 ms", "http_p99", "{:.2f}"),
                ("… assignments per answer", "http_assignments", "{:,.0f}"),
                ("… server CPU per request, µs", "http_cpu_us", "{:,.0f}"),
                ("… server CPU per experiment evaluated, µs", "http_cpu_us_per", "{:.1f}"),
                ("`/v1/sdk/config` body as sent (gzip from 64 KiB), bytes", "config_wire_bytes", "{:,.0f}"),
                ("SDK `refresh`: fetch, decode, compile, ms", "refresh_ms", "{:.1f}"),
                ("SDK `refresh` answered 304 by the ETag, ms", "not_modified_ms", "{:.2f}"),
                ("bandits in the scheduler's pass", "bandits", "{:,.0f}"),
                ("scheduler pass (`run_round`), wall s", "round_s", "{:.2f}"),
                ("… CPU s of this process", "round_cpu_s", "{:.2f}"),
                ("… ms per bandit", "round_ms_per_bandit", "{:.1f}"))
        table(http_rows, results["small"], results["large"])


def table(rows: Any, small: dict[str, float], large: dict[str, float]) -> None:
    """A markdown table of ``rows`` (label, key, format) for both catalogues and their ratio."""
    print("| measure | 700 in 20 layers | 10,000 in 200 layers | ratio |\n|---|---:|---:|---:|")
    for label, key, fmt in rows:
        ratio = large[key] / small[key] if small[key] else float("nan")
        print(f"| {label} | {fmt.format(small[key])} | {fmt.format(large[key])} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
