"""Converts a network traced by vocml's `export` (TorchScript) to ONNX and checks the file.

Run by `export` with the project's Python (torch and onnx; onnxruntime for the parity check):
  python onnx_export.py JOB.json
JOB.json names the traced module, the example input, libtorch's output on it, the output path,
the opset and the metadata. Prints one JSON line (the check's findings) on success; on failure
one line on stderr naming the problem and exit status 1.
"""

import hashlib
import json
import math
import sys


def fail(message):
    print(message.replace("\n", " ").strip(), file=sys.stderr)
    sys.exit(1)


def as_initializers(model):
    """Weights as graph initializers (what quantizers, optimizers and viewers look for)
    instead of the Constant nodes the traced module's captured tensors become; small
    shape constants stay nodes. A weight the trace captured more than once (a multi-scale
    run's backbone, run at each scale) is stored once."""
    from onnx import numpy_helper

    keep, first, renamed = [], {}, {}
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None and len(node.attribute) == 1 and len(value.dims) >= 1 and min(value.dims) > 0 and \
                math.prod(value.dims) >= 16:
            key = (value.data_type, tuple(value.dims), hashlib.sha256(numpy_helper.to_array(value).tobytes()).digest())
            if key in first:
                renamed[node.output[0]] = first[key]
                continue
            first[key] = value.name = node.output[0]
            model.graph.initializer.append(value)
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def save_checked(model, path, metadata, what):
    """Gives `model` exactly `metadata` (key -> value) as its metadata, saves it to `path` and
    checks the file: onnx.checker's full check, operators of the standard domain only."""
    import onnx

    del model.metadata_props[:]
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, path)
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:
        fail(f"onnx.checker rejected the {what}: {e}")
    custom = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        fail(f"the {what} uses operators outside the standard ONNX domain: {', '.join(custom)}")


ANTIALIAS = "aten::_upsample_bilinear2d_aa"


def antialiased_resize(g, x, output_size, align_corners, *scales):
    """libtorch's anti-aliased bilinear downsampling (multi-scale runs) as ONNX Resize with
    `antialias` (opset 18); `exclude_outside` renormalises the weights at the borders as
    libtorch does (measured: |diff| <= 2e-5 on 448 -> 320 px)."""
    import torch
    from torch.onnx import symbolic_helper

    sizes = symbolic_helper._maybe_get_const(output_size, "is")
    if not isinstance(sizes, (list, tuple)) or align_corners is True:
        raise RuntimeError("anti-aliased resizing is exported for constant output sizes without align_corners only")
    shape = g.op("Shape", x)
    batch_channels = g.op("Slice", shape, g.op("Constant", value_t=torch.tensor([0])), g.op("Constant", value_t=torch.tensor([2])))
    full = g.op("Concat", batch_channels, g.op("Constant", value_t=torch.tensor(list(sizes), dtype=torch.int64)), axis_i=0)
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op("Resize", x, empty, empty, full, mode_s="linear", antialias_i=1, exclude_outside_i=1,
                coordinate_transformation_mode_s="half_pixel")


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    try:
        import numpy as np
        import onnx
        import torch
    except ImportError as e:
        fail(f"ONNX export needs torch, numpy and onnx in {sys.executable} ({e}); run `make setup`")

    module = torch.jit.load(job["traced"], map_location="cpu").eval()
    example = torch.from_numpy(np.load(job["example"]))
    opset = job["opset"]
    if ANTIALIAS in str(module.inlined_graph):
        opset = max(opset, 18)
        torch.onnx.register_custom_op_symbolic(ANTIALIAS, antialiased_resize, 18)
    names = {"input_names": ["images"], "output_names": ["probabilities"]}
    axes = {"images": {0: "batch"}, "probabilities": {0: "batch"}}
    try:
        with torch.no_grad():
            torch.onnx.export(
                module, (example,), job["out"], opset_version=opset, dynamic_axes=axes,
                do_constant_folding=True, dynamo=False, **names)
    except Exception as e:  # the exporter raises many types; one line names the failure
        fail(f"the ONNX exporter failed: {type(e).__name__}: {e}")

    model = onnx.load(job["out"])
    as_initializers(model)
    model.producer_name = "vocml"
    model.producer_version = job["version"]
    model.doc_string = job["doc"]
    save_checked(model, job["out"], job["metadata"], "exported file")

    report = {"opset": opset, "nodes": len(model.graph.node),
              "operators": sorted({n.op_type for n in model.graph.node})}
    try:
        import onnxruntime as ort
    except ImportError:
        report["parity"] = "skipped: onnxruntime is not installed"
    else:
        options = ort.SessionOptions()
        options.intra_op_num_threads = job["threads"]
        session = ort.InferenceSession(job["out"], options, providers=["CPUExecutionProvider"])
        check = np.load(job["check_input"])
        got = session.run(None, {"images": check})[0]
        want = np.load(job["check_output"])
        if got.shape != want.shape:
            fail(f"ONNX Runtime returned shape {got.shape}, libtorch {want.shape}")
        if not np.isfinite(got).all():
            fail("ONNX Runtime returned non-finite probabilities on the check images")
        report["max_abs_diff"] = float(np.abs(got - want).max())
        report["onnxruntime"] = ort.__version__
    print(json.dumps(report))


if __name__ == "__main__":
    main()
