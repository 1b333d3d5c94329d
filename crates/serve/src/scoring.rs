//! The one scoring entry of the service: uploaded files decoded on the blocking pool (under
//! the decoder limit), scored by the engine in one job, and each file's outcome; `/predict`,
//! `/explain`, `/queue` and the inference protocols all go through it.

use crate::engine::{EngineError, Input, Job, ModelInfo};
use crate::error::ApiError;
use crate::state::AppState;
use crate::uploads::Upload;
use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use vocml_core::io::image::{ResizeMode, SquareResizer};

/// One file's outcome: its name, id (SHA-256) and probabilities or error.
pub struct FileScore {
    pub filename: String,
    pub id: String,
    pub result: Result<Vec<f32>, String>,
    /// The image's features, when asked for and it decoded.
    pub features: Option<Vec<f32>>,
}

/// What [`score`] does besides scoring.
#[derive(Clone, Copy, Default)]
pub struct Scoring {
    /// Keep every decodable upload for later correction.
    pub keep: bool,
    /// Also give each image's features.
    pub features: bool,
    /// Bulk scoring that yields to interactive requests (the engine's background lane).
    pub background: bool,
}

/// Decodes `files` on the blocking pool, scores the decodable ones in one engine job (keeping
/// uploads and giving features as `how` says), and returns each file's outcome and the model.
pub async fn score(
    state: &AppState,
    files: Vec<(String, Arc<Vec<u8>>)>,
    how: Scoring,
) -> Result<(Vec<FileScore>, Arc<ModelInfo>), ApiError> {
    let info = state.engine.info().ok_or_else(|| ApiError::unavailable("no model loaded yet (see GET /ready)"))?;
    let (size, mode) = (info.image_size, info.resize);
    let decoded = decode(state, files, size, mode).await?;
    for (name, id, bytes, px) in decoded.iter().filter(|_| how.keep) {
        if px.is_ok() {
            state.uploads.keep(id, Upload { filename: name.clone(), bytes: bytes.clone() });
        }
    }
    let inputs: Vec<Input> = decoded
        .iter()
        .filter_map(|(_, _, bytes, px)| px.as_ref().ok().map(|p| Input { bytes: bytes.clone(), pixels: p.clone(), size, mode }))
        .collect();
    let (mut probs, mut features, model) = if inputs.is_empty() {
        (Vec::new().into_iter(), Vec::new().into_iter(), info)
    } else {
        let (tx, rx) = tokio::sync::oneshot::channel();
        state.engine.submit(Job { images: inputs, features: how.features, background: how.background, reply: tx })?;
        let answer = rx.await.map_err(|_| EngineError::ShuttingDown)??;
        (answer.probabilities.into_iter(), answer.features.unwrap_or_default().into_iter(), answer.model)
    };
    let scores = decoded
        .into_iter()
        .map(|(filename, id, _, px)| {
            let features = px.as_ref().ok().and_then(|_| features.next());
            FileScore { filename, id, result: px.map(|_| probs.next().expect("one row per decoded image")), features }
        })
        .collect();
    Ok((scores, model))
}

/// An uploaded file decoded for a model: its name, SHA-256, bytes, and pixels (`size`², as
/// `mode` resizes) or why it could not be decoded.
pub type Decoded = (String, String, Arc<Vec<u8>>, Result<Vec<u8>, String>);

/// Decodes `files` on the blocking pool under the decoder limit (one request decoding per
/// core), with the process's decode limit on pixels.
pub async fn decode(state: &AppState, files: Vec<(String, Arc<Vec<u8>>)>, size: u32, mode: ResizeMode) -> Result<Vec<Decoded>, ApiError> {
    let _permit = state.decoders.acquire().await.map_err(|_| EngineError::ShuttingDown)?;
    tokio::task::spawn_blocking(move || {
        let mut resizer = SquareResizer::new(size, mode);
        files
            .into_iter()
            .map(|(name, bytes)| {
                let id = format!("{:x}", Sha256::digest(bytes.as_slice()));
                let px = resizer.load_bytes(&bytes);
                (name, id, bytes, px)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("decoding failed: {e}")))
}
