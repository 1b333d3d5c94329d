"""Drives a real Label Studio server against vocml's ML backend, through Label Studio's own REST
API (tests/label_studio.rs starts both): a multi-label image project, real photos uploaded,
vocml connected as the ML backend, the predictions Label Studio stored compared with
`predict`'s, annotations that make Label Studio call the backend's webhook, and a retrain
whose promotion shows in the next predictions' model_version.

Usage: label_studio_e2e.py LS_URL TOKEN BACKEND_URL EXPECTED_JSON EXPORT_JSON IMAGE...
EXPECTED_JSON: {"<file name>": {"labels": [...], "margin": m}} from `predict` (m: the least
certain class's |2p - 1|, the score the backend gives); the project's JSON export is written
to EXPORT_JSON; prints a JSON summary.
"""
import json
import sys
import time
from pathlib import Path

import requests

CONFIG = """<View>
  <Image name="photo" value="$image"/>
  <Choices name="objects" toName="photo" choice="multiple">
    <Choice value="person"/><Choice value="chair"/><Choice value="dog"/><Choice value="sofa"/>
  </Choices>
</View>"""


def main():
    ls, token, backend, expected_file, export_file, *images = sys.argv[1:]
    expected = json.loads(Path(expected_file).read_text())
    s = requests.Session()
    s.headers["Authorization"] = f"Token {token}"

    def call(method, path, **kw):
        r = s.request(method, ls + path, timeout=120, **kw)
        if r.status_code >= 400:
            sys.exit(f"{method} {path}: HTTP {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else None

    project = call("POST", "/api/projects", json={"title": "vocml e2e", "label_config": CONFIG})["id"]
    # One field per file: Label Studio reads one file per field name.
    files = [(f"file{i}", (Path(p).name, open(p, "rb"), "image/jpeg")) for i, p in enumerate(images)]
    call("POST", f"/api/projects/{project}/import", files=files)
    tasks = call("GET", f"/api/projects/{project}/tasks/?page_size=100")
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    assert len(tasks) == len(images), tasks
    # Label Studio checks /health and calls /setup when the backend is connected.
    ml = call("POST", "/api/ml", json={"url": backend, "project": project, "title": "vocml", "is_interactive": False})

    def predictions():
        call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
             json={"selectedItems": {"all": True, "excluded": []}})
        out = {}
        for t in tasks:
            preds = call("GET", f"/api/predictions/?task={t['id']}")
            if preds:
                out[t["id"]] = max(preds, key=lambda p: p["id"])
        return out

    first = predictions()
    compared = 0
    for t in tasks:
        p = first.get(t["id"])
        assert p is not None, f"no prediction stored for task {t['id']}"
        # Uploads are stored as <8 hex>-<original name>.
        name = t["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]
        got = sorted(p["result"][0]["value"]["choices"]) if p["result"] else None
        want = expected[name]
        assert got == sorted(want["labels"]), f"{name}: Label Studio stored {got}, predict says {want['labels']}"
        assert abs(p["score"] - want["margin"]) < 1e-4, f"{name}: score {p['score']}, predict's margin {want['margin']}"
        compared += 1
    version_before = first[tasks[0]["id"]]["model_version"]

    # Annotations: Label Studio posts ANNOTATION_CREATED to <backend>/webhook; the third starts a retrain.
    truths = [["dog"], ["person", "chair"], [], ["person"], ["sofa", "person"], ["dog", "person"]]

    def annotate(some):
        for t, choices in some:
            call("POST", f"/api/tasks/{t['id']}/annotations/", json={
                "result": [{"from_name": "objects", "to_name": "photo", "type": "choices", "value": {"choices": choices}}],
                "was_cancelled": False, "ground_truth": False})

    annotate(list(zip(tasks, truths))[:3])
    deadline = time.time() + 300
    version_after = version_before
    while time.time() < deadline and version_after == version_before:
        time.sleep(2)
        version_after = requests.get(backend + "/health", timeout=10).json()["model_version"]
    assert version_after != version_before, "the backend's model_version did not change after the annotations"
    second = predictions()
    stored = second[tasks[0]["id"]]["model_version"]
    assert stored == version_after, f"Label Studio stored model_version {stored}, the backend serves {version_after}"
    annotate(list(zip(tasks, truths))[3:])
    export = s.get(f"{ls}/api/projects/{project}/export?exportType=JSON", timeout=120)
    assert export.status_code == 200, export.text[:300]
    Path(export_file).write_bytes(export.content)
    print(json.dumps({"project": project, "ml_backend": ml["id"], "compared": compared,
                      "model_version_before": version_before, "model_version_after": version_after}))


if __name__ == "__main__":
    main()
