# Sourced by bench_serve.sh (after bench_common.sh and serve_fixture: strict mode, repo root,
# $TMP, $PY, $run with model.onnx): two more peers serving the same exported EfficientNet-Lite0
# with ONNX Runtime and vocml's preprocessing (scripts/onnx_predict.py), each in its own venv
# under .venv/peers/ and each with its adaptive batching on:
#   MLServer (benches/peer/mlserver/): Open Inference Protocol, model "vocml". Its REST side has
#     no binary tensor extension (JSON only), so it is loaded over gRPC, the request
#     tritonclient.grpc sends (raw_input_contents):
#       target/release/examples/grpc_load 127.0.0.1:GRPC_PORT vocml "$photo" N C
#   BentoML (benches/peer/bentoml/service.py): POST /predict, multipart field `images`:
#       oha -m POST -T "multipart/form-data; boundary=$boundary" -D "$TMP/bentoml-body" \
#         http://127.0.0.1:PORT/predict              ($TMP/bentoml-body from bentoml_body)
# Settings, each peer's best of the documented ones on this 2-core machine (docs/benchmarks.md):
# MLServer 2 inference workers x 1 ONNX Runtime thread (parallel_workers = cores, its docs'
# advice; 1 x 2 threads: 0.6x the images/s at concurrency 8 and 32), batches of up to 8 within
# 2 ms; BentoML 2 workers x 1 thread (workers = cores), batches of up to 8. MLSERVER_WORKERS,
# VOCML_BENTO_WORKERS and VOCML_ORT_THREADS override them.
# Pinned: the versions checked together (MLServer 1.7.1 breaks its inference workers with
# uvloop >= 0.22, SeldonIO/MLServer#2286, hence uvloop 0.21.0).
MLSERVER_VERSION=1.7.1 BENTOML_VERSION=1.4.40
MLSERVER_PKGS=(mlserver==1.7.1 uvloop==0.21.0 onnxruntime==1.32.0 pillow==13.0.0 numpy==2.4.6)
BENTOML_PKGS=(bentoml==1.4.40 onnxruntime==1.32.0 pillow==13.0.0 numpy==2.4.6)

# peer_venv NAME CHECK PACKAGES...: .venv/peers/NAME, installing PACKAGES unless CHECK (Python) runs.
peer_venv() {
  local venv=.venv/peers/$1 check=$2; shift 2
  [[ -x $venv/bin/python ]] || "$PY" -m venv "$venv"
  "$venv/bin/python" -c "$check" 2> /dev/null || "$venv/bin/pip" install -q "$@"
}
# peers_install NAME...: the venvs of the named peers (mlserver, bentoml; others are ignored).
peers_install() {
  [[ " $* " != *" mlserver "* ]] \
    || peer_venv mlserver "import mlserver, onnxruntime, PIL, numpy, uvloop; assert uvloop.__version__ < '0.22'" "${MLSERVER_PKGS[@]}"
  [[ " $* " != *" bentoml "* ]] || peer_venv bentoml "import bentoml, onnxruntime, PIL, numpy" "${BENTOML_PKGS[@]}"
}

# peer_wait NAME PID URL LOG: until URL answers 200 (120 s at most, or the server exits).
peer_wait() {
  for _ in $(seq 1200); do
    curl -sf "$3" > /dev/null && return 0
    kill -0 "$2" 2> /dev/null || break
    sleep 0.1
  done
  echo "bench-serve: $1 did not start:" >&2; tail -20 "$4" >&2; return 1
}

# start_mlserver PORT GRPC_PORT: MLServer's model repository in $TMP/mlserver (the settings of
# benches/peer/mlserver/, the run's model.onnx linked in); ports by environment, metrics off.
start_mlserver() {
  local repo=$TMP/mlserver
  mkdir -p "$repo/vocml"
  sed "s/\"parallel_workers\": 2/\"parallel_workers\": ${MLSERVER_WORKERS:-2}/" benches/peer/mlserver/settings.json > "$repo/settings.json"
  cp benches/peer/mlserver/model-settings.json "$repo/vocml/"
  ln -sf "$(cd "$run" && pwd)/model.onnx" "$repo/vocml/model.onnx"
  PYTHONPATH="$PWD/benches/peer/mlserver" MLSERVER_HOST=127.0.0.1 MLSERVER_HTTP_PORT=$1 MLSERVER_GRPC_PORT=$2 \
    MLSERVER_METRICS_DIR="$repo/.metrics" MLSERVER_ENVIRONMENTS_DIR="$repo/.envs" \
    .venv/peers/mlserver/bin/mlserver start "$repo" > "$TMP/mlserver.log" 2>&1 &
  mlserver_pid=$!
  peer_wait MLServer "$mlserver_pid" "http://127.0.0.1:$1/v2/models/vocml/ready" "$TMP/mlserver.log"
}

# start_bentoml PORT: `bentoml serve` of benches/peer/bentoml/service.py on the run's model.onnx.
start_bentoml() {
  VOCML_ONNX="$(cd "$run" && pwd)/model.onnx" BENTOML_HOME="$TMP/bentoml-home" BENTOML_DO_NOT_TRACK=true \
    .venv/peers/bentoml/bin/bentoml serve service:Vocml --working-dir benches/peer/bentoml \
    --host 127.0.0.1 --port "$1" > "$TMP/bentoml.log" 2>&1 &
  bentoml_pid=$!
  peer_wait BentoML "$bentoml_pid" "http://127.0.0.1:$1/readyz" "$TMP/bentoml.log"
}

# stop_peer PID: SIGTERM (both shut their worker processes down), then wait for it.
stop_peer() { kill -TERM "$1" 2> /dev/null || true; wait "$1" 2> /dev/null || true; }
stop_mlserver() { [[ -z ${mlserver_pid:-} ]] || stop_peer "$mlserver_pid"; mlserver_pid=; }
stop_bentoml() { [[ -z ${bentoml_pid:-} ]] || stop_peer "$bentoml_pid"; bentoml_pid=; }
# On exit (a failed step too) no peer is left running.
trap 'stop_mlserver; stop_bentoml; rm -rf "$TMP"' EXIT

# bentoml_body PHOTO: $TMP/bentoml-body, PHOTO as multipart field `images` (boundary $boundary,
# as serve_fixture's $TMP/body), and BENTOML_MULTIPART, the oha arguments that POST it.
bentoml_body() {
  { printf -- '--%s\r\nContent-Disposition: form-data; name="images"; filename="%s"\r\nContent-Type: image/jpeg\r\n\r\n' "$boundary" "$(basename "$1")"
    cat "$1"; printf -- '\r\n--%s--\r\n' "$boundary"; } > "$TMP/bentoml-body"
  BENTOML_MULTIPART=(-m POST -T "multipart/form-data; boundary=$boundary" -D "$TMP/bentoml-body")
}
