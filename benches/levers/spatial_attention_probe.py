"""Probe of one issue-46 lever: class-specific residual attention (CSRA-style) over the frozen
EfficientNet-Lite0 final feature map (10x10 at 320 px), added to the voc4-best head (GAP ->
512 -> 256 -> C, dropout 0.4 / 0.3) against that head alone. 5-fold cross-validation over
every photo of a voc-prep output (its three splits pooled), out-of-fold probabilities pooled,
flip TTA, each head trained 30 epochs (Adam 1e-3, batch 16, BCE) on the photo or its mirror;
the mAP difference with a paired bootstrap 95% interval over photos.

  out = GAP-head(x) + lambda * att,  att_c = max over positions of (w_c . x_pos)   (T = inf)
                                     att_c = sum_pos softmax(T z_c)_pos z_c,pos     (T finite)

Uses the PyTorch Lite0 of benches/peer/train_torch.py with vocml's embedded weights; the
feature maps are cached (fp16) at CACHE.

  .venv/bin/python benches/levers/spatial_attention_probe.py DATA CACHE.npy [FOLD_SEED [confirm]]
  (DATA: voc-prep --size 320 output; FOLD_SEED 7 by default; `confirm` runs lambda 0.3 and 1.0
  at T = inf only)
"""
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
data, cache = sys.argv[1], sys.argv[2]
fold_seed = int(sys.argv[3]) if len(sys.argv) > 3 else 7
X, Y = photos(data)
N, C = Y.shape


def feature_maps():
    """[N, 2 (photo, mirror), 1280, h, w] fp16, computed once into `cache`."""
    if not os.path.exists(cache):
        net = lite0()

        def fmap(x):
            h = F.relu6(net._bn0(net._conv_stem(x)))
            for b in net._blocks:
                h = b(h)
            return F.relu6(net._bn1(net._conv_head(h)))

        side = X.shape[1] // 32
        out = np.lib.format.open_memmap(cache + ".tmp.npy", mode="w+", dtype=np.float16, shape=(N, 2, 1280, side, side))
        with torch.inference_mode():
            for i in range(0, N, 16):
                x = pixels(X, i, i + 16)
                out[i:i + 16, 0] = fmap(x).numpy().astype(np.float16)
                out[i:i + 16, 1] = fmap(x.flip(3)).numpy().astype(np.float16)
        out.flush()
        del out
        os.rename(cache + ".tmp.npy", cache)
    return torch.from_numpy(np.array(np.load(cache, mmap_mode="r")))


class Head(nn.Module):
    def __init__(self, lam, T):
        super().__init__()
        self.lam, self.T = lam, T
        self.mlp = nn.Sequential(nn.Linear(1280, 512), nn.ReLU(), nn.Dropout(0.4), nn.Linear(512, 256), nn.ReLU(),
                                 nn.Dropout(0.3), nn.Linear(256, C))
        self.cls = nn.Conv2d(1280, C, 1, bias=False) if lam > 0 else None

    def forward(self, m):
        base = self.mlp(m.mean((2, 3)))
        if self.cls is None:
            return base
        z = self.cls(m).flatten(2)
        att = z.max(2).values if self.T == "inf" else (F.softmax(z * self.T, 2) * z).sum(2)
        return base + self.lam * att


def head_model(lam, T):
    h = Head(lam, T)
    return h, torch.optim.Adam(h.parameters(), 1e-3)


def main():
    maps = feature_maps()
    folds = np.random.default_rng(fold_seed).permutation(np.arange(N) % 5)
    confirm = len(sys.argv) > 4 and sys.argv[4] == "confirm"
    configs = [(0.0, None), (0.3, "inf"), (1.0, "inf")] if confirm else [(0.0, None), (0.1, 1.0), (0.3, "inf"), (1.0, 1.0)]
    res = {}
    for lam, T in configs:
        t0 = time.time()
        res[(lam, T)] = out_of_fold(maps, Y, folds, lambda: head_model(lam, T), 30)
        print(f"lambda {lam} T {T}: CV mAP {mean_ap(res[(lam, T)], Y):.4f} ({time.time() - t0:.0f} s)", flush=True)
    base, rng = res[(0.0, None)], np.random.default_rng(0)
    for (lam, T), p in list(res.items())[1:]:
        d, lo, hi = paired_bootstrap(p, base, Y, rng)
        print(f"lambda {lam} T {T}: {d:+.4f} [{lo:+.4f}, {hi:+.4f}] vs the GAP head", flush=True)


if __name__ == "__main__":
    main()
