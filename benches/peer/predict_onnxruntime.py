"""ONNX Runtime peer of `predict` for benchmarks: walk a folder, decode with Pillow and resize
to the model's size (bilinear) in a thread pool (Pillow releases the GIL), run the file that
`export` wrote (float32 NCHW input, normalised here from its vocml.mean / vocml.std) with
ONNX Runtime's CPU provider in batches, write CSV rows.

Usage: predict_onnxruntime.py MODEL.onnx FOLDER OUT.csv [THREADS [BATCH]]
Prints: "<images> <seconds>".
"""
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from PIL import Image

EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def main():
    model, folder, out = sys.argv[1], sys.argv[2], sys.argv[3]
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else os.cpu_count()
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    t0 = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes, size = json.loads(meta["vocml.classes"]), int(meta["vocml.image_size"])
    mean = np.array(json.loads(meta["vocml.mean"]), np.float32).reshape(1, 3, 1, 1)
    std = np.array(json.loads(meta["vocml.std"]), np.float32).reshape(1, 3, 1, 1)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.lower().endswith(EXTS))

    def load(path):
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)

    n = 0
    with open(out, "w") as f, ThreadPoolExecutor(threads) as pool:
        f.write("path,labels," + ",".join(f"p_{c}" for c in classes) + "\n")
        for start in range(0, len(files), batch):
            pixels = np.stack(list(pool.map(load, files[start:start + batch])))
            x = (pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - mean) / std
            for row in session.run(None, {"images": x})[0]:
                labels = ";".join(c for c, v in zip(classes, row) if v >= 0.5)
                f.write(f"{files[n]},{labels}," + ",".join(f"{v:.6f}" for v in row) + "\n")
                n += 1
    print(f"{n} {time.perf_counter() - t0:.2f}")


if __name__ == "__main__":
    main()
