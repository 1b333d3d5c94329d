//! `serve` as a Label Studio ML backend, driven the way Label Studio drives it (health,
//! setup, predict, webhook events), with task images on a stand-in Label Studio host that
//! checks the API key: predictions equal `predict`'s, annotations start a retrain whose
//! promotion changes `model_version`, and the key never leaves that host or reaches a log.

use crate::util::server::Server;
use crate::util::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "ls-secret-key-5f2b";

/// A labelling config whose choices are the test model's classes (as Label Studio users write it).
pub(crate) const CONFIG: &str = r#"<View>
  <Image name="photo" value="$image"/>
  <Choices name="objects" toName="photo" choice="multiple">
    <Choice value="person"/><Choice value="chair"/><Choice value="dog"/><Choice value="sofa"/>
  </Choices>
</View>"#;

/// A stand-in for Label Studio's file serving: `GET /data/upload/1/<file>` from `dir`, 401
/// without `Authorization: Token KEY`; every request's Authorization header is recorded.
struct FakeHost {
    base: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeHost {
    fn start(dir: PathBuf) -> FakeHost {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("Authorization: ").or_else(|| h.strip_prefix("authorization: ")) {
                        auth = v.trim().to_string();
                    }
                }
                log.lock().unwrap().push((path.clone(), auth.clone()));
                let file = path.strip_prefix("/data/upload/1/").map(|f| dir.join(f));
                let (status, body) = match file {
                    _ if auth != format!("Token {KEY}") => ("401 Unauthorized", b"{\"detail\":\"bad token\"}".to_vec()),
                    Some(f) if f.is_file() => ("200 OK", std::fs::read(f).unwrap()),
                    _ => ("404 Not Found", b"{}".to_vec()),
                };
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(&body);
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
            }
        });
        FakeHost { base, seen }
    }
}

fn post(server: &Server, path: &str, body: &Value) -> crate::util::server::Reply {
    server.post(path, "application/json", body.to_string().as_bytes(), &[])
}

fn task(id: u64, file: &str) -> Value {
    json!({"id": id, "data": {"image": format!("/data/upload/1/{file}")}})
}

fn annotation_event(id: u64, file: &str, choices: &[&str]) -> Value {
    json!({"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": CONFIG}, "task": task(id, file),
           "annotation": {"id": id, "result": [{"from_name": "objects", "to_name": "photo", "type": "choices", "value": {"choices": choices}}]}})
}

fn choices(result: &Value) -> Vec<String> {
    let mut c: Vec<String> =
        result["result"][0]["value"]["choices"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    c.sort();
    c
}

fn key_file(root: &Path, key: &str) -> PathBuf {
    let f = root.join(format!("key-{}", key.len()));
    std::fs::write(&f, key).unwrap();
    f
}

#[test]
fn label_studio_backend_predicts_learns_from_annotations_and_keeps_the_key_to_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, run_dir) = best_run(root, 60, 64, &["--epochs", "2"]);
    let images = root.join("voc/JPEGImages");
    let host = FakeHost::start(images.clone());
    let other = FakeHost::start(images.clone());
    let key = key_file(root, KEY);
    let server = Server::start(
        &runs,
        &[
            "--label-studio-url",
            &host.base,
            "--label-studio-api-key-file",
            key.to_str().unwrap(),
            "--label-studio-train-after",
            "3",
            "--retrain-epochs",
            "2",
            "--retrain-tolerance",
            "1",
        ],
    );
    let run_name = run_dir.file_name().unwrap().to_str().unwrap();
    let h = server.get("/label-studio/health").json();
    assert_eq!((h["status"].as_str(), h["model_version"].as_str()), (Some("UP"), Some(run_name)));

    // Setup: a config the model cannot serve is a 400 with what to change.
    for (xml, expect) in [
        (CONFIG.replace("Choices", "Labels").replace("<Choice ", "<Label "), "no <Choices toName=\"photo\">"),
        (CONFIG.replace("sofa", "couch"), "choices [\"couch\"] are not classes of the served model"),
    ] {
        let r = post(&server, "/label-studio/setup", &json!({"project": "1", "schema": xml, "hostname": host.base, "access_token": "x"}));
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains(expect), "{}", r.body);
    }
    let r = post(&server, "/label-studio/setup", &json!({"project": "1", "schema": CONFIG, "hostname": host.base, "access_token": "x"}));
    assert_eq!((r.status, r.json()["model_version"].as_str()), (200, Some(run_name)), "{}", r.body);

    // Predict: labels equal predict's; a 404, a bomb, another host: per-task errors, no key sent away.
    let files = ["000001.jpg", "000002.jpg", "000003.jpg"];
    std::fs::write(images.join("bomb.png"), crate::hostile::png_bomb(60_000, 60_000)).unwrap();
    let mut tasks: Vec<Value> = files.iter().enumerate().map(|(i, f)| task(i as u64 + 1, f)).collect();
    tasks.push(task(10, "missing.jpg"));
    tasks.push(task(11, "bomb.png"));
    tasks.push(json!({"id": 12, "data": {"image": format!("{}/data/upload/1/000001.jpg", other.base)}}));
    let r = post(&server, "/label-studio/predict", &json!({"tasks": tasks, "project": "1.1", "label_config": CONFIG}));
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 6);
    let paths: Vec<PathBuf> = files.iter().map(|f| images.join(f)).collect();
    let o = run(bin("predict").args(["-q", "--format", "jsonl", "--run"]).arg(&run_dir).args(&paths));
    for (line, got) in stdout(&o).lines().zip(&results) {
        let want: Value = serde_json::from_str(line).unwrap();
        let mut labels: Vec<String> = want["labels"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        labels.sort();
        assert_eq!(choices(got), labels);
        assert_eq!(got["model_version"], run_name);
        assert_eq!((got["result"][0]["from_name"].as_str(), got["result"][0]["to_name"].as_str()), (Some("objects"), Some("photo")));
        let s = got["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s), "{s}");
    }
    assert!(results[3]["error"].as_str().unwrap().contains("HTTP 404"), "{}", results[3]);
    assert!(results[4]["error"].as_str().unwrap().contains("not usable"), "{}", results[4]);
    assert!(results[5]["error"].as_str().unwrap().contains("--label-studio-allow-urls"), "{}", results[5]);
    assert!(other.seen.lock().unwrap().is_empty(), "another host was contacted");
    assert!(host.seen.lock().unwrap().iter().all(|(_, auth)| auth == &format!("Token {KEY}")));

    // Webhook: bad events are 4xx; three annotations start a retrain; its promotion changes model_version.
    let mut bad = annotation_event(1, "000001.jpg", &["unicorn"]);
    let r = post(&server, "/label-studio/webhook", &bad);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("choice \"unicorn\" is not in"), "{}", r.body);
    bad = annotation_event(9, "missing.jpg", &["dog"]);
    assert_eq!(post(&server, "/label-studio/webhook", &bad).status, 422);
    let mut job = Value::Null;
    for (i, (f, c)) in files.iter().zip([&["dog"][..], &["person", "chair"], &[]]).enumerate() {
        let r = post(&server, "/label-studio/webhook", &annotation_event(i as u64 + 1, f, c));
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        assert_eq!(v["pending"].as_u64(), Some(if i < 2 { i as u64 + 1 } else { 3 }), "{v}");
        job = v["job"].clone();
    }
    let job = job.as_str().expect("the third annotation starts a job").to_string();
    server.wait_until(Duration::from_secs(240), |s| s.get(&format!("/jobs/{job}")).json()["state"] != "running");
    let done = server.get(&format!("/jobs/{job}")).json();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["outcome"]["promoted"], true, "{done}");
    let new_run = done["outcome"]["run"].as_str().unwrap().to_string();
    server.wait_until(Duration::from_secs(30), |s| s.get("/label-studio/health").json()["model_version"] == new_run.as_str());
    let r = post(&server, "/label-studio/predict", &json!({"tasks": [task(1, "000001.jpg")], "project": "1"}));
    assert_eq!(r.json()["results"][0]["model_version"], new_run.as_str(), "{}", r.body);
    let r = post(&server, "/label-studio/webhook", &json!({"action": "START_TRAINING", "project": {"id": 1}}));
    assert_eq!((r.status, r.json()["status"].as_str()), (201, Some("nothing to train")), "{}", r.body);
    // A webhook storm: 40 annotations from 8 threads at once are all stored, at most one job runs,
    // and predictions keep being answered.
    let base = server.base.clone();
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let base = base.clone();
                scope.spawn(move || {
                    (0..5)
                        .map(|i| {
                            let n = 10 + t * 5 + i;
                            let event = annotation_event(100 + n as u64, &format!("{n:06}.jpg"), &["person"]);
                            match ureq::post(&format!("{base}/label-studio/webhook")).send_json(event) {
                                Ok(r) => r.status(),
                                Err(ureq::Error::Status(code, _)) => code,
                                Err(e) => panic!("{e}"),
                            }
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.len(), 40);
    assert!(answers.iter().all(|&c| c == 201), "{answers:?}");
    let r = post(&server, "/label-studio/predict", &json!({"tasks": [task(1, "000001.jpg")], "project": "1"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!server.log.lock().unwrap().contains(KEY), "the key reached the log");
    drop(server);

    // A wrong key: Label Studio's 401 becomes a per-task error that says so.
    let wrong = key_file(root, "not-the-key");
    let server = Server::start(&runs, &["--label-studio-url", &host.base, "--label-studio-api-key-file", wrong.to_str().unwrap()]);
    let r = post(&server, "/label-studio/predict", &json!({"tasks": [task(1, "000002.jpg")], "label_config": CONFIG}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["results"][0]["error"].as_str().unwrap().contains("refused the API key"), "{}", r.body);
    assert!(!server.log.lock().unwrap().contains("not-the-key"));
}

/// A real Label Studio server (the PyPI package, in .venv/label-studio, installed by
/// `make test-tools`) on a free loopback port with SQLite in a temporary directory, its first
/// user and token from the environment; stopped when dropped.
struct LabelStudioServer {
    child: std::process::Child,
    base: String,
    log: PathBuf,
}

impl LabelStudioServer {
    fn start(dir: &Path, token: &str) -> LabelStudioServer {
        let exe = repo_root().join(".venv/label-studio/bin/label-studio");
        assert!(exe.is_file(), "{} is missing: run `make test-tools`", exe.display());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join("label-studio.log");
        let child = std::process::Command::new(exe)
            .args(["start", "--no-browser", "--internal-host", "127.0.0.1", "--port", &port.to_string(), "--data-dir"])
            .arg(dir.join("label-studio-data"))
            .env("LABEL_STUDIO_USERNAME", "e2e@vocml.test")
            .env("LABEL_STUDIO_PASSWORD", "vocml-e2e-password")
            .env("LABEL_STUDIO_USER_TOKEN", token)
            .env("LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN", "true")
            // The backend listens on loopback, which Label Studio's SSRF guard refuses by default.
            .env("USE_DEFAULT_BANNED_SUBNETS", "false")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::from(std::fs::OpenOptions::new().append(true).open(&log).unwrap()))
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut server = LabelStudioServer { child, base, log };
        let up = wait_for(Duration::from_secs(240), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("label-studio exited ({status}): {}", std::fs::read_to_string(&server.log).unwrap_or_default());
            }
            match ureq::get(&format!("{}/health", server.base)).timeout(Duration::from_secs(2)).call() {
                Ok(r) if r.status() == 200 => Some(()),
                _ => {
                    std::thread::sleep(Duration::from_millis(500));
                    None
                }
            }
        });
        assert!(up.is_some(), "label-studio did not start: {}", std::fs::read_to_string(&server.log).unwrap_or_default());
        server
    }
}

impl LabelStudioServer {
    /// The end of Label Studio's log, without the phases' polling.
    fn log_tail(&self) -> String {
        let log: String = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("GET /api/projects/") && !l.contains("sentry.io"))
            .map(|l| format!("{l}\n"))
            .collect();
        log[log.floor_char_boundary(log.len().saturating_sub(6000))..].to_string()
    }
}

impl Drop for LabelStudioServer {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One phase of tests/clients/label_studio_e2e.py against `ls` and the backend at `backend`;
/// its JSON summary.
fn e2e(ls: &LabelStudioServer, token: &str, backend: &Server, state: &Path, phase: &[&std::ffi::OsStr]) -> Value {
    e2e_at(ls, token, &backend.base, &backend.log, state, phase)
}

/// [`e2e`] with the backend at `base` (running or not) and its log.
fn e2e_at(ls: &LabelStudioServer, token: &str, base: &str, serve_log: &Mutex<String>, state: &Path, phase: &[&std::ffi::OsStr]) -> Value {
    let o = run(std::process::Command::new(repo_root().join(".venv/label-studio/bin/python"))
        .arg(repo_root().join("tests/clients/label_studio_e2e.py"))
        .args([&ls.base, token, &format!("{base}/label-studio")])
        .arg(state)
        .args(phase));
    let ls_log = ls.log_tail();
    assert!(
        o.status.success(),
        "phase {phase:?}: {}\n--- serve:\n{}\n--- label-studio (tail):\n{}",
        stderr(&o),
        serve_log.lock().unwrap(),
        ls_log
    );
    serde_json::from_str(stdout(&o).trim()).unwrap()
}

/// The newest retrain job once it has finished (`bearer`: the service's token, if it has one).
fn finished_job(server: &Server, bearer: &str) -> Value {
    let newest = |s: &Server| s.get_with("/jobs?limit=1", ("Authorization", &format!("Bearer {bearer}"))).json()[0].clone();
    server.wait_until(Duration::from_secs(240), |s| newest(s)["state"].as_str().is_some_and(|st| st != "running"));
    newest(server)
}

#[test]
fn a_real_label_studio_with_its_defaults_sorts_by_vocmls_scores_and_loses_no_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, run_dir) = best_run(root, 60, 64, &["--epochs", "2"]);
    let token = "e2e0123456789abcdef0123456789abcdef01234";
    let ls = LabelStudioServer::start(root, token);
    let key = key_file(root, token);
    // Promotion is forced (tolerance 1): on 60 generated images the gate's verdict is not the point here.
    let flags = [
        "--label-studio-url",
        &ls.base,
        "--label-studio-api-key-file",
        key.to_str().unwrap(),
        "--label-studio-train-after",
        "3",
        "--retrain-tolerance",
        "1",
    ];
    let server = Server::start(&runs, &flags);
    let images: Vec<PathBuf> = (1..=6).map(|i| root.join(format!("voc/JPEGImages/{i:06}.jpg"))).collect();
    let o = run(bin("predict").args(["-q", "--format", "jsonl", "--run"]).arg(&run_dir).args(&images));
    let mut expected = serde_json::Map::new();
    for line in stdout(&o).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let name = Path::new(v["path"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_string();
        let margin =
            v["probabilities"].as_object().unwrap().values().map(|p| (2.0 * p.as_f64().unwrap() - 1.0).abs()).fold(f64::INFINITY, f64::min);
        expected.insert(name, json!({"labels": v["labels"], "margin": margin}));
    }
    let expected_file = root.join("expected.json");
    std::fs::write(&expected_file, Value::Object(expected).to_string()).unwrap();
    let state = root.join("e2e-state.json");
    let os = |s: &str| std::ffi::OsString::from(s);
    let mut connect = vec![os("connect"), expected_file.clone().into_os_string()];
    connect.extend(images.iter().map(|p| p.clone().into_os_string()));
    let connect: Vec<&std::ffi::OsStr> = connect.iter().map(|s| s.as_os_str()).collect();

    // Connected with Label Studio's defaults: predictions stored, scored and sorted in the data manager.
    let first = e2e(&ls, token, &server, &state, &connect);
    assert_eq!(first["compared"], 6, "{first}");
    assert_eq!(first["model_version_before"], run_dir.file_name().unwrap().to_str().unwrap());
    // Three annotations start a retrain; after its promotion the data manager scores the new model's predictions.
    e2e(&ls, token, &server, &state, &["annotate".as_ref(), "0".as_ref(), "3".as_ref()]);
    let job = finished_job(&server, "");
    assert_eq!((job["state"].as_str(), job["outcome"]["promoted"].as_bool()), (Some("succeeded"), Some(true)), "{job}");
    let after = e2e(&ls, token, &server, &state, &["scores".as_ref()]);
    assert_eq!(after["model_version_after"], job["outcome"]["run"], "{after}");

    // A project whose choices are not the model's classes: Label Studio's error and serve's log say why.
    let refused = e2e(&ls, token, &server, &state, &["bad-config".as_ref()]);
    assert!(refused["error"].as_str().unwrap().contains("are not classes of the served model"), "{refused}");
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("setup refused") && log.contains("[\"Person\"] are not classes of the served model"), "{log}");
    assert!(!log.contains(token), "the key reached the log");

    // An annotation made while serve is down is caught up after it restarts and learnt by the next job.
    let (base, log) = (server.base.clone(), server.log.clone());
    drop(server);
    e2e_at(&ls, token, &base, &log, &state, &["annotate".as_ref(), "3".as_ref(), "4".as_ref()]);
    // Back on the address Label Studio knows.
    let addr = base.trim_start_matches("http://").to_string();
    let mut again = flags.to_vec();
    again.extend(["--addr", &addr]);
    let server = Server::start(&runs, &again);
    e2e(&ls, token, &server, &state, &["train".as_ref()]);
    let job = finished_job(&server, "");
    assert_eq!(
        (job["state"].as_str(), job["corrections"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{job}\n{}\n{}",
        server.log.lock().unwrap(),
        ls.log_tail()
    );
    let e2e_state = read_json(&state);
    let (project, missed) = (e2e_state["project"].as_u64().unwrap(), e2e_state["tasks"][3].as_u64().unwrap());
    let store = std::fs::read_to_string(runs.join("feedback/corrections.jsonl")).unwrap();
    assert!(store.contains(&format!("\"source\":\"label-studio:{project}/{missed}/")), "{store}");
    drop(server);

    // With --token-file: Label Studio's connection uses Basic auth, vocml gives its webhook the
    // token, and annotations reach a retrain.
    let serve_token = "serve-token-7c1d";
    let token_file = root.join("serve-token");
    std::fs::write(&token_file, serve_token).unwrap();
    let mut guarded = again.clone();
    guarded.extend(["--token-file", token_file.to_str().unwrap()]);
    let server = Server::start(&runs, &guarded);
    e2e(&ls, token, &server, &state, &["auth".as_ref(), serve_token.as_ref()]);
    e2e(&ls, token, &server, &state, &["annotate".as_ref(), "4".as_ref(), "6".as_ref()]);
    let metrics = server.get("/metrics").body;
    // Label Studio may also post other events (a project update) to the webhook: none is refused.
    let webhooks = |status: &str| {
        let key = format!("vocml_requests_total{{route=\"/label-studio/webhook\",status=\"{status}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(key.as_str())).map_or(0, |n| n.parse::<u64>().unwrap())
    };
    assert!(webhooks("201") >= 2 && webhooks("401") == 0, "{metrics}");
    e2e(&ls, token, &server, &state, &["train".as_ref()]);
    let job = finished_job(&server, serve_token);
    assert_eq!((job["state"].as_str(), job["corrections"].as_u64()), (Some("succeeded"), Some(2)), "{job}");
    let log = server.log.lock().unwrap().clone();
    assert!(!log.contains(token) && !log.contains(serve_token), "a key reached the log: {log}");

    // The project's export prepares (uploads read from Label Studio's media folder) and trains.
    let export = root.join("export.json");
    e2e(&ls, token, &server, &state, &["export".as_ref(), export.as_os_str()]);
    let prepared = root.join("from-label-studio");
    let o = run(bin("voc-prep")
        .args(["label-studio", "-q", "--size", "64", "--split", "0.5,0.5,0", "--file"])
        .arg(&export)
        .arg("--images-root")
        .arg(root.join("label-studio-data/media"))
        .arg("--out")
        .arg(&prepared));
    assert!(o.status.success(), "{}", stderr(&o));
    let m = read_json(&prepared.join("manifest.json"));
    let counts: Vec<u64> = ["train", "val", "test"].iter().map(|s| m["splits"][*s]["count"].as_u64().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), 6, "{m}");
    let o = run(bin("train").args(["-q", "--epochs", "1", "--data"]).arg(&prepared).arg("--runs-dir").arg(root.join("ls-runs")));
    assert!(o.status.success(), "{}", stderr(&o));
}
