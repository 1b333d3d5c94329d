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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cv_probe import lite0, mean_ap, out_of_fold, paired_bootstrap, photos, pixels  # noqa: E402

torch.set_num_threads(os.cpu_count() or 1)
data, cache_dir = sys.argv[1], sys.argv[2]
CUT = int(sys.argv[3]) if len(sys.argv) > 3 else 15
EPOCHS = int(sys.argv[4]) if len(sys.argv) > 4 else 15
X, Y = photos(data)
N, C = Y.shape
net = lite0()


def early(x):
    h = F.relu6(net._bn0(net._conv_stem(x)))
    for b in net._blocks[:CUT]:
        h = b(h)
    return h


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
            parts = [torch.stack([early(x), early(x.flip(3))], 1).half().numpy() for x in (pixels(X, i, i + 16) for i in range(0, N, 16))]
        np.save(cache, np.concatenate(parts))
    return torch.from_numpy(np.load(cache))


def tail_model(tune):
    """A fresh head on a copy of the tail, the tail trainable (at 1e-4) when `tune`."""
    m = Tail()
    tail = list(m.blocks.parameters()) + list(m.conv_head.parameters())
    for p in tail + list(m.bn1.parameters()):
        p.requires_grad = tune
    groups = [{"params": m.head.parameters(), "lr": 1e-3}] + ([{"params": tail, "lr": 1e-4}] if tune else [])
    return m, torch.optim.Adam(groups)


def train_with_frozen_batchnorm(m):
    m.train()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eval()


def main():
    acts = activations()
    with torch.inference_mode():
        x = pixels(X, 0, 4)
        print("parity: cached tail vs full forward, max |diff|", float((Tail().eval().features(early(x)) - net(x)).abs().max()))
    folds = np.random.default_rng(7).permutation(np.arange(N) % 5)
    res = {}
    for tune in (False, True):
        t0 = time.time()
        res[tune] = out_of_fold(acts, Y, folds, lambda: tail_model(tune), EPOCHS, train_mode=train_with_frozen_batchnorm)
        print(f"cut {CUT} tail {'tuned' if tune else 'frozen'}, {EPOCHS} epochs: CV mAP {mean_ap(res[tune], Y):.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    d, lo, hi = paired_bootstrap(res[True], res[False], Y, np.random.default_rng(0))
    print(f"tuned - frozen: {d:+.4f} [{lo:+.4f}, {hi:+.4f}]")


if __name__ == "__main__":
    main()
