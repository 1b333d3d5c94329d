# Sourced by the bench scripts: strict mode, repo root, the venv's python, a temporary
# directory removed on exit, and VOC_ROOT: the real VOC2007 images of ../shared when present,
# otherwise 1,323 synthetic images from `voc-prep synth` (so `make bench` runs anywhere).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
VOC_ROOT=${VOC_ROOT:-../shared/data/voc2007-train/VOCdevkit/VOC2007}
if [[ -d "$VOC_ROOT/JPEGImages" ]]; then
  DATA_NAME="VOC2007 train"
else
  echo "($VOC_ROOT not found: using 1,323 synthetic images from voc-prep synth; set VOC_ROOT for real photos)" >&2
  target/release/voc-prep synth --out "$TMP/synth-voc" --images 1323 -q > /dev/null
  VOC_ROOT=$TMP/synth-voc
  DATA_NAME="synthetic VOC"
fi
# measure CMD...: prints "<seconds> <peak RSS MiB>" of CMD; CMD's output goes to $TMP/last.out.
measure() { "$PY" benches/measure.py "$@" 2>"$TMP/last.out"; }
# serve_fixture: what the serve benchmarks load: $run, a Lite0 run at 224 px (a short training
# on synthetic data is enough for speed); $photos and $photo, the first of them; $TMP/body, a
# multipart body of $photo as `files` with $boundary.
serve_fixture() {
  target/release/voc-prep synth --out "$TMP/voc" --images 60 -q > /dev/null
  target/release/voc-prep --voc-root "$TMP/voc" --out "$TMP/data" -q > /dev/null
  target/release/train -q --data "$TMP/data" --runs-dir "$TMP/runs" --epochs 1 > /dev/null
  run=$(ls -d "$TMP"/runs/*_efficientnet_lite0 | tail -1)
  photos=("$VOC_ROOT"/JPEGImages/*.jpg)
  photo=${photos[0]}
  boundary=vocml-bench-boundary
  { printf -- '--%s\r\nContent-Disposition: form-data; name="files"; filename="%s"\r\nContent-Type: image/jpeg\r\n\r\n' "$boundary" "$(basename "$photo")"
    cat "$photo"; printf -- '\r\n--%s--\r\n' "$boundary"; } > "$TMP/body"
}
