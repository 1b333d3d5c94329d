//! Integration tests of `serve`: the real binary on a free loopback port. Parity with
//! `predict`, retrain jobs end to end with auth, swaps under load with zero failures, a
//! broken run refused, 25+ bad requests answered with the right 4xx, graceful shutdown.

use crate::util::server::{multipart, Server};
use crate::util::*;
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A prepared dataset and a run of `epochs` promoted to `runs/best`: (data, runs, run).
pub fn fixture(root: &Path, images: usize, size: u32, epochs: &str) -> (PathBuf, PathBuf, PathBuf) {
    best_run(root, images, size, &["--epochs", epochs])
}

fn image(root: &Path, i: usize) -> (String, Vec<u8>) {
    let name = format!("{:06}.jpg", i);
    let bytes = std::fs::read(root.join("voc/JPEGImages").join(&name)).unwrap();
    (name, bytes)
}

fn labels_of(v: &serde_json::Value) -> Vec<String> {
    let mut l: Vec<String> = v["labels"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
    l.sort();
    l
}

/// One server for every case (long on purpose: starting a server per case costs seconds).
#[test]
fn predictions_equal_the_predict_tools_and_bad_requests_get_a_clear_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, run_dir) = fixture(root, 60, 64, "1");
    let server = Server::start(&runs, &["--max-files", "4", "--max-body-mb", "1"]);
    let files: Vec<(String, Vec<u8>)> = (1..=3).map(|i| image(root, i)).collect();
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = files.iter().map(|(n, b)| ("files", Some(n.as_str()), b.as_slice())).collect();
    parts.push(("files", Some("notes.txt"), b"not an image"));
    let r = server.post_form("/predict?top_k=2", &parts, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let got = r.json();
    assert_eq!(got.as_array().unwrap().len(), 4);
    assert!(got[3]["error"].as_str().unwrap().contains("not an image"), "{}", got[3]);

    let paths: Vec<PathBuf> = files.iter().map(|(n, _)| root.join("voc/JPEGImages").join(n)).collect();
    let o = run(bin("predict").args(["-q", "--format", "jsonl", "--top-k", "2", "--run"]).arg(&run_dir).args(&paths));
    let run_name = run_dir.file_name().unwrap().to_str().unwrap();
    for (line, g) in stdout(&o).lines().zip(got.as_array().unwrap()) {
        let want: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(g["labels"], want["labels"]);
        assert_eq!(g["model"], run_name);
        assert_eq!(g["top"].as_array().unwrap().len(), 2);
        for c in ["person", "chair", "dog", "sofa"] {
            let (a, b) = (g["probabilities"][c].as_f64().unwrap(), want["probabilities"][c].as_f64().unwrap());
            assert!((a - b).abs() < 1e-5, "{c}: serve {a} vs predict {b}");
        }
    }
    // The v2 protocol gives the same probabilities.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&files[0].1);
    let body = serde_json::json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}]});
    let r = server.post("/v2/models/vocml/infer", "application/json", body.to_string().as_bytes(), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let v2 = r.json();
    assert_eq!(v2["outputs"][0]["shape"], serde_json::json!([1, 4]));
    assert!((v2["outputs"][0]["data"][0].as_f64().unwrap() - got[0]["probabilities"]["person"].as_f64().unwrap()).abs() < 1e-6);

    let jpeg = files[0].1.as_slice();
    let form = multipart;
    let json = |b: Vec<u8>| ("application/json".to_string(), b);
    let raw = |ct: &str, b: Vec<u8>| (ct.to_string(), b);
    let big = vec![0u8; 2 << 20];
    let bad_requests: Vec<(&str, &str, (String, Vec<u8>), u16, &str)> = vec![
        ("POST", "/predict", raw("text/plain", b"hello".to_vec()), 400, "multipart/form-data"),
        ("POST", "/predict", raw("multipart/form-data", b"x".to_vec()), 400, "boundary"),
        ("POST", "/predict", form(&[]), 400, "no `files` field"),
        ("POST", "/predict", form(&[("photo", Some("a.jpg"), jpeg)]), 400, "unexpected multipart field"),
        ("POST", "/predict?top_k=abc", form(&[("files", Some("a.jpg"), jpeg)]), 400, "bad query"),
        ("POST", "/predict?bogus=1", form(&[("files", Some("a.jpg"), jpeg)]), 400, "bad query"),
        ("POST", "/predict", form(&[("files", Some("a.jpg"), &big)]), 413, "multipart"),
        (
            "POST",
            "/predict",
            raw("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data; name=\"files\"\r\n\r\nabc".to_vec()),
            400,
            "malformed multipart",
        ),
        ("GET", "/predict", raw("", vec![]), 405, ""),
        ("GET", "/nowhere", raw("", vec![]), 404, "no such endpoint"),
        ("GET", "/jobs/job-999", raw("", vec![]), 404, "no job"),
        ("POST", "/retrain", raw("text/plain", b"x".to_vec()), 415, "multipart/form-data"),
        ("POST", "/retrain", json(b"{".to_vec()), 400, "bad JSON body"),
        ("POST", "/retrain", json(b"{}".to_vec()), 400, "missing field `corrections`"),
        ("POST", "/retrain", json(br#"{"corrections":[]}"#.to_vec()), 400, "no corrections given"),
        ("POST", "/retrain", json(br#"{"corrections":[{"id":"nope","labels":["dog"]}]}"#.to_vec()), 400, "no recent upload with id"),
        ("POST", "/retrain", json(br#"{"corrections":[{"id":"x","labels":["dog"]}],"extra":1}"#.to_vec()), 400, "unknown field `extra`"),
        ("POST", "/retrain", json(br#"{"corrections":[{"id":"x","labels":"dog"}]}"#.to_vec()), 400, "bad JSON body"),
        ("POST", "/retrain", form(&[("files", Some("a.jpg"), jpeg)]), 400, "no `labels` field"),
        ("POST", "/retrain", form(&[("files", Some("a.jpg"), jpeg), ("labels", None, b"[[\"cat\"]]")]), 400, "unknown class \"cat\""),
        ("POST", "/retrain", form(&[("files", Some("a.jpg"), jpeg), ("labels", None, b"dog")]), 400, "expected a JSON list of label lists"),
        ("POST", "/retrain", form(&[("files", Some("a.jpg"), jpeg), ("labels", None, b"[[],[]]")]), 400, "1 files but 2 label lists"),
        ("POST", "/retrain", form(&[("files", Some("a.txt"), b"text"), ("labels", None, b"[[]]")]), 400, "not a decodable image"),
        ("POST", "/v2/models/other/infer", json(body.to_string().into_bytes()), 404, "unknown model"),
        ("GET", "/v2/models/other", raw("", vec![]), 404, "unknown model"),
        ("POST", "/v2/models/vocml/infer", json(b"[]".to_vec()), 400, "bad inference request"),
        (
            "POST",
            "/v2/models/vocml/infer",
            json(br#"{"inputs":[{"name":"images","shape":[1],"datatype":"FP32","data":["x"]}]}"#.to_vec()),
            400,
            "expected BYTES",
        ),
        (
            "POST",
            "/v2/models/vocml/infer",
            json(br#"{"inputs":[{"name":"images","shape":[2],"datatype":"BYTES","data":["x"]}]}"#.to_vec()),
            400,
            "does not match",
        ),
        (
            "POST",
            "/v2/models/vocml/infer",
            json(br#"{"inputs":[{"name":"images","shape":[1],"datatype":"BYTES","data":["***"]}]}"#.to_vec()),
            400,
            "not base64",
        ),
        (
            "POST",
            "/v2/models/vocml/infer",
            json(br#"{"inputs":[{"name":"images","shape":[1],"datatype":"BYTES","data":["aGVsbG8="]}]}"#.to_vec()),
            400,
            "element 0",
        ),
    ];
    let five: Vec<(&str, Option<&str>, &[u8])> = (0..5).map(|_| ("files", Some("a.jpg"), jpeg)).collect();
    let r = server.post_form("/predict", &five, &[]);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("more than 4 files"), "{}", r.body);
    for (method, path, (ct, body), status, expect) in &bad_requests {
        let r = match *method {
            "GET" => server.get(path),
            _ => server.post(path, ct, body, &[]),
        };
        assert_eq!(r.status, *status, "{method} {path} ({ct}): {}", r.body);
        if !expect.is_empty() {
            let e = r.json();
            assert!(e["error"].as_str().unwrap().contains(expect), "{method} {path}: expected {expect:?} in {}", r.body);
        }
    }
    assert!(bad_requests.len() >= 25);

    // Grad-CAM over HTTP: one overlay per decided label, a PNG at the photo's size.
    let r = server.post_form("/explain", &parts[..1], &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let e = r.json();
    assert_eq!(e[0]["labels"], got[0]["labels"]);
    let maps = e[0]["explanations"].as_array().unwrap();
    assert_eq!(maps.len(), got[0]["labels"].as_array().unwrap().len().max(1));
    let png = base64::engine::general_purpose::STANDARD
        .decode(maps[0]["overlay"].as_str().unwrap().trim_start_matches("data:image/png;base64,"))
        .unwrap();
    let photo = image::load_from_memory(&files[0].1).unwrap();
    let overlay = image::load_from_memory(&png).unwrap();
    assert_eq!((overlay.width(), overlay.height()), (photo.width(), photo.height()));
    let r = server.post_form("/explain?classes=cat", &parts[..1], &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("unknown class \"cat\""));
    assert_eq!(server.get("/health").json()["status"], "ok");
    assert_eq!(server.post_form("/predict", &parts[..1], &[]).status, 200, "the server stopped serving");
    let metrics = server.get("/metrics").body;
    assert!(metrics.contains("vocml_requests_total{route=\"/predict\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("vocml_batch_size_bucket"), "{metrics}");
}

#[test]
fn a_retrain_job_learns_a_correction_and_the_new_run_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (data, runs, first) = fixture(root, 200, 96, "10");
    std::fs::write(root.join("token"), "s3cret\n").unwrap();
    let server = Server::start(&runs, &["--token-file", root.join("token").to_str().unwrap(), "--retrain-epochs", "30"]);
    let (name, bytes, truth) = wrong_test_image(&server, root, &data);
    let before = server.post_form("/predict", &[("files", Some(&name), &bytes)], &[]).json();
    let body = serde_json::json!({"corrections": [{"id": before[0]["id"], "labels": truth}], "force": true}).to_string();
    let r = server.post("/retrain", "application/json", body.as_bytes(), &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = server.post("/retrain", "application/json", body.as_bytes(), &[("Authorization", "Bearer wrong")]);
    assert_eq!(r.status, 401, "{}", r.body);
    let auth = ("Authorization", "Bearer s3cret");
    let r = server.post("/retrain", "application/json", body.as_bytes(), &[auth]);
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r2 = server.post("/retrain", "application/json", body.as_bytes(), &[auth]);
    assert!(r2.status == 409 || r2.status == 202, "{}", r2.body);
    server.wait_until(Duration::from_secs(120), |s| {
        let j = s.get_with(&format!("/jobs/{id}"), auth).json();
        j["state"] != "running"
    });
    let job = server.get_with(&format!("/jobs/{id}"), auth).json();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["outcome"]["promoted"], true, "{job}");
    let new_run = job["outcome"]["run"].as_str().unwrap().to_string();
    server.wait_until(Duration::from_secs(30), |s| s.get("/model").json()["run"] == new_run.as_str());
    let model = server.get("/model").json();
    assert_eq!(model["version"], 2);
    assert_eq!(model["parent"], first.file_name().unwrap().to_str().unwrap());
    let after = server.post_form("/predict", &[("files", Some(&name), &bytes)], &[]).json();
    assert_eq!(labels_of(&after[0]), truth, "the corrected image is predicted right afterwards");
    assert_eq!(after[0]["model"], new_run.as_str());
    let store = vocml_core::retrain::feedback::FeedbackStore::open(&runs.join("feedback")).unwrap();
    assert!(store.all().unwrap().corrections.iter().any(|c| c.sha256 == before[0]["id"].as_str().unwrap()));
}

/// A test-split image the served model gets wrong: its file name, bytes and true labels.
pub fn wrong_test_image(server: &Server, root: &Path, data: &Path) -> (String, Vec<u8>, Vec<String>) {
    let m = read_json(&data.join("manifest.json"));
    let ids: Vec<usize> = m["splits"]["test"]["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().parse().unwrap()).collect();
    ids.into_iter()
        .map(|i| image(root, i))
        .find_map(|(n, b)| {
            let r = server.post_form("/predict", &[("files", Some(&n), &b)], &[]).json();
            let t = truth(root, n.trim_end_matches(".jpg"));
            (labels_of(&r[0]) != t).then_some((n, b, t))
        })
        .expect("a test image the first model gets wrong")
}

/// The labels of synthetic image `id` among the default classes, sorted.
pub fn truth(root: &Path, id: &str) -> Vec<String> {
    let xml = std::fs::read_to_string(root.join(format!("voc/Annotations/{id}.xml"))).unwrap();
    let mut t: Vec<String> =
        ["person", "chair", "dog", "sofa"].into_iter().filter(|c| xml.contains(&format!("<name>{c}</name>"))).map(String::from).collect();
    t.sort();
    t
}

#[test]
fn swaps_under_load_fail_no_request_and_a_broken_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (data, runs, first) = fixture(root, 60, 64, "1");
    let second = quick_run(&data, &runs, &["--epochs", "1", "--seed", "2"]);
    let third = quick_run(&data, &runs, &["--epochs", "1", "--seed", "3"]);
    let server = Server::start(&runs, &[]);
    let (name, bytes) = image(root, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (base, name, bytes, stop) = (server.base.clone(), name.clone(), bytes.clone(), stop.clone());
            std::thread::spawn(move || {
                let (ct, body) = multipart(&[("files", Some(&name), &bytes)]);
                let (mut ok, mut failed, mut models) = (0, Vec::new(), std::collections::BTreeSet::new());
                while !stop.load(Ordering::SeqCst) {
                    match ureq::post(&format!("{base}/predict")).set("Content-Type", &ct).send_bytes(&body) {
                        Ok(r) => {
                            let v: serde_json::Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
                            models.insert(v[0]["model"].as_str().unwrap().to_string());
                            ok += 1;
                        }
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed, models)
            })
        })
        .collect();
    for (run, version) in [(&second, 2), (&third, 3)] {
        std::thread::sleep(Duration::from_millis(300));
        vocml_core::run::point_best(&runs, run).unwrap();
        server.wait_until(Duration::from_secs(30), |s| s.get("/model").json()["version"] == version);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let mut seen = std::collections::BTreeSet::new();
    for c in clients {
        let (ok, failed, models) = c.join().unwrap();
        assert!(failed.is_empty(), "requests failed during the swaps: {failed:?}");
        assert!(ok > 0);
        seen.extend(models);
    }
    let names: std::collections::BTreeSet<String> =
        [&first, &second, &third].iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(seen, names, "the clients saw every version");

    // A run whose weights are damaged is not swapped in; the old model keeps serving.
    let broken = runs.join("broken_run");
    std::fs::create_dir(&broken).unwrap();
    for f in std::fs::read_dir(&third).unwrap().flatten() {
        std::fs::copy(f.path(), broken.join(f.file_name())).unwrap();
    }
    std::fs::write(broken.join("model.safetensors"), b"garbage").unwrap();
    vocml_core::run::point_best(&runs, &broken).unwrap();
    server.wait_until(Duration::from_secs(30), |s| !s.get("/model").json()["load_error"].is_null());
    let model = server.get("/model").json();
    assert!(model["load_error"].as_str().unwrap().contains("broken_run"), "{model}");
    assert_eq!(model["run"], third.file_name().unwrap().to_str().unwrap());
    let r = server.post_form("/predict", &[("files", Some(&name), &bytes)], &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["version"], 3);
}

#[test]
fn sigterm_drains_requests_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, _) = fixture(root, 60, 64, "1");
    let mut server = Server::start(&runs, &["--max-wait-ms", "200"]);
    let (name, bytes) = image(root, 1);
    let base = server.base.clone();
    let inflight = std::thread::spawn(move || {
        let (ct, body) = multipart(&[("files", Some(&name), &bytes)]);
        ureq::post(&format!("{base}/predict")).set("Content-Type", &ct).send_bytes(&body).map(|r| r.status())
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.terminate(), Some(0), "{}", server.log.lock().unwrap());
    assert_eq!(inflight.join().unwrap().map_err(|e| e.to_string()), Ok(200), "the request in flight was answered");
    assert!(server.log.lock().unwrap().contains("serve: stopping"));
}

/// One server and inbox for every ranking (long on purpose: the score cache is what is tested).
#[test]
fn the_queue_ranks_uncorrected_inbox_images_by_margin_or_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, _) = fixture(root, 60, 64, "1");
    let inbox = root.join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    for i in 1..=6 {
        let (name, bytes) = image(root, i);
        std::fs::write(inbox.join(name), bytes).unwrap();
    }
    std::fs::write(inbox.join("notes.txt"), "not an image").unwrap();
    // One inbox image was corrected already: it is not asked for again.
    let store = vocml_core::retrain::feedback::FeedbackStore::open(&runs.join("feedback")).unwrap();
    let done = vocml_core::retrain::feedback::FeedbackStore::prepare(&[vocml_core::retrain::feedback::NewCorrection {
        path: inbox.join("000002.jpg"),
        labels: vec!["dog".to_string()],
        source: "000002.jpg".into(),
    }])
    .unwrap();
    store.commit(&done).unwrap();
    let done_id = done[0].correction.sha256.clone();

    let server = Server::start(&runs, &["--inbox", inbox.to_str().unwrap()]);
    assert_eq!(server.get("/model").json()["inbox"], true);
    let r = server.get("/queue?k=3");
    assert_eq!(r.status, 200, "{}", r.body);
    let q = r.json();
    assert_eq!((q["candidates"].as_u64(), q["corrected"].as_u64(), q["skipped"].as_u64()), (Some(5), Some(1), Some(1)), "{q}");
    // margin by default (it beat random choice in docs/active_learning.md):
    // -(smallest |2p - 1|); uncertainty: -(smallest distance of a probability to its threshold).
    assert_eq!(q["rank"], "margin");
    let thresholds: Vec<f64> = server.get("/model").json()["thresholds"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
    let by_threshold = server.get("/queue?k=3&rank=uncertainty").json();
    assert_eq!(by_threshold["rank"], "uncertainty");
    for (q, centre, scale) in [(&q, vec![0.5; 4], 2.0), (&by_threshold, thresholds, 1.0)] {
        let images = q["images"].as_array().unwrap();
        assert_eq!(images.len(), 3);
        let mut last = f64::INFINITY;
        for im in images {
            assert_ne!(im["id"], done_id.as_str());
            let p = &im["probabilities"];
            let want = -["person", "chair", "dog", "sofa"]
                .iter()
                .zip(&centre)
                .map(|(c, t)| scale * (p[*c].as_f64().unwrap() - t).abs())
                .fold(f64::INFINITY, f64::min);
            let got = im["score"].as_f64().unwrap();
            assert!((got - want).abs() < 1e-5, "{im}: score {got}, expected {want}");
            assert!(got <= last + 1e-9, "not in descending order: {q}");
            last = got;
        }
    }
    let images = q["images"].as_array().unwrap();
    // The picked images are kept: the page loads them from /uploads/{id} and corrects them by id.
    let first = &images[0];
    let resp = ureq::get(&format!("{}/uploads/{}", server.base, first["id"].as_str().unwrap())).call().unwrap();
    assert_eq!(resp.header("content-type"), Some("image/jpeg"));
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut got).unwrap();
    assert_eq!(got, std::fs::read(inbox.join(first["filename"].as_str().unwrap())).unwrap());
    // The same ranking again (from the cache), and the other rankings and bad queries.
    assert_eq!(server.get("/queue?k=3").json()["images"], q["images"]);
    assert_eq!(server.get("/queue?k=100&rank=entropy").json()["images"].as_array().unwrap().len(), 5);
    // Three copies of the most uncertain image: the plain ranking asks for them all,
    // diverse=true for one of them.
    let top = q["images"][0]["filename"].as_str().unwrap().to_string();
    for i in 0..3 {
        std::fs::copy(inbox.join(&top), inbox.join(format!("copy{i}_{top}"))).unwrap();
    }
    let copies = |q: &serde_json::Value| {
        q["images"].as_array().unwrap().iter().filter(|im| im["filename"].as_str().unwrap().ends_with(&top)).count()
    };
    let plain = server.get("/queue?k=4").json();
    assert_eq!((copies(&plain), plain["diverse"].as_bool()), (4, Some(false)), "{plain}");
    let diverse = server.get("/queue?k=4&diverse=true").json();
    assert_eq!((copies(&diverse), diverse["diverse"].as_bool()), (1, Some(true)), "{diverse}");
    let scores: Vec<f64> = diverse["images"].as_array().unwrap().iter().map(|im| im["score"].as_f64().unwrap()).collect();
    assert!(scores.len() == 4 && scores.windows(2).all(|w| w[0] >= w[1]), "{diverse}");
    // Copies removed from the inbox are gone from the queue (and its cache).
    for i in 0..3 {
        std::fs::remove_file(inbox.join(format!("copy{i}_{top}"))).unwrap();
    }
    let after = server.get("/queue?k=4").json();
    assert_eq!((copies(&after), after["candidates"].as_u64()), (1, Some(5)), "{after}");
    for (path, expect) in [
        ("/queue?k=0", "k=0: expected 1..=100"),
        ("/queue?k=101", "k=101"),
        ("/queue?rank=random", "rank=\"random\": expected uncertainty, entropy or margin"),
        ("/queue?folder=/etc", "unknown field `folder`"),
        ("/queue?diverse=maybe", "bad query"),
        ("/uploads/nope", "no kept image"),
    ] {
        let r = server.get(path);
        assert!(r.status == 400 || r.status == 404, "{path}: {} {}", r.status, r.body);
        assert!(r.json()["error"].as_str().unwrap().contains(expect), "{path}: {}", r.body);
    }
    let plain = Server::start(&runs, &[]);
    let r = plain.get("/queue");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("--inbox DIR"), "{}", r.body);
}

#[test]
fn retrain_jobs_follow_a_retrain_recipe_and_a_bad_recipe_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, first) = fixture(root, 60, 64, "1");
    let recipe = root.join("recipe.toml");
    for (text, want) in [
        ("corrections = \"fixes.csv\"\n", "corrections is the service's to set"),
        ("epochz = 3\n", "unknown field `epochz`"),
        ("tolerance = 2.0\n", "tolerance 2"),
        ("epochs = [\n", "not valid TOML"),
    ] {
        std::fs::write(&recipe, text).unwrap();
        let o = run(bin("serve").arg("--runs").arg(&runs).arg("--retrain-config").arg(&recipe).args(["--addr", "127.0.0.1:0"]));
        assert_eq!(o.status.code(), Some(2), "{text}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("--retrain-config") && err.contains(want), "{text}: {err}");
    }
    let o = run(bin("serve").arg("--runs").arg(&runs).arg("--retrain-config").arg(root.join("missing.toml")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.toml") && stderr(&o).trim().lines().count() == 1, "{}", stderr(&o));

    // A --retrain-* flag sets its key over the recipe's.
    std::fs::write(&recipe, "replay-all = true\nreplicate = 1\nepochs = 7\nlr = 1e-4\ntolerance = 0.05\n").unwrap();
    let server = Server::start(&runs, &["--retrain-config", recipe.to_str().unwrap(), "--retrain-epochs", "2"]);
    let jpeg = std::fs::read(root.join("voc/JPEGImages/000001.jpg")).unwrap();
    let form: &[(&str, Option<&str>, &[u8])] = &[("files", Some("a.jpg"), &jpeg), ("labels", None, b"[[\"dog\"]]")];
    let r = server.post_form("/retrain", form, &[]);
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    server.wait_until(Duration::from_secs(120), |s| s.get(&format!("/jobs/{id}")).json()["state"] != "running");
    let job = server.get(&format!("/jobs/{id}")).json();
    assert_eq!(job["state"], "succeeded", "{job}");
    // GET /jobs lists the newest first, bounded.
    let listed = server.get("/jobs").json();
    assert_eq!(listed[0]["id"].as_str(), Some(id.as_str()), "{listed}");
    for bad in ["/jobs?limit=0", "/jobs?limit=201", "/jobs?limit=x", "/jobs?order=asc"] {
        let r = server.get(bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains("limit"), "{bad}: {}", r.body);
    }
    let run_dir = runs.join(job["outcome"]["run"].as_str().unwrap());
    let recorded = read_json(&run_dir.join("config.json"))["options"].clone();
    assert_eq!(gentle_recipe_values(&recorded), (Some(true), Some(1), Some(2), Some(1e-4), Some(0.05)));
    assert_eq!(
        recorded["from"].as_str().unwrap(),
        std::fs::canonicalize(&first).unwrap().to_str().unwrap(),
        "the served run is the parent"
    );
}
