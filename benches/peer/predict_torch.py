"""PyTorch + torchvision peer of `predict` for benchmarks: walk a folder, decode with Pillow,
resize to 224x224 (bilinear), run EfficientNet-Lite0 + the multi-label head in batches
(torch.inference_mode, a DataLoader with one worker per core), write CSV rows.

Usage: predict_torch.py RUN_DIR FOLDER OUT.csv [DEVICE [BATCH]]   (RUN_DIR: a vocml run of
efficientnet_lite0; BATCH default 32)
Prints: "<images> <seconds>".
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from train_torch import Lite0Features  # noqa: E402

EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class Folder(torch.utils.data.Dataset):
    def __init__(self, files, size):
        self.files, self.size = files, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            im = im.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
            return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())


def main():
    run, folder, out = sys.argv[1], sys.argv[2], sys.argv[3]
    dev = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    t0 = time.perf_counter()
    cfg = json.load(open(os.path.join(run, "config.json")))
    classes, size = cfg["classes"], cfg["image_size"]
    sd = load_file(os.path.join(run, "model.safetensors"))
    net = Lite0Features()
    net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")}, strict=False)
    head = nn.Sequential(nn.Linear(1280, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, len(classes)))
    head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
    net.eval().to(dev)
    head.eval().to(dev)
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.lower().endswith(EXTS)
    )
    loader = torch.utils.data.DataLoader(Folder(files, size), batch_size=batch, num_workers=os.cpu_count(),
                                         pin_memory=dev.type == "cuda")
    mean = torch.tensor([0.5, 0.5, 0.5], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.5], device=dev).view(1, 3, 1, 1)
    n = 0
    with open(out, "w") as f, torch.inference_mode():
        f.write("path,labels," + ",".join(f"p_{c}" for c in classes) + "\n")
        for batch in loader:
            x = (batch.to(dev, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            p = torch.sigmoid(head(net(x))).cpu().numpy()
            for row in p:
                labels = ";".join(c for c, v in zip(classes, row) if v >= 0.5)
                f.write(f"{files[n]},{labels}," + ",".join(f"{v:.6f}" for v in row) + "\n")
                n += 1
    print(f"{n} {time.perf_counter() - t0:.2f}")


if __name__ == "__main__":
    main()
