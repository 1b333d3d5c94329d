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
echo "   (15 epochs at lr 1e-3 for this small synthetic set; the defaults are the reference recipe)"
"$BIN/train" --data processed_data --runs-dir runs --epochs 15 --lr 1e-3 --patience 5
echo
echo "== evaluate: test split, thresholds tuned on val, runs/best selected"
"$BIN/evaluate" --data processed_data --runs runs

echo
echo "== predict: a few synthetic images (labels + probabilities, tuned thresholds)"
"$BIN/predict" --top-k 2 "$DATA"/JPEGImages/00000{1,2,3,4,5}.jpg

echo
echo "== retrain: correct up to 3 test images the model gets wrong, retrain, compare"
"$PWD/.venv/bin/python" - processed_data "$DATA" > data/corrections.csv <<'PY'
import json, subprocess, sys
data, voc = sys.argv[1], sys.argv[2]
m = json.load(open(f"{data}/manifest.json"))
ids = m["splits"]["test"]["ids"] + m["splits"]["val"]["ids"]
files = [f"{voc}/JPEGImages/{i}.jpg" for i in ids]
out = subprocess.run(["target/release/predict", "-q", "--format", "jsonl", *files], capture_output=True, text=True, check=True).stdout
print("path,labels")
wrong = 0
for line, i in zip(out.splitlines(), ids):
    xml = open(f"{voc}/Annotations/{i}.xml").read()
    truth = [c for c in m["classes"] if f"<name>{c}</name>" in xml]
    if sorted(json.loads(line)["labels"]) != sorted(truth) and wrong < 3:
        print(f"{voc}/JPEGImages/{i}.jpg,{';'.join(truth)}")
        wrong += 1
PY
cat data/corrections.csv
if [[ $(wc -l < data/corrections.csv) -gt 1 ]]; then
  "$BIN/retrain" --corrections data/corrections.csv
  new_run=$(ls -d runs/*_retrain | sort | tail -1)
  echo
  echo "== predict the corrected images with the retrained run $new_run"
  echo "   (runs/best moves to it only if validation did not drop by more than the tolerance)"
  tail -n +2 data/corrections.csv | cut -d, -f1 | xargs "$BIN/predict" -q --run "$new_run"
else
  echo "(the model gets every checked image right: nothing to correct)"
fi

echo
echo "== other task types: multihead (a softmax per head) on the embedded shapes dataset"
SHAPES=data/shapes
[[ -f "$SHAPES/labels.csv" ]] || "$BIN/voc-prep" shapes --out "$SHAPES" --images 180 --size 48
"$BIN/voc-prep" csv --file "$SHAPES/labels.csv" --task multihead --size 32 --out data/processed_heads -q
"$BIN/train" --data data/processed_heads --model small_cnn --epochs 30 --lr 1e-3 --patience 10 --runs-dir data/runs_heads -q
"$BIN/evaluate" --data data/processed_heads --runs data/runs_heads
"$BIN/predict" --run data/runs_heads/best --format jsonl -q "$SHAPES"/images/red_square/0011.png
