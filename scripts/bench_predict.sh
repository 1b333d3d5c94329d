#!/usr/bin/env bash
# predict (ONNX Runtime engine, the default once a run is exported, and libtorch) vs the
# PyTorch+torchvision and ONNX Runtime peers over the same folder of photos (decode, resize,
# EfficientNet-Lite0 forward, CSV), same run, same machine, one run; wall time and peak RSS
# at two folder sizes (memory must stay flat as the folder grows); then the model alone on
# prepared pixels (no decoding): vocml's two engines as `evaluate` times them, PyTorch eager
# and ONNX Runtime, all with $(nproc) threads.
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
THREADS=$(nproc)
target/release/export -q --run "$run" --threads "$THREADS" > /dev/null
engine=onnx
[[ $DEVICE == cpu ]] || engine=torch
echo "bench-predict: $DATA_NAME photos, EfficientNet-Lite0 224px, batch $BATCH, CSV out, $DEVICE, $THREADS cores, $THREADS threads, $(date -u +%F)"
printf '%-8s %-38s %8s %10s %9s %8s\n' images tool seconds images/s "peak MiB" ratio
row() { printf '%-8s %-38s %8.1f %10.1f %9s %7.2fx\n' "$1" "$2" "$3" "$(awk "BEGIN{print $1 / $3}")" "$4" "$(awk "BEGIN{print $3 / $5}")"; }
for n in $SIZES; do
  rm -rf "$TMP/flat" && mkdir -p "$TMP/flat"
  cp "${files[@]:0:$n}" "$TMP/flat/"
  cat "$TMP"/flat/* > /dev/null
  read -r ours ours_mb < <(measure target/release/predict -q --run "$run" --engine "$engine" --threads "$THREADS" --device "$DEVICE" --batch-size "$BATCH" --output "$TMP/ours.csv" "$TMP/flat")
  read -r torch torch_mb < <(measure target/release/predict -q --run "$run" --engine torch --threads "$THREADS" --device "$DEVICE" --batch-size "$BATCH" --output "$TMP/torch.csv" "$TMP/flat")
  read -r py py_mb < <(measure "$PY" -W ignore benches/peer/predict_torch.py "$run" "$TMP/flat" "$TMP/py.csv" "$DEVICE" "$BATCH")
  row "$n" "vocml predict ($engine engine)" "$ours" "$ours_mb" "$ours"
  row "$n" "vocml predict (libtorch engine)" "$torch" "$torch_mb" "$ours"
  row "$n" "PyTorch+Pillow (DataLoader workers)" "$py" "$py_mb" "$ours"
  if [[ $DEVICE == cpu ]]; then
    read -r ort ort_mb < <(measure "$PY" -W ignore benches/peer/predict_onnxruntime.py "$run/model.onnx" "$TMP/flat" "$TMP/ort.csv" "$THREADS" "$BATCH")
    row "$n" "ONNX Runtime+Pillow (thread pool)" "$ort" "$ort_mb" "$ours"
  fi
done
echo "(seconds include start-up and model loading; ratio = the tool's seconds / vocml's with the $engine engine)"
if [[ $DEVICE == cpu ]]; then
  # The model alone: 600 prepared 224 px images, no decoding.
  target/release/voc-prep synth --out "$TMP/voc600" --images 600 -q > /dev/null
  target/release/voc-prep --voc-root "$TMP/voc600" --out "$TMP/data600" --split 1,0,0 -q > /dev/null
  x=$TMP/data600/X_train.npy
  images=$("$PY" -c "import numpy as np; print(len(np.load('$x', mmap_mode='r')))")
  echo
  echo "model only: $images prepared images (no decoding), batch $BATCH, $THREADS threads"
  printf '%-38s %10s %9s %8s\n' tool images/s "peak MiB" ratio
  declare -A ips mib
  for e in onnx torch; do
    read -r _ mib[vocml-$e] < <(measure target/release/evaluate -q --data "$TMP/data600" --run "$run" --split train --engine "$e" --threads "$THREADS" --batch-size "$BATCH" --no-select)
    ips[vocml-$e]=$("$PY" -c "import json; print(1000 / json.load(open('$run/evaluation.json'))['inference_ms_per_image'])")
  done
  read -r _ mib[ort] < <(measure "$PY" -W ignore benches/peer/model_only.py onnxruntime "$run/model.onnx" "$x" "$THREADS" "$BATCH")
  ips[ort]=$(awk '{print $1 / $2}' "$TMP/last.out")
  read -r _ mib[pytorch] < <(measure "$PY" -W ignore benches/peer/model_only.py torch "$run" "$x" "$THREADS" "$BATCH")
  ips[pytorch]=$(awk '{print $1 / $2}' "$TMP/last.out")
  for k in "vocml-onnx:vocml (ONNX Runtime engine)" "vocml-torch:vocml (libtorch engine)" "ort:ONNX Runtime (Python)" "pytorch:PyTorch eager"; do
    key=${k%%:*}
    printf '%-38s %10.1f %9s %7.2fx\n' "${k#*:}" "${ips[$key]}" "${mib[$key]}" "$(awk "BEGIN{print ${ips[vocml-onnx]} / ${ips[$key]}}")"
  done
  echo "(vocml's figures are evaluate's inference time per image; peak MiB of the whole process;"
  echo " ratio = vocml's ONNX Runtime engine images/s / the tool's)"
  # The same pass on the int8 file (`export --int8`; its mAP check means nothing on this short
  # synthetic run, hence --max-map-drop 1: docs/benchmarks.md has the accuracy on real photos).
  target/release/export -q --run "$run" --int8 --max-map-drop 1 --threads "$THREADS" > /dev/null
  cp -r "$run" "$TMP/run-int8" && cp "$run/model.int8.onnx" "$TMP/run-int8/model.onnx"
  read -r _ mib[vocml-int8] < <(measure target/release/evaluate -q --data "$TMP/data600" --run "$TMP/run-int8" --split train --engine onnx --threads "$THREADS" --batch-size "$BATCH" --no-select)
  ips[vocml-int8]=$("$PY" -c "import json; print(1000 / json.load(open('$TMP/run-int8/evaluation.json'))['inference_ms_per_image'])")
  read -r _ mib[ort-int8] < <(measure "$PY" -W ignore benches/peer/model_only.py onnxruntime "$run/model.int8.onnx" "$x" "$THREADS" "$BATCH")
  ips[ort-int8]=$(awk '{print $1 / $2}' "$TMP/last.out")
  echo
  echo "model only, int8 file (export --int8): speed-up = int8 images/s / the same tool's fp32"
  printf '%-38s %10s %9s %8s\n' tool images/s "peak MiB" speed-up
  printf '%-38s %10.1f %9s %7.2fx\n' "vocml (ONNX Runtime engine), int8" "${ips[vocml-int8]}" "${mib[vocml-int8]}" "$(awk "BEGIN{print ${ips[vocml-int8]} / ${ips[vocml-onnx]}}")"
  printf '%-38s %10.1f %9s %7.2fx\n' "ONNX Runtime (Python), int8" "${ips[ort-int8]}" "${mib[ort-int8]}" "$(awk "BEGIN{print ${ips[ort-int8]} / ${ips[ort]}}")"
fi
# Same probabilities (max abs difference over all rows and classes).
"$PY" - "$TMP/ours.csv" "$TMP/py.csv" <<'PY'
import csv, sys
a = {r["path"].split("/")[-1]: r for r in csv.DictReader(open(sys.argv[1]))}
b = {r["path"].split("/")[-1]: r for r in csv.DictReader(open(sys.argv[2]))}
cols = [c for c in next(iter(a.values())) if c.startswith("p_")]
d = max(abs(float(a[k][c]) - float(b[k][c])) for k in a for c in cols)
print(f"max |p_vocml - p_pytorch| = {d:.4f} over {len(a)} images (resize implementations differ slightly)")
PY
"$PY" - "$TMP/ours.csv" "$TMP/torch.csv" <<'PY'
import csv, sys
a = {r["path"]: r for r in csv.DictReader(open(sys.argv[1]))}
b = {r["path"]: r for r in csv.DictReader(open(sys.argv[2]))}
cols = [c for c in next(iter(a.values())) if c.startswith("p_")]
d = max(abs(float(a[k][c]) - float(b[k][c])) for k in a for c in cols)
same = sum(a[k]["labels"] == b[k]["labels"] for k in a)
print(f"max |p_vocml(engine) - p_vocml(libtorch)| = {d:.6f} over {len(a)} images; labels equal on {same}")
PY
