//! Hostile clients and slow neighbours against the real `serve`: the ten cases found by
//! attacking its input paths (issue 43), each held: memory per request bounded while a body is
//! parsed, a one-photo request never waiting behind bulk decoding, names of any size echoed
//! bounded with their gRPC status kept, Label Studio state bounded and behind the token, no
//! forged log line, no annotation lost to a bad one, fetches that neither starve inference
//! nor run one after another.

use crate::util::server::Server;
use crate::util::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

use crate::label_studio::CONFIG;

/// A stand-in for Label Studio's file serving: `GET /data/upload/1/<file>` from `dir` after
/// `delay`; it counts the requests for each path.
struct ImageHost {
    base: String,
    served: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ImageHost {
    fn start(dir: PathBuf, delay: Duration) -> ImageHost {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let (dir, log) = (dir.clone(), log.clone());
                std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(move || {
                        let mut reader = BufReader::new(s.try_clone().unwrap());
                        let mut line = String::new();
                        if reader.read_line(&mut line).is_err() {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or("").to_string();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                                break;
                            }
                        }
                        log.lock().unwrap().push(path.clone());
                        std::thread::sleep(delay);
                        let file = path.strip_prefix("/data/upload/1/").map(|f| dir.join(f));
                        let (status, body) = match file {
                            Some(f) if f.is_file() => ("200 OK", std::fs::read(f).unwrap()),
                            _ => ("404 Not Found", b"{}".to_vec()),
                        };
                        let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                        let _ = s.write_all(&body);
                    })
                    .unwrap();
            }
        });
        ImageHost { base, served }
    }
}

fn post_json(server: &Server, path: &str, body: &Value) -> crate::util::server::Reply {
    server.post(path, "application/json", body.to_string().as_bytes(), &[])
}

fn task(id: u64, image: &str) -> Value {
    json!({"id": id, "data": {"image": image}})
}

/// Case 1: a 30 MB JSON body of 10.5 million empty strings for shape [1] was parsed into a
/// tree of values before it was refused (+637 MiB a request, +2.5 GiB for four at once).
#[test]
fn a_json_body_of_millions_of_elements_is_refused_within_a_bounded_peak() {
    let dir = tempfile::tempdir().unwrap();
    let (_, runs, _) = best_run(dir.path(), 40, 64, &["--epochs", "1"]);
    let server = Server::start(&runs, &["--max-body-mb", "32"]);
    let photo = std::fs::read(dir.path().join("voc/JPEGImages/000001.jpg")).unwrap();
    let predict = |s: &Server| s.post_form("/predict", &[("files", Some("a.jpg"), &photo)], &[]).status;
    assert_eq!(predict(&server), 200);
    let elements = 10_500_000;
    let mut body = String::with_capacity(elements * 3 + 100);
    body.push_str(r#"{"inputs":[{"name":"images","datatype":"BYTES","shape":[1],"data":["#);
    for i in 0..elements {
        body.push_str(if i == 0 { "\"\"" } else { ",\"\"" });
    }
    body.push_str("]}]}");
    assert!(body.len() as u64 > 30 * MIB && (body.len() as u64) < 32 * MIB, "{}", body.len());
    let before = server.peak_rss();
    let r = server.post("/v2/models/vocml/infer", "application/json", body.as_bytes(), &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("more than 1 elements"), "{}", r.body);
    let one = server.peak_rss().saturating_sub(before);
    assert!(one < 3 * 32 * MIB, "one request raised the peak by {} MiB", one / MIB);
    // Four at once: each within the same bound.
    let base = server.base.clone();
    let codes: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (base, body) = (base.clone(), &body);
                scope.spawn(move || match ureq::post(&format!("{base}/v2/models/vocml/infer")).send_bytes(body.as_bytes()) {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(code, _)) => code,
                    Err(e) => panic!("{e}"),
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(codes, [400; 4]);
    let four = server.peak_rss().saturating_sub(before);
    assert!(four < 4 * 3 * 32 * MIB, "four requests raised the peak by {} MiB", four / MIB);
    // The same elements hidden in parameters, and in a shape, are refused without a tree too.
    let hidden = body.replacen(r#""data":["#, r#""data":[""],"parameters":{"binary_data_size":["#, 1).replacen("]}]}", "]}}]}", 1);
    let r = server.post("/v2/models/vocml/infer", "application/json", hidden.as_bytes(), &[]);
    assert_eq!(r.status, 400, "{}", &r.body[..r.body.len().min(300)]);
    assert!(r.body.len() < 1000, "the error echoes the body: {} bytes", r.body.len());
    let shape =
        format!(r#"{{"inputs":[{{"name":"images","datatype":"BYTES","shape":[{}],"data":[""]}}]}}"#, vec!["1"; 1_000_000].join(","));
    let r = server.post("/v2/models/vocml/infer", "application/json", shape.as_bytes(), &[]);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("more than 8 items"), "{}", r.body);
    assert!(server.peak_rss().saturating_sub(before) < 4 * 3 * 32 * MIB);
    assert_eq!(predict(&server), 200, "the server keeps serving");
}

/// Cases 3-5: a 20 KB model name (or 3,400 snowmen, or a 20 KB version) was copied whole into
/// the gRPC status, past grpcio's 16 KiB metadata limit: Triton's client saw
/// RESOURCE_EXHAUSTED instead of NOT_FOUND.
#[test]
fn grpc_names_of_any_size_keep_their_status_for_tritons_client() {
    let dir = tempfile::tempdir().unwrap();
    let (_, runs, _) = best_run(dir.path(), 40, 64, &["--epochs", "1"]);
    let server = Server::start(&runs, &["--grpc-addr", "127.0.0.1:0"]);
    let grpc = server.grpc.clone().expect("the gRPC address");
    let python = repo_root().join(".venv/clients/bin/python");
    assert!(python.is_file(), "{} is missing: run `make test-tools`", python.display());
    let script = r#"
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
c = grpcclient.InferenceServerClient(url=sys.argv[1])
photo = open(sys.argv[2], "rb").read()
out = {}
for case, name, version in [("long name", "x" * 20000, ""), ("snowmen", "\u2603" * 3400, ""), ("long version", "vocml", "9" * 20000)]:
    inp = grpcclient.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([photo], dtype=np.object_))
    try:
        c.infer(name, [inp], model_version=version)
        out[case] = {"status": "OK"}
    except InferenceServerException as e:
        out[case] = {"status": e.status(), "message": e.message()}
print(json.dumps(out))
"#;
    let o = run(std::process::Command::new(python).args(["-c", script, &grpc]).arg(dir.path().join("voc/JPEGImages/000001.jpg")));
    assert!(o.status.success(), "{}", stderr(&o));
    let out: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    for case in ["long name", "snowmen", "long version"] {
        assert_eq!(out[case]["status"], "StatusCode.NOT_FOUND", "{case}: {}", out[case]);
        let message = out[case]["message"].as_str().unwrap();
        assert!(message.chars().count() < 400 && message.contains("more characters"), "{case}: {message}");
    }
}

/// A PNG of `side` x `side` gray pixels that really decodes (unlike a bomb).
fn big_png(side: u32) -> Vec<u8> {
    use image::ImageEncoder;
    let pixels = vec![128u8; (side * side * 3) as usize];
    let mut out = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Default,
        image::codecs::png::FilterType::Sub,
    );
    encoder.write_image(&pixels, side, side, image::ExtendedColorType::Rgb8).unwrap();
    out
}

/// Case 2: two requests of 24 PNGs of 9999 x 9999 held the decoders for 18.8 s and a
/// one-photo request sent a second later waited 17.2 s.
#[test]
fn a_one_photo_request_does_not_wait_for_bulk_decoding_and_huge_requests_are_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let (_, runs, _) = best_run(dir.path(), 40, 64, &["--epochs", "1"]);
    let server = Server::start(&runs, &["--max-body-mb", "64"]);
    // The issue's requests: 2.4 gigapixels each, refused from the headers before any decoding.
    let bomb = crate::hostile::png_bomb(9999, 9999);
    let parts: Vec<(&str, Option<&str>, &[u8])> = (0..24).map(|_| ("files", Some("big.png"), bomb.as_slice())).collect();
    let t0 = Instant::now();
    let r = server.post_form("/predict", &parts, &[]);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("--max-request-pixels"), "{}", r.body);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // Within the budget: two bulk requests of 40 real 9-megapixel PNGs each decode one image at
    // a time on the decoders bulk work may hold; a one-photo request sent meanwhile is answered
    // before either of them.
    let png = big_png(3000);
    let photo = std::fs::read(dir.path().join("voc/JPEGImages/000001.jpg")).unwrap();
    let base = server.base.clone();
    let (bulk, single) = std::thread::scope(|scope| {
        let bulk: Vec<_> = (0..2)
            .map(|_| {
                let (base, png) = (base.clone(), &png);
                scope.spawn(move || {
                    let parts: Vec<(&str, Option<&str>, &[u8])> = (0..40).map(|_| ("files", Some("scan.png"), png.as_slice())).collect();
                    let (ct, body) = crate::util::server::multipart(&parts);
                    let t = Instant::now();
                    let status = match ureq::post(&format!("{base}/predict")).set("Content-Type", &ct).send_bytes(&body) {
                        Ok(r) => r.status(),
                        Err(ureq::Error::Status(code, r)) => panic!("{code}: {}", r.into_string().unwrap_or_default()),
                        Err(e) => panic!("{} bytes: {e}", body.len()),
                    };
                    (status, t.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let (ct, body) = crate::util::server::multipart(&[("files", Some("a.jpg"), &photo)]);
        let r = ureq::post(&format!("{base}/predict")).set("Content-Type", &ct).send_bytes(&body).unwrap();
        let single = (r.status(), t.elapsed() + Duration::from_millis(300));
        (bulk.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>(), single)
    });
    assert!(bulk.iter().all(|(s, _)| *s == 200) && single.0 == 200, "{bulk:?} {single:?}");
    let first_bulk = bulk.iter().map(|(_, t)| *t).min().unwrap();
    assert!(single.1 < first_bulk, "the one-photo request ({:?} from the bulk requests' start) waited for bulk work ({bulk:?})", single.1);
}

/// Cases 6-8: `/label-studio/setup` kept every project id it was sent, of any size, with no
/// token; an image URL with a newline forged a log line; a webhook annotation for a 300-digit
/// task id failed the job and lost the two good annotations batched with it.
#[test]
fn label_studio_inputs_cannot_pile_up_state_forge_a_log_line_or_lose_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, _) = best_run(root, 40, 64, &["--epochs", "1"]);
    let host = ImageHost::start(root.join("voc/JPEGImages"), Duration::ZERO);
    let server = Server::start(&runs, &["--label-studio-url", &host.base, "--label-studio-train-after", "100", "--retrain-epochs", "1"]);
    let warm = post_json(&server, "/label-studio/setup", &json!({"project": 1, "schema": CONFIG}));
    assert_eq!(warm.status, 200, "{}", warm.body);
    let before = server.peak_rss();
    let huge = "7".repeat(1 << 20);
    for _ in 0..20 {
        let r = post_json(&server, "/label-studio/setup", &json!({"project": huge, "schema": CONFIG}));
        assert_eq!(r.status, 400, "{}", &r.body[..r.body.len().min(200)]);
        assert!(r.body.len() < 500, "the id is echoed whole");
    }
    for id in 2..200 {
        assert_eq!(post_json(&server, "/label-studio/setup", &json!({"project": id, "schema": CONFIG})).status, 200);
    }
    assert!(server.peak_rss().saturating_sub(before) < 64 * MIB, "{} MiB kept", (server.peak_rss() - before) / MIB);
    let known: Vec<u64> = serde_json::from_str(&std::fs::read_to_string(runs.join("label-studio-projects.json")).unwrap()).unwrap();
    assert_eq!(known.len(), 64, "the projects remembered are bounded");

    // No line of the log comes from a task's image reference.
    let forged = format!("/data/upload/1/nope.jpg\nserve: FORGED the model was replaced\r\nserve: FORGED {}", "x".repeat(5000));
    let r = post_json(&server, "/label-studio/predict", &json!({"project": 1, "label_config": CONFIG, "tasks": [task(1, &forged)]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["results"][0]["error"].is_string(), "{}", r.body);
    let log = server.log.lock().unwrap().clone();
    assert!(log.lines().all(|l| !l.starts_with("serve: FORGED")), "{log}");
    assert!(log.lines().all(|l| l.len() < 1000), "a long log line: {log}");

    // A bad annotation is refused on its own; the good ones are learnt by the next job.
    let event = |task_id: Value, file: &str| {
        json!({"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": CONFIG},
               "task": {"id": task_id, "data": {"image": format!("/data/upload/1/{file}")}},
               "annotation": {"id": 9, "updated_at": "2026-12-06T10:00:00Z",
                              "result": [{"from_name": "objects", "to_name": "photo", "type": "choices", "value": {"choices": ["dog"]}}]}})
    };
    let bad = format!("{{\"x\": {}}}", "9".repeat(300));
    let bad_id: Value = serde_json::from_str::<Value>(&bad).unwrap()["x"].clone();
    let r = post_json(&server, "/label-studio/webhook", &event(bad_id, "000001.jpg"));
    assert_eq!(r.status, 400, "{}", r.body);
    for (id, file) in [(2, "000002.jpg"), (3, "000003.jpg")] {
        let r = post_json(&server, "/label-studio/webhook", &event(json!(id), file));
        assert_eq!((r.status, r.json()["status"].as_str()), (201, Some("stored")), "{}", r.body);
    }
    let r = post_json(&server, "/label-studio/webhook", &json!({"action": "START_TRAINING", "project": {"id": 1}}));
    let job = r.json()["job"].as_str().expect("a job starts").to_string();
    server.wait_until(Duration::from_secs(120), |s| s.get(&format!("/jobs/{job}")).json()["state"] != "running");
    let done = server.get(&format!("/jobs/{job}")).json();
    assert_eq!((done["state"].as_str(), done["corrections"].as_u64()), (Some("succeeded"), Some(2)), "{done}");
    drop(server);

    // With --token-file the Label Studio endpoints need it, as Label Studio sends it (Basic).
    let token = root.join("token");
    std::fs::write(&token, "t0ken-5").unwrap();
    let server = Server::start(&runs, &["--label-studio-url", &host.base, "--token-file", token.to_str().unwrap()]);
    let setup = json!({"project": 1, "schema": CONFIG});
    for path in ["/label-studio/setup", "/label-studio/predict", "/label-studio/webhook"] {
        assert_eq!(post_json(&server, path, &setup).status, 401, "{path}");
    }
    assert_eq!(server.get("/label-studio/health").status, 401);
    use base64::Engine as _;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("labelstudio:t0ken-5"));
    let r = server.post("/label-studio/setup", "application/json", setup.to_string().as_bytes(), &[("Authorization", &basic)]);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Cases 9-10: 520 backend predicts whose image fetch stalled held the blocking threads that
/// decoding needs (a good inference waited 28.4 s), and one predict's fetches ran one after
/// another (4 tasks on a slow host: 129 s, past Label Studio's 100 s timeout).
#[test]
fn a_stalling_image_host_neither_starves_inference_nor_serialises_fetches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, _) = best_run(root, 40, 64, &["--epochs", "1"]);
    let images = root.join("voc/JPEGImages");
    let slow = ImageHost::start(images.clone(), Duration::from_secs(3));
    let server = Server::start(&runs, &["--label-studio-url", &slow.base]);
    let predict =
        |tasks: Vec<Value>| post_json(&server, "/label-studio/predict", &json!({"project": 1, "label_config": CONFIG, "tasks": tasks}));
    // Four distinct images on a host that takes 3 s each: fetched at once.
    let t = Instant::now();
    let r = predict((1..=4).map(|i| task(i, &format!("/data/upload/1/{i:06}.jpg"))).collect());
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["results"].as_array().unwrap().iter().all(|x| x["error"].is_null()), "{}", r.body);
    assert!(t.elapsed() < Duration::from_secs(8), "4 fetches of 3 s took {:?}", t.elapsed());
    // One image named by four tasks: fetched once.
    let before = slow.served.lock().unwrap().len();
    let r = predict((1..=4).map(|i| task(i, "/data/upload/1/000005.jpg")).collect());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(slow.served.lock().unwrap().len() - before, 1, "{:?}", slow.served.lock().unwrap());
    drop(server);

    // 520 predicts on a host that stalls 20 s: inference is answered meanwhile.
    let stall = ImageHost::start(images.clone(), Duration::from_secs(20));
    let server = Server::start(&runs, &["--label-studio-url", &stall.base]);
    let body = |i: usize| {
        json!({"project": 1, "label_config": CONFIG, "tasks": [task(i as u64, &format!("/data/upload/1/s{i}.jpg"))]}).to_string()
    };
    let base = server.base.clone();
    let stalled: Vec<_> = (0..520)
        .map(|i| {
            let (base, body) = (base.clone(), body(i));
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let _ = ureq::post(&format!("{base}/label-studio/predict"))
                        .timeout(Duration::from_secs(120))
                        .set("Content-Type", "application/json")
                        .send_string(&body);
                })
                .unwrap()
        })
        .collect();
    server.wait_until(Duration::from_secs(30), |_| stall.served.lock().unwrap().len() >= 32);
    std::thread::sleep(Duration::from_secs(1));
    let photo = std::fs::read(images.join("000001.jpg")).unwrap();
    let t = Instant::now();
    let r = server.post_form("/predict", &[("files", Some("a.jpg"), &photo)], &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(t.elapsed() < Duration::from_secs(3), "a /predict waited {:?} behind stalled fetches", t.elapsed());
    assert!(stall.served.lock().unwrap().len() <= 32, "{} fetches at once", stall.served.lock().unwrap().len());
    drop(server);
    for h in stalled {
        let _ = h.join();
    }
}
