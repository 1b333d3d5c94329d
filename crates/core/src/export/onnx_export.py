"""Converts a network traced by vocml's `export` (TorchScript) to ONNX and checks the file.

Run by `export` with the project's Python (torch and onnx; onnxruntime for the parity check):
  python onnx_export.py JOB.json
JOB.json names the traced module, the example input, libtorch's output on it, the output path,
the opset and the metadata. Prints one JSON line (the check's findings) on success; on failure
one line on stderr naming the problem and exit status 1.
"""

import json
import math
import sys


def fail(message):
    print(message.replace("\n", " ").strip(), file=sys.stderr)
    sys.exit(1)


def as_initializers(model):
    """Weights as graph initializers (what quantizers, optimizers and viewers look for)
    instead of the Constant nodes the traced module's captured tensors become; small
    shape constants stay nodes."""
    keep = []
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None and len(node.attribute) == 1 and len(value.dims) >= 1 and min(value.dims) > 0 and \
                math.prod(value.dims) >= 16:
            value.name = node.output[0]
            model.graph.initializer.append(value)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


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
    names = {"input_names": ["images"], "output_names": ["probabilities"]}
    axes = {"images": {0: "batch"}, "probabilities": {0: "batch"}}
    try:
        with torch.no_grad():
            torch.onnx.export(
                module, (example,), job["out"], opset_version=job["opset"], dynamic_axes=axes,
                do_constant_folding=True, dynamo=False, **names)
    except Exception as e:  # the exporter raises many types; one line names the failure
        fail(f"the ONNX exporter failed: {type(e).__name__}: {e}")

    model = onnx.load(job["out"])
    as_initializers(model)
    custom = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        fail(f"the graph uses operators outside the standard ONNX domain: {', '.join(custom)}")
    model.producer_name = "vocml"
    model.producer_version = job["version"]
    model.doc_string = job["doc"]
    del model.metadata_props[:]
    for key, value in job["metadata"].items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, job["out"])
    try:
        onnx.checker.check_model(job["out"], full_check=True)
    except Exception as e:
        fail(f"onnx.checker rejected the exported file: {e}")

    report = {"opset": job["opset"], "nodes": len(model.graph.node),
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
