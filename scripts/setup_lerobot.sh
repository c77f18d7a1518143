#!/usr/bin/env bash
# Install LeRobot's dataset loader in an environment of its own, to check that the datasets `build_dataset`
# writes open with LeRobot's own LeRobotDataset (src/molmoact_ros/test/training/test_lerobot_loader.py).
# LeRobot pins torch < 2.11 and torchvision, which clash with the suite's CPU torch 2.13, hence a second
# venv. Idempotent: a re-run with unchanged requirements does nothing.
#
#   scripts/setup_lerobot.sh          # .venv-lerobot: lerobot 0.4.4 (--no-deps) + requirements-lerobot.txt
#   scripts/setup_lerobot.sh --check  # only tell whether it is installed and LeRobotDataset imports (exit 0/1)
#
# Environment:
#   MOLMOACT_LEROBOT_VENV   where to install (default: <repo>/.venv-lerobot)
#   MOLMOACT_PYTHON         interpreter that creates the venv (default: python3.11)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MOLMOACT_LEROBOT_VENV:-$ROOT/.venv-lerobot}"
PYTHON="${MOLMOACT_PYTHON:-python3.11}"
REQ="$ROOT/requirements-lerobot.txt"
LEROBOT="lerobot==0.4.4"
STAMP="$VENV/.molmoact-lerobot-stamp"
NAME=setup_lerobot
LABEL=LeRobot
# shellcheck source=side_venv.sh
. "$ROOT/scripts/side_venv.sh"

check() {
  "$VENV/bin/python" - <<'PY'
import warnings
warnings.filterwarnings('ignore')
from importlib.metadata import version
from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset  # noqa: F401
print(f'LeRobot ok: lerobot {version("lerobot")}, dataset format {CODEBASE_VERSION}')
PY
}

side_venv_check_only "$@"

t0=$(date +%s)
want=$( (cat "$REQ" "$ROOT/scripts/setup_lerobot.sh"; echo "$LEROBOT") | sha256sum | cut -d' ' -f1)
side_venv_prepare "$want"
log "installing $LEROBOT (without its pinned dependencies) and its dataset loader's dependencies into $VENV"
pip_quiet install -r "$REQ"
pip_quiet install --no-deps "$LEROBOT"
check
printf '%s' "$want" > "$STAMP"
log "done in $(( $(date +%s) - t0 )) s"
