#!/usr/bin/env bash
# The GPU proof (bench/gpu_check.py) on a bare machine: the system python3 with torch and torchvision,
# no network. The other imports come as wheels from build/wheels (make gpu-wheels), installed into
# build/gpu-site; the whole run is cut at GPU_CHECK_TIMEOUT seconds (default 570: a 10-minute slot).
#   bench/gpu_check.sh          # on one NVIDIA GPU; bench/gpu_check.sh --dry: CPU, toy sizes
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=build/gpu-site
if ! "$PYTHON" -c 'import flask' 2>/dev/null; then
    if ! ls build/wheels/*.whl >/dev/null 2>&1; then
        echo "gpu_check: this python lacks Flask and build/wheels is empty: run 'make gpu-wheels' where pip works" >&2
        exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" build/wheels/*.whl
    export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/container:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout --kill-after=10 "${GPU_CHECK_TIMEOUT:-570}" "$PYTHON" bench/gpu_check.py "$@"
