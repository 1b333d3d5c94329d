"""What the issue-46 probes share: the photos of a voc-prep output (its three splits pooled),
vocml's Lite0 in PyTorch, training a model on cached per-photo tensors (the photo and its
mirror) fold by fold into out-of-fold probabilities with flip TTA, mAP, and the paired
bootstrap interval of an mAP difference over photos.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "benches", "peer"))
from train_torch import Lite0Features  # noqa: E402


def photos(data):
    """(X uint8 [N, H, W, 3] memory-mapped, Y float32 [N, C]) of every split of `data`."""
    X = np.concatenate([np.load(f"{data}/X_{s}.npy", mmap_mode="r") for s in ("train", "val", "test")])
    Y = np.concatenate([np.load(f"{data}/y_{s}.npy") for s in ("train", "val", "test")]).astype(np.float32)
    return X, Y


def lite0():
    """vocml's embedded Lite0 weights in the PyTorch Lite0, in eval mode."""
    net = Lite0Features()
    sd = load_file(os.path.join(ROOT, ".venv", "vocml-weights", "efficientnet_lite0.safetensors"))
    net.load_state_dict({k: v for k, v in sd.items() if not k.startswith("_fc.")}, strict=False)
    return net.eval()


def pixels(X, i, j):
    """Rows i..j of X as the Lite models' input ((x - 0.5) / 0.5, NCHW float)."""
    return (torch.from_numpy(np.ascontiguousarray(X[i:j])).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


def out_of_fold(cache, Y, folds, build, epochs, seed=42, train_mode=lambda m: m.train()):
    """Out-of-fold probabilities [N, C]: per fold k, `build()` gives (model, optimizer), trained
    `epochs` epochs (batch 16, BCE) on a random view (photo or mirror) of `cache` [N, 2, ...],
    then scored on the fold's photos as the mean of both views."""
    oof = np.zeros(Y.shape, np.float32)
    for k in range(int(folds.max()) + 1):
        te, tr = np.where(folds == k)[0], np.where(folds != k)[0]
        torch.manual_seed(seed + k)
        g = np.random.default_rng(seed + k)
        model, opt = build()
        ytr = torch.from_numpy(Y[tr])
        for _ in range(epochs):
            train_mode(model)
            order = g.permutation(len(tr))
            for b in range(0, len(tr), 16):
                idx = order[b:b + 16]
                view = torch.from_numpy(g.integers(0, 2, len(idx)))
                loss = F.binary_cross_entropy_with_logits(model(cache[torch.from_numpy(tr[idx]), view].float()), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.inference_mode():
            for b in range(0, len(te), 64):
                i = torch.from_numpy(te[b:b + 64])
                p = (torch.sigmoid(model(cache[i, 0].float())) + torch.sigmoid(model(cache[i, 1].float()))) / 2
                oof[te[b:b + 64]] = p.numpy()
    return oof


def average_precision(s, t):
    t = t[np.argsort(-s)]
    tp = np.cumsum(t)
    precision = np.maximum.accumulate((tp / np.arange(1, len(t) + 1))[::-1])[::-1]
    recall = np.concatenate([[0], tp / max(t.sum(), 1)])
    return float(np.sum((recall[1:] - recall[:-1]) * precision))


def mean_ap(p, y):
    return float(np.mean([average_precision(p[:, c], y[:, c]) for c in range(y.shape[1])]))


def paired_bootstrap(p, base, Y, rng, draws=1000):
    """mAP(p) - mAP(base) and its 95% interval over photos resampled with replacement (draws
    from `rng`)."""
    n = len(Y)
    d = [mean_ap(p[i], Y[i]) - mean_ap(base[i], Y[i]) for i in (rng.integers(0, n, n) for _ in range(draws))]
    return mean_ap(p, Y) - mean_ap(base, Y), np.percentile(d, 2.5), np.percentile(d, 97.5)
