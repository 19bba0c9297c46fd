"""Remote serving benchmark: titrate's ``/predict`` in front of an inference server vs calling the server directly.

Same run, same machine, same load. MLServer (from ``.venv-inference/``: ``bash tests/inference_server/setup.sh``)
serves the shipped all-MiniLM-L6-v2 on CPU through ``tests/inference_server/minilm_runtime.py`` (Open Inference
Protocol v2); one ``titrate serve`` worker on SQLite has it registered twice as a remote variant:
``minilm-remote`` (``max_batch`` ``--max-batch``: concurrent ``/predict`` calls share inference requests) and
``minilm-forward`` (``max_batch=1``: every call forwarded alone, the per-request proxy), each the only variant of
a running experiment.

Phases, each a closed loop of ``--concurrency`` async callers sending one short text per request for
``--duration`` s, alternated ``--repeats`` times (medians reported):

(a) direct: ``POST {mlserver}/v2/models/minilm/infer`` with one text;
(b) titrate batching: ``POST /v1/experiments/bench-remote/predict`` (assignment, exposure, serving events, batching,
    breaker, then the same server);
(c) titrate per-request forwarding: the same through ``minilm-forward``.

Then added latency without contention: one caller, ``--sequential`` requests each direct and through (b),
interleaved (so both see the same load): p50/p99 and their difference. Reported: added p50/p99 under load,
throughput ratio (b)/(a) (goal ≥ 0.9) and the batching gain (b)/(c). All three processes (load generator, titrate,
MLServer) share this machine's cores, so on a small machine titrate's own CPU competes with the model's.

    .venv/bin/python bench/remote_serving.py                         # ~2 min
    .venv/bin/python bench/remote_serving.py --append bench/RESULTS.md
    .venv/bin/python bench/remote_serving.py --profile bench/profiles/predict_remote.svg  # py-spy (extra "bench")

``--profile`` records a py-spy flame graph of the ``titrate serve`` process during the sequential phase (one
request at a time: every sample is that request's own work; the wait on MLServer and the direct calls are idle).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from api import migrate  # noqa: E402
from api.auth.keys import create_api_key  # noqa: E402
from api.db.engine import Database  # noqa: E402
from models.shipped import shipped_minilm_path  # noqa: E402
from tests.factories import METRICS  # noqa: E402
from tests.inference_server.launch import MLSERVER, SETUP, free_port, mlserver  # noqa: E402

TEXTS = [f"query {i}: how do I reset the password of my account on the mobile app" for i in range(1000)]


@dataclass
class Phase:
    """One closed-loop phase."""

    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        """The ``q`` quantile of the latencies (ms)."""
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(name: str, call: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
                      concurrency: int, duration: float) -> Phase:
    """``concurrency`` callers each sending requests back to back for ``duration`` s."""
    latencies: list[float] = []
    errors = 0
    counter = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as http:
        stop = time.perf_counter() + duration

        async def caller() -> None:
            nonlocal errors, counter
            while time.perf_counter() < stop:
                counter += 1
                started = time.perf_counter()
                response = await call(http, counter)
                if response.status_code == 200:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return Phase(name, len(latencies), errors, seconds, latencies)


def start_titrate(db_url: str, port: int) -> subprocess.Popen[bytes]:
    """``titrate serve`` (one worker) on ``db_url``, once ``/healthz`` answers."""
    titrate = Path(sys.executable).parent / "titrate"
    process = subprocess.Popen([str(titrate), "serve", "--port", str(port), "--no-migrate"], cwd=ROOT,
                               env={**os.environ, "TITRATE_DATABASE_URL": db_url, "TITRATE_LOG_LEVEL": "WARNING",
                                    "TITRATE_SCHEDULER_ENABLED": "false", "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"titrate serve exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("titrate serve did not start")


def setup_titrate(base: str, key: str, server: str, max_batch: int) -> None:
    """Register the two remote variants and start one experiment on each."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        http.post("/v1/metrics", json=METRICS["conversion"]).raise_for_status()
        for model, batch in (("minilm-remote", max_batch), ("minilm-forward", 1)):
            http.post("/v1/models", json={"key": model, "task": "embedding", "max_batch": batch, "endpoint": {
                "url": server, "protocol": "v2", "model": "minilm", "timeout_ms": 10000}}).raise_for_status()
        for experiment, model in (("bench-remote", "minilm-remote"), ("bench-forward", "minilm-forward")):
            http.post("/v1/experiments", json={
                "key": experiment, "name": experiment, "owner": "bench",
                "hypothesis": {"change": "x", "metric": "conversion", "direction": "increase", "rationale": "y"},
                "variants": [{"key": "control", "control": True, "weight": 1.0, "model": model},
                             {"key": "off", "weight": 0.0}],
                "metrics": {"primary": "conversion"}}).raise_for_status()
            http.post(f"/v1/experiments/{experiment}/start").raise_for_status()


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` into the flame graph ``out`` until it is sent SIGINT."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        sys.exit("--profile needs py-spy: pip install -e '.[bench]'")
    out.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([str(spy), "record", "--pid", str(pid), "--output", str(out), "--rate", "500",
                                "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches before the first sample
    return process


def stop_profiler(process: subprocess.Popen[bytes]) -> None:
    """Stop py-spy (SIGINT writes the flame graph)."""
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)


async def run(args: argparse.Namespace, server: str, base: str, key: str,
              titrate_pid: int | None = None) -> dict[str, Any]:
    infer = f"{server}/v2/models/minilm/infer"
    headers = {"Authorization": f"Bearer {key}"}

    def direct(http: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        return http.post(infer, json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                                  "data": [TEXTS[i % len(TEXTS)]]}]})

    def via(experiment: str) -> Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]:
        def call(http: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
            return http.post(f"{base}/v1/experiments/{experiment}/predict", headers=headers,
                             json={"unit_id": f"u-{i}", "inputs": [TEXTS[i % len(TEXTS)]]})
        return call

    calls = {"direct": direct, "titrate": via("bench-remote"), "forward": via("bench-forward")}
    for name, call in calls.items():  # warm-up: connections, first batches
        await closed_loop(name, call, args.concurrency, 2.0)
    phases: dict[str, list[Phase]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            phases[name].append(await closed_loop(name, call, args.concurrency, args.duration))
    # One caller, direct and titrate requests interleaved (which goes first alternates), so both see the same load
    # on a shared machine: two back-to-back phases would compare two different loads.
    latencies: dict[str, list[float]] = {"direct": [], "titrate": []}
    profiler = start_profiler(titrate_pid, args.profile) if args.profile and titrate_pid is not None else None
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        for i in range(args.sequential):
            for name in (("direct", "titrate") if i % 2 == 0 else ("titrate", "direct")):
                started = time.perf_counter()
                (await calls[name](http, 10_000 + i)).raise_for_status()
                latencies[name].append((time.perf_counter() - started) * 1000)
    if profiler is not None:
        stop_profiler(profiler)
    sequential = {name: Phase(name, len(values), 0, sum(values) / 1000, values) for name, values in latencies.items()}

    def med(name: str, f: Callable[[Phase], float]) -> float:
        return statistics.median(f(p) for p in phases[name])

    return {
        "load": {name: {"rps": med(name, lambda p: p.rps), "p50": med(name, lambda p: p.pct(0.5)),
                        "p99": med(name, lambda p: p.pct(0.99)), "errors": sum(p.errors for p in phases[name])}
                 for name in calls},
        "ratio": statistics.median(t.rps / d.rps for t, d in zip(phases["titrate"], phases["direct"], strict=True)),
        "gain": statistics.median(t.rps / f.rps for t, f in zip(phases["titrate"], phases["forward"], strict=True)),
        "sequential": {name: {"p50": p.pct(0.5), "p99": p.pct(0.99)} for name, p in sequential.items()},
        # request i through titrate minus request i direct, sent back to back: the pair saw the same moment's load
        "paired_p50": statistics.median(t - d for t, d in zip(latencies["titrate"], latencies["direct"], strict=True)),
    }


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    load, seq = result["load"], result["sequential"]
    cpu = platform.processor() or platform.machine()
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[0]
    rows = [("MLServer directly", "direct"), ("titrate `/predict`, batching", "titrate"),
            ("titrate `/predict`, per-request forwarding (`max_batch=1`)", "forward")]
    lines = [
        "## Remote serving (inference servers)",
        "",
        "`bench/remote_serving.py` — titrate's `/predict` in front of MLServer 1.7.1 (Open Inference Protocol v2, the "
        "shipped all-MiniLM-L6-v2 on CPU, one text per request) against calling MLServer directly, same run and load. "
        f"Machine: {cpu}, nproc {os.cpu_count()}; load average at the end {loadavg}; the load generator, one "
        "`titrate serve` worker (SQLite) and MLServer share these cores.",
        "",
        f"**Closed loop, {args.concurrency} callers, {args.duration:.0f} s per phase, {args.repeats} alternating "
        "repeats (medians):**",
        "",
        "| path | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *[f"| {label} | {load[k]['rps']:.1f} | {load[k]['p50']:.1f} | {load[k]['p99']:.1f} | {load[k]['errors']} |"
          for label, k in rows],
        "",
        f"- throughput ratio titrate / direct: **{result['ratio']:.2f}×** (goal ≥ 0.9×); added latency under this "
        f"load: p50 {load['titrate']['p50'] - load['direct']['p50']:+.1f} ms, "
        f"p99 {load['titrate']['p99'] - load['direct']['p99']:+.1f} ms",
        f"- batching gain through titrate vs per-request forwarding: **{result['gain']:.2f}×** requests/s",
        f"- one caller, {args.sequential} sequential requests each, interleaved (no contention): direct p50 "
        f"{seq['direct']['p50']:.1f} / p99 {seq['direct']['p99']:.1f} ms, titrate p50 {seq['titrate']['p50']:.1f} / "
        f"p99 {seq['titrate']['p99']:.1f} ms: **added p50 {seq['titrate']['p50'] - seq['direct']['p50']:+.2f} ms, "
        f"p99 {seq['titrate']['p99'] - seq['direct']['p99']:+.2f} ms** (goal ≤ 2 ms at p50); median of the "
        f"per-pair differences {result['paired_p50']:+.2f} ms",
        "- GPU: open — this run had no GPU; the same bench with MLServer on a GPU (bf16) and its achieved TFLOP/s "
        "is still to be measured.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--append", type=Path, help="append the markdown section to this file")
    parser.add_argument("--profile", type=Path, help="py-spy flame graph (svg) of titrate in the sequential phase")
    args = parser.parse_args()
    if not MLSERVER.exists():
        sys.exit(f"MLServer is not installed: run `{SETUP}` first")
    with tempfile.TemporaryDirectory(prefix="titrate-remote-bench-") as tmp:
        work = Path(tmp)
        (work / "mlserver").mkdir()
        with mlserver(work / "mlserver", shipped_minilm_path(), {"minilm": 0}) as server:
            db_url = f"sqlite:///{work / 'titrate.db'}"
            migrate.upgrade(db_url)
            db = Database(db_url)
            with db.transaction() as session:
                _, key = create_api_key(session, "admin", "bench")
            db.dispose()
            port = free_port()
            titrate = start_titrate(db_url, port)
            try:
                base = f"http://127.0.0.1:{port}"
                setup_titrate(base, key, server, args.max_batch)
                result = asyncio.run(run(args, server, base, key, titrate.pid))
            finally:
                titrate.terminate()
                titrate.wait(timeout=30)
    text = markdown(result, args)
    print(text)
    if args.append:
        with args.append.open("a", encoding="utf-8") as out:
            out.write("\n" + text)


if __name__ == "__main__":
    main()
