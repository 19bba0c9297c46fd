"""``titrate demo --headless``, the main job, end to end on a fresh SQLite database: the A/B with a true lift
ships with its harmed segment flagged, the slower roll-out is rolled back automatically during its ramp, the
bandit converges on the best of four arms, the real MiniLM variants serve — and each true effect planted by the
simulator's presets lies inside the interval the service reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.live import free_port


def _inside(value: float, interval: list[float]) -> bool:
    return interval[0] <= value <= interval[1]


def test_headless_demo_reaches_the_right_decisions(tmp_path: Path) -> None:
    env = {**os.environ, "TITRATE_DATABASE_URL": f"sqlite:///{tmp_path}/demo.db", "TITRATE_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "demo", "--headless", "--units", "9000", "--model-requests", "30",
         "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=600, check=True,
    )
    scenarios: dict[str, dict[str, Any]] = {
        s["scenario"]: s for s in json.loads(done.stdout.strip().splitlines()[-1])["scenarios"]}

    ab = scenarios["ab-checkout"]
    assert (ab["decision"], ab["variant"], ab["status"]) == ("ship", "one-page", "shipped")
    assert min(ab["current_n"].values()) >= ab["planned_n_per_variant"]
    assert _inside(ab["true_rel_lift"], ab["rel_ci"])
    assert ab["flagged_segments"] == ["DE"]
    assert [c for c, lift in ab["true_segment_rel_lift"].items() if lift < 0] == ["DE"]  # the planted harm

    ramp = scenarios["ramp-rollback"]
    assert (ramp["status"], ramp["decision"]) == ("rolled_back", "rollback")
    assert ramp["max_fraction_reached"] < 0.5
    assert _inside(ramp["true_latency_regression"], ramp["latency_rel_ci"])

    bandit = scenarios["thompson-4-arms"]
    assert (bandit["decision"], bandit["variant"], bandit["status"]) == ("ship", bandit["best_true_arm"], "shipped")
    assert bandit["arm_with_most_weight"] == bandit["best_true_arm"]
    assert bandit["final_weights"][bandit["best_true_arm"]] > 0.5
    assert _inside(bandit["best_true_rel_lift"], bandit["best_rel_ci"])

    contextual = scenarios["contextual-bandit"]  # each platform's weight goes to its own best headline
    for platform in ("ios", "android"):
        best = contextual["true_best_by_platform"][platform]
        assert contextual["leader_by_platform"][platform] == best
        assert contextual["final_weights_by_platform"][platform][best] > 0.6
    assert contextual["decision"] == "keep_running"  # platforms disagree: no single headline ships

    served = scenarios["minilm-float32-vs-bfloat16"]  # the real all-MiniLM-L6-v2 through /predict
    assert served["errors"] == {"float32": 0, "bfloat16": 0}
    assert all(p95 is not None and p95 > 0 for p95 in served["latency_p95_ms"].values())


def test_demo_leaves_the_console_up_with_the_scenarios_decided_and_stops_cleanly(tmp_path: Path) -> None:
    """``titrate demo`` without ``--headless`` (what ``make demo`` runs): once the scenarios are decided the service
    and the Streamlit console answer; Ctrl-C stops both (no orphaned console)."""
    import re
    import signal
    import threading
    import time

    import httpx

    port, console_port = free_port(), free_port()
    env = {**os.environ, "TITRATE_DATABASE_URL": f"sqlite:///{tmp_path}/demo.db", "TITRATE_LOG_LEVEL": "WARNING"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "demo", "--units", "9000", "--model-requests", "0", "--no-adaptive",
         "--port", str(port), "--console-port", str(console_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # why: Ctrl-C as at a terminal, even when the suite itself was started in the background of a shell without
        # job control, which ignores SIGINT for everything it starts (an ignored SIGINT is inherited, and Python then
        # installs no KeyboardInterrupt handler: the demo would never see the signal sent below)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert demo.stdout is not None
        key = None
        deadline = time.monotonic() + 300
        while key is None and time.monotonic() < deadline:
            line = demo.stdout.readline()
            assert line, "the demo exited before bringing the console up"
            found = re.search(r"admin key: (\S+)", line) or re.search(r"^(tk_\S+)$", line.strip())
            key = found.group(1) if found else None
        assert key is not None
        output = demo.stdout
        threading.Thread(target=lambda: output.read(), daemon=True).start()  # keep the pipe drained
        console_ok = False
        while not console_ok and time.monotonic() < deadline:
            try:
                console_ok = httpx.get(f"http://127.0.0.1:{console_port}/", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.5)
        assert console_ok, "the console never answered"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as http:
            ab = http.get("/v1/experiments/demo-checkout-ab").json()
            assert (ab["status"], ab["shipped_variant"]) == ("shipped", "one-page")
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        demo.wait(timeout=60)
        if demo.stdout is not None:
            demo.stdout.close()
    with httpx.Client(timeout=2) as probe:
        try:
            probe.get(f"http://127.0.0.1:{console_port}/")
            stopped = False
        except httpx.HTTPError:
            stopped = True
    assert stopped, "the console outlived the demo"
