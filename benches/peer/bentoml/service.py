"""BentoML peer of `serve` for benchmarks: vocml's exported ONNX file in ONNX Runtime behind a
BentoML (>= 1.2) service with adaptive batching. POST /predict, multipart field `images` (one
or more photos) -> [{"person": p, "chair": p, ...}] per photo, in order. BentoML decodes each
part to a PIL image; preprocessing is the file's contract exactly as scripts/onnx_predict.py
scores it (imported from there): EXIF orientation, RGB, square to the model's size (Pillow
bilinear), mean/std. Concurrent requests are merged into one session.run per worker.

Usage: VOCML_ONNX=RUN/model.onnx bentoml serve service:Vocml --port PORT  (in this folder)
Env: VOCML_BENTO_WORKERS (default 2), VOCML_BENTO_MAX_BATCH (default 8), VOCML_ORT_THREADS
(default cores / workers).
"""
import os
import sys

import bentoml
import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from onnx_predict import contract, model_input, square  # noqa: E402

WORKERS = int(os.environ.get("VOCML_BENTO_WORKERS", "2"))  # = cores (2 here): one ORT thread each
MAX_BATCH = int(os.environ.get("VOCML_BENTO_MAX_BATCH", "8"))


@bentoml.service(workers=WORKERS, traffic={"timeout": 60}, logging={"access": {"enabled": False}})
class Vocml:
    def __init__(self):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("VOCML_ORT_THREADS") or max(1, (os.cpu_count() or 1) // WORKERS))
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.environ["VOCML_ONNX"], opts, providers=["CPUExecutionProvider"])
        self.c = contract(self.session)
        self.input_name = self.session.get_inputs()[0].name

    # max_latency_ms is BentoML's shedding deadline (a request queued longer gets 503), not a
    # batch window: the dispatcher waits only as long as its own latency model says pays off.
    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=10000)
    def predict(self, images: list[Image.Image]) -> list[dict[str, float]]:
        x = np.stack([model_input(np.asarray(square(ImageOps.exif_transpose(im).convert("RGB"), self.c["size"], self.c["resize"])), self.c)
                      for im in images])
        p = self.session.run(None, {self.input_name: x})[0]
        return [dict(zip(self.c["classes"], map(float, row))) for row in p]
