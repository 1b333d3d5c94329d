"""Checks that the benchmark peers score like vocml: the probabilities MLServer and BentoML
return for a few photos against `predict --engine onnx` on the same files (the run's
model.onnx in ONNX Runtime on both sides).

Each photo is first squared to the model's size (Pillow bilinear) and saved as PNG, and every
scorer gets those same files: a lossless image already at the model's size is only decoded and
normalised, so vocml and the peers must agree to --tolerance (default 1e-4). For information
only, the same squares saved as JPEG and the original photos are scored too: JPEG decoders
differ (vocml's `image` crate vs Pillow's libjpeg-turbo: up to ~1e-2 in probability here, also
at 4:4:4 and quality 100), and so do resizers (third decimal).

  .venv/clients/bin/python benches/peer/check_peers.py RUN_DIR PHOTO... \
      [--mlserver-grpc 127.0.0.1:GRPC_PORT] [--mlserver-http http://127.0.0.1:PORT] \
      [--bentoml http://127.0.0.1:PORT]

Prints the largest absolute difference per peer; exits 1 if one exceeds the tolerance at the
model's size or a request fails. MLServer's gRPC check needs tritonclient (.venv/clients, from
`make test-tools`): the request the benchmark sends, raw_input_contents. Its REST check sends
JSON with the photo base64-encoded, the only way MLServer's REST takes bytes.
"""
import argparse
import base64
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import numpy as np
from PIL import Image, ImageOps


def vocml_scores(predict, run, paths, out):
    subprocess.run([predict, "-q", "--run", run, "--engine", "onnx", "--output", out, *paths], check=True,
                   stdout=subprocess.DEVNULL)
    return {os.path.abspath(r["path"]): r for r in csv.DictReader(open(out))}


def mlserver_grpc(addr):
    import tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient(addr)

    def score(photo):
        x = grpcclient.InferInput("images", [1], "BYTES")
        x.set_data_from_numpy(np.array([photo], dtype=object))
        return client.infer("vocml", [x]).as_numpy("probabilities")[0]
    return score


def mlserver_http(url):
    def score(photo):
        body = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(photo).decode()]}]}
        req = urllib.request.Request(f"{url}/v2/models/vocml/infer", json.dumps(body).encode(), {"Content-Type": "application/json"})
        out = json.load(urllib.request.urlopen(req, timeout=60))["outputs"][0]
        return np.array(out["data"], np.float32).reshape(out["shape"])[0]
    return score


def bentoml(url, classes):
    boundary = "vocml-check-boundary"

    def score(photo):
        kind = "png" if photo.startswith(b"\x89PNG") else "jpeg"
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="photo.{kind}"\r\n'
                f"Content-Type: image/{kind}\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"{url}/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return np.array([json.load(urllib.request.urlopen(req, timeout=60))[0][c] for c in classes], np.float32)
    return score


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("photos", nargs="+")
    ap.add_argument("--mlserver-grpc")
    ap.add_argument("--mlserver-http")
    ap.add_argument("--bentoml")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--predict", default="target/release/predict")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.run, "config.json")))
    classes, size = cfg["classes"], cfg["image_size"]
    peers = {}
    if a.mlserver_grpc:
        peers["MLServer gRPC (raw_input_contents)"] = mlserver_grpc(a.mlserver_grpc)
    if a.mlserver_http:
        peers["MLServer REST (JSON, base64)"] = mlserver_http(a.mlserver_http)
    if a.bentoml:
        peers["BentoML (multipart images)"] = bentoml(a.bentoml, classes)
    if not peers:
        sys.exit("check_peers: name at least one peer (--mlserver-grpc, --mlserver-http, --bentoml)")

    tmp = tempfile.mkdtemp(prefix="check-peers-")
    png, jpeg = [], []
    for i, p in enumerate(a.photos):
        img = ImageOps.exif_transpose(Image.open(p)).convert("RGB").resize((size, size), Image.BILINEAR)
        png.append(os.path.join(tmp, f"{i:03d}.png"))
        img.save(png[-1])
        jpeg.append(os.path.join(tmp, f"{i:03d}.jpg"))
        img.save(jpeg[-1], quality=95)
    sets = {f"{size}px PNG (checked)": png, f"{size}px JPEG (info)": jpeg,
            "original photos (info)": [os.path.abspath(p) for p in a.photos]}
    failed = False
    for label, paths in sets.items():
        ref = vocml_scores(a.predict, a.run, paths, os.path.join(tmp, "vocml.csv"))
        for name, score in peers.items():
            worst = 0.0
            try:
                for p in paths:
                    row = ref[os.path.abspath(p)]
                    if row["error"]:
                        raise RuntimeError(f"predict: {p}: {row['error']}")
                    want = np.array([float(row[f"p_{c}"]) for c in classes])
                    worst = max(worst, float(np.abs(score(open(p, "rb").read()) - want).max()))
            except Exception as e:  # a peer that does not answer fails the check
                print(f"{name:38s} {label:24s} FAILED: {type(e).__name__}: {e}")
                failed = True
                continue
            bad = label.endswith("(checked)") and worst > a.tolerance
            failed |= bad
            print(f"{name:38s} {label:24s} max |dp| {worst:.2e} over {len(paths)} photos{'  > ' + str(a.tolerance) if bad else ''}")
    shutil.rmtree(tmp)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
