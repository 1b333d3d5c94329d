#!/usr/bin/env bash
# predict vs the PyTorch+torchvision peer over the same folder of photos (decode, resize,
# EfficientNet-Lite0 forward, CSV), same run, same machine, one run; wall time and peak RSS
# at two folder sizes (memory must stay flat as the folder grows).
# Real VOC2007 train images from ../shared (or VOC_ROOT=...), synthetic ones otherwise.
# DEVICE=cuda runs both on the GPU. Both tools score in batches of BATCH (default: predict's
# own default for the device, 8 on a CPU and 32 on a GPU).
source "$(dirname "$0")/bench_common.sh"
SIZES=${SIZES:-150 600}
DEVICE=${DEVICE:-cpu}
if [[ $DEVICE == cpu ]]; then BATCH=${BATCH:-8}; else BATCH=${BATCH:-32}; fi
files=("$VOC_ROOT"/JPEGImages/*.jpg)
# A Lite0 run to score with (a short training on the synthetic data is enough for speed).
target/release/voc-prep synth --out "$TMP/voc" --images 60 -q > /dev/null
target/release/voc-prep --voc-root "$TMP/voc" --out "$TMP/data" -q > /dev/null
target/release/train -q --data "$TMP/data" --runs-dir "$TMP/runs" --epochs 1 > /dev/null
run=$(ls -d "$TMP"/runs/*_efficientnet_lite0 | tail -1)
echo "bench-predict: $DATA_NAME photos, EfficientNet-Lite0 224px, batch $BATCH, CSV out, $DEVICE, $(nproc) cores, $(date -u +%F)"
printf '%-8s %-36s %8s %10s %9s %8s\n' images tool seconds images/s "peak MiB" ratio
for n in $SIZES; do
  rm -rf "$TMP/flat" && mkdir -p "$TMP/flat"
  cp "${files[@]:0:$n}" "$TMP/flat/"
  cat "$TMP"/flat/* > /dev/null
  read -r ours ours_mb < <(measure target/release/predict -q --run "$run" --device "$DEVICE" --batch-size "$BATCH" --output "$TMP/ours.csv" "$TMP/flat")
  read -r py py_mb < <(measure "$PY" -W ignore benches/peer/predict_torch.py "$run" "$TMP/flat" "$TMP/py.csv" "$DEVICE" "$BATCH")
  printf '%-8s %-36s %8.1f %10.1f %9s %8s\n' "$n" "vocml predict" "$ours" "$(awk "BEGIN{print $n / $ours}")" "$ours_mb" "1.00x"
  printf '%-8s %-36s %8.1f %10.1f %9s %7.2fx\n' "$n" "PyTorch+Pillow (DataLoader workers)" "$py" "$(awk "BEGIN{print $n / $py}")" "$py_mb" "$(awk "BEGIN{print $py / $ours}")"
done
echo "(seconds include start-up and model loading; ratio = PyTorch seconds / vocml seconds)"
# Same probabilities (max abs difference over all rows and classes).
"$PY" - "$TMP/ours.csv" "$TMP/py.csv" <<'PY'
import csv, sys
a = {r["path"].split("/")[-1]: r for r in csv.DictReader(open(sys.argv[1]))}
b = {r["path"].split("/")[-1]: r for r in csv.DictReader(open(sys.argv[2]))}
cols = [c for c in next(iter(a.values())) if c.startswith("p_")]
d = max(abs(float(a[k][c]) - float(b[k][c])) for k in a for c in cols)
print(f"max |p_vocml - p_pytorch| = {d:.4f} over {len(a)} images (resize implementations differ slightly)")
PY
