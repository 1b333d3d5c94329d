"""Convert a torch.save'd checkpoint (.pth/.pt: a state_dict, an OrderedDict, or a dict
holding one under 'state_dict'/'model') into .safetensors, which vocml loads directly.

Usage: python scripts/convert_weights.py IN.pth OUT.safetensors
"""
import sys

import torch
from safetensors.torch import save_file


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    obj = torch.load(src, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        print(f"convert_weights: {src}: expected a state_dict, found {type(obj).__name__}", file=sys.stderr)
        return 1
    tensors = {k: v.detach().contiguous().clone() for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        print(f"convert_weights: {src}: no tensors found", file=sys.stderr)
        return 1
    tmp = dst + ".tmp"
    save_file(tensors, tmp)
    import os

    os.replace(tmp, dst)
    print(f"convert_weights: {len(tensors)} tensors -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
