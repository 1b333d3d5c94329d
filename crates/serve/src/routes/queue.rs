//! `GET /queue?k=&rank=`: the K images of the `--inbox` folder the served model is least sure
//! about and nobody has corrected yet (active learning), each with its decision and score;
//! they are kept like uploads, so the page can show them (`GET /uploads/{id}`) and correct
//! them by id. Scores and features are cached per file and model version, so only new or
//! changed files and a new model cost inference; files gone from the inbox leave the cache.

use super::AppState;
use crate::engine::ModelInfo;
use crate::error::ApiError;
use crate::inbox::{Inbox, Scored};
use crate::scoring::{score, Scoring};
use crate::uploads::Upload;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use vocml_core::predict::output::decision_json;
use vocml_core::select::{diverse_selection, informativeness, Informativeness};

/// Most images `k` may ask for.
pub const MAX_K: usize = 100;
/// Most files of the inbox considered (the first, by name).
pub const MAX_INBOX_FILES: usize = 20_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// How many images (default 10, at most 100).
    k: Option<usize>,
    /// margin (default: it beat random choice in docs/active_learning.md), entropy or
    /// uncertainty.
    rank: Option<String>,
    /// `true`: K images that differ from each other (`predict --diverse`).
    diverse: Option<bool>,
}

fn parse_rank(s: Option<&str>) -> Result<Informativeness, ApiError> {
    let name = s.unwrap_or("margin");
    Informativeness::parse(name).ok_or_else(|| ApiError::bad_request(format!("rank={name:?}: expected uncertainty, entropy or margin")))
}

/// The inbox's regular files (sorted, at most [`MAX_INBOX_FILES`]) with size and mtime.
/// An inbox file: path, size, modification time.
type InboxFile = (PathBuf, u64, Option<SystemTime>);

fn list(dir: &Path) -> std::io::Result<Vec<InboxFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else { continue };
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if meta.is_file() && !hidden {
            files.push((entry.path(), meta.len(), meta.modified().ok()));
        }
    }
    files.sort();
    files.truncate(MAX_INBOX_FILES);
    Ok(files)
}

/// SHA-256s of the images in the serve's feedback store (none when it does not exist yet).
fn corrected(runs_dir: &Path) -> Result<HashSet<String>, ApiError> {
    let dir = vocml_core::run::options::default_feedback_dir(runs_dir);
    if !dir.is_dir() {
        return Ok(HashSet::new());
    }
    let store = vocml_core::retrain::feedback::FeedbackStore::open(&dir)
        .and_then(|s| s.all())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(store.corrections.into_iter().map(|c| c.sha256).collect())
}

pub async fn queue(
    State(state): State<Arc<AppState>>,
    query: Result<Query<QueueQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let inbox = state.inbox.as_ref().ok_or_else(|| ApiError::not_found("no inbox: start serve with --inbox DIR to rank its images"))?;
    let k = query.k.unwrap_or(10);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::bad_request(format!("k={k}: expected 1..={MAX_K}")));
    }
    let how = parse_rank(query.rank.as_deref())?;
    let diverse = query.diverse.unwrap_or(false);
    let info = state.engine.info().ok_or_else(|| ApiError::unavailable("no model loaded yet (see GET /ready)"))?;
    let (dir, runs_dir) = (inbox.dir.clone(), state.runs_dir.clone());
    let (files, done) = tokio::task::spawn_blocking(move || Ok::<_, ApiError>((list(&dir), corrected(&runs_dir)?)))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let files = files
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot list the inbox {}: {e}", inbox.dir.display())))?;

    refresh(&state, inbox, &info, &files).await?;
    let (picked, candidates, skipped) = pick(inbox, &files, &done, &info, how, k, diverse);
    // Kept like uploads, so the page can show and correct them by id.
    let paths: Vec<PathBuf> = picked.iter().map(|p| p.1.clone()).collect();
    let bytes = tokio::task::spawn_blocking(move || paths.iter().map(|p| std::fs::read(p).ok()).collect::<Vec<_>>())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut images = Vec::new();
    for ((informative, path, id, p), bytes) in picked.into_iter().zip(bytes) {
        let filename = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(bytes) = bytes {
            state.uploads.keep(&id, Upload { filename: filename.clone(), bytes: Arc::new(bytes) });
        }
        let mut obj = serde_json::Map::new();
        obj.insert("filename".into(), filename.into());
        obj.insert("id".into(), id.into());
        obj.insert("score".into(), serde_json::json!(informative));
        obj.extend(decision_json(&info.task, &info.thresholds, &p, 0));
        images.push(serde_json::Value::Object(obj));
    }
    Ok(Json(serde_json::json!({
        "model": info.run,
        "version": info.version,
        "rank": how.name(),
        "diverse": diverse,
        "candidates": candidates,
        "corrected": files.len() - candidates - skipped,
        "skipped": skipped,
        "images": images,
    })))
}

/// Scores, in one-image background jobs, the inbox files the cache lacks for the served
/// model's version.
async fn refresh(state: &Arc<AppState>, inbox: &Inbox, info: &Arc<ModelInfo>, files: &[InboxFile]) -> Result<(), ApiError> {
    // Score what the cache lacks for this model version.
    let stale: Vec<InboxFile> = {
        let cache = inbox.cache.lock().unwrap();
        files
            .iter()
            .filter(|(p, len, m)| !cache.get(p).is_some_and(|s| s.len == *len && s.modified == *m && s.version == info.version))
            .cloned()
            .collect()
    };
    // Small background jobs: a /predict arriving meanwhile waits for one of them at most.
    for chunk in stale.chunks(state.background_batch) {
        let owned = chunk.to_vec();
        let read =
            tokio::task::spawn_blocking(move || owned.into_iter().map(|f| (std::fs::read(&f.0).map(Arc::new), f)).collect::<Vec<_>>())
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let readable: Vec<(String, Arc<Vec<u8>>)> =
            read.iter().filter_map(|(b, f)| b.as_ref().ok().map(|b| (f.0.display().to_string(), b.clone()))).collect();
        let how = Scoring { features: true, background: true, ..Scoring::default() };
        let (scores, model) = if readable.is_empty() { (Vec::new(), info.clone()) } else { score(state, readable, how).await? };
        let mut scores = scores.into_iter();
        let mut cache = inbox.cache.lock().unwrap();
        for (bytes, (path, len, modified)) in read {
            let (id, result, features) = match bytes {
                Ok(_) => {
                    let s = scores.next().expect("one score per readable file");
                    (s.id, s.result, s.features)
                }
                Err(e) => (String::new(), Err(format!("cannot read: {e}")), None),
            };
            cache.insert(path, Scored { len, modified, version: model.version, id, result, features });
        }
    }

    Ok(())
}

/// A picked image: its informativeness, path, id and probabilities.
type Picked = (f32, PathBuf, String, Vec<f32>);

/// The `k` most informative uncorrected files (a diverse selection when asked), how many
/// were candidates, and how many could not be scored; the cache keeps only listed files.
fn pick(
    inbox: &Inbox,
    files: &[InboxFile],
    done: &HashSet<String>,
    info: &ModelInfo,
    how: Informativeness,
    k: usize,
    diverse: bool,
) -> (Vec<Picked>, usize, usize) {
    // Rank under the lock (no copy of the cache); only the K picked leave it.
    let mut cache = inbox.cache.lock().unwrap();
    let listed: HashSet<&PathBuf> = files.iter().map(|f| &f.0).collect();
    cache.retain(|path, _| listed.contains(path));
    let mut skipped = 0;
    let mut ranked: Vec<Ranked> = Vec::new();
    for (path, ..) in files {
        match cache.get(path) {
            Some(s) => match &s.result {
                Ok(p) if !done.contains(&s.id) => ranked.push((informativeness(&info.task, p, &info.thresholds, how), path, s)),
                Ok(_) => {}
                Err(_) => skipped += 1,
            },
            None => skipped += 1,
        }
    }
    let candidates = ranked.len();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    if diverse && ranked.len() > k {
        ranked = diverse_pick(ranked, k);
    }
    let picked: Vec<Picked> = ranked
        .into_iter()
        .take(k)
        .filter_map(|(score, path, s)| Some((score, path.clone(), s.id.clone(), s.result.as_ref().ok()?.clone())))
        .collect();
    (picked, candidates, skipped)
}

/// An uncorrected inbox image in the ranking: its informativeness, path and cache entry.
type Ranked<'a> = (f32, &'a PathBuf, &'a Scored);

/// The `k` of `ranked` (sorted, most informative first, then by path) that
/// [`diverse_selection`] picks by their features, in its order (as `predict --diverse`).
fn diverse_pick(ranked: Vec<Ranked<'_>>, k: usize) -> Vec<Ranked<'_>> {
    let described: Vec<_> = ranked.into_iter().filter(|r| r.2.features.is_some()).collect();
    let scores: Vec<f32> = described.iter().map(|r| r.0).collect();
    let features: Vec<&[f32]> = described.iter().filter_map(|r| r.2.features.as_deref()).collect();
    diverse_selection(&scores, &features, k, 0).into_iter().map(|i| described[i]).collect()
}

/// `GET /uploads/{id}`: the bytes of an image kept by a prediction or the queue.
pub async fn upload(State(state): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Result<impl IntoResponse, ApiError> {
    let u =
        state.uploads.get(&id).ok_or_else(|| ApiError::not_found(format!("no kept image {id:?} (uploads are kept for a while only)")))?;
    let kind = match u.bytes.get(..4) {
        Some([0xff, 0xd8, ..]) => "image/jpeg",
        Some([0x89, b'P', b'N', b'G']) => "image/png",
        Some([b'G', b'I', b'F', _]) => "image/gif",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, kind)], u.bytes.as_ref().clone()))
}
