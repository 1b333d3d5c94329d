"""FastAPI + uvicorn + PyTorch peer of `serve` for benchmarks: the reference system's stack.
POST /predict with multipart `files` -> [{"filename", "labels", "probabilities"}], each request
decoded with Pillow, resized to the run's size (bilinear) and scored in its own forward pass
(EfficientNet-Lite0 + the multi-label head, torch.inference_mode) in uvicorn's thread pool.

Usage: serve_fastapi.py RUN_DIR PORT
"""
import io
import json
import os
import sys
from typing import List

import numpy as np
import torch
import torch.nn as nn
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from train_torch import Lite0Features  # noqa: E402

run, port = sys.argv[1], int(sys.argv[2])
cfg = json.load(open(os.path.join(run, "config.json")))
classes, size = cfg["classes"], cfg["image_size"]
tpath = os.path.join(run, "thresholds.json")
thresholds = json.load(open(tpath))["thresholds"] if os.path.exists(tpath) else [0.5] * len(classes)
sd = load_file(os.path.join(run, "model.safetensors"))
net = Lite0Features()
net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")}, strict=False)
head = nn.Sequential(nn.Linear(1280, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, len(classes)))
head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
net.eval()
head.eval()
app = FastAPI()


@app.get("/health")
def health():
    return {"status": "ok", "model": os.path.basename(run)}


@app.post("/predict")
def predict(files: List[UploadFile] = File(...)):
    images = []
    for f in files:
        with Image.open(io.BytesIO(f.file.read())) as im:
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()))
    x = (torch.stack(images).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
    with torch.inference_mode():
        p = torch.sigmoid(head(net(x))).numpy()
    return [
        {"filename": f.filename, "labels": [c for c, v, t in zip(classes, row, thresholds) if v >= t],
         "probabilities": {c: float(v) for c, v in zip(classes, row)}}
        for f, row in zip(files, p)
    ]


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
