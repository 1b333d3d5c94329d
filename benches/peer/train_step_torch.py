"""PyTorch + torchvision peer of `vocml-bench`: one training epoch on random images, the way a
careful PyTorch user writes it, doing the same work as vocml's training step.

Same flags (comma-separated lists) and JSON lines as `target/release/vocml-bench`. Per step: uint8 NHWC pixels
(resident on the device, like vocml's) -> float [0, 1] NCHW -> per-image rotation +-15 deg and
horizontal flip (affine_grid + grid_sample, border padding) and brightness x[0.8, 1.2] ->
normalisation -> backbone with BatchNorm in eval mode -> GAP -> Linear(128) -> ReLU ->
Dropout(0.2) -> Linear(4) -> BCEWithLogitsLoss -> torch.optim.Adam (its default
implementation: multi-tensor `foreach` on CUDA) with zero_grad(set_to_none=True).
`frozen`: backbone under no_grad, head trained; `fine-tune`: every parameter trained.
cudnn.benchmark as asked (make bench turns it on for both); no per-step .item() (the loss is read once at the end).
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_torch import Lite0Features  # noqa: E402

MEAN = {"efficientnet_lite0": [0.5] * 3}
STD = {"efficientnet_lite0": [0.5] * 3}
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def backbone(name):
    if name == "efficientnet_lite0":
        return Lite0Features(), 1280
    if name == "mobilenet_v2":
        m = torchvision.models.mobilenet_v2(weights=None)
        return nn.Sequential(m.features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 1280
    if name == "efficientnet_b0":
        m = torchvision.models.efficientnet_b0(weights=None)
        return nn.Sequential(m.features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 1280
    if name == "resnet50":
        m = torchvision.models.resnet50(weights=None)
        m.fc = nn.Identity()
        return m, 2048
    raise SystemExit(f"unknown model {name}")


def augment(x, gen):
    b = x.shape[0]
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(15)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    gains = 0.8 + 0.4 * torch.rand(b, generator=gen)
    c, s = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([c * flip, -s, torch.zeros(b), s * flip, c, torch.zeros(b)], 1).view(b, 2, 3)
    theta = theta.to(x.device, non_blocking=True)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x * gains.to(x.device, non_blocking=True).view(b, 1, 1, 1)).clamp(0, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--mode", default="frozen")
    ap.add_argument("--batch-size", default="16")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--cudnn-benchmark", action="store_true")
    a = ap.parse_args()
    dev = torch.device("cuda" if a.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    for model in a.model.split(","):
        for mode in a.mode.split(","):
            for batch in a.batch_size.split(","):
                b = int(batch)
                timing = epoch(a, dev, model, mode == "fine-tune", b, a.images * max(b, 16) // 16)
                case = {"model": model, "fine_tune": mode == "fine-tune", "batch_size": b,
                        "speed": {"channels_last": a.channels_last, "bf16": a.bf16}}
                print(json.dumps({"tool": "pytorch", "torch": torch.__version__, "device": str(dev),
                                  "case": case, "timing": timing}), flush=True)


def epoch(a, dev, model, fine, batch_size, images):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net, feat = backbone(model)
    head = nn.Sequential(nn.Linear(feat, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 4))
    net.eval()  # BatchNorm statistics frozen, as in vocml
    net.requires_grad_(fine)
    net.to(dev)
    head.to(dev).train()
    if a.channels_last:
        net.to(memory_format=torch.channels_last)
    params = list(head.parameters()) + (list(net.parameters()) if fine else [])
    opt = torch.optim.Adam(params, lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    mean, std = MEAN.get(model, IMAGENET[0]), STD.get(model, IMAGENET[1])
    mean = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(std, device=dev).view(1, 3, 1, 1)
    s = a.image_size
    pixels = torch.randint(0, 256, (images, s, s, 3), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, 2, (images, 4), device=dev).float()

    def step(idx):
        rows = idx.to(dev, non_blocking=True)
        x = pixels.index_select(0, rows).permute(0, 3, 1, 2).float() / 255.0
        x = (augment(x, gen) - mean) / std
        x = x.contiguous(memory_format=torch.channels_last) if a.channels_last else x.contiguous()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.bf16):
            if fine:
                f = net(x)
            else:
                with torch.no_grad():
                    f = net(x)
            loss = loss_fn(head(f).float(), labels.index_select(0, rows))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    for w in range(a.warmup):
        start = (w * batch_size) % (images - batch_size + 1)
        step(torch.arange(start, start + batch_size))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    order = torch.randperm(images)
    steps = 0
    for i in range(0, images, batch_size):
        last = step(order[i:i + batch_size])
        steps += 1
    final = float(last)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    return {"seconds": sec, "images_per_s": images / sec, "steps": steps,
            "trainable_parameters": sum(p.numel() for p in params), "final_loss": final}


if __name__ == "__main__":
    main()
