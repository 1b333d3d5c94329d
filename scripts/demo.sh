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
"$BIN/evaluate" --data processed_data --runs-dir runs

echo
echo "== predict: a few synthetic images (labels + probabilities, tuned thresholds)"
"$BIN/predict" --top-k 2 "$DATA"/JPEGImages/00000{1,2,3,4,5}.jpg

echo
echo "== retrain: 60 new photos arrive; the ones the model gets wrong are corrected and learnt"
echo "   (configs/retrain-gentle.toml, the recommended small update; the gate judges the new run"
echo "   against runs/best on the test split, which neither was selected on)"
NEW=data/synth-new
[[ -f "$NEW/ImageSets/Main/train.txt" ]] || "$BIN/voc-prep" synth --out "$NEW" --images 60 --seed 8 -q
"$PWD/.venv/bin/python" - "$NEW" processed_data data/careless.csv > data/corrections.csv <<'PY'
import json, subprocess, sys
voc, data, careless = sys.argv[1], sys.argv[2], open(sys.argv[3], "w")
classes = json.load(open(f"{data}/manifest.json"))["classes"]
ids = [l.strip() for l in open(f"{voc}/ImageSets/Main/trainval.txt") if l.strip()]
files = [f"{voc}/JPEGImages/{i}.jpg" for i in ids]
out = subprocess.run(["target/release/predict", "-q", "--format", "jsonl", *files], capture_output=True, text=True, check=True).stdout
print("path,labels")
# The careless labeller: every photo, every label inverted.
print("path,labels", file=careless)
for line, f, i in zip(out.splitlines(), files, ids):
    xml = open(f"{voc}/Annotations/{i}.xml").read()
    truth = [c for c in classes if f"<name>{c}</name>" in xml]
    if sorted(json.loads(line)["labels"]) != sorted(truth):
        print(f"{f},{';'.join(truth)}")
    print(f"{f},{';'.join(c for c in classes if c not in truth)}", file=careless)
PY
echo "corrections of the photos the model got wrong ($(($(wc -l < data/corrections.csv) - 1)) of 60):"
head -4 data/corrections.csv
if [[ $(wc -l < data/corrections.csv) -gt 1 ]]; then
  "$BIN/retrain" --config configs/retrain-gentle.toml --corrections data/corrections.csv -q
  new_run=$(ls -d runs/*_retrain | sort | tail -1)
  echo
  echo "== predict the corrected photos with the retrained run $new_run"
  tail -n +2 data/corrections.csv | head -3 | cut -d, -f1 | xargs "$BIN/predict" -q --run "$new_run"
else
  echo "(the model gets every new photo right: nothing to correct)"
fi

echo
echo "== retrain: a careless labeller inverts every label of the 60 photos; the gate refuses the result"
echo "   (retrain's reference recipe, which follows the corrections hard; a feedback store of its own)"
rm -rf data/careless-feedback
"$BIN/retrain" --corrections data/careless.csv --feedback-dir data/careless-feedback -q

echo
echo "== other task types: multihead (a softmax per head) on the embedded shapes dataset"
SHAPES=data/shapes
[[ -f "$SHAPES/labels.csv" ]] || "$BIN/voc-prep" shapes --out "$SHAPES" --images 180 --size 48
"$BIN/voc-prep" csv --file "$SHAPES/labels.csv" --task multihead --size 32 --out data/processed_heads -q
"$BIN/train" --data data/processed_heads --model small_cnn --epochs 30 --lr 1e-3 --patience 10 --runs-dir data/runs_heads -q
"$BIN/evaluate" --data data/processed_heads --runs-dir data/runs_heads
"$BIN/predict" --run data/runs_heads/best --format jsonl -q "$SHAPES"/images/red_square/0011.png
