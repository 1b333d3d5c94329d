//! `POST /explain[?classes=a,b]`: multipart `files` -> per file the prediction and a Grad-CAM
//! heat map per decided label (or the named classes) as a PNG overlay at the photo's size
//! (a `data:` URL), as `predict --explain` writes them.

use super::predict::upload;
use super::AppState;
use crate::engine::{EngineError, ExplainJob, Input, ModelInfo};
use crate::error::ApiError;
use crate::scoring::decode;
use axum::extract::{Multipart, Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use std::sync::Arc;
use vocml_core::io::image::{decode_bytes, ResizeMode};
use vocml_core::predict::output::decision_json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    /// Comma-separated classes to explain instead of the decided labels.
    classes: Option<String>,
}

pub async fn explain(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ExplainQuery>, axum::extract::rejection::QueryRejection>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let (files, query) = upload(&state, multipart, query).await?;
    let info = state.engine.info().ok_or_else(|| ApiError::unavailable("no model loaded yet (see GET /ready)"))?;
    let classes = match &query.classes {
        Some(list) => Some(
            list.split(',')
                .map(|c| {
                    info.task.column_of(c.trim()).ok_or_else(|| {
                        ApiError::bad_request(format!("unknown class {c:?}; the model's classes are {}", info.task.classes.join(", ")))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let (size, mode) = (info.image_size, info.resize);
    let mut out = Vec::new();
    for (filename, id, bytes, pixels) in decode(&state, files, size, mode).await? {
        let pixels = match pixels {
            Ok(p) => p,
            Err(e) => {
                out.push(serde_json::json!({"filename": filename, "id": id, "error": e}));
                continue;
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let input = Input { bytes: bytes.clone(), pixels: pixels.clone(), size, mode };
        state.engine.submit_explain(ExplainJob { input, classes: classes.clone(), reply: tx })?;
        let explained = rx.await.map_err(|_| EngineError::ShuttingDown)??;
        let (model, probs) = (explained.model.clone(), explained.probabilities.clone());
        let m = model.clone();
        let max_pixels = state.max_image_pixels;
        let maps = tokio::task::spawn_blocking(move || overlays(&m, &bytes, &pixels, max_pixels, &explained.maps))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the overlay: {e}")))?;
        let mut obj = serde_json::Map::new();
        obj.insert("filename".into(), filename.into());
        obj.insert("id".into(), id.into());
        obj.insert("model".into(), model.run.clone().into());
        obj.insert("version".into(), model.version.into());
        obj.extend(decision_json(&model.task, &model.thresholds, &probs, 0));
        obj.insert("explanations".into(), maps.into());
        out.push(obj.into());
    }
    Ok(Json(out))
}

/// Each map as a PNG overlay on the photo (at its own size when it was stretched to the
/// model's input), as `data:` URLs.
fn overlays(
    m: &ModelInfo,
    bytes: &[u8],
    pixels: &[u8],
    max_pixels: u64,
    maps: &[(usize, Vec<f32>)],
) -> image::ImageResult<Vec<serde_json::Value>> {
    let photo = if m.resize == ResizeMode::Stretch { decode_bytes(bytes, max_pixels).ok() } else { None };
    maps.iter()
        .map(|(c, cam)| {
            let img = vocml_core::explain::overlay_on(photo.as_ref(), pixels, m.image_size, cam, 0.5);
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
            Ok(serde_json::json!({
                "class": m.task.classes[*c],
                "overlay": format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png)),
            }))
        })
        .collect()
}
