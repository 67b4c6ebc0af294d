#!/usr/bin/env bash
# The GPU check in one command, for the day a GPU machine is available (see the README's "GPU check").
#
#   bash scripts/gpu_check.sh [--device cuda] [--out DIR] [--wheelhouse DIR] [--budget-s 300]
#   bash scripts/gpu_check.sh --tiny --device cpu --out /tmp/gpu_check   # the same steps at toy size (CI)
#
# 1. Packages: where stable-baselines3, gymnasium, hydra-core, omegaconf or minatar cannot be imported
#    (a GPU machine has its own torch but none of these, and no registry), the wheels in the carried
#    wheelhouse (bash scripts/build_wheelhouse.sh, git-ignored) are installed with --no-deps into a
#    private directory on top of the machine's own torch, numpy and pandas.
# 2. rl_tickets itself: where it is not installed, a shim directory links this checkout's package and
#    conf/ (shipped as rl_tickets.conf in a wheel), so the code under test is always this checkout's.
# 3. scripts/gpu_check.py runs the steps (CUDA tests, bench_masks --quick, MinAtar CNN chains with PPO
#    and DQN, Conv-2, the profiler's copy counts) within the budget and writes gpu_check.json and
#    gpu_check.md into --out (default: ./gpu_check_out, git-ignored).
# Exit status: 0 every step succeeded; 1 a step failed or timed out; 2 bad arguments or no packages.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
DEVICE=cuda
TINY=()
BUDGET=()
OUT_DIR=$REPO/gpu_check_out
WHEELHOUSE=$REPO/wheelhouse
while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) TINY=(--tiny) ;;
        --device) DEVICE=$2; shift ;;
        --out) OUT_DIR=$2; shift ;;
        --wheelhouse) WHEELHOUSE=$2; shift ;;
        --budget-s) BUDGET=(--budget-s "$2"); shift ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
# Everything runs from the output directory: `python -m` puts the working directory first on sys.path,
# and the checkout's rl_tickets/ has no conf/ inside it.
cd "$OUT_DIR"

NEEDED="import stable_baselines3, gymnasium, hydra, omegaconf, minatar"
if ! "$PYTHON" -c "$NEEDED" 2>/dev/null; then
    if ! ls "$WHEELHOUSE"/*.whl >/dev/null 2>&1; then
        echo "gpu_check.sh: packages missing and no wheels in $WHEELHOUSE (run bash scripts/build_wheelhouse.sh where pip works, and carry wheelhouse/)" >&2
        exit 2
    fi
    SITE=$(mktemp -d /tmp/rl_tickets_site.XXXXXX)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELHOUSE"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    "$PYTHON" -c "$NEEDED"
    echo "gpu_check.sh: installed $(ls "$WHEELHOUSE"/*.whl | wc -l) wheels from $WHEELHOUSE into $SITE"
fi
if ! "$PYTHON" -c "import rl_tickets.conf" 2>/dev/null; then
    SHIM=$(mktemp -d /tmp/rl_tickets_shim.XXXXXX)
    mkdir "$SHIM/rl_tickets"
    ln -s "$REPO"/rl_tickets/* "$SHIM/rl_tickets/"
    ln -s "$REPO/conf" "$SHIM/rl_tickets/conf"
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_check.sh: rl_tickets from $REPO (linked in $SHIM)"
fi
exec "$PYTHON" "$REPO/scripts/gpu_check.py" --device "$DEVICE" --out "$OUT_DIR" "${TINY[@]}" "${BUDGET[@]}"
