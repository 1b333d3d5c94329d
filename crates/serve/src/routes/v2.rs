//! The Open Inference Protocol v2 subset that KServe and Triton clients speak: liveness,
//! readiness, model metadata, and inference on a `BYTES` input of base64-encoded images ->
//! `FP32` probabilities `[N, C]`. The model answers to `vocml` and to its run's name.

use super::predict::{score, Scoring};
use super::AppState;
use crate::engine::ModelInfo;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use std::sync::Arc;

/// The model name every deployment answers to.
pub const MODEL_NAME: &str = "vocml";

pub async fn live() -> StatusCode {
    StatusCode::OK
}

pub async fn ready(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.engine.info().is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn named(state: &AppState, name: &str) -> Result<Arc<ModelInfo>, ApiError> {
    let info = state.engine.info().ok_or_else(|| ApiError::unavailable("no model loaded yet"))?;
    if name != MODEL_NAME && name != info.run {
        return Err(ApiError::not_found(format!("unknown model {name:?}; this server serves {MODEL_NAME:?} (run {})", info.run)));
    }
    Ok(info)
}

pub async fn metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let info = named(&state, &name)?;
    Ok(Json(serde_json::json!({
        "name": MODEL_NAME,
        "versions": [info.version.to_string()],
        "platform": "vocml",
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, info.task.classes.len()]}],
        "parameters": {"run": info.run, "classes": info.task.classes},
    })))
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferInput>,
}

#[derive(Deserialize)]
struct InferInput {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    data: Vec<String>,
}

pub async fn infer(State(state): State<Arc<AppState>>, Path(name): Path<String>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    named(&state, &name)?;
    let req: InferRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad inference request: {e}")))?;
    let [input] = req.inputs.as_slice() else {
        return Err(ApiError::bad_request(format!("expected one input (images), got {}", req.inputs.len())));
    };
    if input.datatype != "BYTES" {
        return Err(ApiError::bad_request(format!(
            "input {}: datatype {}, expected BYTES (base64-encoded images)",
            input.name, input.datatype
        )));
    }
    if input.shape != [input.data.len() as i64] {
        return Err(ApiError::bad_request(format!(
            "input {}: shape {:?} does not match its {} data elements",
            input.name,
            input.shape,
            input.data.len()
        )));
    }
    if input.data.is_empty() || input.data.len() > state.max_files {
        return Err(ApiError::bad_request(format!("input {}: 1 to {} images per request", input.name, state.max_files)));
    }
    let mut files = Vec::new();
    for (i, d) in input.data.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d)
            .map_err(|e| ApiError::bad_request(format!("input {} element {i}: not base64: {e}", input.name)))?;
        files.push((format!("{}[{i}]", input.name), Arc::new(bytes)));
    }
    let (scores, model) = score(&state, files, Scoring { keep: true, ..Scoring::default() }).await?;
    let mut data = Vec::new();
    for (i, s) in scores.into_iter().enumerate() {
        data.extend(s.result.map_err(|e| ApiError::bad_request(format!("input {} element {i}: {e}", input.name)))?);
    }
    Ok(Json(serde_json::json!({
        "model_name": MODEL_NAME,
        "model_version": model.version.to_string(),
        "id": req.id,
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [data.len() / model.task.classes.len().max(1), model.task.classes.len()], "data": data}],
    })))
}
