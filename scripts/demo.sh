#!/usr/bin/env bash
# The main job on an embedded default: set up if needed (idempotent), build, and run MolmoAct on the
# simulated arm, offline: sim_arm (a MuJoCo Panda with a camera), the pipeline (perception, trace_planner,
# action_decoder) and the command sink with execution enabled; one instruction, a bounded number of steps.
# Writes recording.mcap (every topic), demo.gif (camera + trace), final_frame.png and summary.json to
# ./demo_output (or --output DIR) and prints where they are.
#
#   scripts/demo.sh                                       # 6 steps, the tiny random-weight structural model
#   scripts/demo.sh --steps 3 --output /tmp/demo
#   MOLMOACT_MODEL=allenai/MolmoAct-7B-D-0812 scripts/demo.sh   # a real checkpoint (GPU machine, in the HF cache)
#   scripts/demo.sh --scene libero --steps 3              # a LIBERO task (needs scripts/setup_libero.sh)
#   MOLMOACT_MODEL=allenai/MolmoAct-7B-D-LIBERO-Spatial-0812 scripts/demo.sh --scene libero --suite libero_spatial \
#       --steps 30 --timeout 900                          # a released LIBERO checkpoint (GPU machine)
#   scripts/demo.sh --help                                # every option
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
. "$ROOT/scripts/ros_env.sh"   # venv, built workspace, loopback-only DDS (the demo applies the same itself)
exec "$ROOT/install/molmoact_bringup/lib/molmoact_bringup/demo" "$@"
