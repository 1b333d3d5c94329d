//! The page, health, readiness, the served model and the metrics.

use super::AppState;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::Json;
use std::sync::Arc;

/// The web page, embedded in the binary (no CDN; works offline).
pub async fn page() -> Html<&'static str> {
    Html(include_str!("../page.html"))
}

/// The reference's health check: the process answers (whether or not a model is loaded).
pub async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let info = state.engine.info();
    Json(serde_json::json!({
        "status": "ok",
        "model": info.as_ref().map(|i| i.run.clone()),
        "version": info.as_ref().map(|i| i.version),
        "registry_version": info.as_ref().and_then(|i| i.registry.as_ref().map(|r| r.version.clone())),
    }))
}

/// 200 once a model is loaded, 503 before.
pub async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    match state.engine.info() {
        Some(i) => Ok(Json(serde_json::json!({
            "ready": true,
            "model": i.run,
            "version": i.version,
            "registry_version": i.registry.as_ref().map(|r| r.version.clone()),
        }))),
        None => {
            let why = state.follow.last_error.lock().unwrap().clone().unwrap_or_else(|| "loading the model".into());
            Err(ApiError::unavailable(format!("not ready: {why}")))
        }
    }
}

/// The served run: name, model, task, classes, thresholds, validation metrics, parent, why
/// the last candidate was not swapped in (if it was not), and whether `/queue` has an inbox.
pub async fn model(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let info = state.engine.info().ok_or_else(|| ApiError::unavailable("no model loaded yet (see GET /ready)"))?;
    let mut v = info.json();
    v["load_error"] = state.follow.last_error.lock().unwrap().clone().into();
    v["inbox"] = state.inbox.is_some().into();
    Ok(Json(v))
}

/// Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
