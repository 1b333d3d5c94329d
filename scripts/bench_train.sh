#!/usr/bin/env bash
# train vs the PyTorch+torchvision peer: the default 10-epoch recipe (frozen backbone) end to
# end, same data, same machine, one run; wall time, peak RSS and validation macro-F1.
# Real VOC2007 train images from ../shared (or VOC_ROOT=...), synthetic ones otherwise.
# DEVICE=cuda runs both on the GPU.
source "$(dirname "$0")/bench_common.sh"
MODELS=${MODELS:-efficientnet_lite0 mobilenet_v2}
DEVICE=${DEVICE:-cpu}
target/release/voc-prep --voc-root "$VOC_ROOT" --labels imagesets --image-set train --out "$TMP/data" -q > /dev/null 2>&1
weights_for() {
  case "$1" in
    efficientnet_lite0) echo .venv/vocml-weights/efficientnet_lite0.safetensors ;;
    mobilenet_v2) echo ../shared/weights/mobilenet_v2_qnnpack_dequant.safetensors ;;
  esac
}
n=$("$PY" -c "import json; m=json.load(open('$TMP/data/manifest.json')); print(m['splits']['train']['count'], '/', m['splits']['val']['count'])")
echo "bench-train: default recipe (10 epochs, batch 16, Adam 1e-4, patience 3, augmentation), frozen backbone,"
echo "$DATA_NAME imagesets split 70/15/15 ($n train/val), $DEVICE, $(nproc) cores, $(date -u +%F)"
printf '%-20s %-28s %9s %9s %12s %8s\n' model tool seconds "peak MiB" "val macroF1" ratio
for m in $MODELS; do
  w=$(weights_for "$m")
  if [[ ! -f $w ]]; then
    echo "($m skipped: $w not found)"
    continue
  fi
  read -r ours ours_mb < <(measure target/release/train -q --data "$TMP/data" --model "$m" --weights "$w" --runs-dir "$TMP/runs" --device "$DEVICE")
  run=$(ls -d "$TMP"/runs/*_"$m" | tail -1)
  f1=$("$PY" -c "import json; print(round(json.load(open('$run/metrics.json'))['metrics']['macro_f1'], 4))")
  read -r py py_mb < <(measure "$PY" -W ignore benches/peer/train_torch.py "$TMP/data" --model "$m" --weights "$w" --device "$DEVICE")
  pyf1=$(awk 'NF == 3 {print $2}' "$TMP/last.out" | tail -1)
  printf '%-20s %-28s %9.1f %9s %12s %8s\n' "$m" "vocml train (cached)" "$ours" "$ours_mb" "$f1" "1.00x"
  printf '%-20s %-28s %9.1f %9s %12s %7.2fx\n' "$m" "PyTorch+torchvision eager" "$py" "$py_mb" "$pyf1" "$(awk "BEGIN{print $py / $ours}")"
done
echo "(ratio = PyTorch seconds / vocml seconds)"
