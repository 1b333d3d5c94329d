"""Export a Grad-CAM reference for the Rust parity tests: a randomly initialised torchvision
backbone (BatchNorm statistics randomised too), a random vocml head
(Linear(F, 128) -> ReLU -> Dropout -> Linear(128, 4)), an input, and the Grad-CAM maps of
its four outputs computed with autograd: gradient of each logit w.r.t. the last convolutional
feature map, channel weights = spatial mean, ReLU of the weighted sum, bilinear upsampling
(align_corners=False), min-max scaling.

Usage: export_gradcam.py MODEL OUT.safetensors   (MODEL: mobilenet_v2, efficientnet_b0, resnet18,
vgg16, googlenet)
Keys: 'model.<key>', 'head.<key>', 'input' [1,3,224,224], 'cams' [4,224,224].
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from export_parity import random_model, randomize_batchnorm  # noqa: E402


def feature_map(name, model, x):
    if name in ("mobilenet_v2", "efficientnet_b0", "vgg16"):
        return model.features(x)
    m = model
    if name == "googlenet":
        h = m.maxpool2(m.conv3(m.conv2(m.maxpool1(m.conv1(x)))))
        h = m.maxpool3(m.inception3b(m.inception3a(h)))
        for block in (m.inception4a, m.inception4b, m.inception4c, m.inception4d, m.inception4e):
            h = block(h)
        return m.inception5b(m.inception5a(m.maxpool4(h)))
    h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer4(m.layer3(m.layer2(m.layer1(h))))


def main() -> int:
    name, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = random_model(name)
    randomize_batchnorm(model)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        a = feature_map(name, model, x)
    head = nn.Sequential(nn.Linear(a.shape[1], 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 4)).eval()
    a = a.detach().requires_grad_(True)
    logits = head(a.mean((2, 3)))
    cams = []
    for c in range(4):
        (g,) = torch.autograd.grad(logits[0, c], a, retain_graph=True)
        w = g.mean((2, 3), keepdim=True)
        cam = F.relu((w * a).sum(1, keepdim=True))
        up = F.interpolate(cam, size=(224, 224), mode="bilinear", align_corners=False)[0, 0]
        lo, hi = up.min(), up.max()
        cams.append((up - lo) / (hi - lo) if hi - lo > 1e-12 else torch.zeros_like(up))
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"head.{k}": v.contiguous() for k, v in head.state_dict().items()})
    tensors["input"] = x
    tensors["cams"] = torch.stack(cams).detach()
    save_file(tensors, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
