#!/usr/bin/env bash
# make quality-cv: recipes compared by stratified k-fold cross-validation on real VOC photos,
# so a ranking does not rest on one 199-image test split. The photos (VOC_ROOT's `train`
# list, 4 classes unless a recipe's `# voc-prep:` line says otherwise) are dealt into FOLDS
# folds (voc-prep --fold I/K, split seed 42): for fold I, fold I is the test split and the
# rest is cut 70:15 into train and val, which drive early stopping and the tuned thresholds as
# in any run. Every image is scored once, by the models that did not see it. Each case (as in
# make quality: NAME=RECIPE[:FLAGS], FLAGS comma-separated, `+` for a comma inside a value)
# trains once per fold with seed 42; the report gives, per case, mean ± sd over folds of
# macro-F1 at 0.5 and at the tuned thresholds and mAP, the paired per-fold difference against
# the first case with its 95% interval (t over folds), train seconds and peak RSS. A case
# NAME=+A+B is, per fold, the ensemble (evaluate --ensemble) of the earlier cases A and B
# (same input size; its train seconds are the sum of theirs).
# Finished folds are kept in OUT, so a rerun only does what is missing (a fold evaluated
# before evaluate reported the shrunk threshold rule is evaluated again).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
B=${B:-target/release}
VOC_ROOT=${VOC_ROOT:-../shared/data/voc2007-train/VOCdevkit/VOC2007}
FOLDS=${FOLDS:-5}
CASES=${CASES:-reference=voc4-reference best=voc4-best}
OUT=${OUT:-target/quality-cv}
VOC_PREP_FLAGS=${VOC_PREP_FLAGS:---labels imagesets --image-set train}
if [[ ! -d "$VOC_ROOT/JPEGImages" ]]; then
  echo "make quality-cv: no VOC photos in $VOC_ROOT; set VOC_ROOT=/path/to/VOCdevkit/VOC2007" >&2
  exit 1
fi
mkdir -p "$OUT"

# fold_data SIZE FOLD [VOC-PREP FLAGS...]: the data of fold FOLD at SIZE (prepared once).
fold_data() {
  local size=$1 fold=$2
  shift 2
  local tag
  tag=$(echo "$*" | sed -e 's/--classes all/voc20/' -e 's/[^A-Za-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
  local dir="$OUT/data-$size${tag:+-$tag}-fold$fold-of$FOLDS"
  if [[ ! -f "$dir/manifest.json" ]]; then
    # shellcheck disable=SC2086
    "$B/voc-prep" --voc-root "$VOC_ROOT" $VOC_PREP_FLAGS --size "$size" --split 0.7,0.15,0.15 --seed 42 \
      --fold "$fold/$FOLDS" "$@" --out "$dir" --force -q >&2
  fi
  echo "$dir"
}

# ensemble NAME A+B+...: per fold, the ensemble of those cases' runs, scored on their test split.
ensemble() {
  local name=$1 members=$2 fold
  for fold in $(seq "$FOLDS"); do
    local dir="$OUT/$name/fold$fold"
    if [[ -f "$dir/seconds" ]]; then
      current_evaluation "$dir" "$(cat "$OUT/${members%%+*}/fold$fold/data")"
      continue
    fi
    rm -rf "$dir"
    mkdir -p "$dir/runs"
    local args=() seconds=0 peak=0 m data=""
    for m in ${members//+/ }; do
      local src="$OUT/$m/fold$fold"
      [[ -f "$src/seconds" ]] || { echo "make quality-cv: $name needs case $m (fold $fold) first" >&2; exit 1; }
      local run
      run=$(find "$src/runs" -mindepth 1 -maxdepth 1 -type d -not -name '.*' | head -1)
      ln -s "$(cd "$run" && pwd)" "$dir/runs/.$m"
      args+=(--run "$dir/runs/.$m")
      data=${data:-$(cat "$src/data")}
      read -r s p < "$src/seconds"
      seconds=$("$PY" -c "print($seconds + $s)")
      peak=$("$PY" -c "print(max($peak, $p))")
    done
    echo "quality-cv: $name = ensemble of ${members//+/, } fold $fold/$FOLDS" >&2
    "$B/evaluate" --data "$data" "${args[@]}" --ensemble --no-select -q > "$dir/evaluate.log"
    echo "$seconds $peak" > "$dir/seconds"
  done
}

# current_evaluation FOLD_DIR DATA: evaluate FOLD_DIR's run again when its evaluation
# predates the threshold rules (no `shrunk` metrics).
current_evaluation() {
  local dir=$1 data=$2 run
  run=$(find "$dir/runs" -mindepth 1 -maxdepth 1 -type d -not -name '.*' | head -1)
  if ! grep -q '"shrunk"' "$run/evaluation.json"; then
    echo "quality-cv: evaluating $run again (threshold rules)" >&2
    "$B/evaluate" --data "$data" --run "$run" --no-select -q > "$dir/evaluate.log"
  fi
}

names=()
for case in $CASES; do
  name=${case%%=*}
  spec=${case#*=}
  if [[ $spec == +* ]]; then
    names+=("$name")
    ensemble "$name" "${spec#+}"
    continue
  fi
  recipe=${spec%%:*}
  flags=$([[ $spec == *:* ]] && echo "${spec#*:}" | tr , ' ' | tr + , || true)
  names+=("$name")
  file=configs/$recipe.toml
  size=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb")).get("image_size", 224))' "$file")
  if [[ " $flags " =~ \ --image-size\ ([0-9]+) ]]; then size=${BASH_REMATCH[1]}; fi
  prep=$(sed -n 's/^# voc-prep: *//p' "$file" | head -1)
  for fold in $(seq "$FOLDS"); do
    dir="$OUT/$name/fold$fold"
    if [[ -f "$dir/seconds" ]]; then
      current_evaluation "$dir" "$(cat "$dir/data")"
      continue
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    data=$(fold_data "$size" "$fold" $prep)
    echo "quality-cv: $name = $recipe ${flags:+$flags }fold $fold/$FOLDS (${size} px)" >&2
    # shellcheck disable=SC2086
    "$PY" benches/measure.py "$B/train" --config "$file" --data "$data" --seed 42 $flags \
      --runs-dir "$dir/runs" -q > "$dir/seconds.tmp" 2> "$dir/train.log"
    run=$(find "$dir/runs" -mindepth 1 -maxdepth 1 -type d -not -name '.*' | head -1)
    "$B/evaluate" --data "$data" --run "$run" --no-select -q > "$dir/evaluate.log"
    echo "$data" > "$dir/data"
    mv "$dir/seconds.tmp" "$dir/seconds"
  done
done
"$PY" benches/report_cv.py "$OUT" "${names[@]}" | tee "$OUT/quality-cv.md"
echo "(table in $OUT/quality-cv.md; $FOLDS folds; machine: $(nproc) cores, $(uname -m))" >&2
