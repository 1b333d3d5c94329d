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
