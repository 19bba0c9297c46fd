#!/usr/bin/env bash
# Create (or reuse) .venv-inference/: MLServer + torch + transformers for the real-inference-server tests
# (tests/inference_server/). Idempotent: a stamp holding the hash of this script and requirements.txt says the
# venv is current, so CI reinstalls only when they change. Usage: bash tests/inference_server/setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-inference
HERE=tests/inference_server
STAMP="$VENV/.stamp"
WANT="$(cat "$HERE/setup.sh" "$HERE/requirements.txt" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/mlserver" ]]; then
  echo "inference-server venv: $VENV is current"
  exit 0
fi
PYTHON="${PYTHON:-python3}"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch first, pinned, so nothing resolves a CUDA build of a newer torch.
nice "$VENV/bin/python" -m pip install --quiet torch==2.13.0
nice "$VENV/bin/python" -m pip install --quiet -r "$HERE/requirements.txt"
"$VENV/bin/python" -c "import mlserver, torch, transformers; print('inference-server venv: mlserver', mlserver.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
echo "$WANT" > "$STAMP"
