#!/usr/bin/env bash
# Download torchvision's ImageNet checkpoint for a backbone (needs internet) and convert it
# to weights/<model>.safetensors for `train --weights` (or `--weights-dir weights`).
# Usage: scripts/fetch_torchvision_weights.sh mobilenet_v2|efficientnet_b0|resnet50|resnet18|vgg16|googlenet|vit_b_16|convnext_tiny
set -euo pipefail
cd "$(dirname "$0")/.."
# URLs of torchvision 0.26's IMAGENET1K_V1 weights.
model=${1:?usage: $0 MODEL (mobilenet_v2, efficientnet_b0, resnet50, resnet18, vgg16, googlenet, vit_b_16, convnext_tiny)}
case "$model" in
  mobilenet_v2) url=https://download.pytorch.org/models/mobilenet_v2-b0353104.pth ;;
  efficientnet_b0) url=https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth ;;
  resnet50) url=https://download.pytorch.org/models/resnet50-0676ba61.pth ;;
  resnet18) url=https://download.pytorch.org/models/resnet18-f37072fd.pth ;;
  vgg16) url=https://download.pytorch.org/models/vgg16-397923af.pth ;;
  googlenet) url=https://download.pytorch.org/models/googlenet-1378be20.pth ;;
  vit_b_16) url=https://download.pytorch.org/models/vit_b_16-c867db91.pth ;;
  convnext_tiny) url=https://download.pytorch.org/models/convnext_tiny-983f1562.pth ;;
  *) echo "fetch_torchvision_weights: unknown model '$model' (known: mobilenet_v2, efficientnet_b0, resnet50, resnet18, vgg16, googlenet, vit_b_16, convnext_tiny)" >&2; exit 2 ;;
esac
mkdir -p weights
tmp="weights/.$model.pth.part"
curl -fL --retry 3 -o "$tmp" "$url"
.venv/bin/python scripts/convert_weights.py "$tmp" "weights/$model.safetensors"
rm -f "$tmp"
echo "weights/$model.safetensors ready: train --model $model --weights weights/$model.safetensors"
