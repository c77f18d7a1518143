#!/usr/bin/env bash
# Set up the workspace from nothing, then build it. Idempotent: a re-run with unchanged requirements
# skips the installs and only re-runs the (incremental) colcon build, which takes seconds.
#
#   scripts/setup.sh            # venv in .venv, ROS 2 Kilted wheels, torch (CPU), deps, colcon build
#
# Environment:
#   MOLMOACT_VENV         venv location (default: <repo>/.venv)
#   MOLMOACT_PYTHON       interpreter that creates the venv (default: python3.11)
#   MOLMOACT_TORCH_SPEC   pip requirement(s) for torch (default: torch==2.13.0; on this project's
#                         machines that resolves to the CPU build on local disk). On a CUDA machine give
#                         e.g. "torch==2.13.0 --index-url <your CUDA wheel index>".
#   MOLMOACT_SKIP_BUILD=1 install only, do not run colcon build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MOLMOACT_VENV:-$ROOT/.venv}"
PYTHON="${MOLMOACT_PYTHON:-python3.11}"
TORCH_SPEC="${MOLMOACT_TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.molmoact-setup-stamp"

log() { printf '[setup] %s\n' "$*" >&2; }
t0=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found (Python 3.11 is required)" >&2; exit 1; }
  log "creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# The simulated arm renders on the CPU through OSMesa (a system library, not a wheel).
"$ROOT/scripts/ensure_osmesa.sh"

# Everything that decides what gets installed goes into the stamp.
want=$(cat "$ROOT/requirements-ros-wheels.txt" "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" \
           "$ROOT/requirements-sim.txt" "$ROOT/requirements-sim-nodeps.txt" \
           "$ROOT/scripts/setup.sh" "$ROOT/scripts/fix_cmake_paths.py"; echo "$TORCH_SPEC")
want=$(printf '%s' "$want" | sha256sum | cut -d' ' -f1)

if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  log "installing Python packages into $VENV (ROS 2 Kilted wheels, $TORCH_SPEC, runtime and test deps)"
  # One resolution for everything, with torch pinned explicitly: a bare `torch` requirement of another
  # package would otherwise pull a multi-GB CUDA build.
  # shellcheck disable=SC2086
  # (Some machines' pip configuration names index folders that do not exist; pip's warnings about
  # them are noise and filtered out.)
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
      -r "$ROOT/requirements-ros-wheels.txt" $TORCH_SPEC \
      -r "$ROOT/requirements.txt" -r "$ROOT/requirements-test.txt" -r "$ROOT/requirements-sim.txt" \
      2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  # robosuite without its declared dependencies (mink pins numpy<2; opencv-python would clash with
  # opencv-python-headless): see requirements-sim-nodeps.txt.
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps \
      -r "$ROOT/requirements-sim-nodeps.txt" \
      2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  # The CMake export files of the ROS wheels name the wheel build's Python and NumPy include paths.
  "$VENV/bin/python" "$ROOT/scripts/fix_cmake_paths.py" "$VENV" >&2
  printf '%s' "$want" > "$STAMP"
else
  log "Python packages up to date ($VENV)"
fi

if [ "${MOLMOACT_SKIP_BUILD:-0}" != "1" ]; then
  "$ROOT/scripts/build.sh"
fi
log "done in $(( $(date +%s) - t0 )) s"
