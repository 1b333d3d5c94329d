#!/usr/bin/env bash
# predict's images/s for docs/quality.md's frontier table: each RUN (a run directory, an
# ensemble run from `evaluate --ensemble` included) scores the first N (default 200) JPEGs of
# VOC_ROOT as the run recorded (flip TTA where the recipe sets it), decoding, resizing and
# start-up included, REPEAT times (default 2), timed by benches/measure.py; prints the fastest
# try's seconds, images/s and peak RSS per run.
# Usage: benches/predict_speed.sh RUN...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
B=${B:-target/release}
VOC_ROOT=${VOC_ROOT:-../shared/data/voc2007-train/VOCdevkit/VOC2007}
N=${N:-200}
REPEAT=${REPEAT:-2}
if [[ $# -eq 0 ]]; then
  echo "usage: benches/predict_speed.sh RUN..." >&2
  exit 2
fi
mapfile -t all < <(find "$VOC_ROOT/JPEGImages" -name '*.jpg' 2>/dev/null | sort)
if [[ ${#all[@]} -lt $N ]]; then
  echo "predict_speed: ${#all[@]} JPEGs in $VOC_ROOT/JPEGImages, $N needed; set VOC_ROOT=/path/to/VOCdevkit/VOC2007 or N" >&2
  exit 1
fi
photos=$(mktemp -d)
trap 'rm -rf "$photos" "$photos.err"' EXIT
for f in "${all[@]:0:$N}"; do ln -s "$(realpath "$f")" "$photos/"; done
echo "| run | photos | seconds (best of $REPEAT) | images/s | peak RSS MiB |"
echo "|---|---|---|---|---|"
for run in "$@"; do
  tries=()
  for _ in $(seq "$REPEAT"); do
    out=$("$PY" benches/measure.py "$B/predict" --run "$run" "$photos" 2>"$photos.err") \
      || { echo "predict_speed: predict failed on $run: $(tail -n 1 "$photos.err")" >&2; exit 1; }
    tries+=("$out")
  done
  read -r s peak < <(printf '%s\n' "${tries[@]}" | sort -n | head -n 1)
  "$PY" -c "import sys; r, n, s, p = sys.argv[1:]; print(f'| {r} | {n} | {float(s):.1f} | {int(n) / float(s):.1f} | {p} |')" "$run" "$N" "$s" "$peak"
done
