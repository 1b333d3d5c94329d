"""Scores images with an ONNX file exported by vocml, using nothing but the file: its
metadata gives the classes, task, thresholds, input size, resize mode, layout and
normalisation. Writes predict's CSV (path,labels,p_<class>...,error) to standard output.

  python scripts/onnx_predict.py model.onnx photos/ [more files or folders] > labels.csv

Needs onnxruntime, numpy and pillow. Resizing uses Pillow (bilinear), so on photos that need
resizing the probabilities can differ from vocml's in the third decimal; images already at
the model's size go through unchanged.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
LETTERBOX_FILL = 114


def contract(session):
    meta = session.get_modelmeta().custom_metadata_map
    return {
        "task": meta["vocml.task"],
        "classes": json.loads(meta["vocml.classes"]),
        "groups": json.loads(meta["vocml.label_groups"]),
        "thresholds": json.loads(meta["vocml.thresholds"]),
        "size": int(meta["vocml.image_size"]),
        "resize": meta["vocml.resize"],
        "dtype": meta["vocml.input_dtype"],
        "mean": json.loads(meta.get("vocml.mean", "null")),
        "std": json.loads(meta.get("vocml.std", "null")),
    }


def square(img, size, mode):
    if img.size == (size, size):
        return img
    if mode == "stretch":
        return img.resize((size, size), Image.BILINEAR)
    w, h = img.size
    if mode == "letterbox":
        scale = size / max(w, h)
        inner = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        canvas = Image.new("RGB", (size, size), (LETTERBOX_FILL,) * 3)
        canvas.paste(inner, ((size - inner.width) // 2, (size - inner.height) // 2))
        return canvas
    return ImageOps.fit(img, (size, size), Image.BILINEAR)


def model_input(pixels, c):
    """[H, W, 3] uint8 -> one row of the graph's input."""
    if c["dtype"] == "uint8":
        return pixels
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.array(c["mean"], np.float32)) / np.array(c["std"], np.float32)
    return x.transpose(2, 0, 1)


def labels(p, c):
    if c["task"] == "multilabel":
        return [k for k, q, t in zip(c["classes"], p, c["thresholds"]) if q >= t]
    out, start = [], 0
    for g in c["groups"]:
        n = len(g["classes"])
        out.append(c["classes"][start + int(np.argmax(p[start:start + n]))])
        start += n
    return out


def files(paths):
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    if os.path.splitext(name)[1].lower() in EXTENSIONS:
                        yield os.path.join(root, name)
        else:
            yield path


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: onnx_predict.py MODEL.onnx IMAGE_OR_FOLDER...")
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    c = contract(session)
    name = session.get_inputs()[0].name
    print(",".join(["path", "labels"] + [f"p_{k}" for k in c["classes"]] + ["error"]))
    for path in files(sys.argv[2:]):
        try:
            img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        except Exception as e:  # one bad file is a row with its error, as in predict
            print(f"{path},{','.join([''] * (len(c['classes']) + 1))},{type(e).__name__}")
            continue
        x = model_input(np.asarray(square(img, c["size"], c["resize"])), c)
        p = session.run(None, {name: x[None]})[0][0]
        print(",".join([path, ";".join(labels(p, c))] + [f"{q:.6f}" for q in p] + [""]))


if __name__ == "__main__":
    main()
