"""``titrate demo --headless`` runs end to end on a fresh SQLite database: it recovers the planted effect and
serves the real MiniLM variants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.live import free_port


def test_headless_demo_recovers_the_planted_lift(tmp_path: Path) -> None:
    env = {**os.environ, "TITRATE_DATABASE_URL": f"sqlite:///{tmp_path}/demo.db", "TITRATE_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "demo", "--headless", "--units", "4000", "--model-requests", "30",
         "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=240, check=True,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    scenario = summary["scenarios"][0]
    assert scenario["units"] == 4000
    assert abs(scenario["exposures"]["control"] - 2000) < 150
    low, high = scenario["rel_ci"]
    assert low <= scenario["true_rel_lift"] <= high
    served = summary["scenarios"][1]  # the real all-MiniLM-L6-v2, float32 vs bfloat16, through /predict
    assert served["errors"] == {"float32": 0, "bfloat16": 0}
    assert all(p95 is not None and p95 > 0 for p95 in served["latency_p95_ms"].values())
