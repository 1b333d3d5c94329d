//! The Open Inference Protocol v2 as its own clients speak it: Triton's `tritonclient[http]`
//! and `tritonclient[grpc]` and KServe's `InferenceRESTClient`, with their defaults, against
//! the real `serve` (probabilities equal `predict`'s on every path); hostile bodies on the
//! binary extension and the gRPC service get a 4xx (or the gRPC status that means it).

use crate::serve::fixture;
use crate::util::server::Server;
use crate::util::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use vocml_serve::oip::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use vocml_serve::oip::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use vocml_serve::oip::grpc::proto::{
    infer_parameter, InferParameter, InferTensorContents, ModelInferRequest, ModelMetadataRequest, ServerLiveRequest,
};

/// The venv holding the protocols' clients, installed by `make test` (scripts/test_tools.sh).
fn clients_python() -> PathBuf {
    let p = repo_root().join(".venv/clients/bin/python");
    assert!(p.exists(), "{} missing: `make test` installs it (scripts/test_tools.sh)", p.display());
    p
}

/// Runs tests/clients/oip_clients.py for `vendor` (triton or kserve) and returns its report.
fn clients(vendor: &str, server: &Server, version: &str, images: &[PathBuf]) -> Value {
    let http = server.base.trim_start_matches("http://");
    let grpc = server.grpc.as_deref().unwrap_or("127.0.0.1:1");
    let out = Command::new(clients_python())
        .arg(repo_root().join("tests/clients/oip_clients.py"))
        .args([vendor, http, grpc, "vocml", version])
        .args(images)
        .output()
        .unwrap();
    assert!(out.status.success(), "oip_clients.py {vendor} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `predict`'s probabilities for `images`, one row per image in `classes` order.
fn predicted(run_dir: &Path, images: &[PathBuf], classes: &[String]) -> Vec<Vec<f64>> {
    let o = run(bin("predict").args(["-q", "--format", "jsonl", "--run"]).arg(run_dir).args(images));
    assert!(o.status.success());
    stdout(&o)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            classes.iter().map(|c| v["probabilities"][c].as_f64().unwrap()).collect()
        })
        .collect()
}

/// Asserts a client's probabilities equal `want` to 1e-5.
fn assert_rows(what: &str, got: &Value, want: &[Vec<f64>]) {
    let rows = got.as_array().unwrap_or_else(|| panic!("{what}: no probabilities: {got}"));
    assert_eq!(rows.len(), want.len(), "{what}: {got}");
    for (row, w) in rows.iter().zip(want) {
        let row: Vec<f64> = row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(row.len(), w.len(), "{what}: {row:?}");
        for (a, b) in row.iter().zip(w) {
            assert!((a - b).abs() < 1e-5, "{what}: {a} vs predict's {b}");
        }
    }
}

/// Asserts the classification extension's answer is the top 2 of `want` as `value:index:label`.
fn assert_top2(what: &str, got: &Value, want: &[Vec<f64>], classes: &[String]) {
    let rows = got.as_array().unwrap_or_else(|| panic!("{what}: {got}"));
    assert_eq!(rows.len(), want.len(), "{what}: {got}");
    for (row, w) in rows.iter().zip(want) {
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&a, &b| w[b].total_cmp(&w[a]));
        let entries = row.as_array().unwrap();
        assert_eq!(entries.len(), 2, "{what}: {row}");
        for (e, &i) in entries.iter().zip(&order) {
            let parts: Vec<&str> = e.as_str().unwrap().split(':').collect();
            assert_eq!(parts.len(), 3, "{what}: {e}");
            assert!((parts[0].parse::<f64>().unwrap() - w[i]).abs() < 1e-5, "{what}: {e} vs {}", w[i]);
            assert_eq!(parts[1], i.to_string(), "{what}: {e}");
            assert_eq!(parts[2], classes[i], "{what}: {e}");
        }
    }
}

fn assert_error(what: &str, got: &Value, needles: &[&str]) {
    let e = got["error"].as_str().unwrap_or_else(|| panic!("{what}: expected an error, got {got}"));
    for n in needles {
        assert!(e.contains(n), "{what}: {e:?} lacks {n:?}");
    }
}

#[test]
fn oip_clients_with_their_defaults_get_predicts_probabilities_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, run_dir) = fixture(root, 60, 64, "1");
    let server = Server::start(&runs, &["--grpc-addr", "127.0.0.1:0"]);
    let classes: Vec<String> =
        server.get("/model").json()["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    let images: Vec<PathBuf> = (1..=3).map(|i| root.join(format!("voc/JPEGImages/{i:06}.jpg"))).collect();
    let want = predicted(&run_dir, &images, &classes);

    let triton = clients("triton", &server, "1", &images);
    for (client, id, not_found) in [("triton_http", "req-7", "[404]"), ("triton_grpc", "req-9", "NOT_FOUND")] {
        let r = &triton[client];
        for key in ["server_live", "server_ready", "model_ready", "model_ready_version"] {
            assert_eq!(r[key], json!(true), "{client} {key}: {}", r[key]);
        }
        assert_eq!(r["server_metadata"]["name"], "vocml", "{client}: {}", r["server_metadata"]);
        assert_eq!(r["server_metadata"]["extensions"], json!(["binary_tensor_data", "classification"]), "{client}");
        for key in ["model_metadata", "model_metadata_version"] {
            let m = &r[key];
            assert_eq!(m["name"], "vocml", "{client} {key}: {m}");
            assert_eq!(m["versions"], json!(["1"]), "{client} {key}: {m}");
            assert_eq!(m["inputs"][0]["name"], "images", "{client} {key}: {m}");
            assert_eq!(m["inputs"][0]["datatype"], "BYTES", "{client} {key}: {m}");
            assert_eq!(m["outputs"][0]["datatype"], "FP32", "{client} {key}: {m}");
            // tritonclient.grpc's JSON form prints int64 as strings.
            let dims: Vec<String> = m["outputs"][0]["shape"].as_array().unwrap().iter().map(|d| d.to_string().replace('"', "")).collect();
            assert_eq!(dims, ["-1", "4"], "{client} {key}: {m}");
        }
        let paths: &[&str] = match client {
            "triton_http" => &[
                "infer_binary",
                "infer_binary_base64",
                "infer_binary_version",
                "infer_binary_nx1",
                "infer_json",
                "infer_binary_output_only",
            ],
            _ => &["infer_binary", "infer_binary_base64", "infer_binary_version"],
        };
        for key in paths {
            let what = format!("{client} {key}");
            assert_eq!(r[key]["id"], id, "{what}: {}", r[key]);
            assert_eq!(r[key]["model_version"], "1", "{what}: {}", r[key]);
            assert_rows(&what, &r[key]["probabilities"], &want);
        }
        assert_top2(&format!("{client} classification"), &r["classification"]["probabilities"], &want, &classes);
        assert_error(&format!("{client} unknown version"), &r["infer_unknown_version"], &[not_found, "no version \"999\""]);
        assert_error(&format!("{client} unknown model"), &r["infer_unknown_model"], &[not_found, "unknown model"]);
    }
    let http = &triton["triton_http"];
    assert_eq!(http["model_ready_unknown_version"], json!(false), "{}", http["model_ready_unknown_version"]);
    assert_top2("triton_http classification (JSON)", &http["classification_json"]["probabilities"], &want, &classes);

    let kserve = &clients("kserve", &server, "1", &images)["kserve_rest"];
    for key in ["server_live", "server_ready", "model_ready"] {
        assert_eq!(kserve[key], json!(true), "kserve {key}: {}", kserve[key]);
    }
    for key in ["infer_binary", "infer_json"] {
        assert_eq!(kserve[key]["id"], "req-11", "kserve {key}: {}", kserve[key]);
        assert_eq!(kserve[key]["model_name"], "vocml", "kserve {key}: {}", kserve[key]);
        assert_rows(&format!("kserve {key}"), &kserve[key]["probabilities"], &want);
    }
}

/// A binary-extension body: the JSON header, then `raw`; and its header value.
fn binary_body(header: &Value, raw: &[u8]) -> (Vec<u8>, String) {
    let mut body = serde_json::to_vec(header).unwrap();
    let n = body.len().to_string();
    body.extend_from_slice(raw);
    (body, n)
}

/// One BYTES element's raw form.
fn element(bytes: &[u8]) -> Vec<u8> {
    let mut raw = (bytes.len() as u32).to_le_bytes().to_vec();
    raw.extend_from_slice(bytes);
    raw
}

/// One scenario on one server (long on purpose: every hostile body against the same server,
/// which must keep serving after each; a server per case would triple the test time).
#[test]
fn oip_hostile_bodies_get_a_4xx_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, _) = fixture(root, 60, 64, "1");
    let server = Server::start(&runs, &["--grpc-addr", "127.0.0.1:0", "--max-body-mb", "1"]);
    let jpeg = std::fs::read(root.join("voc/JPEGImages/000001.jpg")).unwrap();
    let input =
        |shape: Value, params: Value| json!({"inputs": [{"name": "images", "shape": shape, "datatype": "BYTES", "parameters": params}]});
    let one = element(&jpeg);
    let n = one.len();
    let overrun = [&100u32.to_le_bytes()[..], b"abcd"].concat();
    let cases: Vec<(&str, Value, Vec<u8>, Option<&str>, u16, &str)> = vec![
        ("header past the body", input(json!([1]), json!({"binary_data_size": n})), one.clone(), Some("100000"), 400, "past the end"),
        ("header not a number", input(json!([1]), json!({"binary_data_size": n})), one.clone(), Some("abc"), 400, "not a byte count"),
        (
            "length prefix overruns",
            input(json!([1]), json!({"binary_data_size": 8})),
            overrun.clone(),
            None,
            400,
            "overruns the 4 bytes left",
        ),
        ("size past the data", input(json!([1]), json!({"binary_data_size": n + 10})), one.clone(), None, 400, "overruns the"),
        (
            "bytes after the inputs",
            input(json!([1]), json!({"binary_data_size": n})),
            [&one[..], b"tail"].concat(),
            None,
            400,
            "4 bytes of binary data belong to no input",
        ),
        ("shape says more elements", input(json!([2]), json!({"binary_data_size": n})), one.clone(), None, 400, "its shape says 2"),
        ("size not a count", input(json!([1]), json!({"binary_data_size": "x"})), one.clone(), None, 400, "not a byte count"),
        ("no data at all", input(json!([1]), json!({})), vec![], None, 400, "no data"),
        ("bad shape", input(json!([1, 2]), json!({"binary_data_size": n})), one.clone(), None, 400, "expected [N] or [N, 1]"),
    ];
    for (what, header, raw, length, status, needle) in &cases {
        let (body, json_len) = binary_body(header, raw);
        let len = length.map_or(json_len, str::to_string);
        let r = server.post("/v2/models/vocml/infer", "application/octet-stream", &body, &[("Inference-Header-Content-Length", &len)]);
        assert_eq!(r.status, *status, "{what}: {}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains(needle), "{what}: {} lacks {needle:?}", r.body);
    }
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &jpeg);
    let json_cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "wrong datatype",
            "/v2/models/vocml/infer",
            json!({"inputs": [{"name": "images", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
            400,
            "datatype FP32",
        ),
        (
            "unknown input",
            "/v2/models/vocml/infer",
            json!({"inputs": [{"name": "pixels", "shape": [1], "datatype": "BYTES", "data": [b64]}]}),
            400,
            "unknown input",
        ),
        (
            "two inputs",
            "/v2/models/vocml/infer",
            json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}, {"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}]}),
            400,
            "expected one input",
        ),
        (
            "data and binary",
            "/v2/models/vocml/infer",
            json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64], "parameters": {"binary_data_size": 4}}]}),
            400,
            "both data and binary_data_size",
        ),
        (
            "unknown output",
            "/v2/models/vocml/infer",
            json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}], "outputs": [{"name": "labels"}]}),
            400,
            "unknown output",
        ),
        (
            "classification 0",
            "/v2/models/vocml/infer",
            json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}], "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}]}),
            400,
            "at least 1",
        ),
        (
            "classification text",
            "/v2/models/vocml/infer",
            json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}], "outputs": [{"name": "probabilities", "parameters": {"classification": "two"}}]}),
            400,
            "not a count",
        ),
        (
            "binary_data_output text",
            "/v2/models/vocml/infer",
            json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}], "parameters": {"binary_data_output": "yes"}}),
            400,
            "not true or false",
        ),
        (
            "id not a string",
            "/v2/models/vocml/infer",
            json!({"id": 7, "inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}]}),
            400,
            "bad inference request",
        ),
        (
            "unknown version",
            "/v2/models/vocml/versions/7/infer",
            json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64]}]}),
            404,
            "no version \"7\"",
        ),
    ];
    let big = json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["A".repeat(2 << 20)]}]});
    let r = server.post("/v2/models/vocml/infer", "application/json", big.to_string().as_bytes(), &[]);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("--max-body-mb"), "{}", r.body);
    for (what, path, body, status, needle) in &json_cases {
        let r = server.post(path, "application/json", body.to_string().as_bytes(), &[]);
        assert_eq!(r.status, *status, "{what}: {}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains(needle), "{what}: {} lacks {needle:?}", r.body);
    }
    for (path, status) in [
        ("/v2/models/vocml/versions/7/ready", 404),
        ("/v2/models/vocml/versions/7", 404),
        ("/v2/models/other/ready", 404),
        ("/v2/models/vocml/versions/1/ready", 200),
        ("/v2/health/live", 200),
    ] {
        let r = server.get(path);
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(r.body.starts_with('{'), "{path}: a JSON body, got {:?}", r.body);
    }
    // Unknown fields (KServe's SDK adds model_name) are accepted and the id is echoed; the
    // binary answer carries its header.
    let header = json!({"id": "abc", "model_name": "vocml", "extra": {"x": 1},
        "inputs": [{"name": "images", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": n}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}]});
    let (body, len) = binary_body(&header, &one);
    let r = ureq::post(&format!("{}/v2/models/vocml/versions/1/infer", server.base))
        .set("Inference-Header-Content-Length", &len)
        .send_bytes(&body)
        .unwrap();
    let json_len: usize = r.header("Inference-Header-Content-Length").expect("the binary answer's header").parse().unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut r.into_reader(), &mut answer).unwrap();
    let head: Value = serde_json::from_slice(&answer[..json_len]).unwrap();
    assert_eq!(head["id"], "abc");
    assert_eq!(head["model_name"], "vocml");
    assert_eq!(head["outputs"][0]["shape"], json!([1, 4]), "{head}");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 16, "{head}");
    assert_eq!(answer.len(), json_len + 16);
    let binary: Vec<f32> = answer[json_len..].chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();

    // gRPC: the same checks, as status codes.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = format!("http://{}", server.grpc.as_deref().unwrap());
        let mut c = GrpcInferenceServiceClient::connect(url).await.unwrap().max_encoding_message_size(64 << 20);
        let request = |shape: Vec<i64>, datatype: &str, raw: Vec<Vec<u8>>| ModelInferRequest {
            model_name: "vocml".into(),
            id: "g-1".into(),
            inputs: vec![InferInputTensor { name: "images".into(), datatype: datatype.into(), shape, ..Default::default() }],
            raw_input_contents: raw,
            ..Default::default()
        };
        let ok = c.model_infer(request(vec![1], "BYTES", vec![one.clone()])).await.unwrap().into_inner();
        assert_eq!(ok.id, "g-1");
        assert_eq!(ok.raw_output_contents[0].len(), 16);
        // The same image as `contents.bytes_contents` instead of raw bytes.
        let mut typed = request(vec![1], "BYTES", vec![]);
        typed.inputs[0].contents = Some(InferTensorContents { bytes_contents: vec![jpeg.clone()], ..Default::default() });
        let typed = c.model_infer(typed).await.unwrap().into_inner();
        assert_eq!(typed.raw_output_contents, ok.raw_output_contents, "bytes_contents and raw_input_contents agree");
        let mut unknown_version = request(vec![1], "BYTES", vec![one.clone()]);
        unknown_version.model_version = "9".into();
        let mut classify_text = request(vec![1], "BYTES", vec![one.clone()]);
        classify_text.outputs = vec![InferRequestedOutputTensor {
            name: "probabilities".into(),
            parameters: [(
                "classification".to_string(),
                InferParameter { parameter_choice: Some(infer_parameter::ParameterChoice::StringParam("2".into())) },
            )]
            .into(),
        }];
        let big = element(&vec![0u8; 2 << 20]);
        let cases: Vec<(&str, ModelInferRequest, tonic::Code, &str)> = vec![
            ("length prefix overruns", request(vec![1], "BYTES", vec![overrun.clone()]), tonic::Code::InvalidArgument, "overruns"),
            ("shape says more", request(vec![3], "BYTES", vec![one.clone()]), tonic::Code::InvalidArgument, "its shape says 3"),
            (
                "raw for no input",
                request(vec![1], "BYTES", vec![one.clone(), one.clone()]),
                tonic::Code::InvalidArgument,
                "2 raw_input_contents for 1 inputs",
            ),
            ("no data", request(vec![1], "BYTES", vec![]), tonic::Code::InvalidArgument, "0 bytes_contents"),
            ("wrong datatype", request(vec![1], "UINT8", vec![one.clone()]), tonic::Code::InvalidArgument, "datatype UINT8"),
            ("not an image", request(vec![1], "BYTES", vec![element(b"hello")]), tonic::Code::InvalidArgument, "element 0"),
            ("classification text", classify_text, tonic::Code::InvalidArgument, "not a count"),
            ("unknown version", unknown_version, tonic::Code::NotFound, "no version \"9\""),
            ("oversized message", request(vec![1], "BYTES", vec![big]), tonic::Code::OutOfRange, "message length too large"),
        ];
        for (what, req, code, needle) in cases {
            let e = c.model_infer(req).await.expect_err(what);
            assert_eq!(e.code(), code, "{what}: {e:?}");
            assert!(e.message().contains(needle), "{what}: {:?} lacks {needle:?}", e.message());
        }
        let e = c.model_metadata(ModelMetadataRequest { name: "other".into(), version: String::new() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(c.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
        let again = c.model_infer(request(vec![1], "BYTES", vec![one.clone()])).await.unwrap().into_inner();
        assert_eq!(again.raw_output_contents, ok.raw_output_contents);
        let grpc: Vec<f32> = ok.raw_output_contents[0].chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(grpc, binary, "gRPC and binary REST give the same probabilities");
    });
    assert_eq!(server.get("/v2/health/ready").status, 200);
}
