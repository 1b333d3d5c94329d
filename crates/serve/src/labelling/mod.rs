//! What `serve` learns from Label Studio: annotations accepted from its webhook or caught up
//! through its API (those made while serve was down, or whose webhook failed), batched into
//! retrain jobs; and (`sync`) its projects kept in step with the served model.
//!
//! The feedback store is the ledger: each annotation is stored under the source
//! `label-studio:<project>/<task>/<annotation>@<updated>`, so an annotation is new exactly when
//! no stored correction has its source and none waits with it.

pub mod sync;

use crate::engine::ModelInfo;
use crate::error::ApiError;
use crate::jobs::Correction;
use crate::label_studio::api::Api;
use crate::label_studio::config::LabelConfig;
use crate::label_studio::{PendingAnnotation, MAX_PENDING};
use crate::state::AppState;
use crate::uploads::Upload;
use axum::http::StatusCode;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use vocml_core::retrain::feedback::FeedbackStore;
use vocml_core::run::options::default_feedback_dir;

/// How long one Label Studio API call may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(60);

/// `model_version`: the served run (and registry version when it has one).
pub fn model_version(info: &ModelInfo) -> String {
    match &info.registry {
        Some(r) => format!("{} ({} v{})", info.run, r.model, r.version),
        None => info.run.clone(),
    }
}

/// The API of `--label-studio-url` for `project`: with the configured key, else the token
/// Label Studio sent at the project's setup; `None` without a URL or a key.
pub fn api_for(state: &AppState, project: u64) -> Option<Api> {
    let images = &state.label_studio.options.images;
    let host = images.host.as_ref()?;
    let key = images.api_key.clone().or_else(|| state.label_studio.project(project).and_then(|p| p.setup_token))?;
    Some(Api::new(host, &key, API_TIMEOUT))
}

/// Image fetches at once across the service: each holds a blocking thread while Label Studio
/// (or another host) answers, so a stalling host cannot take the threads decoding needs.
pub const MAX_FETCHES: usize = 32;
/// Fetches at once for one request.
pub const FETCHES_PER_REQUEST: usize = 8;
/// How long one request's fetches may take in all: within Label Studio's 100 s timeout for a
/// predict call, with time left to score.
pub const FETCH_BUDGET: Duration = Duration::from_secs(75);

/// Fetches each image reference: one fetch per distinct reference, cached ones (fetched
/// before, kept like uploads) not again, the rest concurrently within [`FETCHES_PER_REQUEST`],
/// [`MAX_FETCHES`] and [`FETCH_BUDGET`]; the outcomes in the order of `refs`.
pub async fn fetch_images(state: &Arc<AppState>, refs: Vec<String>) -> Vec<Result<(String, Arc<Vec<u8>>), String>> {
    let deadline = tokio::time::Instant::now() + FETCH_BUDGET;
    let mut distinct: Vec<String> = refs.clone();
    distinct.sort();
    distinct.dedup();
    let per_request = Arc::new(tokio::sync::Semaphore::new(FETCHES_PER_REQUEST));
    let mut tasks = tokio::task::JoinSet::new();
    let mut got: std::collections::HashMap<String, Result<Arc<Vec<u8>>, String>> = std::collections::HashMap::new();
    for r in distinct {
        let known = state.label_studio.fetched.lock().unwrap().get(&r).cloned().and_then(|id| state.uploads.get(&id));
        if let Some(up) = known {
            got.insert(r, Ok(up.bytes));
            continue;
        }
        let (state, per_request) = (state.clone(), per_request.clone());
        tasks.spawn(async move {
            let fetched = async {
                let _mine = per_request.acquire_owned().await.map_err(|e| e.to_string())?;
                let global = state.fetchers.clone().acquire_owned().await.map_err(|e| e.to_string())?;
                let source = state.label_studio.options.images.clone();
                let reference = r.clone();
                // The global permit is held until the blocking fetch itself returns.
                tokio::task::spawn_blocking(move || {
                    let _global = global;
                    source.fetch(&reference)
                })
                .await
                .map_err(|e| e.to_string())?
            };
            let outcome = match tokio::time::timeout_at(deadline, fetched).await {
                Ok(result) => result.map(Arc::new),
                Err(_) => Err(format!("not fetched within the request's {} s for images", FETCH_BUDGET.as_secs())),
            };
            (r, outcome)
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok((r, outcome)) = done {
            got.insert(r, outcome);
        }
    }
    refs.into_iter()
        .map(|r| match got.get(&r) {
            Some(Ok(bytes)) => Ok((r, bytes.clone())),
            Some(Err(e)) => Err(e.clone()),
            None => Err("the fetch failed".to_string()),
        })
        .collect()
}

/// The image reference of `task` under `cfg`.
pub fn image_ref(task: &Value, cfg: &LabelConfig) -> Result<String, String> {
    task.get("data")
        .and_then(|d| d.get(&cfg.data_key))
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| format!("the task has no data.{} (the <Image> value)", cfg.data_key))
}

/// The model classes an annotation chooses.
pub fn annotated_classes(state: &AppState, cfg: &LabelConfig, annotation: &Value) -> Result<Vec<String>, String> {
    let results = annotation.get("result").and_then(Value::as_array).ok_or("the annotation has no result list")?;
    let mut classes = Vec::new();
    for r in results.iter().filter(|r| r.get("from_name").and_then(Value::as_str) == Some(&cfg.from_name)) {
        for c in r.pointer("/value/choices").and_then(Value::as_array).ok_or("a choices result without value.choices")? {
            let c = c.as_str().ok_or("a choice that is not a string")?;
            if !cfg.choices.iter().any(|k| k == c) {
                return Err(format!("choice {c:?} is not in <Choices name=\"{}\">", cfg.from_name));
            }
            classes.push(state.label_studio.options.map.class_of(c).to_string());
        }
    }
    Ok(classes)
}

/// The store's name for one annotation of a task (see the module docs).
pub fn source_of(project: u64, task: u64, annotation: &Value) -> String {
    let id = annotation.get("id").and_then(Value::as_u64).unwrap_or(0);
    let updated: String = annotation
        .get("updated_at")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ":.-+".contains(*c))
        .take(40)
        .collect();
    format!("label-studio:{project}/{task}/{id}@{updated}")
}

/// What became of one annotation.
pub enum Accepted {
    /// Waiting for the next retrain job, with this many others.
    Stored(usize),
    /// Not a correction (cancelled, or already learnt or waiting).
    Ignored(&'static str),
}

/// Checks one annotation of `task` and keeps it for the next retrain job: its choices mapped
/// to classes, its image fetched and decoded. Errors are the annotation's alone (a 4xx).
pub async fn accept(
    state: &Arc<AppState>,
    info: &ModelInfo,
    project: u64,
    cfg: &LabelConfig,
    task: &Value,
    annotation: &Value,
) -> Result<Accepted, ApiError> {
    let task_id = task.get("id").and_then(Value::as_u64).ok_or_else(|| ApiError::bad_request("the task has no numeric id"))?;
    if annotation.get("was_cancelled").and_then(Value::as_bool) == Some(true) {
        return Ok(Accepted::Ignored("the annotation was cancelled"));
    }
    let source = source_of(project, task_id, annotation);
    if state.label_studio.pending.lock().unwrap().iter().any(|p| p.correction.source == source) {
        return Ok(Accepted::Ignored("the annotation is already waiting for a retrain job"));
    }
    let labels = annotated_classes(state, cfg, annotation).map_err(|e| ApiError::bad_request(format!("task {task_id}: {e}")))?;
    if state.label_studio.pending.lock().unwrap().len() >= MAX_PENDING {
        return Err(ApiError::unavailable(format!("{MAX_PENDING} annotations are waiting for a retrain job; send START_TRAINING")));
    }
    let reference = image_ref(task, cfg).map_err(|e| ApiError::bad_request(format!("task {task_id}: {e}")))?;
    let (_, bytes) = fetch_images(state, vec![reference.clone()])
        .await
        .remove(0)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("task {task_id}: {e}")))?;
    let decoded = crate::scoring::decode(state, vec![(reference.clone(), bytes.clone())], info.image_size, info.resize).await?;
    let (_, id, _, px) = &decoded[0];
    if let Err(e) = px {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("task {task_id}: the image is not usable: {e}")));
    }
    state.uploads.keep(id, Upload { filename: reference.clone(), bytes: bytes.clone() });
    remember_fetch(state, reference, id.clone());
    let correction = Correction { filename: format!("label-studio-{project}-{task_id}"), bytes, labels, source };
    let mut pending = state.label_studio.pending.lock().unwrap();
    pending.retain(|p| (p.project, p.task) != (project, task_id));
    pending.push(PendingAnnotation { project, task: task_id, correction });
    Ok(Accepted::Stored(pending.len()))
}

/// What a catch-up found.
#[derive(Debug, Default)]
pub struct CaughtUp {
    /// Annotations that were neither learnt nor waiting, now waiting.
    pub added: usize,
    /// Those that could not be used, with why.
    pub refused: Vec<String>,
}

/// Reads the project's annotated tasks through Label Studio's API and keeps each task's
/// latest annotation that the feedback store has not learnt and no job waits with.
pub async fn catch_up(state: &Arc<AppState>, info: &ModelInfo, project: u64) -> Result<CaughtUp, String> {
    let api = api_for(state, project).ok_or(
        "serve has no Label Studio API access: give --label-studio-url and --label-studio-api-key-file (or let Label Studio call /setup)",
    )?;
    let store = default_feedback_dir(&state.runs_dir);
    let ((xml, _), tasks, learnt) = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let learnt = match FeedbackStore::open(&store).and_then(|s| s.all()) {
            Ok(stored) => stored.sources,
            Err(e) => return Err(format!("cannot read the feedback store: {e:#}")),
        };
        Ok((api.project(project)?, api.annotated_tasks(project)?, learnt))
    })
    .await
    .map_err(|e| e.to_string())??;
    let cfg = LabelConfig::parse(&xml, &info.task, &state.label_studio.options.map)?;
    state.label_studio.with_project(project, |p| p.config = Some(cfg.clone()));
    let waiting: HashSet<String> = state.label_studio.pending.lock().unwrap().iter().map(|p| p.correction.source.clone()).collect();
    let mut out = CaughtUp::default();
    for task in &tasks {
        let (Some(task_id), Some(annotations)) =
            (task.get("id").and_then(Value::as_u64), task.get("annotations").and_then(Value::as_array))
        else {
            continue;
        };
        let latest = annotations.iter().max_by(|a, b| {
            let key =
                |v: &Value| (v.get("updated_at").and_then(Value::as_str).unwrap_or("").to_string(), v.get("id").and_then(Value::as_u64));
            key(a).cmp(&key(b))
        });
        let Some(annotation) = latest else { continue };
        let source = source_of(project, task_id, annotation);
        if learnt.contains(&source) || waiting.contains(&source) {
            continue;
        }
        match accept(state, info, project, &cfg, task, annotation).await {
            Ok(Accepted::Stored(_)) => out.added += 1,
            Ok(Accepted::Ignored(_)) => {}
            Err(e) => out.refused.push(e.message),
        }
    }
    Ok(out)
}

/// Starts a retrain job from the pending annotations, unless one is running (they wait for
/// the next trigger) or none is pending; the job's id. If the job fails, its annotations wait
/// again (unless a newer annotation of the same task came meanwhile).
pub fn start_job(state: &Arc<AppState>, info: &ModelInfo) -> Option<String> {
    let mut pending = state.label_studio.pending.lock().unwrap();
    if pending.is_empty() {
        return None;
    }
    let taken = pending.clone();
    let corrections: Vec<Correction> = taken.iter().map(|p| p.correction.clone()).collect();
    let back = state.clone();
    let on_finish = move |ok: bool| {
        if ok {
            return;
        }
        let mut pending = back.label_studio.pending.lock().unwrap();
        for p in taken.into_iter().rev() {
            if !pending.iter().any(|q| (q.project, q.task) == (p.project, p.task)) {
                pending.insert(0, p);
            }
        }
    };
    let target = state.job_target(info.run_dir.clone(), false, Some(Box::new(on_finish)));
    match state.jobs.start(corrections, target) {
        Ok(status) => {
            pending.clear();
            Some(status.id)
        }
        Err(e) => {
            eprintln!("serve: label-studio: annotations wait for the next trigger: {e}");
            None
        }
    }
}

/// Most image references whose upload id is remembered, and the longest remembered.
const MAX_REMEMBERED: usize = 4096;
const MAX_REFERENCE_LEN: usize = 2048;

/// Remembers that `reference` was fetched as upload `id` (bounded: the map is emptied when
/// full, and long references are not kept).
pub fn remember_fetch(state: &AppState, reference: String, id: String) {
    if reference.len() > MAX_REFERENCE_LEN {
        return;
    }
    let mut fetched = state.label_studio.fetched.lock().unwrap();
    if fetched.len() >= MAX_REMEMBERED {
        fetched.clear();
    }
    fetched.insert(reference, id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_annotation_is_named_by_project_task_id_and_update() {
        let a = json!({"id": 7, "updated_at": "2026-12-06T10:00:00.123456Z"});
        assert_eq!(source_of(1, 42, &a), "label-studio:1/42/7@2026-12-06T10:00:00.123456Z");
        let hostile = json!({"id": 7, "updated_at": "x\n/../".repeat(30)});
        let s = source_of(1, 42, &hostile);
        assert!(s.len() < 100 && !s.contains('\n') && s.matches('/').count() == 2, "{s}");
    }
}
