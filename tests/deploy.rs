//! docs/deploy's manifests describe a service that exists: `serve` started with each
//! container's command and arguments (addresses moved to loopback, ports and mounted paths
//! mapped to the test's) answers every probe path and every port they name; and a replica
//! with no model yet is live but not ready, on REST and gRPC, until one appears.

use crate::serve::fixture;
use crate::util::server::Server;
use crate::util::*;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;
use vocml_serve::oip::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use vocml_serve::oip::grpc::proto::{ModelReadyRequest, ServerLiveRequest, ServerReadyRequest};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The containers of a Deployment or an InferenceService.
fn containers(doc: &Value) -> Vec<Value> {
    let list = match doc["kind"].as_str() {
        Some("Deployment") => &doc["spec"]["template"]["spec"]["containers"],
        Some("InferenceService") => &doc["spec"]["predictor"]["containers"],
        _ => return Vec::new(),
    };
    list.as_sequence().cloned().unwrap_or_default()
}

/// gRPC ServerLive, ServerReady and ModelReady(`model`) at `addr`.
fn grpc_health(addr: &str, model: &str) -> (bool, bool, bool) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = GrpcInferenceServiceClient::connect(format!("http://{addr}")).await.unwrap();
        let live = c.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live;
        let ready = c.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready;
        let model = c.model_ready(ModelReadyRequest { name: model.into(), version: String::new() }).await.unwrap().into_inner().ready;
        (live, ready, model)
    })
}

/// Starts each container of `file` with its arguments mapped onto this machine, checks every
/// probe and port it names, and returns how many of each were checked.
/// (Long on purpose: one check per container, probe and port a deployment relies on.)
fn check_manifest(file: &str, mounts: &[(&str, &Path)]) -> (usize, usize) {
    let text = std::fs::read_to_string(repo_root().join("docs/deploy").join(file)).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect();
    let (mut probes, mut ports) = (0, 0);
    let mut container_ports = Vec::new();
    for doc in &docs {
        for c in containers(doc) {
            assert_eq!(c["command"], serde_yaml::to_value(["serve"]).unwrap(), "{file}: the container runs serve");
            let declared: Vec<(u64, String)> = c["ports"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{file}: container ports"))
                .iter()
                .map(|p| (p["containerPort"].as_u64().unwrap(), p["name"].as_str().unwrap_or("").to_string()))
                .collect();
            container_ports.extend(declared.iter().map(|(p, _)| *p));
            let mut map: BTreeMap<u64, u16> = BTreeMap::new();
            for p in [8080, 8081].into_iter().chain(declared.iter().map(|(p, _)| *p)) {
                map.entry(p).or_insert_with(free_port);
            }
            let args: Vec<OsString> = c["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| {
                    let mut a = a.as_str().unwrap().replace("0.0.0.0", "127.0.0.1");
                    for (from, to) in &map {
                        a = a.replace(&format!(":{from}"), &format!(":{to}")).replace(&format!("={from}"), &format!("={to}"));
                        if a == from.to_string() {
                            a = to.to_string();
                        }
                    }
                    for (from, to) in mounts {
                        if a == *from {
                            a = to.display().to_string();
                        }
                        a = a.replace(&format!("={from}"), &format!("={}", to.display()));
                    }
                    OsString::from(a)
                })
                .collect();
            let mut all = args.clone();
            all.extend(["--threads", "1"].map(OsString::from));
            let server = Server::spawn(&all);
            let url = |port: u64, path: &str| format!("http://127.0.0.1:{}{path}", map[&port]);
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                let get = &c[probe]["httpGet"];
                let Some(path) = get["path"].as_str() else { continue };
                let port = get["port"].as_u64().unwrap();
                let start = std::time::Instant::now();
                let status = loop {
                    let status =
                        ureq::get(&url(port, path)).call().map_or_else(|e| e.into_response().map_or(0, |r| r.status()), |r| r.status());
                    if status == 200 || start.elapsed() > Duration::from_secs(30) {
                        break status;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                };
                assert_eq!(status, 200, "{file} {probe} {path} on {port}: {}", server.log.lock().unwrap());
                probes += 1;
            }
            for (port, name) in &declared {
                if name == "grpc" || name == "h2c" {
                    let addr = format!("127.0.0.1:{}", map[port]);
                    assert_eq!(server.grpc.as_deref(), Some(addr.as_str()), "{file}: gRPC on port {port}");
                    let model = args.iter().find_map(|a| a.to_str()?.strip_prefix("--model_name=")).unwrap_or("vocml");
                    server.wait_until(Duration::from_secs(30), |_| grpc_health(&addr, model) == (true, true, true));
                } else {
                    assert_eq!(ureq::get(&url(*port, "/v2/health/live")).call().unwrap().status(), 200, "{file}: HTTP on port {port}");
                }
                ports += 1;
            }
        }
    }
    for doc in docs.iter().filter(|d| d["kind"] == "Service") {
        for p in doc["spec"]["ports"].as_sequence().unwrap() {
            let target = p["targetPort"].as_u64().unwrap();
            assert!(container_ports.contains(&target), "{file}: Service targetPort {target} is no container's port {container_ports:?}");
        }
    }
    (probes, ports)
}

#[test]
fn every_path_and_port_the_deployment_manifests_name_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_, runs, run_dir) = fixture(dir.path(), 60, 64, "1");
    assert_eq!(check_manifest("kubernetes.yaml", &[("/runs", &runs)]), (3, 2));
    assert_eq!(check_manifest("kserve.yaml", &[("/mnt/models", &run_dir)]), (2, 2));
}

#[test]
fn a_replica_without_a_model_is_live_but_not_ready_until_one_appears() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, run_dir) = fixture(dir.path(), 60, 64, "1");
    let empty = dir.path().join("empty-runs");
    std::fs::create_dir_all(&empty).unwrap();
    let args: Vec<OsString> =
        ["--runs", empty.to_str().unwrap(), "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--poll-ms", "50", "--threads", "1"]
            .map(OsString::from)
            .to_vec();
    let server = Server::spawn(&args);
    let grpc = server.grpc.clone().unwrap();
    let live = server.get("/v2/health/live");
    assert_eq!((live.status, live.json()["live"].clone()), (200, serde_json::json!(true)));
    let ready = server.get("/v2/health/ready");
    assert_eq!((ready.status, ready.json()["ready"].clone()), (503, serde_json::json!(false)), "{}", ready.body);
    let model = server.get("/v2/models/vocml/ready");
    assert_eq!((model.status, model.json()["ready"].clone()), (503, serde_json::json!(false)), "{}", model.body);
    assert_eq!(server.get("/v2/models/other/ready").status, 404);
    let body = serde_json::json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}]});
    let r = server.post("/v2/models/vocml/infer", "application/json", body.to_string().as_bytes(), &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(grpc_health(&grpc, "vocml"), (true, false, false));

    let moved = empty.join(run_dir.file_name().unwrap());
    std::fs::rename(&run_dir, &moved).unwrap();
    vocml_core::run::point_best(&empty, &moved).unwrap();
    server.wait_until(Duration::from_secs(30), |s| s.get("/v2/health/ready").status == 200);
    assert_eq!(server.get("/v2/models/vocml/ready").json()["ready"], serde_json::json!(true));
    assert_eq!(grpc_health(&grpc, "vocml"), (true, true, true));
}

#[test]
fn a_job_whose_server_is_killed_is_reported_lost_after_a_restart_and_nothing_is_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, first) = fixture(root, 60, 64, "1");
    let best = std::fs::read_link(runs.join("best")).unwrap();
    let jpeg = std::fs::read(root.join("voc/JPEGImages/000001.jpg")).unwrap();
    let form: &[(&str, Option<&str>, &[u8])] = &[("files", Some("a.jpg"), &jpeg), ("labels", None, b"[[\"dog\"]]")];
    let mut server = Server::start(&runs, &["--retrain-epochs", "10000"]);
    let r = server.post_form("/retrain", form, &[]);
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    server.wait_until(Duration::from_secs(60), |s| {
        s.get(&format!("/jobs/{id}")).json()["phase"].as_str().unwrap_or("").starts_with("retrain ")
    });
    unsafe { libc::kill(server.child.id() as i32, libc::SIGKILL) };
    server.child.wait().unwrap();

    let server = Server::start(&runs, &["--retrain-epochs", "1"]);
    let job = server.get(&format!("/jobs/{id}")).json();
    assert_eq!(job["state"], "lost", "{job}");
    assert!(job["error"].as_str().unwrap().contains("killed or crashed"), "{job}");
    assert!(job["finished"].is_string(), "{job}");
    assert!(server.log.lock().unwrap().contains(&format!("{id} was lost")));
    assert_eq!(std::fs::read_link(runs.join("best")).unwrap(), best, "runs/best did not move");
    assert_eq!(vocml_core::run::list_runs(&runs).unwrap(), vec![first], "no half-written run is listed");
    let feedback = runs.join("feedback");
    if feedback.exists() {
        let stored = vocml_core::retrain::feedback::FeedbackStore::open(&feedback).unwrap().all().unwrap();
        assert!(stored.corrections.is_empty() && !stored.torn_tail, "nothing stored by the killed job");
    }
    let r = server.post_form("/retrain", form, &[]);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_ne!(r.json()["id"].as_str().unwrap(), id, "a new job gets a new id");
}
