#!/usr/bin/env bash
# make quality: trains each case of CASES on real VOC photos over SEEDS, evaluates every run on
# one fixed test split, and prints per-class F1 and AP, macro/micro F1 and mAP (mean ± sd) and
# training time. A case is NAME=RECIPE[:FLAGS]: configs/RECIPE.toml with extra train flags
# (comma-separated; `+` inside a flag's value stands for a comma), e.g.
# best-288=voc4-best:--image-size,288 or wd=voc4-best:--weight-decay,0+1e-2; or NAME=+A+B: per seed, the
# ensemble (evaluate --ensemble) of the runs of the earlier cases A and B (same input size),
# e.g. lite0+lite2=+lite0-linear+lite2-linear. The first case is the baseline the last one is
# compared with. Finished seeds are kept, so a rerun only does what is missing.
#
# Data: VOC_ROOT (default ../shared/data/voc2007-train/VOCdevkit/VOC2007), its official
# `train` image list, prepared by voc-prep with its seeded stratified 70/15/15 split (split
# seed 42, the same for every recipe and training seed). A recipe's input size is its
# `image_size` key (or --image-size in FLAGS); a line `# voc-prep: FLAGS` in the recipe adds
# voc-prep flags (e.g. `--classes all` for the 20-class recipe; `--keep-empty` also trains
# on the images without any target class). Every run is scored on the same test images:
# those of the split that hold a target class, prepared at the run's size and classes; and on
# the validation split (val mAP in the table: what a recipe is chosen on).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
B=target/release
VOC_ROOT=${VOC_ROOT:-../shared/data/voc2007-train/VOCdevkit/VOC2007}
SEEDS=${SEEDS:-1 2 3}
CASES=${CASES:-reference=voc4-reference best=voc4-best}
OUT=${OUT:-target/quality}
if [[ ! -d "$VOC_ROOT/JPEGImages" ]]; then
  echo "make quality: no VOC photos in $VOC_ROOT; set VOC_ROOT=/path/to/VOCdevkit/VOC2007" >&2
  exit 1
fi
mkdir -p "$OUT"

# prepared SIZE [VOC-PREP FLAGS...]: path of the data prepared at SIZE with those flags (made
# once; the default four classes without flags keep their historical directory names).
prepared() {
  local size=$1
  shift
  local tag
  tag=$(echo "$*" | sed -e 's/--keep-empty/neg/' -e 's/--classes all/voc20/' -e 's/[^A-Za-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
  local dir="$OUT/data-$size${tag:+-$tag}"
  if [[ ! -f "$dir/manifest.json" ]]; then
    "$B/voc-prep" --voc-root "$VOC_ROOT" --labels imagesets --image-set train --size "$size" \
      --split 0.7,0.15,0.15 --seed 42 "$@" --out "$dir" --force -q >&2
  fi
  echo "$dir"
}

# first_run DIR: the run directory under DIR/runs.
first_run() {
  find "$1/runs" -mindepth 1 -maxdepth 1 -type d -not -name '.*' | head -1
}

# score_run DIR DATA: the run of DIR scored on the validation split (what recipes are chosen
# on; kept as DIR/val_evaluation.json), then on the test split (its evaluation.json, reported).
score_run() {
  local run
  run=$(first_run "$1")
  "$B/evaluate" --data "$2" --split val --run "$run" --no-select -q > /dev/null
  cp "$run/evaluation.json" "$1/val_evaluation.json"
  "$B/evaluate" --data "$2" --run "$run" --no-select -q > "$1/evaluate.log"
}

# combine NAME A+B+...: per seed, the ensemble of those cases' runs, scored on their test data.
combine() {
  local name=$1 members=$2
  for seed in $SEEDS; do
    local dir="$OUT/$name/seed$seed"
    if [[ -f "$dir/seconds" ]]; then
      [[ -f "$dir/val_evaluation.json" ]] || score_run "$dir" "$(cat "$OUT/${members%%+*}/test_data")"
      continue
    fi
    rm -rf "$dir"
    mkdir -p "$dir/runs"
    local args=() seconds=0 peak=0 m
    for m in ${members//+/ }; do
      local src="$OUT/$m/seed$seed"
      [[ -f "$src/seconds" ]] || { echo "make quality: $name needs case $m (seed $seed) first" >&2; exit 1; }
      ln -s "$(cd "$(first_run "$src")" && pwd)" "$dir/runs/.$m"
      args+=(--run "$dir/runs/.$m")
      read -r s p < "$src/seconds"
      seconds=$("$PY" -c "print($seconds + $s)")
      peak=$("$PY" -c "print(max($peak, $p))")
    done
    echo "quality: $name = ensemble of ${members//+/, } seed $seed" >&2
    "$B/evaluate" --data "$(cat "$OUT/${members%%+*}/test_data")" "${args[@]}" --ensemble --no-select -q > "$dir/evaluate.log"
    score_run "$dir" "$(cat "$OUT/${members%%+*}/test_data")"
    echo "$seconds $peak" > "$dir/seconds"
  done
}

names=()
for case in $CASES; do
  name=${case%%=*}
  spec=${case#*=}
  if [[ $spec == +* ]]; then
    names+=("$name")
    combine "$name" "${spec#+}"
    continue
  fi
  recipe=${spec%%:*}
  flags=$([[ $spec == *:* ]] && echo "${spec#*:}" | tr , ' ' | tr + , || true)
  names+=("$name")
  file=configs/$recipe.toml
  size=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb")).get("image_size", 224))' "$file")
  if [[ " $flags " =~ \ --image-size\ ([0-9]+) ]]; then size=${BASH_REMATCH[1]}; fi
  prep=$(sed -n 's/^# voc-prep: *//p' "$file" | head -1)
  # shellcheck disable=SC2086
  train_data=$(prepared "$size" $prep)
  # shellcheck disable=SC2086
  test_data=$(prepared "$size" ${prep//--keep-empty/})
  mkdir -p "$OUT/$name"
  echo "$test_data" > "$OUT/$name/test_data"
  for seed in $SEEDS; do
    dir="$OUT/$name/seed$seed"
    if [[ -f "$dir/seconds" ]]; then
      [[ -f "$dir/val_evaluation.json" ]] || score_run "$dir" "$test_data"
      continue
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "quality: $name = $recipe ${flags:+$flags }seed $seed (${size} px${prep:+, voc-prep $prep})" >&2
    # shellcheck disable=SC2086
    "$PY" benches/measure.py "$B/train" --config "$file" --data "$train_data" --seed "$seed" $flags \
      --runs-dir "$dir/runs" -q > "$dir/seconds.tmp" 2> "$dir/train.log"
    score_run "$dir" "$test_data"
    mv "$dir/seconds.tmp" "$dir/seconds"
  done
done
# The seeds of the last case as one ensemble (evaluate --ensemble), scored on the same split.
last=${names[-1]}
ens="$OUT/$last/ensemble"
if [[ ${ENSEMBLE:-1} == 1 && ! -f "$ens/done" && -f "$OUT/$last/test_data" ]]; then
  rm -rf "$ens"
  mkdir -p "$ens"
  members=()
  for seed in $SEEDS; do
    run=$(first_run "$OUT/$last/seed$seed")
    ln -s "$(cd "$run" && pwd)" "$ens/seed$seed"
    members+=(--run "$ens/seed$seed")
  done
  echo "quality: ensemble of the $last seeds" >&2
  "$B/evaluate" --data "$(cat "$OUT/$last/test_data")" "${members[@]}" --ensemble --no-select -q > "$ens/evaluate.log"
  touch "$ens/done"
fi
"$PY" benches/report_quality.py "$OUT" "${names[@]}" | tee "$OUT/quality.md"
echo "(table in $OUT/quality.md; machine: $(nproc) cores, $(uname -m))" >&2
