"""Probe of issue 46's first lever: adapt the backbone's last blocks from cached activations.
The frozen EfficientNet-Lite0's blocks before CUT run once per photo and its mirror (320 px
data, activations cached in fp16); the tail (blocks CUT.., conv_head, BN in eval mode) and the
voc4-best head (GAP -> 512 -> 256 -> C, dropout 0.4 / 0.3) train from the cache: frozen tail
(the head alone) vs tuned tail (Adam: head 1e-3, tail 1e-4), EPOCHS each, batch 16, BCE.
5-fold CV over every photo of a voc-prep output (fold seed 7), flip TTA, out-of-fold
probabilities pooled, the mAP difference with a paired bootstrap 95% interval. Prints the
parity of the cached-tail forward with the full forward first.

  .venv/bin/python benches/levers/cached_tail_probe.py DATA CACHE_DIR [CUT [EPOCHS]]
  (DATA: voc-prep --size 320 output; CUT 15 = the last block only, 13 = the last three)
"""
import copy
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "benches", "peer"))
from train_torch import Lite0Features  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)
data, cache_dir = sys.argv[1], sys.argv[2]
CUT = int(sys.argv[3]) if len(sys.argv) > 3 else 15
EPOCHS = int(sys.argv[4]) if len(sys.argv) > 4 else 15
X = np.concatenate([np.load(f"{data}/X_{s}.npy", mmap_mode="r") for s in ("train", "val", "test")])
Y = np.concatenate([np.load(f"{data}/y_{s}.npy") for s in ("train", "val", "test")]).astype(np.float32)
N, C = Y.shape
net = Lite0Features()
sd = load_file(os.path.join(ROOT, ".venv", "vocml-weights", "efficientnet_lite0.safetensors"))
net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("_fc.")}, strict=False)
net.eval()


def early(x):
    h = F.relu6(net._bn0(net._conv_stem(x)))
    for b in net._blocks[:CUT]:
        h = b(h)
    return h


def pixels(i, j):
    return (torch.from_numpy(np.ascontiguousarray(X[i:j])).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


class Tail(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = copy.deepcopy(net._blocks[CUT:])
        self.conv_head, self.bn1 = copy.deepcopy(net._conv_head), copy.deepcopy(net._bn1)
        self.head = nn.Sequential(nn.Linear(1280, 512), nn.ReLU(), nn.Dropout(0.4), nn.Linear(512, 256), nn.ReLU(),
                                  nn.Dropout(0.3), nn.Linear(256, C))

    def features(self, a):
        for b in self.blocks:
            a = b(a)
        return F.relu6(self.bn1(self.conv_head(a))).mean((2, 3))

    def forward(self, a):
        return self.head(self.features(a))


def activations():
    cache = os.path.join(cache_dir, f"acts{CUT}.npy")
    if not os.path.exists(cache):
        with torch.inference_mode():
            parts = [torch.stack([early(x), early(x.flip(3))], 1).half().numpy() for x in (pixels(i, i + 16) for i in range(0, N, 16))]
        np.save(cache, np.concatenate(parts))
    return torch.from_numpy(np.load(cache))


def out_of_fold(acts, tune, folds, seed=42):
    oof = np.zeros((N, C), np.float32)
    for k in range(5):
        te, tr = np.where(folds == k)[0], np.where(folds != k)[0]
        torch.manual_seed(seed + k)
        g = np.random.default_rng(seed + k)
        m = Tail()
        tail = list(m.blocks.parameters()) + list(m.conv_head.parameters())
        for p in tail + list(m.bn1.parameters()):
            p.requires_grad = tune
        groups = [{"params": m.head.parameters(), "lr": 1e-3}] + ([{"params": tail, "lr": 1e-4}] if tune else [])
        opt = torch.optim.Adam(groups)
        ytr = torch.from_numpy(Y[tr])
        for _ in range(EPOCHS):
            m.train()
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.eval()
            order = g.permutation(len(tr))
            for b in range(0, len(tr), 16):
                idx = order[b:b + 16]
                view = torch.from_numpy(g.integers(0, 2, len(idx)))
                loss = F.binary_cross_entropy_with_logits(m(acts[torch.from_numpy(tr[idx]), view].float()), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        m.eval()
        with torch.inference_mode():
            for b in range(0, len(te), 64):
                i = torch.from_numpy(te[b:b + 64])
                oof[te[b:b + 64]] = ((torch.sigmoid(m(acts[i, 0].float())) + torch.sigmoid(m(acts[i, 1].float()))) / 2).numpy()
    return oof


def average_precision(s, t):
    t = t[np.argsort(-s)]
    tp = np.cumsum(t)
    precision = np.maximum.accumulate((tp / np.arange(1, len(t) + 1))[::-1])[::-1]
    recall = np.concatenate([[0], tp / max(t.sum(), 1)])
    return float(np.sum((recall[1:] - recall[:-1]) * precision))


def mean_ap(p, y):
    return float(np.mean([average_precision(p[:, c], y[:, c]) for c in range(C)]))


def main():
    acts = activations()
    with torch.inference_mode():
        x = pixels(0, 4)
        print("parity: cached tail vs full forward, max |diff|", float((Tail().eval().features(early(x)) - net(x)).abs().max()))
    folds = np.random.default_rng(7).permutation(np.arange(N) % 5)
    res = {}
    for tune in (False, True):
        t0 = time.time()
        res[tune] = out_of_fold(acts, tune, folds)
        print(f"cut {CUT} tail {'tuned' if tune else 'frozen'}, {EPOCHS} epochs: CV mAP {mean_ap(res[tune], Y):.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    rng = np.random.default_rng(0)
    d = [mean_ap(res[True][i], Y[i]) - mean_ap(res[False][i], Y[i]) for i in (rng.integers(0, N, N) for _ in range(1000))]
    print(f"tuned - frozen: {mean_ap(res[True], Y) - mean_ap(res[False], Y):+.4f} "
          f"[{np.percentile(d, 2.5):+.4f}, {np.percentile(d, 97.5):+.4f}]")


if __name__ == "__main__":
    main()
