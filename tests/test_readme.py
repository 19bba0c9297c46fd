"""The README's shell walk-throughs run as pasted (issue 17 item 4), the way doc tests keep examples honest.

Every fenced ``bash`` block right after a ``<!-- readme-test -->`` line is run, in README order, as one bash script
(``set -e``: a failing command fails the test) in a fresh directory holding only a link to this checkout's
``.venv`` — so ``./titrate.db`` is a new database — with the service's port 8000 replaced by a free one. The
service the blocks start in the background is stopped with the script's process group afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = "<!-- readme-test -->"
FENCE = re.compile(r"^" + re.escape(MARKER) + r"[ \t]*\n```bash\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def runnable_blocks(text: str) -> list[str]:
    """The ``bash`` blocks marked runnable, in order; a marker not followed by a bash fence is an error."""
    blocks = [m.group(1) for m in FENCE.finditer(text)]
    markers = re.findall(r"^" + re.escape(MARKER) + r"[ \t]*$", text, re.MULTILINE)  # on a line of its own
    assert len(blocks) == len(markers), "every readme-test marker must sit right above a ```bash fence"
    return blocks


def test_runnable_blocks_are_found_and_a_stray_marker_is_refused() -> None:
    text = (f"intro `{MARKER}` in prose\n{MARKER}\n```bash\necho one\n```\n\n```bash\necho unmarked\n```\n"
            f"{MARKER}\n```bash\necho two\n```\n")
    assert runnable_blocks(text) == ["echo one\n", "echo two\n"]
    with pytest.raises(AssertionError, match="right above"):
        runnable_blocks(f"{MARKER}\n\n```python\nprint()\n```\n")


@pytest.fixture
def walkthrough_dir(tmp_path: Path) -> Path:
    venv = ROOT / ".venv"
    if not (venv / "bin" / "titrate").exists():
        pytest.fail(f"{venv} has no titrate: run `make setup` first (the README's blocks use .venv/bin/titrate)")
    (tmp_path / ".venv").symlink_to(venv)
    return tmp_path


@pytest.fixture
def run_script(walkthrough_dir: Path) -> Iterator[object]:
    processes: list[subprocess.Popen[bytes]] = []

    def run(script: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TITRATE_")}
        env.update({"TITRATE_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
        out, err = walkthrough_dir / "stdout.txt", walkthrough_dir / "stderr.txt"
        # files, not pipes: the service the blocks start in the background keeps its inherited output open after
        # the script ends, so reading a pipe to its end would wait for the service
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(["bash", "-e", "-c", script], cwd=walkthrough_dir, env=env,
                                       stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                       start_new_session=True)
        processes.append(process)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"the README's blocks did not finish in {timeout} s:\n{out.read_text()}\n"
                        f"{err.read_text()[-3000:]}")
        return subprocess.CompletedProcess(process.args, code, out.read_text(), err.read_text())

    yield run
    for process in processes:  # the `titrate serve &` of the blocks lives in the script's process group
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(600)
@pytest.mark.skipif(sys.platform != "linux", reason="the walk-through uses GNU date and bash as on the CI machine")
def test_the_readme_walkthroughs_run_as_pasted(run_script) -> None:  # type: ignore[no-untyped-def]
    blocks = runnable_blocks(README.read_text())
    assert len(blocks) >= 4  # serve, first experiment, simulated traffic, serving
    port = free_port()
    script = "\n".join(re.sub(r"\b8000\b", str(port), block) for block in blocks)
    done = run_script(script, timeout=540)
    assert done.returncode == 0, f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-4000:]}"
    out = done.stdout
    assert '"assignments":{"ranker-v2":{"variant":' in out
    assert '{"accepted":1,"duplicates":0}' in out
    assert re.search(r"exposed: \{'control': \d, 'v2': \d\} \| conversion of v2 ", out), out
    assert re.search(r"^(keep_running|ship|no_ship) ", out, re.MULTILINE), out  # the simulated experiment's decision
    assert len(re.findall(r"^(float32 minilm-f32|bfloat16 minilm-bf16) 2 embeddings of 384 numbers in ", out,
                          re.MULTILINE)) == 4, out
    report = re.findall(r"^(float32|bfloat16) minilm-(?:f32|bf16) (\d+) requests, 0 errors, p50 [\d.]+ ms$", out,
                        re.MULTILINE)
    assert {variant for variant, _ in report} == {"float32", "bfloat16"}, out
    assert sum(int(n) for _, n in report) == 4
