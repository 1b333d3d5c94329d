#!/usr/bin/env bash
# voc-prep vs the Python Pillow+numpy peer on the same images, same machine, one run.
# Real VOC2007 train images from ../shared (or VOC_ROOT=...), synthetic ones otherwise.
source "$(dirname "$0")/bench_common.sh"
RUNS=${RUNS:-3}

# Warm the page cache so both read from memory.
cat "$VOC_ROOT"/JPEGImages/*.jpg > /dev/null

best() { sort -g | head -1; }
rust_times=(); py1_times=(); pyn_times=()
for r in $(seq "$RUNS"); do
  s=$(date +%s.%N)
  target/release/voc-prep --voc-root "$VOC_ROOT" --labels imagesets --image-set train --out "$TMP/rust" -q > "$TMP/rust.txt" 2>/dev/null
  e=$(date +%s.%N)
  rust_times+=("$(awk "BEGIN{print $e - $s}")")
  py1_times+=("$($PY benches/peer/prep_pillow.py "$VOC_ROOT" "$TMP/py1" --workers 1 | awk '{print $2}')")
  pyn_times+=("$($PY benches/peer/prep_pillow.py "$VOC_ROOT" "$TMP/pyn" --workers "$(nproc)" | awk '{print $2}')")
done
N=$($PY -c "import numpy as np; print(np.load('$TMP/py1/X.npy', mmap_mode='r').shape[0])")
NR=$($PY -c "import json; m=json.load(open('$TMP/rust/manifest.json')); print(sum(m['splits'][s]['count'] for s in ('train','val','test')))")
tr=$(printf '%s\n' "${rust_times[@]}" | best)
t1=$(printf '%s\n' "${py1_times[@]}" | best)
tn=$(printf '%s\n' "${pyn_times[@]}" | best)
echo "bench-prep: $N images ($DATA_NAME, 4 classes, imagesets labels, 224x224 uint8), best of $RUNS, $(nproc) cores"
printf '%-44s %8s %10s %8s\n' "tool" "seconds" "images/s" "ratio"
printf '%-44s %8.2f %10.0f %8s\n' "voc-prep (Rust, all cores)" "$tr" "$(awk "BEGIN{print $NR / $tr}")" "1.00x"
printf '%-44s %8.2f %10.0f %7.2fx\n' "Pillow+numpy, 1 process (reference)" "$t1" "$(awk "BEGIN{print $N / $t1}")" "$(awk "BEGIN{print $t1 / $tr}")"
printf '%-44s %8.2f %10.0f %7.2fx\n' "Pillow+numpy, $(nproc) processes" "$tn" "$(awk "BEGIN{print $N / $tn}")" "$(awk "BEGIN{print $tn / $tr}")"
echo "(ratio = Python seconds / voc-prep seconds; voc-prep also writes the split, manifest and checks inputs)"
