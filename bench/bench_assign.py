"""Benchmark ``POST /v1/assign`` (one uvicorn worker) against a bare FastAPI route, same client, same run.

Measures, with ``wrk`` as the client (Debian package ``wrk``):
  1. requests/s of ``/v1/assign`` for one running 2-variant experiment vs ``bench/bare_app.py`` returning a
     constant body of the same size (goal ≥ 0.8 of the bare route);
  2. p50/p99 latency of ``/v1/assign`` (all experiments) with 700 running experiments in 20 layers.
Phases alternate and repeat; medians are reported. Usage: ``python bench/bench_assign.py [--seconds 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import migrate  # noqa: E402
from api.auth.keys import Principal, create_api_key  # noqa: E402
from api.db.engine import Database  # noqa: E402
from api.experiments import service  # noqa: E402
from api.experiments.schemas import ExperimentCreate  # noqa: E402
from api.metrics_catalog.schemas import MetricCreate  # noqa: E402
from api.metrics_catalog.service import create_metric  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"unit_id":"u-' .. math.random(1, 1000000000) .. '-' .. counter .. '"%s}')
end
"""
BENCH_ACTOR = Principal(0, "bench", "admin", "tk_bench")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{platform.machine()}, nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}"


def seed_database(url: str, layered: int) -> str:
    """Migrate, add a metric, one 2-variant experiment 'bench' (or `layered` experiments in 20 layers)."""
    migrate.upgrade(url)
    db = Database(url)
    with db.transaction() as session:
        _, key = create_api_key(session, "admin", "bench")
        create_metric(session, MetricCreate(key="conversion", kind="proportion", event="purchase"), BENCH_ACTOR)
    base = {"name": "bench", "owner": "bench", "metrics": {"primary": "conversion"},
            "hypothesis": {"change": "x", "metric": "conversion", "direction": "increase", "rationale": "y"},
            "variants": [{"key": "control", "control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}]}
    specs = ([{**base, "key": "bench"}] if layered == 0 else
             [{**base, "key": f"l{i % 20}-e{i // 20}", "layer": f"layer-{i % 20}", "traffic": 1 / 36}
              for i in range(layered)])
    for spec in specs:
        with db.transaction() as session:
            service.create_experiment(session, ExperimentCreate.model_validate(spec), BENCH_ACTOR)
            service.start(session, spec["key"], BENCH_ACTOR)
    db.dispose()
    return key


def start_server(module: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", module, "--port", str(port), "--workers", "1", "--no-access-log",
         "--log-level", "warning"], cwd=ROOT, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/assign", json={"unit_id": "warm"}, timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{module} did not start")


def wrk(port: int, key: str, seconds: int, connections: int, extra_body: str = "") -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % (key, extra_body))
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name,
                          f"http://127.0.0.1:{port}/v1/assign"], capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} failed requests:\n{out}")
    return {"rps": rps, "p50": ms("50"), "p99": ms("99")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="titrate-bench-"))
    one_url, many_url = f"sqlite:///{tmp}/one.db", f"sqlite:///{tmp}/many.db"
    one_key, many_key = seed_database(one_url, 0), seed_database(many_url, 700)
    env = {"TITRATE_LOG_LEVEL": "WARNING", "TITRATE_LOG_JSON": "false"}
    body = httpx.Client()
    titrate = start_server("api.main:app", 8101, {**env, "TITRATE_DATABASE_URL": one_url})
    sample = body.post("http://127.0.0.1:8101/v1/assign", json={"unit_id": "u-1"},
                       headers={"Authorization": f"Bearer {one_key}"}).content
    bare = start_server("bench.bare_app:app", 8102, {"BARE_BODY": sample.decode()})
    ours, baseline = [], []
    try:
        for _ in range(args.repeats):
            ours.append(wrk(8101, one_key, args.seconds, args.connections))
            baseline.append(wrk(8102, one_key, args.seconds, args.connections))
    finally:
        titrate.terminate()
        bare.terminate()
        titrate.wait()
        bare.wait()
    many = start_server("api.main:app", 8103, {**env, "TITRATE_DATABASE_URL": many_url})
    sample_many = json.loads(body.post("http://127.0.0.1:8103/v1/assign", json={"unit_id": "u-1"},
                                       headers={"Authorization": f"Bearer {many_key}"}).content)
    scale = []
    try:
        for _ in range(args.repeats):
            scale.append(wrk(8103, many_key, args.seconds, 8))
    finally:
        many.terminate()
        many.wait()
    med = {name: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")}
           for name, runs in (("ours", ours), ("bare", baseline), ("scale", scale))}
    ratio = statistics.median(o["rps"] / b["rps"] for o, b in zip(ours, baseline, strict=True))
    print(f"\n### `/v1/assign` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"Machine: {machine()}. Client: wrk -t1 -c{args.connections}, {args.seconds} s per phase, phases "
          f"alternating, median of {args.repeats}. One uvicorn worker each; SQLite; random unit per request "
          f"(every request queues an exposure).\n")
    print("| route | requests/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    print(f"| `/v1/assign`, one running 2-variant experiment | {med['ours']['rps']:,.0f} | "
          f"{med['ours']['p50']:.2f} | {med['ours']['p99']:.2f} |")
    print(f"| bare FastAPI route, constant body of the same size (baseline) | {med['bare']['rps']:,.0f} | "
          f"{med['bare']['p50']:.2f} | {med['bare']['p99']:.2f} |")
    print(f"| `/v1/assign`, 700 running experiments in 20 layers (wrk -c8; {len(sample_many['assignments'])} "
          f"assignments per unit) | {med['scale']['rps']:,.0f} | {med['scale']['p50']:.2f} | "
          f"{med['scale']['p99']:.2f} |")
    print(f"\nSame-run ratio `/v1/assign` / bare route (median of per-repeat ratios): **{ratio:.2f}** (goal ≥ 0.8).")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
