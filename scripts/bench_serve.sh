#!/usr/bin/env bash
# serve vs the reference system's stack (FastAPI + uvicorn + PyTorch, benches/peer/) serving
# the same EfficientNet-Lite0 run: oha (HTTP load generator) POSTs one photo per request
# (multipart `files`) at concurrency 1, 8 and 32; images/s and p50/p99 latency side by side,
# plus the batch ceiling of this machine: `predict` on the same photo in one process (decode +
# model, no HTTP; start-up removed by timing two folder sizes). Same machine, one run. serve is
# also loaded through the Open Inference Protocol: binary tensor data over HTTP (oha, the body
# tritonclient sends) and gRPC ModelInfer (examples/grpc_load.rs, one connection per worker).
source "$(dirname "$0")/bench_common.sh"
DEVICE=${DEVICE:-cpu}
CONCURRENCY=${CONCURRENCY:-"1 8 32"}
REQUESTS=${REQUESTS:-"150 400 800"}
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha > /dev/null || cargo install oha --locked
"$PY" -c "import fastapi, uvicorn, multipart" 2> /dev/null || "$PY" -m pip install -q fastapi uvicorn python-multipart

serve_fixture
# The engine serve and the ceiling's predict run: ONNX Runtime on the run's exported file on
# the CPU (ENGINE=torch for libtorch).
ENGINE=${ENGINE:-onnx}
[[ $DEVICE == cpu ]] || ENGINE=torch
[[ $ENGINE == onnx ]] && target/release/export -q --run "$run" > /dev/null
port_ours=$(( 20000 + RANDOM % 10000 )); port_peer=$(( port_ours + 1 )); port_grpc=$(( port_ours + 2 ))
# The OIP binary body: JSON header, then the photo as one BYTES element (4-byte length first).
"$PY" - "$photo" "$TMP/oip-body" > "$TMP/oip-header-length" <<'PY'
import json, struct, sys
photo = open(sys.argv[1], "rb").read()
head = json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(photo) + 4}}],
                   "parameters": {"binary_data_output": True}}).encode()
open(sys.argv[2], "wb").write(head + struct.pack("<I", len(photo)) + photo)
print(len(head))
PY
cargo build --release --example grpc_load -q

# wait_up PORT LOG PATH: until the server answers PATH with 200 (60 s at most): serve's /ready
# (its model is loaded), the peer's /health (it loads its model before it listens).
wait_up() {
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1$3" > /dev/null && return 0; sleep 0.1; done
  echo "bench-serve: server on port $1 did not start:" >&2; tail -5 "$2" >&2; return 1
}
# load NAME URL OHA_ARGS...: one row per concurrency level, "c rps p50 p99 errors", in $TMP/NAME.
load() {
  local name=$1 url=$2; shift 2
  local requests=($REQUESTS) i=0
  : > "$TMP/$name"
  for c in $CONCURRENCY; do
    local n=${requests[$i]}; i=$(( i + 1 ))
    oha -n 20 -c 1 --no-tui "$@" "$url" > /dev/null
    oha -n "$n" -c "$c" --no-tui --output-format json "$@" "$url" > "$TMP/oha.json"
    "$PY" - "$TMP/oha.json" "$c" >> "$TMP/$name" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
codes = s.get("statusCodeDistribution", {})
bad = sum(v for k, v in codes.items() if k != "200")
lat = s["latencyPercentiles"]
print(sys.argv[2], round(s["summary"]["requestsPerSec"], 1), round(lat["p50"] * 1000, 1), round(lat["p99"] * 1000, 1), bad)
PY
  done
}
MULTIPART=(-m POST -T "multipart/form-data; boundary=$boundary" -D "$TMP/body")
OIP_BINARY=(-m POST -T application/octet-stream -H "Inference-Header-Content-Length: $(cat "$TMP/oip-header-length")" -D "$TMP/oip-body")

target/release/serve --runs "$TMP/runs" --run "$run" --addr "127.0.0.1:$port_ours" --grpc-addr "127.0.0.1:$port_grpc" \
  --device "$DEVICE" --engine "$ENGINE" ${SERVE_ARGS:-} 2> "$TMP/serve.log" &
ours_pid=$!
wait_up "$port_ours" "$TMP/serve.log" /ready
load vocml "http://127.0.0.1:$port_ours/predict" "${MULTIPART[@]}"
load oip-binary "http://127.0.0.1:$port_ours/v2/models/vocml/infer" "${OIP_BINARY[@]}"
requests=($REQUESTS) i=0
: > "$TMP/oip-grpc"
for c in $CONCURRENCY; do
  echo "$c $(target/release/examples/grpc_load "127.0.0.1:$port_grpc" vocml "$photo" "${requests[$i]}" "$c")" >> "$TMP/oip-grpc"
  i=$(( i + 1 ))
done
kill -TERM "$ours_pid"; wait "$ours_pid" || true
"$PY" benches/peer/serve_fastapi.py "$run" "$port_peer" 2> "$TMP/peer.log" &
peer_pid=$!
wait_up "$port_peer" "$TMP/peer.log" /health
load peer "http://127.0.0.1:$port_peer/predict" "${MULTIPART[@]}"
kill -TERM "$peer_pid"; wait "$peer_pid" || true

# Ceiling: predict on copies of the photo, two sizes, start-up removed.
mkdir -p "$TMP/few" "$TMP/many"
for i in $(seq 40); do cp "$photo" "$TMP/few/$i.jpg"; done
for i in $(seq 400); do cp "$photo" "$TMP/many/$i.jpg"; done
read -r t_few _ < <(measure target/release/predict -q --run "$run" --device "$DEVICE" --engine "$ENGINE" --output "$TMP/few.csv" "$TMP/few")
read -r t_many _ < <(measure target/release/predict -q --run "$run" --device "$DEVICE" --engine "$ENGINE" --output "$TMP/many.csv" "$TMP/many")
ceiling=$(awk "BEGIN{printf \"%.1f\", 360 / ($t_many - $t_few)}")

echo "bench-serve: one $DATA_NAME photo per request, EfficientNet-Lite0 224px, $DEVICE ($ENGINE engine), $(nproc) cores, $(date -u +%F)"
printf '%-5s %-28s %10s %9s %9s %7s %11s\n' conc server "images/s" "p50 ms" "p99 ms" errors "vs peer"
paste -d' ' "$TMP/vocml" "$TMP/peer" "$TMP/oip-binary" "$TMP/oip-grpc" | while read -r c r50 p50 p99 bad _ pr pp50 pp99 pbad _ br bp50 bp99 bbad _ gr gp50 gp99 gbad; do
  printf '%-5s %-28s %10s %9s %9s %7s %10.2fx\n' "$c" "vocml serve" "$r50" "$p50" "$p99" "$bad" "$(awk "BEGIN{print $r50 / $pr}")"
  printf '%-5s %-28s %10s %9s %9s %7s %10.2fx\n' "$c" "vocml serve, OIP binary HTTP" "$br" "$bp50" "$bp99" "$bbad" "$(awk "BEGIN{print $br / $pr}")"
  printf '%-5s %-28s %10s %9s %9s %7s %10.2fx\n' "$c" "vocml serve, OIP gRPC" "$gr" "$gp50" "$gp99" "$gbad" "$(awk "BEGIN{print $gr / $pr}")"
  printf '%-5s %-28s %10s %9s %9s %7s %11s\n' "$c" "FastAPI+uvicorn+PyTorch" "$pr" "$pp50" "$pp99" "$pbad" "1.00x"
done
last=$(tail -1 "$TMP/vocml" | cut -d' ' -f2)
echo "ceiling (predict in one process, no HTTP): $ceiling images/s; vocml serve at concurrency $(tail -1 "$TMP/vocml" | cut -d' ' -f1): $(awk "BEGIN{printf \"%.0f\", 100 * $last / $ceiling}")% of it"
