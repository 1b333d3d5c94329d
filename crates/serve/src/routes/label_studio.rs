//! The Label Studio ML backend protocol under `/label-studio`: `GET /health`, `POST /setup`
//! (the labelling config checked against the served model), `POST /predict` (each task's
//! decided classes as a `choices` result, scored by the margin of its least certain class so
//! that Label Studio's ascending sort puts the most informative tasks first) and
//! `POST /webhook` (annotations batched into retrain jobs).

use super::AppState;
use crate::engine::ModelInfo;
use crate::error::ApiError;
use crate::jobs::{Correction, JobTarget};
use crate::label_studio::config::LabelConfig;
use crate::label_studio::{LabelStudio, MAX_PENDING};
use crate::scoring::{score, Scoring};
use crate::uploads::Upload;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use vocml_core::select::{informativeness, Informativeness};

fn backend(state: &AppState) -> &LabelStudio {
    &state.label_studio
}

/// `model_version`: the served run (and registry version when it has one).
fn model_version(info: &ModelInfo) -> String {
    match &info.registry {
        Some(r) => format!("{} ({} v{})", info.run, r.model, r.version),
        None => info.run.clone(),
    }
}

fn model(state: &AppState) -> Result<Arc<ModelInfo>, ApiError> {
    state.engine.info().ok_or_else(|| ApiError::unavailable("no model loaded yet (see GET /ready)"))
}

pub async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    let version = state.engine.info().map(|i| model_version(&i));
    Json(json!({"status": "UP", "model_class": "vocml", "model_version": version}))
}

/// The project's id as text: Label Studio sends a number, the project object, or
/// `<id>.<created timestamp>` (setup and predict).
fn project_id(v: &Value) -> String {
    match v {
        Value::Object(o) => o.get("id").map(project_id).unwrap_or_default(),
        Value::String(s) => s.split('.').next().unwrap_or_default().to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The config of `body`'s project: `key`'s XML if the body has it, else the one `/setup`
/// stored.
fn project_config(state: &AppState, info: &ModelInfo, body: &Value, key: &str) -> Result<LabelConfig, ApiError> {
    let xml =
        body.get(key).and_then(Value::as_str).or_else(|| body.get("project").and_then(|p| p.get("label_config")).and_then(Value::as_str));
    let project = project_id(body.get("project").unwrap_or(&Value::Null));
    match xml {
        Some(xml) => {
            let cfg = LabelConfig::parse(xml, &info.task, &backend(state).options.map).map_err(ApiError::bad_request)?;
            backend(state).projects.lock().unwrap().insert(project, cfg.clone());
            Ok(cfg)
        }
        None => backend(state).projects.lock().unwrap().get(&project).cloned().ok_or_else(|| {
            ApiError::bad_request(format!(
                "no labelling config for project {project:?}: send label_config, or POST /label-studio/setup first"
            ))
        }),
    }
}

pub async fn setup(State(state): State<Arc<AppState>>, Json(body): Json<Value>) -> Result<Json<Value>, ApiError> {
    let info = model(&state)?;
    project_config(&state, &info, &body, "schema")?;
    Ok(Json(json!({"model_version": model_version(&info)})))
}

/// Fetches each task's image (cached by reference; fetched bytes kept like uploads).
async fn fetch_images(state: &Arc<AppState>, refs: Vec<String>) -> Vec<Result<(String, Arc<Vec<u8>>), String>> {
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let known = backend(state).fetched.lock().unwrap().get(&r).cloned().and_then(|id| state.uploads.get(&id));
        if let Some(up) = known {
            out.push(Ok((r, up.bytes)));
            continue;
        }
        let source = backend(state).options.images.clone();
        let reference = r.clone();
        let got = tokio::task::spawn_blocking(move || source.fetch(&reference)).await.unwrap_or_else(|e| Err(e.to_string()));
        out.push(got.map(|b| (r, Arc::new(b))));
    }
    out
}

fn image_ref(task: &Value, cfg: &LabelConfig) -> Result<String, String> {
    task.get("data")
        .and_then(|d| d.get(&cfg.data_key))
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| format!("the task has no data.{} (the <Image> value)", cfg.data_key))
}

pub async fn predict(State(state): State<Arc<AppState>>, Json(body): Json<Value>) -> Result<Json<Value>, ApiError> {
    let info = model(&state)?;
    let cfg = project_config(&state, &info, &body, "label_config")?;
    let tasks = body.get("tasks").and_then(Value::as_array).ok_or_else(|| ApiError::bad_request("no `tasks` list"))?;
    if tasks.len() > state.max_files {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("more than {} tasks in one request", state.max_files)));
    }
    let refs: Vec<Result<String, String>> = tasks.iter().map(|t| image_ref(t, &cfg)).collect();
    let fetched = fetch_images(&state, refs.iter().filter_map(|r| r.as_ref().ok().cloned()).collect()).await;
    let mut fetched = fetched.into_iter();
    // (reference or error) per task, in order.
    let mut per_task: Vec<Result<(String, Arc<Vec<u8>>), String>> = Vec::new();
    for r in refs {
        per_task.push(match r {
            Ok(_) => fetched.next().expect("one fetch per reference"),
            Err(e) => Err(e),
        });
    }
    let files: Vec<(String, Arc<Vec<u8>>)> = per_task.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let (scores, model) = score(&state, files, Scoring { keep: true, ..Default::default() }).await?;
    let version = model_version(&model);
    let mut scores = scores.into_iter();
    let mut results = Vec::new();
    for (task, outcome) in tasks.iter().zip(per_task) {
        let scored = outcome.and_then(|(reference, _)| {
            let s = scores.next().expect("one score per fetched image");
            if s.result.is_ok() {
                backend(&state).fetched.lock().unwrap().insert(reference, s.id.clone());
            }
            s.result.map_err(|e| format!("the image is not usable: {e}"))
        });
        results.push(match scored {
            Ok(p) => {
                let decided = model.task.decide(&p, &model.thresholds);
                let choices: Vec<&str> = model
                    .task
                    .classes
                    .iter()
                    .zip(&decided)
                    .filter(|(_, &d)| d >= 0.5)
                    .filter_map(|(c, _)| backend(&state).options.map.choice_of(&cfg, c))
                    .collect();
                let margin = -informativeness(&model.task, &p, &model.thresholds, Informativeness::Margin);
                json!({"result": [{"from_name": cfg.from_name, "to_name": cfg.to_name, "type": "choices",
                                   "value": {"choices": choices}, "score": margin}],
                       "score": margin, "model_version": version})
            }
            Err(e) => {
                eprintln!("serve: label-studio: task {}: {e}", task.get("id").unwrap_or(&Value::Null));
                json!({"result": [], "score": 0.0, "model_version": version, "error": e})
            }
        });
    }
    Ok(Json(json!({"results": results})))
}

/// The model classes an annotation chooses.
fn annotated_classes(state: &AppState, cfg: &LabelConfig, annotation: &Value) -> Result<Vec<String>, String> {
    let results = annotation.get("result").and_then(Value::as_array).ok_or("the annotation has no result list")?;
    let mut classes = Vec::new();
    for r in results.iter().filter(|r| r.get("from_name").and_then(Value::as_str) == Some(&cfg.from_name)) {
        for c in r.pointer("/value/choices").and_then(Value::as_array).ok_or("a choices result without value.choices")? {
            let c = c.as_str().ok_or("a choice that is not a string")?;
            if !cfg.choices.iter().any(|k| k == c) {
                return Err(format!("choice {c:?} is not in <Choices name=\"{}\">", cfg.from_name));
            }
            classes.push(backend(state).options.map.class_of(c).to_string());
        }
    }
    Ok(classes)
}

pub async fn webhook(State(state): State<Arc<AppState>>, Json(body): Json<Value>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let action = body.get("action").and_then(Value::as_str).unwrap_or("").to_string();
    let info = model(&state)?;
    match action.as_str() {
        "ANNOTATION_CREATED" | "ANNOTATION_UPDATED" => {
            let cfg = project_config(&state, &info, &body, "label_config")?;
            let task = body.get("task").ok_or_else(|| ApiError::bad_request("no `task` in the event"))?;
            let annotation = body.get("annotation").ok_or_else(|| ApiError::bad_request("no `annotation` in the event"))?;
            let task_id = task.get("id").map(|v| v.to_string()).unwrap_or_default();
            if annotation.get("was_cancelled").and_then(Value::as_bool) == Some(true) {
                return Ok((StatusCode::CREATED, Json(json!({"status": "ignored", "reason": "the annotation was cancelled"}))));
            }
            let labels = annotated_classes(&state, &cfg, annotation).map_err(|e| ApiError::bad_request(format!("task {task_id}: {e}")))?;
            if backend(&state).pending.lock().unwrap().len() >= MAX_PENDING {
                return Err(ApiError::unavailable(format!("{MAX_PENDING} annotations are waiting for a retrain job; send START_TRAINING")));
            }
            let reference = image_ref(task, &cfg).map_err(|e| ApiError::bad_request(format!("task {task_id}: {e}")))?;
            let (_, bytes) = fetch_images(&state, vec![reference.clone()])
                .await
                .remove(0)
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("task {task_id}: {e}")))?;
            let decoded = crate::scoring::decode(&state, vec![(reference.clone(), bytes.clone())], info.image_size, info.resize).await?;
            let (_, id, _, px) = &decoded[0];
            if let Err(e) = px {
                return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("task {task_id}: the image is not usable: {e}")));
            }
            state.uploads.keep(id, Upload { filename: reference.clone(), bytes: bytes.clone() });
            backend(&state).fetched.lock().unwrap().insert(reference.clone(), id.clone());
            let filename = format!("label-studio-task-{}", task_id.trim_matches('"'));
            let mut pending = backend(&state).pending.lock().unwrap();
            pending.retain(|(t, _)| *t != task_id);
            pending.push((task_id, Correction { filename, bytes, labels }));
            let n = pending.len();
            drop(pending);
            let job = (n >= backend(&state).options.train_after).then(|| start_job(&state, &info)).flatten();
            Ok((StatusCode::CREATED, Json(json!({"status": "stored", "pending": n, "job": job}))))
        }
        "START_TRAINING" => {
            let job = start_job(&state, &info);
            let n = backend(&state).pending.lock().unwrap().len();
            Ok((
                StatusCode::CREATED,
                Json(json!({"status": if job.is_some() { "training" } else { "nothing to train" }, "pending": n, "job": job})),
            ))
        }
        _ => Ok((StatusCode::CREATED, Json(json!({"status": "ignored", "action": action})))),
    }
}

/// Starts a retrain job from the pending annotations, unless one is running (they wait for
/// the next trigger) or none is pending; the job's id.
fn start_job(state: &Arc<AppState>, info: &ModelInfo) -> Option<String> {
    let mut pending = backend(state).pending.lock().unwrap();
    if pending.is_empty() {
        return None;
    }
    let corrections: Vec<Correction> = pending.iter().map(|(_, c)| c.clone()).collect();
    let target = JobTarget {
        from: info.run_dir.clone(),
        runs_dir: state.runs_dir.clone(),
        device: state.device,
        options: state.retrain.clone(),
        force: false,
    };
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
