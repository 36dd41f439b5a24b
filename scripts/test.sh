#!/usr/bin/env bash
# One command: set up .venv (see setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh" test,plot,tensorboard,hub  # tensorboard, hub: the train.tensorboard writer and
# hf-hub: names (huggingface_hub, offline on a local cache) are tested for real
cd "$ROOT"
exec python -m pytest "$@"
