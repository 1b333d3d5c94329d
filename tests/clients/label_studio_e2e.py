"""Drives a real Label Studio server against vocml's ML backend through Label Studio's own REST
API, the way a labeller's clicks do (tests/label_studio.rs starts both and runs the phases in
order; state between phases is kept in STATE_JSON):

  connect       a multi-label image project, real photos uploaded, vocml connected as its ML
                backend with Label Studio's defaults (title "vocml"), "Retrieve predictions";
                the stored predictions are compared with `predict`'s (EXPECTED_JSON), and the
                data manager's prediction scores read the way it reads them (a view sorted by
                prediction score): non-empty, vocml's margins, least certain first
  annotate A B  annotations of tasks A..B-1 (Label Studio posts them to the backend's webhook)
  scores        after a promotion: once the project's model_version is the backend's new
                version, the data manager's scores are non-empty again, from the new model
  train         "Start training" (Label Studio sends START_TRAINING to the webhook)
  auth TOKEN    the backend's connection set to Basic auth with TOKEN as its password; waits
                until vocml has given the backend's webhook the token
  bad-config    a project whose choices are not the model's classes: connecting it fails, and
                Label Studio's error names the reason; prints it
  export FILE   the project's JSON export

Usage: label_studio_e2e.py LS_URL TOKEN BACKEND_URL STATE_JSON PHASE [ARGS...]
connect reads EXPECTED_JSON and IMAGE... as its ARGS: {"<file name>": {"labels": [...],
"margin": m}} from `predict` (m: the least certain class's |2p - 1|). Prints a JSON summary.
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
TRUTHS = [["dog"], ["person", "chair"], [], ["person"], ["sofa", "person"], ["dog", "person"]]


class Studio:
    def __init__(self, url, token):
        self.url = url
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Token {token}"

    def call(self, method, path, ok=(200, 201, 204), **kw):
        r = self.s.request(method, self.url + path, timeout=120, **kw)
        if r.status_code not in ok:
            sys.exit(f"{method} {path}: HTTP {r.status_code}: {r.text[:800]}")
        return r.json() if r.content else None

    def tasks(self, project):
        t = self.call("GET", f"/api/tasks/?project={project}&page_size=100")
        return t["tasks"] if isinstance(t, dict) else t

    def retrieve_predictions(self, project):
        self.call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
                  json={"selectedItems": {"all": True, "excluded": []}})

    def scored_view(self, project):
        """The tasks as the data manager lists them sorted by prediction score: (id, score)."""
        view = self.call("POST", "/api/dm/views", json={"project": project, "data": {"ordering": ["tasks:predictions_score"]}})
        page = self.call("GET", f"/api/tasks?view={view['id']}&project={project}&fields=all&page=1&page_size=100")
        self.call("DELETE", f"/api/dm/views/{view['id']}/")
        return [(t["id"], t.get("predictions_score")) for t in page["tasks"]]

    def annotate(self, task, choices):
        self.call("POST", f"/api/tasks/{task}/annotations/", json={
            "result": [{"from_name": "objects", "to_name": "photo", "type": "choices", "value": {"choices": choices}}],
            "was_cancelled": False, "ground_truth": False})


def wait(what, check, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1)
    sys.exit(f"timed out after {seconds} s waiting until {what}")


def connect(ls, backend, state, expected_file, *images):
    expected = json.loads(Path(expected_file).read_text())
    project = ls.call("POST", "/api/projects", json={"title": "vocml e2e", "label_config": CONFIG})["id"]
    files = [(f"file{i}", (Path(p).name, open(p, "rb"), "image/jpeg")) for i, p in enumerate(images)]
    ls.call("POST", f"/api/projects/{project}/import", files=files)
    tasks = ls.tasks(project)
    assert len(tasks) == len(images), tasks
    # Connected as a user does it: a title, the URL, nothing else (Label Studio checks /health and calls /setup).
    ml = ls.call("POST", "/api/ml", json={"url": backend, "project": project, "title": "vocml", "is_interactive": False})
    ls.retrieve_predictions(project)
    stored = {}
    for t in tasks:
        preds = ls.call("GET", f"/api/predictions/?task={t['id']}")
        assert preds, f"no prediction stored for task {t['id']}"
        stored[t["id"]] = max(preds, key=lambda p: p["id"])
    for t in tasks:
        p = stored[t["id"]]
        name = t["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]  # uploads are <8 hex>-<name>
        got = sorted(p["result"][0]["value"]["choices"]) if p["result"] else None
        want = expected[name]
        assert got == sorted(want["labels"]), f"{name}: Label Studio stored {got}, predict says {want['labels']}"
        assert abs(p["score"] - want["margin"]) < 1e-4, f"{name}: score {p['score']}, predict's margin {want['margin']}"
    version = stored[tasks[0]["id"]]["model_version"]
    # vocml sets the project's model_version to the served run: the data manager scores its predictions.
    wait("the project's model_version is the served run",
         lambda: ls.call("GET", f"/api/projects/{project}")["model_version"] == version, 60)
    view = ls.scored_view(project)
    scores = [s for _, s in view]
    assert all(s is not None for s in scores), f"empty prediction scores in the data manager: {view}"
    margins = {t["id"]: stored[t["id"]]["score"] for t in tasks}
    assert all(abs(s - margins[i]) < 1e-4 for i, s in view), f"scores {view}, margins {margins}"
    assert scores == sorted(scores), f"not least certain first: {scores}"
    state.update(project=project, ml_backend=ml["id"], tasks=[t["id"] for t in tasks], version_before=version)
    return {"compared": len(tasks), "model_version_before": version, "scores": scores}


def annotate(ls, backend, state, first, last):
    for t, choices in list(zip(state["tasks"], TRUTHS))[int(first):int(last)]:
        ls.annotate(t, choices)
    return {"annotated": int(last) - int(first)}


def scores(ls, backend, state):
    project = state["project"]
    version = requests.get(backend + "/health", timeout=10).json()["model_version"]
    assert version != state["version_before"], "the backend still serves the first model"
    wait("the project's model_version is the promoted run",
         lambda: ls.call("GET", f"/api/projects/{project}")["model_version"] == version)

    def scored():
        view = ls.scored_view(project)
        unlabelled = [s for i, s in view if i in state["tasks"][3:]]
        return view if unlabelled and all(s is not None for s in unlabelled) else None

    view = wait("the data manager scores the unlabelled tasks with the new model", scored)
    preds = ls.call("GET", f"/api/predictions/?task={state['tasks'][-1]}")
    assert any(p["model_version"] == version for p in preds), preds
    return {"model_version_after": version, "scores": [s for _, s in view]}


def train(ls, backend, state):
    ls.call("POST", f"/api/ml/{state['ml_backend']}/train", json={"use_ground_truth": False})
    return {"train": "sent"}


def auth(ls, backend, state, token):
    # Label Studio checks /health and /setup again with the new credentials (the settings form sends url, project and title with them).
    ls.call("PATCH", f"/api/ml/{state['ml_backend']}",
            json={"url": backend, "project": state["project"], "title": "vocml", "auth_method": "BASIC_AUTH",
                  "basic_auth_user": "labelstudio", "basic_auth_pass": token})

    def headers():
        hooks = ls.call("GET", f"/api/webhooks/?project={state['project']}")
        mine = [h for h in hooks if h["url"].rstrip("/").endswith("/label-studio/webhook")]
        return mine if mine and all((h.get("headers") or {}).get("Authorization") == f"Bearer {token}" for h in mine) else None

    wait("vocml gives the backend's webhook its token", headers)
    return {"auth": "basic"}


def bad_config(ls, backend, state):
    project = ls.call("POST", "/api/projects", json={"title": "wrong choices", "label_config": CONFIG.replace('"person"', '"Person"')})["id"]
    r = ls.s.post(ls.url + "/api/ml", json={"url": backend, "project": project, "title": "vocml"}, timeout=120)
    assert r.status_code == 400, f"connecting a project vocml cannot serve: HTTP {r.status_code}: {r.text[:500]}"
    return {"error": r.text}


def export(ls, backend, state, file):
    r = ls.s.get(f"{ls.url}/api/projects/{state['project']}/export?exportType=JSON", timeout=120)
    assert r.status_code == 200, r.text[:300]
    Path(file).write_bytes(r.content)
    return {"exported": len(r.json())}


def main():
    url, token, backend, state_file, phase, *args = sys.argv[1:]
    state_path = Path(state_file)
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    phases = {"connect": connect, "annotate": annotate, "scores": scores, "train": train, "auth": auth,
              "bad-config": bad_config, "export": export}
    out = phases[phase](Studio(url, token), backend, state, *args)
    state_path.write_text(json.dumps(state))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
