#!/usr/bin/env bash
# predict's images/s for docs/quality.md's frontier table: each argument (a run directory, an
# ensemble run included, or several runs joined by `+`, which predict averages) scores the
# first N (default 200) JPEGs of VOC_ROOT as the runs recorded (flip TTA where the recipe sets
# it), decoding, resizing and start-up included, REPEAT times (default 2); prints the seconds
# and images/s of the fastest try per argument.
# Usage: benches/predict_speed.sh RUN[+RUN..]...
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-target/release}
VOC_ROOT=${VOC_ROOT:-../shared/data/voc2007-train/VOCdevkit/VOC2007}
N=${N:-200}
REPEAT=${REPEAT:-2}
photos=$(mktemp -d)
trap 'rm -rf "$photos"' EXIT
mapfile -t all < <(find "$VOC_ROOT/JPEGImages" -name '*.jpg' | sort)
for f in "${all[@]:0:$N}"; do ln -s "$(realpath "$f")" "$photos/"; done
echo "| runs | photos | seconds (best of $REPEAT) | images/s |"
echo "|---|---|---|---|"
for spec in "$@"; do
  args=()
  IFS=+ read -ra runs <<< "$spec"
  for r in "${runs[@]}"; do args+=(--run "$r"); done
  best=
  for _ in $(seq "$REPEAT"); do
    start=$(date +%s.%N)
    "$B/predict" "${args[@]}" "$photos" > /dev/null
    s=$(echo "$(date +%s.%N) - $start" | bc)
    if [[ -z $best ]] || (( $(echo "$s < $best" | bc) )); then best=$s; fi
  done
  printf '| %s | %d | %.1f | %.1f |\n' "$spec" "$N" "$best" "$(echo "$N / $best" | bc -l)"
done
