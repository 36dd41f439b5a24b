#!/usr/bin/env bash
# One command: set up .venv (see setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh" test,plot,tensorboard  # tensorboard: the train.tensorboard writer is tested for real
cd "$ROOT"
exec python -m pytest "$@"
