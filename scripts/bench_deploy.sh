#!/usr/bin/env bash
# Deployment-grade behaviour of `serve`, measured on this machine in one run (EfficientNet-Lite0
# at 224 px, the photos of bench_common.sh):
# 1. /queue does not stall /predict: /predict latency at concurrency 1 alone, then while /queue
#    scores an inbox of INBOX photos (target: p99 within 2x of alone).
# 2. Memory over a bounded soak: SOAK requests at concurrency 8; serve's RSS after warm-up and
#    at the end (target: within 10%).
# 3. Two replicas on one runs directory under load while one promotes a retrain job: failed
#    requests on each (target: 0), and how long after the promotion the other serves the new
#    run (target: within --poll-ms plus its load time).
# 4. Hostile neighbours: /predict at concurrency 1 while 8 clients send bulk requests of
#    BULK photos of 12 megapixels each, and while STALLED Label Studio predicts wait on an
#    image host that never answers in time (target: p99 within 2x of alone).
source "$(dirname "$0")/bench_common.sh"
INBOX=${INBOX:-1000}
SOAK=${SOAK:-20000}
BULK=${BULK:-16}
STALLED=${STALLED:-200}
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha > /dev/null || cargo install oha --locked

serve_fixture
mkdir -p "$TMP/inbox"
cp "${photos[@]:1:$INBOX}" "$TMP/inbox/"

wait_up() {
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/ready" > /dev/null && return 0; sleep 0.1; done
  echo "bench-deploy: serve on port $1 did not start" >&2; return 1
}
# oha_stats ARGS...: "rps p50_ms p99_ms failed" of one oha run on /predict.
oha_stats() {
  local out
  out=$(mktemp -p "$TMP" oha-XXXXXX.json)
  oha --no-tui --output-format json -m POST -T "multipart/form-data; boundary=$boundary" -D "$TMP/body" "$@" > "$out"
  "$PY" - "$out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
# oha -z cancels the requests in flight at its deadline: those are not failures.
errors = {k: v for k, v in s.get("errorDistribution", {}).items() if "deadline" not in k}
bad = sum(v for k, v in s.get("statusCodeDistribution", {}).items() if k != "200") + sum(errors.values())
lat = s["latencyPercentiles"]
print(round(s["summary"]["requestsPerSec"], 1), round(lat["p50"] * 1000, 1), round(lat["p99"] * 1000, 1), bad)
PY
}
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

port=$(( 20000 + RANDOM % 10000 ))
target/release/serve --run "$run" --addr "127.0.0.1:$port" --inbox "$TMP/inbox" 2> "$TMP/serve.log" &
pid=$!
wait_up "$port"
url="http://127.0.0.1:$port"
oha_stats -n 30 -c 1 "$url/predict" > /dev/null
read -r alone_rps alone_p50 alone_p99 alone_bad < <(oha_stats -n 300 -c 1 "$url/predict")
start=$(date +%s.%N)
curl -sf "$url/queue?k=10" > "$TMP/queue.json" &
queue_pid=$!
sleep 0.3
read -r q_rps q_p50 q_p99 q_bad < <(oha_stats -n 300 -c 1 "$url/predict")
oha_end=$(date +%s.%N)
wait "$queue_pid"
queue_s=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $start}")
overlap=$(awk "BEGIN{print ($oha_end < $start + $queue_s) ? \"the whole load ran during the scoring\" : \"the scoring ended before the load\"}")
scored=$("$PY" -c "import json,sys; q=json.load(open(sys.argv[1])); print(q['candidates'] + q['skipped'] + q['corrected'])" "$TMP/queue.json")

# Bulk neighbours: 8 clients sending BULK 4000x3000 photos per request.
"$PY" - "$photo" "$TMP/bulk-body" "$BULK" <<'PY'
import io, sys
from PIL import Image
photo, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
buf = io.BytesIO()
Image.open(photo).convert("RGB").resize((4000, 3000)).save(buf, "JPEG", quality=85)
with open(out, "wb") as f:
    for i in range(n):
        f.write(b"--vocml-bench-boundary\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big%d.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n" % i)
        f.write(buf.getvalue())
        f.write(b"\r\n")
    f.write(b"--vocml-bench-boundary--\r\n")
PY
oha --no-tui --output-format json -m POST -T "multipart/form-data; boundary=$boundary" -D "$TMP/bulk-body" -z 60s -c 8 "$url/predict" > "$TMP/bulk.json" &
bulk_pid=$!
sleep 3
read -r b8_rps b8_p50 b8_p99 b8_bad < <(oha_stats -n 300 -c 1 "$url/predict")
kill -INT "$bulk_pid" 2> /dev/null || true
wait "$bulk_pid" || true
bulk_images=$("$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print(round(s['summary']['requestsPerSec'] * $BULK, 1))" "$TMP/bulk.json" 2> /dev/null || echo "?")

oha_stats -n 1000 -c 8 "$url/predict" > /dev/null
rss_warm=$(rss_mib "$pid")
read -r soak_rps soak_p50 soak_p99 soak_bad < <(oha_stats -n "$SOAK" -c 8 "$url/predict")
rss_end=$(rss_mib "$pid")
kill -TERM "$pid"; wait "$pid" || true

# A Label Studio image host that stalls 60 s, and STALLED backend predicts waiting on it.
hp=$(( port + 3 ))
"$PY" - "$hp" <<'PY' &
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Stall(BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(60)
        self.send_response(404); self.end_headers()
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Stall).serve_forever()
PY
host_pid=$!
ps=$(( port + 4 ))
target/release/serve --run "$run" --addr "127.0.0.1:$ps" --label-studio-url "http://127.0.0.1:$hp" 2> "$TMP/serve-ls.log" &
ls_pid=$!
wait_up "$ps"
surl="http://127.0.0.1:$ps"
oha_stats -n 30 -c 1 "$surl/predict" > /dev/null
read -r l_alone_rps l_alone_p50 l_alone_p99 l_alone_bad < <(oha_stats -n 300 -c 1 "$surl/predict")
"$PY" - "$TMP/ls-body.json" <<'PY'
import json, sys
choices = "".join(f'<Choice value="{c}"/>' for c in ["person", "chair", "dog", "sofa"])
config = f'<View><Image name="p" value="$image"/><Choices name="c" toName="p" choice="multiple">{choices}</Choices></View>'
body = {"project": 1, "label_config": config, "tasks": [{"id": 1, "data": {"image": "/data/upload/1/stalls.jpg"}}]}
open(sys.argv[1], "w").write(json.dumps(body))
PY
oha --no-tui -m POST -T application/json -D "$TMP/ls-body.json" -z 40s -c "$STALLED" -t 100s "$surl/label-studio/predict" > /dev/null 2>&1 &
stall_pid=$!
sleep 3
read -r st_rps st_p50 st_p99 st_bad < <(oha_stats -n 300 -c 1 "$surl/predict")
kill -INT "$stall_pid" 2> /dev/null || true
kill -TERM "$ls_pid" "$host_pid" 2> /dev/null || true
wait "$stall_pid" "$ls_pid" "$host_pid" 2> /dev/null || true

# Two replicas on one runs directory; replica A promotes a retrain (forced) under load.
mkdir -p "$TMP/shared"
cp -r "$run" "$TMP/shared/"
ln -s "$(basename "$run")" "$TMP/shared/best"
pa=$(( port + 1 )); pb=$(( port + 2 ))
for p in $pa $pb; do
  target/release/serve --runs "$TMP/shared" --addr "127.0.0.1:$p" --poll-ms 500 --retrain-epochs 5 2>> "$TMP/replicas.log" &
done
wait_up "$pa"; wait_up "$pb"
id=$(curl -sf -F "files=@$photo" "http://127.0.0.1:$pa/predict" | "$PY" -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
oha_stats -z 40s -c 4 "http://127.0.0.1:$pa/predict" > "$TMP/load-a" &
la=$!
oha_stats -z 40s -c 4 "http://127.0.0.1:$pb/predict" > "$TMP/load-b" &
lb=$!
sleep 2
job=$(curl -sf -H 'Content-Type: application/json' -d "{\"corrections\":[{\"id\":\"$id\",\"labels\":[\"dog\"]}],\"force\":true}" \
  "http://127.0.0.1:$pa/retrain" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['id'])")
while :; do
  state=$(curl -sf "http://127.0.0.1:$pa/jobs/$job" | "$PY" -c "import json,sys; j=json.load(sys.stdin); print(j['state'], (j.get('outcome') or {}).get('run'))")
  [[ $state == running* ]] || break
  sleep 0.05
done
promoted=$(date +%s.%N)
new_run=${state#* }
while [[ $(curl -sf "http://127.0.0.1:$pb/model" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['run'])") != "$new_run" ]]; do sleep 0.02; done
swap_ms=$(awk "BEGIN{printf \"%.0f\", 1000 * ($(date +%s.%N) - $promoted)}")
wait "$la" "$lb"
read -r a_rps _ _ a_bad < "$TMP/load-a"
read -r b_rps _ _ b_bad < "$TMP/load-b"
pkill -TERM -f "serve --runs $TMP/shared" || true
wait || true

echo "bench-deploy: $DATA_NAME photos, EfficientNet-Lite0 224px, cpu, $(nproc) cores, $(date -u +%F)"
printf '%-44s %9s %9s %9s %7s\n' "case" "req/s" "p50 ms" "p99 ms" errors
printf '%-44s %9s %9s %9s %7s\n' "/predict alone (c=1)" "$alone_rps" "$alone_p50" "$alone_p99" "$alone_bad"
printf '%-44s %9s %9s %9s %7s\n' "/predict during /queue of $scored photos (c=1)" "$q_rps" "$q_p50" "$q_p99" "$q_bad"
echo "  p99 during the scoring / alone: $(awk "BEGIN{printf \"%.2f\", $q_p99 / $alone_p99}")x (target <= 2x); /queue took ${queue_s} s; $overlap"
printf '%-44s %9s %9s %9s %7s\n' "/predict while 8 clients send $BULK x 12 MP (c=1)" "$b8_rps" "$b8_p50" "$b8_p99" "$b8_bad"
echo "  p99 / alone: $(awk "BEGIN{printf \"%.2f\", $b8_p99 / $alone_p99}")x (target <= 2x); the bulk clients scored $bulk_images photos/s meanwhile"
printf '%-44s %9s %9s %9s %7s\n' "/predict alone, second server (c=1)" "$l_alone_rps" "$l_alone_p50" "$l_alone_p99" "$l_alone_bad"
printf '%-44s %9s %9s %9s %7s\n' "/predict while $STALLED LS predicts stall (c=1)" "$st_rps" "$st_p50" "$st_p99" "$st_bad"
echo "  p99 / alone: $(awk "BEGIN{printf \"%.2f\", $st_p99 / $l_alone_p99}")x (target <= 2x)"
printf '%-44s %9s %9s %9s %7s\n' "soak: $SOAK requests (c=8)" "$soak_rps" "$soak_p50" "$soak_p99" "$soak_bad"
echo "  RSS after warm-up ${rss_warm} MiB, after the soak ${rss_end} MiB: $(awk "BEGIN{printf \"%+.1f\", 100 * ($rss_end - $rss_warm) / $rss_warm}")% (target within 10%)"
echo "replicas on one runs directory, 40 s at c=4 each, A promotes a retrain job ($job -> $new_run):"
echo "  failed requests: A $a_bad of $(awk "BEGIN{printf \"%.0f\", $a_rps * 40}"), B $b_bad of $(awk "BEGIN{printf \"%.0f\", $b_rps * 40}") (target 0); B served the new run ${swap_ms} ms after the promotion (--poll-ms 500)"
