"""Model-only throughput of the peers on prepared pixels (no decoding): PyTorch eager
(EfficientNet-Lite0 + the run's head, torch.inference_mode) or ONNX Runtime on the exported
file, batches of BATCH over the rows of a voc-prep X_<split>.npy, THREADS intra-op threads.

Usage: model_only.py torch RUN_DIR X.npy THREADS BATCH
       model_only.py onnxruntime MODEL.onnx X.npy THREADS BATCH
Prints: "<images> <seconds>": every batch timed, the first one included, as vocml's
`evaluate` times its scoring pass (model loading excluded in both).
"""
import json
import os
import sys
import time

import numpy as np


def main():
    peer, model, xs, threads, batch = sys.argv[1], sys.argv[2], np.load(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    if peer == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        mean = np.array(json.loads(meta["vocml.mean"]), np.float32).reshape(1, 3, 1, 1)
        std = np.array(json.loads(meta["vocml.std"]), np.float32).reshape(1, 3, 1, 1)

        def forward(pixels):
            x = (pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - mean) / std
            return session.run(None, {"images": x})[0]
    else:
        import torch
        import torch.nn as nn
        from safetensors.torch import load_file
        sys.path.insert(0, os.path.dirname(__file__))
        from train_torch import Lite0Features
        torch.set_num_threads(threads)
        cfg = json.load(open(os.path.join(model, "config.json")))
        sd = load_file(os.path.join(model, "model.safetensors"))
        net = Lite0Features().eval()
        net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")}, strict=False)
        head = nn.Sequential(nn.Linear(1280, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, len(cfg["classes"]))).eval()
        head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})

        def forward(pixels):
            with torch.inference_mode():
                x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
                return torch.sigmoid(head(net(x))).numpy()
    t0 = time.perf_counter()
    for start in range(0, len(xs), batch):
        forward(xs[start:start + batch])
    print(f"{len(xs)} {time.perf_counter() - t0:.2f}")


if __name__ == "__main__":
    main()
