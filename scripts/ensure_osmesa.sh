#!/usr/bin/env bash
# The simulated arm (and LIBERO's scene check) render on the CPU through OSMesa, a system library, not a
# wheel. Installs it when missing and this runs as root with apt-get; otherwise says what to do. Idempotent
# and quick when present. scripts/test.sh runs it once before the parallel environment installs (two
# concurrent apt-get runs would fight over dpkg's lock, and LIBERO's check needs the library).
set -euo pipefail
log() { printf '[osmesa] %s\n' "$*" >&2; }
libs=$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)
case "$libs" in
  *libOSMesa.so*) log "libOSMesa present (CPU rendering for the simulated arm)" ;;
  *)
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      log "installing libosmesa6 (CPU rendering for the simulated arm)"
      apt-get install -y -q libosmesa6 >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libosmesa6 >/dev/null; } \
        || log "WARNING: apt-get install libosmesa6 failed: the simulated arm cannot render"
    else
      log "WARNING: libOSMesa not found, and not root (or no apt-get) to install it: the simulated arm" \
          "cannot render. Install it as root (Debian/Ubuntu: apt-get install libosmesa6), or use" \
          "MUJOCO_GL=egl on a GPU machine."
    fi ;;
esac
