# Sourced by setup_libero.sh, setup_lerobot.sh and setup_vllm.sh: a Python environment of its own, installed
# once per version of its requirements (a stamp: the hash the caller computes). The caller sets VENV, PYTHON,
# STAMP, NAME (its script's name, e.g. setup_vllm) and LABEL (what it installs), and defines check().

log() { printf '[%s] %s\n' "$NAME" "$*" >&2; }

# --check: run check() on the installed environment and exit with its status (1 when it is not installed).
side_venv_check_only() {
  [ "${1:-}" = "--check" ] || return 0
  [ -x "$VENV/bin/python" ] || { log "not installed ($VENV): run scripts/$NAME.sh"; exit 1; }
  check
  exit
}

# Exit 0 when the stamp says requirements with hash $1 are installed; else create the venv where missing.
side_venv_prepare() {
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null || true)" = "$1" ]; then
    log "$LABEL up to date ($VENV)"
    exit 0
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PYTHON" >/dev/null || { echo "$NAME: $PYTHON not found (Python 3.11 is required)" >&2; exit 1; }
    log "creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
}

# pip in the venv, quiet. (Some machines' pip configuration names index folders that do not exist; pip's
# warnings about them are noise and filtered out.)
pip_quiet() {
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" \
      2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}
