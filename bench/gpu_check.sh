#!/usr/bin/env bash
# The GPU check of the paper preset (docs/PERFORMANCE.md, "GPU check"): under 8 minutes on one
# GPU. Anywhere else: bench/gpu_check.sh --device cpu --quick (every row, sizes cut).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" -m bench.gpu_check "$@"
