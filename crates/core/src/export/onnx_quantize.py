"""Quantises an exported vocml ONNX file to int8 and checks what it costs.

Run by `export --int8` with the project's Python (onnx and onnxruntime), beside
onnx_export.py, whose helpers it shares:
  python onnx_quantize.py JOB.json
JOB.json names the fp32 file (already checked against libtorch), the output path, the
prepared dataset's arrays (training images calibrate, the validation split is scored), the
input kind, the calibration image count, the threads and the largest mAP loss allowed.

ONNX Runtime's static quantisation: QDQ format, int8 weights per output channel, uint8
activations with ranges from MinMax calibration on the run's own training images. The file
keeps the fp32 file's `vocml.*` metadata and adds `vocml.quantization`. Both files then score
the validation split with ONNX Runtime; the int8 file is refused when its mAP falls more than
the allowed amount below fp32's. Prints one JSON line (the findings) on success; on failure
one line on stderr naming the problem and exit status 1.
"""

import json
import sys
import time

from onnx_export import fail, save_checked  # written beside this script by `export`


def average_precision(scores, truth):
    """Area under the precision envelope, as vocml's `eval::metrics::average_precision`;
    None for a class with no positives."""
    import numpy as np
    positives = int(truth.sum())
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    hits = truth[order].astype(np.float64)
    tp = np.cumsum(hits)
    fp = np.cumsum(1.0 - hits)
    recall = np.concatenate([[0.0], tp / positives, [1.0]])
    precision = np.concatenate([[0.0], tp / (tp + fp), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def mean_ap(probs, labels):
    aps = [average_precision(probs[:, c], labels[:, c] > 0.5) for c in range(labels.shape[1])]
    aps = [a for a in aps if a is not None]
    return sum(aps) / len(aps) if aps else 0.0


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        fail(f"int8 export needs numpy, onnx and onnxruntime in {sys.executable} ({e}); run `make setup`")

    meta = {p.key: p.value for p in onnx.load(job["fp32"]).metadata_props}
    if job["input"] == "pixels":
        def model_input(pixels):
            return np.ascontiguousarray(pixels)
    else:
        mean = np.array(json.loads(meta["vocml.mean"]), np.float32).reshape(1, 3, 1, 1)
        std = np.array(json.loads(meta["vocml.std"]), np.float32).reshape(1, 3, 1, 1)

        def model_input(pixels):
            return ((pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

    train = np.load(job["x_train"], mmap_mode="r")
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(len(train), min(job["images"], len(train)), replace=False))

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.starts = iter(range(0, len(picked), 8))

        def get_next(self):
            start = next(self.starts, None)
            return None if start is None else {"images": model_input(train[picked[start:start + 8]])}

    started = time.perf_counter()
    prepared = job["out"] + ".pre.onnx"
    try:
        quant_pre_process(job["fp32"], prepared, skip_symbolic_shape=True)
        quantize_static(prepared, job["out"], Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    except Exception as e:  # the quantiser raises many types; one line names the failure
        fail(f"ONNX Runtime's quantiser failed: {type(e).__name__}: {e}")
    seconds = time.perf_counter() - started

    def session(path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = job["threads"]
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    x_val, y_val = np.load(job["x_val"], mmap_mode="r"), np.load(job["y_val"])

    def score(path):
        s = session(path)
        t0 = time.perf_counter()
        probs = np.concatenate([s.run(None, {"images": model_input(x_val[i:i + 8])})[0] for i in range(0, len(x_val), 8)])
        return probs, (time.perf_counter() - t0) * 1e3 / len(x_val)

    fp32, fp32_ms = score(job["fp32"])
    int8, int8_ms = score(job["out"])
    if not np.isfinite(int8).all():
        fail("the int8 file returned non-finite probabilities on the validation images")
    map_fp32, map_int8 = mean_ap(fp32, y_val), mean_ap(int8, y_val)
    report = {
        "calibration_images": int(len(picked)),
        "val_images": int(len(x_val)),
        "map_fp32": map_fp32,
        "map_int8": map_int8,
        "ms_fp32": fp32_ms,
        "ms_int8": int8_ms,
        "max_abs_diff": float(np.abs(int8 - fp32).max()),
        "seconds": seconds,
    }
    if map_fp32 - map_int8 > job["max_map_drop"]:
        fail(f"int8 loses {map_fp32 - map_int8:.4f} mAP on the {len(x_val)} validation images "
             f"({map_fp32:.4f} -> {map_int8:.4f}; at most {job['max_map_drop']} allowed); nothing was written")

    model = onnx.load(job["out"])
    quantization = {
        "method": "ONNX Runtime static quantisation: QDQ, int8 weights per output channel, uint8 activations, "
                  "MinMax calibration",
        "onnxruntime": ort.__version__,
        "calibration_images": report["calibration_images"],
        "calibration_data": job["x_train"],
        "val_images": report["val_images"],
        "val_map_fp32": round(map_fp32, 6),
        "val_map_int8": round(map_int8, 6),
    }
    save_checked(model, job["out"], {**meta, "vocml.quantization": json.dumps(quantization)}, "int8 file")
    report["nodes"] = len(model.graph.node)
    report["operators"] = sorted({n.op_type for n in model.graph.node})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
