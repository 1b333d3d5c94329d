//! The one scoring entry of the service: uploaded files decoded on the blocking pool (through
//! the decode gate), scored by the engine, and each file's outcome; `/predict`, `/explain`,
//! `/queue` and the inference protocols all go through it. A request of many images or many
//! pixels is bulk work: it decodes one image at a time on the decoders bulk work may hold,
//! and is scored in small background jobs, so a one-photo request sent meanwhile waits for
//! neither; the pixels a request may carry are bounded before anything is decoded.

use crate::decode_gate::Lane;
use crate::engine::{EngineError, Input, Job, ModelInfo};
use crate::error::ApiError;
use crate::state::AppState;
use crate::uploads::Upload;
use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use vocml_core::io::image::{pixel_count, ResizeMode, SquareResizer};

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

/// Most images, and most pixels, of a request scored as interactive work; a larger request is
/// bulk work.
pub const INTERACTIVE_IMAGES: usize = 4;
pub const INTERACTIVE_PIXELS: u64 = 32_000_000;
/// Images per background job of a bulk request: a request arriving meanwhile waits for at
/// most one of them.
pub const BULK_BATCH: usize = 4;
/// Times a bulk request is scored again from its first image when the model is swapped
/// between its jobs (every answer comes from one model).
const SWAP_RETRIES: usize = 3;

/// Decodes `files`, scores the decodable ones (keeping uploads and giving features as `how`
/// says), and returns each file's outcome and the model.
pub async fn score(
    state: &AppState,
    files: Vec<(String, Arc<Vec<u8>>)>,
    how: Scoring,
) -> Result<(Vec<FileScore>, Arc<ModelInfo>), ApiError> {
    let info = state.engine.info().ok_or_else(|| ApiError::unavailable("no model loaded yet (see GET /ready)"))?;
    let (size, mode) = (info.image_size, info.resize);
    let (decoded, lane) = decode_in_lane(state, files, size, mode).await?;
    for (name, id, bytes, px) in decoded.iter().filter(|_| how.keep) {
        if px.is_ok() {
            state.uploads.keep(id, Upload { filename: name.clone(), bytes: bytes.clone() });
        }
    }
    let inputs: Vec<Input> = decoded
        .iter()
        .filter_map(|(_, _, bytes, px)| px.as_ref().ok().map(|p| Input { bytes: bytes.clone(), pixels: p.clone(), size, mode }))
        .collect();
    let (probabilities, features, model) = match (inputs.is_empty(), lane) {
        (true, _) => (Vec::new(), Vec::new(), info),
        (false, Lane::Interactive) => {
            let answer = run_job(state, inputs, how.features, how.background).await?;
            (answer.probabilities, answer.features.unwrap_or_default(), answer.model)
        }
        (false, Lane::Bulk) => bulk_jobs(state, inputs, how.features).await?,
    };
    let (mut probs, mut features) = (probabilities.into_iter(), features.into_iter());
    let scores = decoded
        .into_iter()
        .map(|(filename, id, _, px)| {
            let features = px.as_ref().ok().and_then(|_| features.next());
            FileScore { filename, id, result: px.map(|_| probs.next().expect("one row per decoded image")), features }
        })
        .collect();
    Ok((scores, model))
}

/// One engine job, answered.
async fn run_job(state: &AppState, images: Vec<Input>, features: bool, background: bool) -> Result<crate::engine::Answer, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.engine.submit(Job { images, features, background, reply: tx })?;
    Ok(rx.await.map_err(|_| EngineError::ShuttingDown)??)
}

/// A bulk request's images in background jobs of [`BULK_BATCH`], all by one model.
async fn bulk_jobs(
    state: &AppState,
    inputs: Vec<Input>,
    features: bool,
) -> Result<(Vec<Vec<f32>>, Vec<Vec<f32>>, Arc<ModelInfo>), ApiError> {
    let inputs: Vec<Arc<Input>> = inputs.into_iter().map(Arc::new).collect();
    for _ in 0..SWAP_RETRIES {
        let (mut probs, mut feats, mut model): (Vec<Vec<f32>>, Vec<Vec<f32>>, Option<Arc<ModelInfo>>) = (Vec::new(), Vec::new(), None);
        let mut swapped = false;
        for chunk in inputs.chunks(BULK_BATCH) {
            let images =
                chunk.iter().map(|i| Input { bytes: i.bytes.clone(), pixels: i.pixels.clone(), size: i.size, mode: i.mode }).collect();
            let answer = run_job(state, images, features, true).await?;
            if model.as_ref().is_some_and(|m| m.version != answer.model.version) {
                swapped = true;
                break;
            }
            model = Some(answer.model);
            probs.extend(answer.probabilities);
            feats.extend(answer.features.unwrap_or_default());
        }
        if !swapped {
            return Ok((probs, feats, model.expect("at least one image")));
        }
    }
    Err(ApiError::unavailable("the model was swapped while this request was scored, several times; send it again"))
}

/// An uploaded file decoded for a model: its name, SHA-256, bytes, and pixels (`size`², as
/// `mode` resizes) or why it could not be decoded.
pub type Decoded = (String, String, Arc<Vec<u8>>, Result<Vec<u8>, String>);

/// Decodes `files` through the decode gate, with the process's decode limit on pixels.
pub async fn decode(state: &AppState, files: Vec<(String, Arc<Vec<u8>>)>, size: u32, mode: ResizeMode) -> Result<Vec<Decoded>, ApiError> {
    Ok(decode_in_lane(state, files, size, mode).await?.0)
}

/// [`decode`], and the lane the request went in: its images' pixels (from their headers;
/// images over `--max-image-pixels` fail alone and do not count) are checked against `serve --max-request-pixels` first; a bulk request decodes one image per
/// permit, an interactive one all under one.
async fn decode_in_lane(
    state: &AppState,
    files: Vec<(String, Arc<Vec<u8>>)>,
    size: u32,
    mode: ResizeMode,
) -> Result<(Vec<Decoded>, Lane), ApiError> {
    // An image over --max-image-pixels is refused from its header alone: it costs nothing.
    let total: u64 = files.iter().filter_map(|(_, b)| pixel_count(b)).filter(|&n| n <= state.max_image_pixels).sum();
    if total > state.max_request_pixels {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request's images hold {total} pixels, more than serve --max-request-pixels {}", state.max_request_pixels),
        ));
    }
    let lane = match files.len() > INTERACTIVE_IMAGES || total > INTERACTIVE_PIXELS {
        true => Lane::Bulk,
        false => Lane::Interactive,
    };
    let max_pixels = state.max_image_pixels;
    let decode_all = move |files: Vec<(String, Arc<Vec<u8>>)>| {
        let mut resizer = SquareResizer::new(size, mode, max_pixels);
        files
            .into_iter()
            .map(|(name, bytes)| {
                let id = format!("{:x}", Sha256::digest(bytes.as_slice()));
                let px = resizer.load_bytes(&bytes);
                (name, id, bytes, px)
            })
            .collect::<Vec<_>>()
    };
    let failed = |e: tokio::task::JoinError| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("decoding failed: {e}"));
    if lane == Lane::Interactive {
        let _permit = state.decoders.acquire(lane).await;
        return Ok((tokio::task::spawn_blocking(move || decode_all(files)).await.map_err(failed)?, lane));
    }
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let _permit = state.decoders.acquire(lane).await;
        out.extend(tokio::task::spawn_blocking(move || decode_all(vec![file])).await.map_err(failed)?);
    }
    Ok((out, lane))
}
