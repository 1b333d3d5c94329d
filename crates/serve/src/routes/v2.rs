//! The Open Inference Protocol v2 over REST, as KServe's and Triton's clients speak it: health
//! with JSON bodies, server and model metadata and readiness, and inference with or without
//! `/versions/{v}`, JSON or binary tensor data (the body is read as bytes whatever its
//! Content-Type; unknown fields are accepted; `id` is echoed). The protocol itself is in
//! `crate::oip`.

use super::AppState;
use crate::error::{shown, ApiError};
use crate::oip::{self, binary, json, InferRequest, InferResponse, InputTensor, OipError, RequestedOutput};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// `{name}` and, on the versioned paths, `{version}`.
type ModelPath = Path<HashMap<String, String>>;

fn name_version(p: &HashMap<String, String>) -> (&str, Option<&str>) {
    (p.get("name").map_or("", String::as_str), p.get("version").map(String::as_str))
}

pub async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.info() {
        Some(_) => Json(json!({"ready": true})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "error": "no model loaded yet"}))).into_response(),
    }
}

/// `GET /v2`: the server's name, version and protocol extensions.
pub async fn server_metadata() -> Json<Value> {
    Json(json!({"name": oip::PLATFORM, "version": env!("CARGO_PKG_VERSION"), "extensions": oip::EXTENSIONS}))
}

pub async fn model_ready(State(state): State<Arc<AppState>>, Path(p): ModelPath) -> Response {
    let (name, version) = name_version(&p);
    match oip::model(&state, name, version) {
        Ok(_) => Json(json!({"name": name, "ready": true})).into_response(),
        Err(e) if e.kind == oip::Kind::Unavailable => {
            (e.status(), Json(json!({"name": name, "ready": false, "error": e.message}))).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn metadata(State(state): State<Arc<AppState>>, Path(p): ModelPath) -> Result<Json<Value>, ApiError> {
    let (name, version) = name_version(&p);
    let info = oip::model(&state, name, version)?;
    let m = oip::metadata(name, &info);
    let tensors =
        |t: &[oip::TensorMetadata]| t.iter().map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape})).collect::<Vec<_>>();
    Ok(Json(json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
        "parameters": {"run": info.run, "classes": info.task.classes},
    })))
}

pub async fn infer(
    State(state): State<Arc<AppState>>,
    Path(p): ModelPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (name, version) = name_version(&p);
    oip::model(&state, name, version)?;
    let body = body.map_err(|e| ApiError::new(e.status(), format!("request body (serve --max-body-mb): {}", e.body_text())))?;
    let req = parse(&body, &headers, state.max_files)?;
    let answer = oip::infer(&state, req).await?;
    Ok(respond(answer))
}

/// Reads an inference request, JSON or JSON followed by binary tensor data (`oip::json`: no
/// tree of values, every list bounded as it is read).
fn parse(body: &[u8], headers: &HeaderMap, max_files: usize) -> Result<InferRequest, OipError> {
    let header = match headers.get(binary::HEADER) {
        Some(v) => Some(v.to_str().map_err(|_| OipError::bad(format!("{}: not text", binary::HEADER)))?),
        None => None,
    };
    let (json, mut raw) = binary::split(body, header).map_err(OipError::bad)?;
    let req: json::Request = serde_json::from_slice(json).map_err(|e| OipError::bad(format!("bad inference request: {e}")))?;
    let of_request =
        |key| json::parameter(req.parameters, key).and_then(json::flag).map_err(|e| OipError::bad(format!("the request: {key} {e}")));
    let binary_output = of_request("binary_data_output")?.unwrap_or(false);
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let count = oip::check_input(&input.name, &input.datatype, &input.shape, max_files)?;
        let shown_name = shown(&input.name, 64);
        let size = json::parameter(input.parameters, "binary_data_size")
            .and_then(|v| json::count(v, "byte count"))
            .map_err(|e| OipError::bad(format!("input {shown_name}: binary_data_size {e}")))?
            .map(|n| n as usize);
        let elements = match (size, input.data) {
            (Some(_), Some(_)) => return Err(OipError::bad(format!("input {shown_name}: both data and binary_data_size"))),
            (None, None) => return Err(OipError::bad(format!("input {shown_name}: no data (nor binary_data_size)"))),
            (Some(n), None) => {
                if n > raw.len() {
                    return Err(OipError::bad(format!(
                        "input {shown_name}: binary_data_size {n} overruns the {} bytes of binary data left",
                        raw.len()
                    )));
                }
                let (mine, rest) = raw.split_at(n);
                raw = rest;
                binary::bytes_elements(mine, count).map_err(|e| OipError::bad(format!("input {shown_name}: {e}")))?
            }
            (None, Some(data)) => json::bytes_elements(data, count).map_err(|e| OipError::bad(format!("input {shown_name}: {e}")))?,
        };
        inputs.push(InputTensor { name: input.name, elements });
    }
    if !raw.is_empty() {
        return Err(OipError::bad(format!("{} bytes of binary data belong to no input (binary_data_size too small)", raw.len())));
    }
    let mut outputs = Vec::with_capacity(req.outputs.len());
    for o in req.outputs {
        let what = format!("output {}", shown(&o.name, 64));
        let classification = json::parameter(o.parameters, "classification")
            .and_then(|v| json::count(v, "count"))
            .map_err(|e| OipError::bad(format!("{what}: classification {e}")))?
            .map(|n| n as usize);
        let binary = json::parameter(o.parameters, "binary_data")
            .and_then(json::flag)
            .map_err(|e| OipError::bad(format!("{what}: binary_data {e}")))?;
        outputs.push(RequestedOutput { name: o.name, classification, binary });
    }
    Ok(InferRequest { id: req.id, inputs, outputs, binary_output })
}

/// The answer: JSON, or JSON followed by the outputs that travel as binary data.
fn respond(answer: InferResponse) -> Response {
    let mut raw = Vec::new();
    let outputs: Vec<Value> = answer
        .outputs
        .iter()
        .map(|o| {
            let mut v = json!({"name": o.name, "datatype": o.data.datatype(), "shape": o.shape});
            if o.binary {
                let bytes = o.data.raw();
                v["parameters"] = json!({"binary_data_size": bytes.len()});
                raw.extend(bytes);
            } else {
                v["data"] = match &o.data {
                    oip::TensorData::Fp32(d) => json!(d),
                    oip::TensorData::Bytes(d) => json!(d.iter().map(|e| String::from_utf8_lossy(e)).collect::<Vec<_>>()),
                };
            }
            v
        })
        .collect();
    let mut head = json!({"model_name": answer.model_name, "model_version": answer.model_version, "outputs": outputs});
    if let Some(id) = answer.id {
        head["id"] = id.into();
    }
    let head = serde_json::to_vec(&head).expect("JSON of plain values");
    if raw.is_empty() {
        return ([(header::CONTENT_TYPE, "application/json")], head).into_response();
    }
    let length = head.len();
    let mut body = head;
    body.extend(raw);
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::HeaderName::from_static(binary::HEADER), length.to_string()),
        ],
        body,
    )
        .into_response()
}
