#!/usr/bin/env bash
# colcon build of the workspace. Run scripts/setup.sh first (it calls this script).
#
# --base-paths src: the suite manifest (package.xml at the repository root) would otherwise hide the
# packages under src/ from colcon's crawler. Extra arguments go to colcon (e.g. --packages-select).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MOLMOACT_VENV:-$ROOT/.venv}"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
cd "$ROOT"
# Without a ROS install the venv is the underlay: CMake and ament find the wheels' packages there.
if [ -z "${ROS_DISTRO:-}" ]; then
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
exec colcon --log-base "$ROOT/log" build --base-paths src --symlink-install \
  --build-base "$ROOT/build" --install-base "$ROOT/install" \
  --event-handlers console_cohesion- summary+ status- "$@"
