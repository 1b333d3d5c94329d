"""Python peer of `voc-prep` for benchmarks: the reference notebook's approach.

Reads the same ImageSets labels, keeps images with a target class, opens each JPEG with
Pillow, converts to RGB, resizes to a square (bilinear), stacks into numpy arrays and saves
X/y .npy files. --workers 1 is the reference (one process); more uses a process pool.

Usage: prep_pillow.py VOC_ROOT OUT_DIR [--image-set train] [--size 224] [--workers 1]
"""
import argparse
import os
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

CLASSES = ["person", "chair", "dog", "sofa"]


def load(path_size):
    path, size = path_size
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("voc_root")
    ap.add_argument("out")
    ap.add_argument("--image-set", default="train")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    t0 = time.perf_counter()
    main_dir = os.path.join(a.voc_root, "ImageSets", "Main")
    labels = {}
    for c, cls in enumerate(CLASSES):
        with open(os.path.join(main_dir, f"{cls}_{a.image_set}.txt")) as f:
            for line in f:
                i, v = line.split()
                labels.setdefault(i, [0.0] * len(CLASSES))[c] = 1.0 if v == "1" else 0.0
    ids = [i for i, row in labels.items() if any(row)]
    jobs = [(os.path.join(a.voc_root, "JPEGImages", f"{i}.jpg"), a.size) for i in ids]
    if a.workers > 1:
        with Pool(a.workers) as pool:
            arrays = pool.map(load, jobs, chunksize=16)
    else:
        arrays = [load(j) for j in jobs]
    keep = [k for k, x in enumerate(arrays) if x is not None]
    X = np.stack([arrays[k] for k in keep])
    y = np.array([labels[ids[k]] for k in keep], dtype=np.float32)
    os.makedirs(a.out, exist_ok=True)
    np.save(os.path.join(a.out, "X.npy"), X)
    np.save(os.path.join(a.out, "y.npy"), y)
    dt = time.perf_counter() - t0
    print(f"{len(keep)} {dt:.3f}")


if __name__ == "__main__":
    main()
