#!/usr/bin/env bash
# One training epoch per case, vocml (target/release/vocml-bench) vs PyTorch+torchvision
# (benches/peer/train_step_torch.py): 4 backbones x frozen/fine-tune x batch 16/64 x memory
# format / precision variants, on random images, same machine, one run. Prints a Markdown table.
# Environment: DEVICE (cpu|cuda, default cpu), MODES, IMAGES (per epoch at batch 16; scaled by
# batch/16), WARMUP (untimed steps), MODELS, VARIANTS (fp32 cl bf16), PY (python with torch),
# OUT (keep the JSON lines).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}
PY=${PY:-.venv/bin/python}
MODELS=${MODELS:-efficientnet_lite0,mobilenet_v2,efficientnet_b0,resnet50}
MODES=${MODES:-frozen,fine-tune}
if [[ $DEVICE == cuda ]]; then
  IMAGES=${IMAGES:-512}; VARIANTS=${VARIANTS:-fp32 cl bf16}; WARMUP=${WARMUP:-3}
else
  IMAGES=${IMAGES:-64}; VARIANTS=${VARIANTS:-fp32}; WARMUP=${WARMUP:-2}
fi
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
common=(--model "$MODELS" --mode "$MODES" --batch-size 16,64 --images "$IMAGES" --device "$DEVICE" --warmup "$WARMUP" --cudnn-benchmark)
echo "bench-train-step: $DEVICE, $IMAGES images/epoch at batch 16 ($((IMAGES * 4)) at 64), $(nproc) cores, $(date -u +%F)" >&2
for v in $VARIANTS; do
  case $v in
    fp32) flags=() ;;
    cl) flags=(--channels-last) ;;
    bf16) flags=(--channels-last --bf16) ;;
  esac
  target/release/vocml-bench "${common[@]}" "${flags[@]}" > "$OUT/vocml-$v.jsonl"
  "$PY" -W ignore benches/peer/train_step_torch.py "${common[@]}" "${flags[@]}" > "$OUT/pytorch-$v.jsonl"
done
"$PY" benches/report_train_step.py "$OUT"/*.jsonl
