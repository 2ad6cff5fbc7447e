#!/usr/bin/env bash
# Set up profond on a fresh Debian machine (run as root, from the repository root).
#   bash scripts/setup.sh         system data packages + .venv with profond
#   bash scripts/setup.sh --dev   the same, plus the test tools (pytest, hypothesis, ruff)
# torch is installed first and explicitly (CPU wheel 2.13.0 where one is available), so that
# no dependency pulls a multi-GB CUDA build. Set TORCH_PIP_ARGS to pass extra pip arguments
# for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  pkgs="dataset-fashion-mnist fortunes fortunes-min fortunes-de fortunes-es fortunes-it fortunes-br fortunes-pl fortunes-cs fortunes-ru"
  python3 -c "import venv, ensurepip" 2>/dev/null || pkgs="$pkgs python3 python3-venv python3-pip"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q ${TORCH_PIP_ARGS:-} "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extras}"
.venv/bin/python -c "import torch, profond; print(f'profond {profond.__version__} ready (torch {torch.__version__}, {torch.get_num_threads()} threads)')"
