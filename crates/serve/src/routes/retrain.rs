//! `POST /retrain` starts a retrain job from corrections, given as the reference's multipart
//! (`files` + `labels`, a JSON list of label lists) or as JSON naming uploaded images
//! (`{"corrections": [{"id", "labels"}], "force": false}`); `GET /jobs/{id}` follows it and
//! `GET /jobs` lists the newest.

use super::AppState;
use crate::error::{shown, ApiError};
use crate::jobs::{Correction, JobStatus};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use vocml_core::task::Task;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrainBody {
    corrections: Vec<CorrectionRef>,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorrectionRef {
    id: String,
    labels: Vec<String>,
}

pub async fn start(State(state): State<Arc<AppState>>, req: Request) -> Result<(StatusCode, Json<JobStatus>), ApiError> {
    let info = state.engine.info().ok_or_else(|| ApiError::unavailable("no model loaded yet (see GET /ready)"))?;
    let kind = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (corrections, force) = if kind.starts_with("multipart/form-data") {
        from_multipart(&state, req).await?
    } else if kind.starts_with("application/json") {
        from_json(&state, req).await?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send multipart/form-data (files + labels) or application/json (corrections by id)",
        ));
    };
    for (i, c) in corrections.iter().enumerate() {
        check_labels(&info.task, &c.labels).map_err(|e| ApiError::bad_request(format!("correction {} ({}): {e}", i + 1, c.filename)))?;
    }
    let checked: Vec<Arc<Vec<u8>>> = corrections.iter().map(|c| c.bytes.clone()).collect();
    let max_pixels = state.max_image_pixels;
    let undecodable =
        tokio::task::spawn_blocking(move || checked.iter().position(|b| vocml_core::io::image::decode_bytes(b, max_pixels).is_err()))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Some(i) = undecodable {
        return Err(ApiError::bad_request(format!("correction {} ({}): not a decodable image", i + 1, corrections[i].filename)));
    }
    let target = state.job_target(info.run_dir.clone(), force, None);
    let status = state.jobs.start(corrections, target).map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

pub async fn job(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<JobStatus>, ApiError> {
    state.jobs.get(&id).map(Json).ok_or_else(|| ApiError::not_found(format!("no job {}", shown(&format!("{id:?}"), 80))))
}

/// Most jobs `GET /jobs` lists.
pub const MAX_LISTED: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
}

/// `GET /jobs?limit=N`: the newest jobs first (20 by default, at most 200).
pub async fn jobs(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<JobStatus>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("{}; expected ?limit=N", e.body_text())))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=MAX_LISTED).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit {limit}: expected 1 to {MAX_LISTED}")));
    }
    let jobs = tokio::task::spawn_blocking(move || state.jobs.list(limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(jobs))
}

/// The reference's form: `files` fields, then `labels` as `[["person","chair"], ...]`.
async fn from_multipart(state: &Arc<AppState>, req: Request) -> Result<(Vec<Correction>, bool), ApiError> {
    let mut mp = Multipart::from_request(req, state).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut files = Vec::new();
    let mut labels: Option<Vec<Vec<String>>> = None;
    let mut force = false;
    while let Some(field) = mp.next_field().await? {
        match field.name().unwrap_or("") {
            "files" | "file" => {
                if files.len() == state.max_files {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("more than {} files in one request", state.max_files),
                    ));
                }
                let name = field.file_name().unwrap_or("upload").to_string();
                files.push((name, Arc::new(field.bytes().await?.to_vec())));
            }
            "labels" => {
                let text = field.text().await?;
                labels = Some(serde_json::from_str(&text).map_err(|e| {
                    ApiError::bad_request(format!("labels: expected a JSON list of label lists like [[\"person\",\"chair\"],[]]: {e}"))
                })?);
            }
            "force" => force = field.text().await?.trim() == "true",
            other => return Err(ApiError::bad_request(format!("unexpected multipart field {other:?}; expected files, labels, force"))),
        }
    }
    let labels = labels.ok_or_else(|| ApiError::bad_request("no `labels` field: send one label list per file"))?;
    if files.is_empty() {
        return Err(ApiError::bad_request("no `files` field in the request"));
    }
    if labels.len() != files.len() {
        return Err(ApiError::bad_request(format!("{} files but {} label lists", files.len(), labels.len())));
    }
    Ok((
        files
            .into_iter()
            .zip(labels)
            .map(|((filename, bytes), labels)| Correction { source: filename.clone(), filename, bytes, labels })
            .collect(),
        force,
    ))
}

/// Corrections naming images uploaded earlier by their `id`.
async fn from_json(state: &Arc<AppState>, req: Request) -> Result<(Vec<Correction>, bool), ApiError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let body: RetrainBody = serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
    if body.corrections.is_empty() {
        return Err(ApiError::bad_request("no corrections given"));
    }
    if body.corrections.len() > state.max_files {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("more than {} corrections in one request", state.max_files)));
    }
    let mut out = Vec::new();
    for c in body.corrections {
        let up = state.uploads.get(&c.id).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no recent upload with id {:?}: predict the image first (or send it with the multipart form)",
                c.id
            ))
        })?;
        out.push(Correction { source: up.filename.clone(), filename: up.filename, bytes: up.bytes, labels: c.labels });
    }
    Ok((out, body.force))
}

/// Every label is a class of the model; grouped tasks name one class per head.
fn check_labels(task: &Task, labels: &[String]) -> Result<(), String> {
    let mut row = vec![0.0f32; task.classes.len()];
    for l in labels {
        let col = task.column_of(l).ok_or_else(|| format!("unknown class {l:?}; the model's classes are {}", task.classes.join(", ")))?;
        row[col] = 1.0;
    }
    if task.is_grouped() {
        task.check_row(&row).map_err(|e| e.to_string())?;
    }
    Ok(())
}
