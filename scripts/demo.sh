#!/usr/bin/env bash
# The main job on an embedded default: set up if needed, build, and run the MolmoAct pipeline (three
# lifecycle nodes in one process) on a synthetic camera with the tiny random-weight structural model.
# Writes annotated trace images, every message (JSON lines) and a summary to out/demo/.
#
#   scripts/demo.sh                                  # 3 steps, tiny structural model
#   scripts/demo.sh --steps 5 --output /tmp/demo
#   scripts/demo.sh --model allenai/MolmoAct-7B-D-0812   # a real checkpoint (GPU machine)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
. "$ROOT/scripts/ros_env.sh"
cd "$ROOT"
exec "$ROOT/install/molmoact_ros/lib/molmoact_ros/demo" "$@"
