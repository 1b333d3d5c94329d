//! `POST /predict`: multipart `files` -> one object per file, as the reference gives them
//! plus `id`, `model` and `version` (and `top`, `label`, `heads` like predict's JSON lines).

use super::AppState;
use crate::engine::ModelInfo;
use crate::error::ApiError;
use crate::scoring::{score, FileScore, Scoring};
use axum::extract::{Multipart, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use std::sync::Arc;
use vocml_core::predict::output::decision_json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictQuery {
    /// Also give the K most probable classes.
    top_k: Option<usize>,
}

pub async fn predict(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PredictQuery>, axum::extract::rejection::QueryRejection>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let (files, query) = upload(&state, multipart, query).await?;
    let (scores, model) = score(&state, files, Scoring { keep: true, ..Scoring::default() }).await?;
    let top_k = query.top_k.unwrap_or(0).min(model.task.classes.len());
    Ok(Json(scores.into_iter().map(|s| file_json(s, &model, top_k)).collect()))
}

/// The files of an upload (`POST /predict`, `/explain`) and its query, the query checked once
/// the body is read.
pub async fn upload<Q>(
    state: &AppState,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
    query: Result<Query<Q>, axum::extract::rejection::QueryRejection>,
) -> Result<(Vec<(String, Arc<Vec<u8>>)>, Q), ApiError> {
    let mut multipart = multipart
        .map_err(|e| ApiError::bad_request(format!("expected a multipart/form-data body with `files` fields: {}", e.body_text())))?;
    let files = read_files(&mut multipart, state.max_files).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    Ok((files, query))
}

/// The `files` fields of a multipart body (any other field is an error naming it). The whole
/// body is read even when it is refused, so a client still sending gets the answer rather than
/// a reset connection.
pub async fn read_files(multipart: &mut Multipart, max_files: usize) -> Result<Vec<(String, Arc<Vec<u8>>)>, ApiError> {
    let mut files = Vec::new();
    let mut refused = None;
    while let Some(field) = multipart.next_field().await? {
        if refused.is_none() {
            match field.name() {
                Some("files") | Some("file") if files.len() == max_files => {
                    let msg = format!("more than {max_files} files in one request (serve --max-files)");
                    refused = Some(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg));
                }
                Some("files") | Some("file") => {}
                other => refused = Some(ApiError::bad_request(format!("unexpected multipart field {other:?}; send images as `files`"))),
            }
        }
        let file_name = field.file_name().unwrap_or("upload").to_string();
        let bytes = field.bytes().await?;
        if refused.is_none() {
            files.push((file_name, Arc::new(bytes.to_vec())));
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    if files.is_empty() {
        return Err(ApiError::bad_request("no `files` field in the request"));
    }
    Ok(files)
}

/// One file's JSON object.
fn file_json(s: FileScore, model: &ModelInfo, top_k: usize) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("filename".into(), s.filename.into());
    obj.insert("id".into(), s.id.into());
    match s.result {
        Ok(p) => {
            obj.insert("model".into(), model.run.clone().into());
            obj.insert("version".into(), model.version.into());
            obj.extend(decision_json(&model.task, &model.thresholds, &p, top_k));
        }
        Err(e) => {
            obj.insert("error".into(), e.into());
        }
    }
    obj.into()
}
