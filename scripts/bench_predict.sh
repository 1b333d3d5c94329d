#!/usr/bin/env bash
# predict vs the PyTorch+torchvision peer over the same folder of real VOC photos (decode,
# resize, EfficientNet-Lite0 forward, CSV), same run, same machine, one run. Needs ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
VOC_ROOT=${VOC_ROOT:-../shared/data/voc2007-train/VOCdevkit/VOC2007}
N=${N:-600}
if [[ ! -d "$VOC_ROOT/JPEGImages" ]]; then
  echo "bench-predict: $VOC_ROOT not found; set VOC_ROOT" >&2
  exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/flat"
files=("$VOC_ROOT"/JPEGImages/*.jpg)
cp "${files[@]:0:$N}" "$TMP/flat/"
# A Lite0 run to score with (a short training on the synthetic data is enough for speed).
target/release/voc-prep synth --out "$TMP/voc" --images 60 -q > /dev/null
target/release/voc-prep --voc-root "$TMP/voc" --out "$TMP/data" -q > /dev/null
target/release/train -q --data "$TMP/data" --runs-dir "$TMP/runs" --epochs 1 > /dev/null
run=$(ls -d "$TMP"/runs/*_efficientnet_lite0 | tail -1)
s=$(date +%s.%N)
target/release/predict -q --run "$run" --output "$TMP/ours.csv" "$TMP/flat"
e=$(date +%s.%N)
ours=$(awk "BEGIN{print $e - $s}")
read -r n py < <(.venv/bin/python -W ignore benches/peer/predict_torch.py "$run" "$TMP/flat" "$TMP/py.csv")
echo "bench-predict: $n VOC photos, EfficientNet-Lite0 224px, batch 32, $(nproc) cores, $(date -u +%F)"
printf '%-36s %8s %10s %8s\n' tool seconds images/s ratio
printf '%-36s %8.1f %10.1f %8s\n' "vocml predict" "$ours" "$(awk "BEGIN{print $n / $ours}")" "1.00x"
printf '%-36s %8.1f %10.1f %7.2fx\n' "PyTorch+Pillow (DataLoader workers)" "$py" "$(awk "BEGIN{print $n / $py}")" "$(awk "BEGIN{print $py / $ours}")"
# Same probabilities (max abs difference over all rows and classes).
.venv/bin/python - "$TMP/ours.csv" "$TMP/py.csv" <<'PY'
import csv, sys
a = {r["path"].split("/")[-1]: r for r in csv.DictReader(open(sys.argv[1]))}
b = {r["path"].split("/")[-1]: r for r in csv.DictReader(open(sys.argv[2]))}
cols = [c for c in next(iter(a.values())) if c.startswith("p_")]
d = max(abs(float(a[k][c]) - float(b[k][c])) for k in a for c in cols)
print(f"max |p_vocml - p_pytorch| = {d:.4f} over {len(a)} images (resize implementations differ slightly)")
PY
