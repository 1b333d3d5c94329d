#!/usr/bin/env bash
# Two builds of vocml on the demo's runs, in one go on this machine: are their outputs byte
# for byte the same, and is the new one as fast? For refactors that must change nothing.
#   bash scripts/compare_builds.sh BEFORE_BIN_DIR [AFTER_BIN_DIR]   (after: target/release)
# Needs `make demo` first (runs/best, data/synth-voc, data/runs_heads). Compared:
# - predict CSV and JSON lines of the 240 demo photos (libtorch and ONNX Runtime; libtorch
#   with flip TTA),
#   and of the multihead shapes run;
# - evaluate's evaluation.json and thresholds.json (the timing field left out) on each copy;
# - serve: /predict, /v2 JSON inference and /model answers for five photos.
# Speed: predict of the 240 photos and serve's /predict under oha (c=1 and c=8), each build
# ROUNDS times, alternating; medians and after/before ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$(realpath "${1:?usage: compare_builds.sh BEFORE_BIN_DIR [AFTER_BIN_DIR]}")
AFTER=$(realpath "${2:-target/release}")
ROUNDS=${ROUNDS:-3}
PY=.venv/bin/python
export PATH="$HOME/.cargo/bin:$PATH"
for need in runs/best data/synth-voc/JPEGImages data/runs_heads/best; do
  [[ -e $need ]] || { echo "compare-builds: $need is missing: run 'make demo' first" >&2; exit 1; }
done
command -v oha > /dev/null || cargo install oha --locked
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2> /dev/null || true; rm -rf "$TMP"' EXIT
photos=(data/synth-voc/JPEGImages/*.jpg)
shape=$(ls data/shapes/images/*/*.png | head -1)

# outputs NAME BIN: everything compared, written under $TMP/NAME/out.
outputs() {
  local name=$1 bin=$2 out=$TMP/$1/out
  mkdir -p "$out"
  cp -rL runs/best "$TMP/$name/run"
  cp -rL data/runs_heads/best "$TMP/$name/heads"
  local run=$TMP/$name/run
  "$bin/export" -q --run "$run" > /dev/null
  for engine in torch onnx; do
    "$bin/predict" -q --run "$run" --engine "$engine" "${photos[@]}" > "$out/predict-$engine.csv"
    "$bin/predict" -q --run "$run" --engine "$engine" --format jsonl --top-k 2 "${photos[@]:0:20}" > "$out/predict-$engine.jsonl"
  done
  "$bin/predict" -q --run "$run" --engine torch --tta --format jsonl "${photos[@]:0:20}" > "$out/predict-torch-tta.jsonl"
  "$bin/predict" -q --run "$TMP/$name/heads" --format jsonl "$shape" > "$out/predict-multihead.jsonl"
  "$bin/evaluate" -q --data processed_data --run "$run" --engine torch > /dev/null
  "$PY" -c "import json,sys; e=json.load(open(sys.argv[1])); e.pop('inference_ms_per_image'); e.pop('run'); print(json.dumps(e, indent=1, sort_keys=True))" \
    "$run/evaluation.json" > "$out/evaluation.json"
  cp "$run/thresholds.json" "$out/thresholds.json"
  local port=$(( 20000 + RANDOM % 10000 ))
  "$bin/serve" --runs "$TMP/$name" --run "$run" --engine torch --addr "127.0.0.1:$port" 2> "$TMP/$name/serve.log" &
  local pid=$!
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/ready" > /dev/null && break; sleep 0.1; done
  local files=()
  for p in "${photos[@]:0:5}"; do files+=(-F "files=@$p"); done
  curl -sf "${files[@]}" "http://127.0.0.1:$port/predict" | "$PY" -m json.tool --sort-keys > "$out/serve-predict.json"
  "$PY" - "${photos[0]}" > "$TMP/$name/v2.json" <<'PY'
import base64, json, sys
photo = base64.b64encode(open(sys.argv[1], "rb").read()).decode()
print(json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [photo],
                              "parameters": {"content_type": "base64"}}]}))
PY
  curl -sf -H 'content-type: application/json' --data-binary @"$TMP/$name/v2.json" \
    "http://127.0.0.1:$port/v2/models/vocml/infer" | "$PY" -m json.tool --sort-keys > "$out/serve-v2.json"
  curl -sf "http://127.0.0.1:$port/model" | "$PY" -c "import json,sys; m=json.load(sys.stdin); [m.pop(k, None) for k in ('run', 'run_dir', 'loaded_at', 'uptime_s')]; print(json.dumps(m, indent=1, sort_keys=True))" > "$out/serve-model.json"
  kill "$pid"; wait "$pid" 2> /dev/null || true
}
outputs before "$BEFORE"
outputs after "$AFTER"
same=0; differ=0
for f in "$TMP"/before/out/*; do
  n=$(basename "$f")
  if cmp -s "$f" "$TMP/after/out/$n"; then same=$((same + 1)); else differ=$((differ + 1)); echo "DIFFERS: $n"; diff "$f" "$TMP/after/out/$n" | head -10 || true; fi
done
echo "outputs: $same identical, $differ differ"

# Speed, alternating builds.
declare -A t
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
serve_p50() { # BIN C: p50 ms of /predict for 10 s at concurrency C
  local port=$(( 20000 + RANDOM % 10000 ))
  "$1/serve" --runs "$TMP/before" --run "$TMP/before/run" --engine torch --addr "127.0.0.1:$port" 2> /dev/null &
  local pid=$!
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/ready" > /dev/null && break; sleep 0.1; done
  oha -z 10s -c "$2" --no-tui --output-format json -m POST -F "files=@${photos[0]}" "http://127.0.0.1:$port/predict" > "$TMP/oha.json" 2> /dev/null
  kill "$pid"; wait "$pid" 2> /dev/null || true
  "$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print(round(1000 * s['latencyPercentiles']['p50'], 2), round(s['summary']['requestsPerSec'], 1))" "$TMP/oha.json"
}
for round in $(seq "$ROUNDS"); do
  for name in before after; do
    bin=$BEFORE; [[ $name == after ]] && bin=$AFTER
    s=$(date +%s.%N)
    "$bin/predict" -q --run "$TMP/before/run" --engine torch "${photos[@]}" > /dev/null
    t[$name-predict]+="$(awk "BEGIN{print $(date +%s.%N) - $s}") "
    read -r p50 rps < <(serve_p50 "$bin" 1); t[$name-c1]+="$p50 "; t[$name-c1rps]+="$rps "
    read -r p50 rps < <(serve_p50 "$bin" 8); t[$name-c8]+="$p50 "; t[$name-c8rps]+="$rps "
  done
done
echo "speed, median of $ROUNDS alternating rounds, $(nproc) cores, $(date -u +%F):"
printf '%-40s %10s %10s %7s\n' case before after ratio
for k in predict:s c1:ms c1rps:req/s c8:ms c8rps:req/s; do
  key=${k%%:*}; unit=${k#*:}
  b=$(median ${t[before-$key]}); a=$(median ${t[after-$key]})
  label=$key; case $key in predict) label="predict 240 photos (s)";; c1) label="serve /predict p50 c=1 (ms)";; c1rps) label="serve /predict c=1 (req/s)";; c8) label="serve /predict p50 c=8 (ms)";; c8rps) label="serve /predict c=8 (req/s)";; esac
  printf '%-40s %10.2f %10.2f %7.3f\n' "$label" "$b" "$a" "$(awk "BEGIN{print $a / $b}")"
done
[[ $differ == 0 ]]
