#!/usr/bin/env bash
# The test command: sets up from nothing if needed, builds, and runs every test (pure-Python and ROS)
# on loopback-only DDS with a domain id of its own. Extra arguments go to pytest.
#
#   scripts/test.sh              # everything
#   scripts/test.sh -k lifecycle # a subset
#
# Fails when a test fails, and also when no test ran (pytest exit code 5).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Two environments of their own, installed beside the suite's while it installs (each idempotent; the demo
# needs neither): LIBERO for the simulated arm's libero scene (.venv-libero: its robosuite 1.4 and the suite's
# 1.5.2 cannot share one environment; ~70 s and 2.1 GB the first time), and LeRobot's dataset loader, which
# the tests open the built datasets with (.venv-lerobot: lerobot pins a torch / torchvision pair that does not
# fit the suite's CPU torch; ~3-4 min and ~4 GB the first time).
"$ROOT/scripts/ensure_osmesa.sh"  # once, before the parallel installs (LIBERO's check renders)
"$ROOT/scripts/setup_libero.sh" &
libero_pid=$!
"$ROOT/scripts/setup_lerobot.sh" &
lerobot_pid=$!
"$ROOT/scripts/setup.sh"
wait "$libero_pid"
wait "$lerobot_pid"
# shellcheck disable=SC1091
. "$ROOT/scripts/ros_env.sh"
cd "$ROOT"
export ROS_PYTHON_CHECK_FIELDS=1  # generated messages check types, ranges and sizes
echo "[test] ROS_DOMAIN_ID=$ROS_DOMAIN_ID ROS_AUTOMATIC_DISCOVERY_RANGE=$ROS_AUTOMATIC_DISCOVERY_RANGE" >&2
set +e
python -m pytest src/molmoact_ros/test src/molmoact_bringup/test test "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[test] FAILED: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
