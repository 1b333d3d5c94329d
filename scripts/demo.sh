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
