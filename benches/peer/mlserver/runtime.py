"""MLServer peer of `serve` for benchmarks: a custom runtime scoring vocml's exported ONNX file
with ONNX Runtime. Input "images": BYTES, one encoded photo (JPEG, PNG...) per element, shape
[n] (gRPC raw_input_contents or bytes_contents; REST JSON takes base64 strings, as MLServer
has no binary tensor extension over REST). Output "probabilities": FP32 [n, classes].
Preprocessing is the file's contract, exactly as scripts/onnx_predict.py scores it (imported
from there): EXIF orientation, RGB, square to the model's size (Pillow bilinear), mean/std.
MLServer's adaptive batching (model-settings.json) merges concurrent requests into one call.

Model file: parameters.uri of model-settings.json. ONNX Runtime threads: $VOCML_ORT_THREADS,
else parameters.extra.intra_op_threads, else all cores.
"""
import base64
import io
import os
import sys

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri
from PIL import Image, ImageOps

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
from onnx_predict import contract, model_input, square  # noqa: E402


def as_bytes(element):
    # gRPC delivers bytes; REST JSON can only carry text, so photos come base64-encoded.
    return element if isinstance(element, (bytes, bytearray)) else base64.b64decode(element)


class VocmlOnnx(MLModel):
    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        threads = int(os.environ.get("VOCML_ORT_THREADS") or extra.get("intra_op_threads") or os.cpu_count())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(await get_model_uri(self.settings), opts, providers=["CPUExecutionProvider"])
        self.c = contract(self.session)
        self.input_name = self.session.get_inputs()[0].name
        return True

    def pixels(self, data):
        with Image.open(io.BytesIO(as_bytes(data))) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            return model_input(np.asarray(square(img, self.c["size"], self.c["resize"])), self.c)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = next((i for i in payload.inputs if i.name == "images"), None)
        if images is None or images.datatype != "BYTES":
            raise InferenceError('expected one BYTES input "images" (one encoded photo per element)')
        x = np.stack([self.pixels(d) for d in images.data.root])
        p = self.session.run(None, {self.input_name: x})[0].astype(np.float32)
        return InferenceResponse(model_name=self.name, model_version=self.version, id=payload.id,
                                 outputs=[NumpyCodec.encode_output("probabilities", p)])
