#!/usr/bin/env bash
# The demo: the pipeline on the embedded synthetic VOC dataset, printing results.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
DATA=data/synth-voc

if [[ ! -f "$DATA/ImageSets/Main/train.txt" ]]; then
  echo "== generating the embedded synthetic VOC dataset ($DATA)"
  "$BIN/voc-prep" synth --out "$DATA" --images 240 --seed 7
fi

echo "== voc-prep: $DATA -> processed_data"
"$BIN/voc-prep" --voc-root "$DATA" --out processed_data

echo
echo "== train: efficientnet_lite0 (embedded ImageNet weights), frozen backbone, cached features"
"$BIN/train" --data processed_data --runs-dir runs --epochs 15 --lr 1e-3 --patience 5
run=$(ls -d runs/*_efficientnet_lite0 | sort | tail -1)
echo
echo "== validation metrics of $run (metrics.json)"
"$PWD/.venv/bin/python" - "$run/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
print(f"macro-F1 {m['macro_f1']:.3f}  micro-F1 {m['micro_f1']:.3f}  subset accuracy {m['subset_accuracy']:.3f}  Hamming loss {m['hamming_loss']:.3f}")
print(f"{'class':8} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>7}")
for c in m["per_class"]:
    print(f"{c['class']:8} {c['precision']:9.3f} {c['recall']:7.3f} {c['f1']:6.3f} {c['support']:7d}")
PY
