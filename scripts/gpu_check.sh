#!/usr/bin/env bash
# One command on a GPU machine (under 8 minutes on one H100/H200): set up .venv (see setup.sh; on a CUDA machine choose
# the CUDA build, e.g. ROBUSTFT_TORCH_INDEX=https://download.pytorch.org/whl/cu128), then run bench/gpu_check.py:
# `pytest -m cuda` on the GPU, ResNet-50 @224 PGD-10 training throughput (bf16, fp32, vs the seed-style loop and the
# device's measured peak) and a reduced gpu-paper protocol, written to bench/results/gpu/<device>/.
# Arguments go to bench/gpu_check.py: --device cpu --tiny is the test suite's short run; --out, --data-root, --runs.
# Without the venv set-up (an environment that has robustft already): ROBUSTFT_NO_SETUP=1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${ROBUSTFT_NO_SETUP:-0}" != 1 ]; then
    source "$ROOT/scripts/setup.sh" test
fi
cd "$ROOT"
exec python bench/gpu_check.py "$@"
