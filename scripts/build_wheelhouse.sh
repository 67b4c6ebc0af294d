#!/usr/bin/env bash
# Build wheelhouse/ (git-ignored): the pure-Python wheels scripts/gpu_check.sh installs on a GPU machine
# whose own Python has torch (with CUDA), numpy, scipy, pandas, matplotlib, rich, pytest, PyYAML,
# cloudpickle and typing-extensions, but no package registry and none of: stable-baselines3, gymnasium,
# farama-notifications, hydra-core, omegaconf, antlr4-python3-runtime, minatar. Versions are the ones
# installed here (what the test suite ran against). wandb, mlxtend and scikit-learn are not needed
# there: the check runs with logger.mode=disabled and synthetic data.
#
# Usage: bash scripts/build_wheelhouse.sh   (needs the package registry; run it where the tests run)
set -euo pipefail
cd "$(dirname "$0")/.."
version() { python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
rm -rf wheelhouse
mkdir wheelhouse
python -m pip download -q --no-deps --only-binary=:all: -d wheelhouse \
    "stable-baselines3==$(version stable-baselines3)" \
    "gymnasium==$(version gymnasium)" \
    "farama-notifications==$(version farama-notifications)" \
    "hydra-core==$(version hydra-core)" \
    "omegaconf==$(version omegaconf)"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) and MinAtar are published as source only:
# pip builds them into pure-Python wheels here.
python -m pip wheel -q --no-deps -w wheelhouse \
    "antlr4-python3-runtime==$(version antlr4-python3-runtime)" \
    "minatar==$(version minatar)"
for wheel in wheelhouse/*.whl; do
    case "$wheel" in
        *-py3-none-any.whl | *-py2.py3-none-any.whl) ;;
        *) echo "not a pure-Python wheel (would not install on another Python): $wheel" >&2; exit 1 ;;
    esac
done
ls -l wheelhouse
du -sh wheelhouse
