#!/usr/bin/env bash
# make fuzz: libFuzzer (cargo fuzz) on every parser of untrusted bytes, FUZZ_SECONDS each
# (default 600), from generated seeds; a summary line per target (runs, seconds, crashes).
# Crashing inputs land in fuzz/artifacts/<target>/; turn each into a corpus test.
# Uses the nightly toolchain when rustup has one, else stable with RUSTC_BOOTSTRAP=1.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-600}
TARGETS=${FUZZ_TARGETS:-"npy_header voc_xml corrections_csv json_configs safetensors image_decode"}
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$HOME/.cargo/bin:$PATH"
TORCH_LIB=$(.venv/bin/python -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then TC=+nightly; else TC=; export RUSTC_BOOTSTRAP=1; fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked || exit 1
bash scripts/fuzz_seeds.sh fuzz/corpus || exit 1
cd fuzz
cargo $TC fuzz build -s none -a -O || exit 1
mkdir -p logs
failed=0
printf '%-16s %12s %8s %8s %s\n' target runs seconds crashes corpus
for t in $TARGETS; do
  cargo $TC fuzz run -s none -a -O "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" \
    -rss_limit_mb=4096 -timeout=10 -max_len=65536 -print_final_stats=1 > "logs/$t.log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
  printf '%-16s %12s %8s %8s %s\n' "$t" "$runs" "$SECONDS_EACH" "$crashes" "$(ls "corpus/$t" | wc -l) inputs"
  [[ $rc -eq 0 ]] || { failed=1; echo "fuzz: $t stopped (exit $rc): see fuzz/logs/$t.log and fuzz/artifacts/$t/" >&2; }
done
exit $failed
