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
echo
echo "== evaluate: test split, thresholds tuned on val, runs/best selected"
"$BIN/evaluate" --data processed_data --runs runs

echo
echo "== predict: a few synthetic images (labels + probabilities, tuned thresholds)"
"$BIN/predict" --top-k 2 "$DATA"/JPEGImages/00000{1,2,3,4,5}.jpg
