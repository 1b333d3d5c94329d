#!/usr/bin/env bash
# train vs the PyTorch+torchvision peer: the default 10-epoch recipe (frozen backbone) on the
# real VOC2007 train images, same data, same machine, one run. Needs ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
VOC_ROOT=${VOC_ROOT:-../shared/data/voc2007-train/VOCdevkit/VOC2007}
MODELS=${MODELS:-efficientnet_lite0}
if [[ ! -d "$VOC_ROOT/JPEGImages" ]]; then
  echo "bench-train: $VOC_ROOT not found; set VOC_ROOT" >&2
  exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
target/release/voc-prep --voc-root "$VOC_ROOT" --labels imagesets --image-set train --out "$TMP/data" -q > /dev/null 2>&1
weights_for() {
  case "$1" in
    efficientnet_lite0) echo .venv/vocml-weights/efficientnet_lite0.safetensors ;;
    mobilenet_v2) echo ../shared/weights/mobilenet_v2_qnnpack_dequant.safetensors ;;
  esac
}
echo "bench-train: default recipe (10 epochs, batch 16, Adam 1e-4, patience 3, augmentation), frozen backbone,"
echo "VOC2007 train imagesets split 70/15/15 (926 train / 198 val), $(nproc) cores, $(date -u +%F)"
printf '%-20s %-28s %9s %12s %8s\n' model tool seconds "val macroF1" ratio
for m in $MODELS; do
  w=$(weights_for "$m")
  s=$(date +%s.%N)
  target/release/train -q --data "$TMP/data" --model "$m" --weights "$w" --runs-dir "$TMP/runs" > "$TMP/ours.txt"
  e=$(date +%s.%N)
  ours=$(awk "BEGIN{print $e - $s}")
  run=$(ls -d "$TMP"/runs/*_"$m" | tail -1)
  f1=$(.venv/bin/python -c "import json; print(round(json.load(open('$run/metrics.json'))['metrics']['macro_f1'], 4))")
  read -r py pyf1 _ < <(.venv/bin/python -W ignore benches/peer/train_torch.py "$TMP/data" --model "$m" --weights "$w")
  printf '%-20s %-28s %9.1f %12s %8s\n' "$m" "vocml train (cached)" "$ours" "$f1" "1.00x"
  printf '%-20s %-28s %9.1f %12s %7.2fx\n' "$m" "PyTorch+torchvision eager" "$py" "$pyf1" "$(awk "BEGIN{print $py / $ours}")"
done
echo "(ratio = PyTorch seconds / vocml seconds)"
