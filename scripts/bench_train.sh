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

# Peak memory as the data grows: the same training (1 epoch) on synthetic datasets of
# GROWTH_SIZES images. Images are read batch by batch, so only the cached features (15 KB
# per training image for Lite0) should grow with the data.
GROWTH_SIZES=${GROWTH_SIZES:-300 3000}
echo
echo "bench-train memory: peak RSS against dataset size, Lite0, 1 epoch, synthetic VOC, $DEVICE"
printf '%-8s %-10s %9s %9s\n' images "train/val" seconds "peak MiB"
for n in $GROWTH_SIZES; do
  target/release/voc-prep synth --out "$TMP/grow-voc" --images "$n" -q > /dev/null
  target/release/voc-prep --voc-root "$TMP/grow-voc" --out "$TMP/grow" -q > /dev/null
  split=$("$PY" -c "import json; m=json.load(open('$TMP/grow/manifest.json')); print(m['splits']['train']['count'], '/', m['splits']['val']['count'], sep='')")
  read -r s mb < <(measure target/release/train -q --data "$TMP/grow" --epochs 1 --runs-dir "$TMP/grow-runs" --device "$DEVICE")
  printf '%-8s %-10s %9.1f %9s\n' "$n" "$split" "$s" "$mb"
  rm -rf "$TMP/grow-voc" "$TMP/grow" "$TMP/grow-runs"
done
