"""Drives `serve` with the Open Inference Protocol's own clients, with their defaults:
Triton's `tritonclient.http` and `tritonclient.grpc`, and KServe's `InferenceRESTClient` (v2).

Usage: oip_clients.py triton|kserve HTTP_HOST:PORT GRPC_HOST:PORT MODEL VERSION IMAGE...

(one process per vendor: both register the `inference.*` protobuf messages, and the protobuf
runtime refuses the same names twice in one process)

Prints one JSON object: for every call, what the client returned (readiness booleans,
metadata, probabilities per image as lists, classification strings). The Rust test that runs
it compares the values with `predict`'s; this script asserts nothing itself, so that every
path's outcome is reported even when one fails (a failure is recorded as {"error": ...}).
"""

import asyncio
import base64
import json
import sys

import numpy as np


def text(s):
    """A BYTES element as text (binary outputs give bytes, JSON ones str)."""
    return s.decode() if isinstance(s, bytes) else s


def attempt(results, key, call):
    try:
        results[key] = call()
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        results[key] = {"error": f"{type(e).__name__}: {e}"}


def triton_http(url, model, version, images, raw, b64):
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(url=url)
    r = {}
    attempt(r, "server_live", c.is_server_live)
    attempt(r, "server_ready", c.is_server_ready)
    attempt(r, "model_ready", lambda: c.is_model_ready(model))
    attempt(r, "model_ready_version", lambda: c.is_model_ready(model, model_version=version))
    attempt(r, "model_ready_unknown_version", lambda: c.is_model_ready(model, model_version="999"))
    attempt(r, "server_metadata", c.get_server_metadata)
    attempt(r, "model_metadata", lambda: c.get_model_metadata(model))
    attempt(r, "model_metadata_version", lambda: c.get_model_metadata(model, model_version=version))

    def infer(data, binary, outputs=None, model_version=""):
        inp = httpclient.InferInput("images", list(data.shape), "BYTES")
        inp.set_data_from_numpy(data, binary_data=binary)
        res = c.infer(model, [inp], outputs=outputs, model_version=model_version, request_id="req-7")
        out = res.as_numpy("probabilities")
        return {
            "id": res.get_response().get("id"),
            "model_version": res.get_response().get("model_version"),
            "probabilities": out.tolist() if out.dtype != np.object_ else [[text(s) for s in row] for row in out],
        }

    # The client's defaults: binary input, binary output (binary_data_output).
    attempt(r, "infer_binary", lambda: infer(raw, True))
    attempt(r, "infer_binary_base64", lambda: infer(b64, True))
    attempt(r, "infer_binary_version", lambda: infer(raw, True, model_version=version))
    attempt(r, "infer_binary_nx1", lambda: infer(raw.reshape(-1, 1), True))
    attempt(
        r,
        "infer_json",
        lambda: infer(b64, False, outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False)]),
    )
    attempt(
        r,
        "infer_binary_output_only",
        lambda: infer(b64, False, outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=True)]),
    )
    attempt(
        r,
        "classification",
        lambda: infer(raw, True, outputs=[httpclient.InferRequestedOutput("probabilities", class_count=2)]),
    )
    attempt(
        r,
        "classification_json",
        lambda: infer(raw, True, outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=2)]),
    )
    attempt(r, "infer_unknown_version", lambda: infer(raw, True, model_version="999"))
    attempt(r, "infer_unknown_model", lambda: c.infer("nosuchmodel", [httpclient.InferInput("images", [1], "BYTES")]))
    c.close()
    return r


def triton_grpc(url, model, version, images, raw, b64):
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(url=url)
    r = {}
    attempt(r, "server_live", c.is_server_live)
    attempt(r, "server_ready", c.is_server_ready)
    attempt(r, "model_ready", lambda: c.is_model_ready(model))
    attempt(r, "model_ready_version", lambda: c.is_model_ready(model, model_version=version))
    attempt(r, "server_metadata", lambda: c.get_server_metadata(as_json=True))
    attempt(r, "model_metadata", lambda: c.get_model_metadata(model, as_json=True))
    attempt(r, "model_metadata_version", lambda: c.get_model_metadata(model, model_version=version, as_json=True))

    def infer(data, outputs=None, model_version=""):
        inp = grpcclient.InferInput("images", list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        res = c.infer(model, [inp], outputs=outputs, model_version=model_version, request_id="req-9")
        out = res.as_numpy("probabilities")
        resp = res.get_response(as_json=True)
        return {
            "id": resp.get("id"),
            "model_version": resp.get("model_version"),
            "probabilities": out.tolist() if out.dtype != np.object_ else [[text(s) for s in row] for row in out],
        }

    attempt(r, "infer_binary", lambda: infer(raw))
    attempt(r, "infer_binary_base64", lambda: infer(b64))
    attempt(r, "infer_binary_version", lambda: infer(raw, model_version=version))
    attempt(r, "classification", lambda: infer(raw, outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=2)]))
    attempt(r, "infer_unknown_version", lambda: infer(raw, model_version="999"))
    attempt(r, "infer_unknown_model", lambda: c.get_model_metadata("nosuchmodel"))
    c.close()
    return r


def kserve_rest(base, model, raw, b64):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run():
        c = InferenceRESTClient(RESTConfig(protocol="v2"))
        r = {}

        async def call(key, coro):
            try:
                r[key] = await coro
            except Exception as e:  # noqa: BLE001 - reported to the test
                r[key] = {"error": f"{type(e).__name__}: {e}"}

        await call("server_live", c.is_server_live(base))
        await call("server_ready", c.is_server_ready(base))
        await call("model_ready", c.is_model_ready(base, model))

        async def infer(data, binary):
            inp = InferInput(name="images", shape=list(data.shape), datatype="BYTES")
            inp.set_data_from_numpy(data, binary_data=binary)
            res = await c.infer(base, InferRequest(model_name=model, infer_inputs=[inp], request_id="req-11"), model_name=model)
            return {"id": res.id, "model_name": res.model_name, "probabilities": res.outputs[0].as_numpy().tolist()}

        await call("infer_binary", infer(raw, True))
        await call("infer_json", infer(b64, False))
        await c.close()
        return r

    return asyncio.run(run())


def main():
    vendor, http_url, grpc_url, model, version, *paths = sys.argv[1:]
    images = [open(p, "rb").read() for p in paths]
    raw = np.array(images, dtype=np.object_)
    b64 = np.array([base64.b64encode(i) for i in images], dtype=np.object_)
    if vendor == "triton":
        out = {
            "triton_http": triton_http(http_url, model, version, images, raw, b64),
            "triton_grpc": triton_grpc(grpc_url, model, version, images, raw, b64),
        }
    else:
        out = {"kserve_rest": kserve_rest(f"http://{http_url}", model, raw, b64)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
