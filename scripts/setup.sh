#!/usr/bin/env bash
# Create .venv (once) and install robustft into it. torch is installed first, from ROBUSTFT_TORCH_SPEC
# (default the CPU-only pin torch==2.13.0), so no later step pulls several GB of CUDA wheels.
# Usage: source scripts/setup.sh [extras]   e.g. "test" or "test,plot"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROBUSTFT_VENV:-$ROOT/.venv}"
TORCH_SPEC="${ROBUSTFT_TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing $TORCH_SPEC"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
fi
echo "[setup] installing robustft${EXTRAS:+[$EXTRAS]}"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}"
export PATH="$VENV/bin:$PATH"
