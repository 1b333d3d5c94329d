#!/usr/bin/env bash
# serve against the servers teams deploy for this job, each serving the same EfficientNet-Lite0
# run (224 px) on this machine, one after another, one VOC photo per request at concurrency 1,
# 8 and 32, through the protocol each speaks natively:
#   - MLServer (Seldon; ONNX Runtime on the run's exported file, adaptive batching, the
#     settings in scripts/bench_peers.sh) and vocml over Open Inference Protocol gRPC
#     ModelInfer, the request tritonclient.grpc sends (examples/grpc_load.rs; MLServer's REST
#     side takes JSON only, no binary tensors);
#   - BentoML (ONNX Runtime, adaptive batching, 2 workers) and vocml's /predict: the photo as a
#     multipart upload (oha);
#   - FastAPI + uvicorn + PyTorch (benches/peer/, the reference system's stack) against
#     /predict too; and vocml's OIP binary tensors over HTTP (the body tritonclient.http sends).
# images/s, p50/p99 latency, errors, the peak RSS of each server (its worker processes summed),
# the peers' probabilities checked against vocml's (1e-4, benches/peer/check_peers.py), and the
# batch ceiling of this machine: `predict` on the same photo in one process (decode + model, no
# HTTP; start-up removed by timing two folder sizes). PEERS="mlserver bentoml fastapi" (default)
# picks the peers.
source "$(dirname "$0")/bench_common.sh"
DEVICE=${DEVICE:-cpu}
CONCURRENCY=${CONCURRENCY:-"1 8 32"}
REQUESTS=${REQUESTS:-"150 400 800"}
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha > /dev/null || cargo install oha --locked
PEERS=${PEERS:-"mlserver bentoml fastapi"}
"$PY" -c "import fastapi, uvicorn, multipart" 2> /dev/null || "$PY" -m pip install -q fastapi uvicorn python-multipart
source "$(dirname "$0")/bench_peers.sh"
peers_install $PEERS

serve_fixture
# The engine serve and the ceiling's predict run: ONNX Runtime on the run's exported file on
# the CPU (ENGINE=torch for libtorch); the peers run that same file.
ENGINE=${ENGINE:-onnx}
[[ $DEVICE == cpu ]] || ENGINE=torch
target/release/export -q --run "$run" > /dev/null
port_http=$(( 20000 + RANDOM % 10000 )); port_grpc=$(( port_http + 1 ))
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
bentoml_body "$photo"
# Sample photos for the probability check: the first 8.
checked=("${photos[@]:0:8}")

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

# watch_rss NAME PID: the peak RSS of PID and its children while it serves, in $TMP/NAME.rss.
watch_rss() { "$PY" benches/tree_rss.py "$2" "$TMP/$1.rss" & }
# grpc NAME: grpc_load against port_grpc, one row per concurrency level, in $TMP/NAME.
grpc() {
  local requests=($REQUESTS) i=0
  : > "$TMP/$1"
  for c in $CONCURRENCY; do
    target/release/examples/grpc_load "127.0.0.1:$port_grpc" vocml "$photo" 20 1 > /dev/null
    echo "$c $(target/release/examples/grpc_load "127.0.0.1:$port_grpc" vocml "$photo" "${requests[$i]}" "$c")" >> "$TMP/$1"
    i=$(( i + 1 ))
  done
}

target/release/serve --runs "$TMP/runs" --run "$run" --addr "127.0.0.1:$port_http" --grpc-addr "127.0.0.1:$port_grpc" \
  --device "$DEVICE" --engine "$ENGINE" ${SERVE_ARGS:-} 2> "$TMP/serve.log" &
ours_pid=$!
watch_rss vocml "$ours_pid"
wait_up "$port_http" "$TMP/serve.log" /ready
load vocml "http://127.0.0.1:$port_http/predict" "${MULTIPART[@]}"
load vocml-oip-binary "http://127.0.0.1:$port_http/v2/models/vocml/infer" "${OIP_BINARY[@]}"
grpc vocml-grpc
kill -TERM "$ours_pid"; wait "$ours_pid" || true

# check_peer PYTHON ARGS...: benches/peer/check_peers.py; its verdict line, or FAILED, in check.
check=() failed_check=0
check_peer() {
  local py=$1 out; shift
  if out=$("$py" benches/peer/check_peers.py "$run" "${checked[@]}" "$@" 2>&1); then
    check+=("$(grep checked <<< "$out")")
  else
    check+=("probability check FAILED: $(tail -3 <<< "$out" | tr '\n' ' ')"); failed_check=1
  fi
}
if [[ " $PEERS " == *" mlserver "* ]]; then
  start_mlserver "$port_http" "$port_grpc"
  watch_rss mlserver "$mlserver_pid"
  grpc mlserver-grpc
  check_peer .venv/peers/mlserver/bin/python --mlserver-http "http://127.0.0.1:$port_http"
  stop_mlserver
fi
if [[ " $PEERS " == *" bentoml "* ]]; then
  start_bentoml "$port_http"
  watch_rss bentoml "$bentoml_pid"
  load bentoml "http://127.0.0.1:$port_http/predict" "${BENTOML_MULTIPART[@]}"
  check_peer .venv/peers/bentoml/bin/python --bentoml "http://127.0.0.1:$port_http"
  stop_bentoml
fi
if [[ " $PEERS " == *" fastapi "* ]]; then
  "$PY" benches/peer/serve_fastapi.py "$run" "$port_http" 2> "$TMP/fastapi.log" &
  peer_pid=$!
  watch_rss fastapi "$peer_pid"
  wait_up "$port_http" "$TMP/fastapi.log" /health
  load fastapi "http://127.0.0.1:$port_http/predict" "${MULTIPART[@]}"
  kill -TERM "$peer_pid"; wait "$peer_pid" || true
fi
sleep 0.3

# Ceiling: predict on copies of the photo, two sizes, start-up removed.
mkdir -p "$TMP/few" "$TMP/many"
for i in $(seq 40); do cp "$photo" "$TMP/few/$i.jpg"; done
for i in $(seq 400); do cp "$photo" "$TMP/many/$i.jpg"; done
read -r t_few _ < <(measure target/release/predict -q --run "$run" --device "$DEVICE" --engine "$ENGINE" --output "$TMP/few.csv" "$TMP/few")
read -r t_many _ < <(measure target/release/predict -q --run "$run" --device "$DEVICE" --engine "$ENGINE" --output "$TMP/many.csv" "$TMP/many")
ceiling=$(awk "BEGIN{printf \"%.1f\", 360 / ($t_many - $t_few)}")

echo "bench-serve: one $DATA_NAME photo per request, EfficientNet-Lite0 224px, $DEVICE (vocml: $ENGINE engine; peers: ONNX Runtime, but FastAPI: PyTorch), $(nproc) cores, $(date -u +%F)"
printf '%-5s %-36s %-22s %9s %8s %8s %6s %9s\n' conc server protocol "images/s" "p50 ms" "p99 ms" errors "peak MiB"
# row FILE NAME PROTOCOL: its rows, one per concurrency level, when it was run.
rows() {
  [[ -s $TMP/$1 ]] || return 0
  local rss; rss=$(cat "$TMP/${1%%-*}.rss" 2> /dev/null || echo -)
  while read -r c r p50 p99 bad _; do printf '%-5s %-36s %-22s %9s %8s %8s %6s %9s\n' "$c" "$2" "$3" "$r" "$p50" "$p99" "$bad" "$rss"; done < "$TMP/$1"
}
rows vocml-grpc "vocml serve" "OIP gRPC"
rows mlserver-grpc "MLServer $MLSERVER_VERSION" "OIP gRPC"
rows vocml "vocml serve" "/predict multipart"
rows bentoml "BentoML $BENTOML_VERSION" "/predict multipart"
rows fastapi "FastAPI+uvicorn+PyTorch" "/predict multipart"
rows vocml-oip-binary "vocml serve" "OIP binary HTTP"
# ratio OURS PEER NAME: vocml's images/s over the peer's at each concurrency, and p99 at the first.
ratio() {
  [[ -s $TMP/$2 ]] || return 0
  paste -d' ' "$TMP/$1" "$TMP/$2" | awk -v name="$3" '
    { line = line sprintf("  c=%s %.2fx", $1, $2 / $7); if (NR == 1) p99 = sprintf("; p99 at c=%s: %s vs %s ms (%.2fx)", $1, $4, $9, $4 / $9) }
    END { print "vocml / " name " images/s:" line p99 }'
}
ratio vocml-grpc mlserver-grpc "MLServer (OIP gRPC)"
ratio vocml bentoml "BentoML (multipart)"
ratio vocml fastapi "FastAPI+uvicorn+PyTorch (multipart)"
[[ ${#check[@]} -eq 0 ]] || printf '%s\n' "${check[@]}"
last=$(tail -1 "$TMP/vocml" | cut -d' ' -f2)
echo "ceiling (predict in one process, no HTTP): $ceiling images/s; vocml serve /predict at concurrency $(tail -1 "$TMP/vocml" | cut -d' ' -f1): $(awk "BEGIN{printf \"%.0f\", 100 * $last / $ceiling}")% of it"
exit "$failed_check"
