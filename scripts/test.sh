#!/usr/bin/env bash
# One command: set up .venv (see setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh" test,plot,tensorboard,wandb,hub  # tensorboard, wandb: train.report_to's writers
# (offline) and hub: hf-hub: names (huggingface_hub, offline on a local cache) are tested for real
cd "$ROOT"
exec python -m pytest "$@"
