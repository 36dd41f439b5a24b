#!/usr/bin/env bash
# One command: set up .venv (see setup.sh) and run the bundled demo (no network, no external data).
# Extra arguments go to `robustft demo` (e.g. --out-dir DIR, --set train.epochs=3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh" plot
cd "$ROOT"
exec robustft demo "$@"
