#!/usr/bin/env bash
# Create .venv (once) and install robustft into it. torch is installed first, so no later step pulls another build.
# Usage: source scripts/setup.sh [extras]   e.g. "test" or "test,plot"
#   ROBUSTFT_TORCH_SPEC     pip arguments for torch, split on spaces (default torch==2.13.0: from public PyPI on
#                           Linux x86_64 that is the CUDA 13 build; where pip is configured with a local CPU wheel,
#                           as on this project's CI machine, the CPU build), e.g.
#                           "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" (CPU only) or
#                           "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" (CUDA 12.8 drivers)
#   ROBUSTFT_TORCH_INDEX    an index URL added as --index-url (the same as writing it in the spec)
#   ROBUSTFT_TORCH_REINSTALL=1  replace the torch already in the venv by the requested one (otherwise it is kept,
#                           with one line saying so when the request differs)
#   ROBUSTFT_VENV, PYTHON   the venv directory (default .venv) and the interpreter that creates it (python3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROBUSTFT_VENV:-$ROOT/.venv}"
read -r -a TORCH_ARGS <<< "${ROBUSTFT_TORCH_SPEC:-torch==2.13.0}"
if [ -n "${ROBUSTFT_TORCH_INDEX:-}" ]; then
    TORCH_ARGS+=(--index-url "$ROBUSTFT_TORCH_INDEX")
fi
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
PIP=(-m pip install -q --disable-pip-version-check)
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    existed=$([ -e "$VENV" ] && echo 1 || true)
    if ! "$PYTHON" -m venv "$VENV"; then
        [ -n "$existed" ] || rm -rf "$VENV"  # a half-made venv (no pip) would be taken as ready next time
        echo "[setup] '$PYTHON -m venv' failed: on Debian/Ubuntu install the venv package first" \
             "(sudo apt install python3-venv), then rerun" >&2
        return 1 2>/dev/null || exit 1
    fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null

# The torch in the venv: "<version>" (e.g. 2.13.0+cpu), empty if none.
HAVE="$("$VENV/bin/python" -c "import torch; print(torch.__version__)" 2>/dev/null || true)"
# What the request pins: the version of a torch==V argument and the build of a .../whl/<build> index (cpu, cu128).
WANT_VERSION="" WANT_BUILD="" prev=""
for arg in "${TORCH_ARGS[@]}"; do
    case "$arg" in torch==*) WANT_VERSION="${arg#torch==}" ;; esac
    case "$prev" in --index-url|--extra-index-url) WANT_BUILD="${arg%/}"; WANT_BUILD="${WANT_BUILD##*/whl/}" ;; esac
    case "$arg" in --index-url=*|--extra-index-url=*) WANT_BUILD="${arg%/}"; WANT_BUILD="${WANT_BUILD##*/whl/}" ;; esac
    prev="$arg"
done
[[ "$WANT_BUILD" =~ ^(cpu|cu[0-9]+|rocm[0-9.]+|xpu)$ ]] || WANT_BUILD=""
differs=""
HAVE_BUILD=""
[[ "$HAVE" == *+* ]] && HAVE_BUILD="${HAVE#*+}"
if [ -n "$HAVE" ]; then
    { [ -n "$WANT_VERSION" ] && [ "${HAVE%%+*}" != "${WANT_VERSION%%+*}" ]; } && differs=1
    { [ -n "$WANT_BUILD" ] && [ "$HAVE_BUILD" != "$WANT_BUILD" ]; } && differs=1
fi
if [ -z "$HAVE" ] || { [ -n "$differs" ] && [ "${ROBUSTFT_TORCH_REINSTALL:-0}" = 1 ]; }; then
    if [ -n "$HAVE" ]; then
        echo "[setup] replacing torch $HAVE"
        "$VENV/bin/python" -m pip uninstall -q -y torch
    fi
    echo "[setup] installing ${TORCH_ARGS[*]}"
    "$VENV/bin/python" "${PIP[@]}" "${TORCH_ARGS[@]}"
elif [ -n "$differs" ]; then
    echo "[setup] keeping torch $HAVE in $VENV, which differs from the requested '${TORCH_ARGS[*]}'; rerun with" \
         "ROBUSTFT_TORCH_REINSTALL=1 to replace it"
fi
echo "[setup] installing robustft${EXTRAS:+[$EXTRAS]}"
"$VENV/bin/python" "${PIP[@]}" -e "$ROOT${EXTRAS:+[$EXTRAS]}"
export PATH="$VENV/bin:$PATH"
