#!/usr/bin/env bash
# Seed corpora for the fuzz targets, generated (nothing binary is committed): real files the
# tools write and read (npy headers, VOC XML, manifest, run configs) plus small hand-made ones.
# Usage: scripts/fuzz_seeds.sh CORPUS_DIR   (needs target/release built and the .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"/{npy_header,voc_xml,corrections_csv,json_configs,safetensors,image_decode}

target/release/voc-prep synth -q --images 12 --seed 3 --out "$TMP/voc" >/dev/null
target/release/voc-prep --voc-root "$TMP/voc" --out "$TMP/pd" -q --size 16 >/dev/null
target/release/voc-prep --voc-root "$TMP/voc" --out "$TMP/pdf" -q --size 16 --dtype f32 >/dev/null
for f in "$TMP"/pd/*.npy "$TMP"/pdf/*.npy; do head -c 160 "$f" > "$OUT/npy_header/$(basename "$(dirname "$f")")_$(basename "$f")"; done
for f in $(ls "$TMP"/voc/Annotations/*.xml | head -6); do cp "$f" "$OUT/voc_xml/"; done
cp "$TMP/pd/manifest.json" "$OUT/json_configs/manifest.json"
cp crates/core/src/run/testdata/*.json "$OUT/json_configs/"
for f in $(ls "$TMP"/voc/JPEGImages/*.jpg | head -3); do cp "$f" "$OUT/image_decode/"; done

printf 'path,labels\na.jpg,person;dog\n"b,1.jpg",\n"two\nlines.jpg",sofa\n' > "$OUT/corrections_csv/multilabel.csv"
printf '\xef\xbb\xbfpath,labels\r\nx.png,red;circle\r\ny.png,color/blue;shape/square\r\n' > "$OUT/corrections_csv/multihead.csv"

.venv/bin/python - "$OUT" <<'PY'
import sys, numpy as np
from PIL import Image
from safetensors.numpy import save_file
out = sys.argv[1]
save_file({"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}, f"{out}/safetensors/small.safetensors")
save_file({"x": np.arange(4, dtype=np.int64)}, f"{out}/safetensors/int.safetensors")
img = Image.fromarray((np.arange(8 * 6 * 3) % 256).astype(np.uint8).reshape(8, 6, 3))
for fmt, ext in [("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp"), ("WEBP", "webp"), ("TIFF", "tiff"), ("JPEG", "jpg")]:
    img.save(f"{out}/image_decode/small.{ext}", fmt)
img.convert("LA").save(f"{out}/image_decode/gray_alpha.png")
PY
