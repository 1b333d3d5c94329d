"""Export a randomly initialised torchvision model, an input and its eval-mode output, for
the Rust parity tests. BatchNorm running statistics are randomised too, so eval-mode
BatchNorm is not an identity.

Usage: export_parity.py MODEL OUT.safetensors   (MODEL: a torchvision model name, e.g. resnet18)
Keys: 'model.<state_dict key>', 'input' [2,3,224,224], 'output' [2,1000].
"""
import sys

import torch
import torchvision
from safetensors.torch import save_file


def randomize_batchnorm(model):
    """Random BatchNorm statistics and affine parameters, so eval-mode BatchNorm is not an
    identity; leaves the model in eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()


def randomize_layer_scales(model):
    """ConvNeXt: random LayerNorm affine parameters and layer scales (torchvision starts them
    at 1e-6, which would hide every block from the comparison)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if hasattr(m, "layer_scale"):
                m.layer_scale.uniform_(0.1, 0.5)


def random_model(name):
    """A randomly initialised torchvision model as vocml builds it. GoogLeNet: no auxiliary
    classifiers (eval mode ignores them) and no transform_input."""
    extra = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return getattr(torchvision.models, name)(weights=None, **extra)


def main() -> int:
    name, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = random_model(name)
    randomize_batchnorm(model)
    randomize_layer_scales(model)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        y = model(x)
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["input"] = x
    tensors["output"] = y
    save_file(tensors, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
