//! The Label Studio ML backend protocol under `/label-studio`: `GET /health`, `POST /setup`
//! (the labelling config checked against the served model; a refusal is logged and its
//! reason is the HTTP reason phrase, which Label Studio's dialog shows), `POST /predict` (each
//! task's decided classes as a `choices` result, scored by the margin of its least certain
//! class so that Label Studio's ascending sort puts the most informative tasks first) and
//! `POST /webhook` (annotations batched into retrain jobs; START_TRAINING first catches up
//! with annotations whose webhook never arrived).

use super::AppState;
use crate::engine::ModelInfo;
use crate::error::{shown, ApiError};
use crate::label_studio::config::LabelConfig;
use crate::label_studio::project_id;
use crate::labelling::{accept, catch_up, fetch_images, image_ref, model_version, remember_fetch, start_job, Accepted};
use crate::scoring::{score, Scoring};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use vocml_core::select::{informativeness, Informativeness};

/// Most tasks in one predict call: Label Studio sends every selected task in one call
/// ("Retrieve predictions"); their images are fetched concurrently and scored as bulk work.
const MAX_TASKS: usize = 1000;

/// Longest API token kept from a setup call.
const MAX_TOKEN_LEN: usize = 256;

fn model(state: &AppState) -> Result<Arc<ModelInfo>, ApiError> {
    state.engine.info().ok_or_else(|| ApiError::unavailable("no model loaded yet (see GET /ready)"))
}

/// The project a request is about.
fn project_of(body: &Value) -> Result<u64, ApiError> {
    let v = body.get("project").unwrap_or(&Value::Null);
    project_id(v).ok_or_else(|| {
        ApiError::bad_request(format!("project {}: expected a Label Studio project id (a number)", shown(&v.to_string(), 40)))
    })
}

pub async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    let version = state.engine.info().map(|i| model_version(&i));
    Json(json!({"status": "UP", "model_class": "vocml", "model_version": version}))
}

/// The config of `body`'s project: `key`'s XML if the body has it (checked and remembered),
/// else the one remembered.
/// A request without a project may still carry its config: then it is only checked.
fn project_config(state: &AppState, info: &ModelInfo, body: &Value, key: &str) -> Result<(Option<u64>, LabelConfig), ApiError> {
    let xml =
        body.get(key).and_then(Value::as_str).or_else(|| body.get("project").and_then(|p| p.get("label_config")).and_then(Value::as_str));
    let Some(xml) = xml else {
        let id = project_of(body)?;
        return state.label_studio.project(id).and_then(|p| p.config).map(|c| (Some(id), c)).ok_or_else(|| {
            ApiError::bad_request(format!("no labelling config for project {id}: send label_config, or POST /label-studio/setup first"))
        });
    };
    let project = if body.get("project").is_some() { Some(project_of(body)?) } else { None };
    let cfg = LabelConfig::parse(xml, &info.task, &state.label_studio.options.map).map_err(ApiError::bad_request)?;
    if let Some(id) = project {
        state.label_studio.with_project(id, |p| p.config = Some(cfg.clone()));
    }
    Ok((project, cfg))
}

/// A 400 whose reason phrase is `message` (printable ASCII, bounded): Label Studio shows the
/// status line of a failed setup, not its body.
fn refused_setup(message: String) -> Response {
    let phrase: Vec<u8> = message.bytes().map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' }).take(300).collect();
    let mut r = ApiError::bad_request(message).into_response();
    if let Ok(p) = hyper::ext::ReasonPhrase::try_from(phrase) {
        r.extensions_mut().insert(p);
    }
    r
}

pub async fn setup(State(state): State<Arc<AppState>>, Json(body): Json<Value>) -> Response {
    let info = match model(&state) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let project = match project_of(&body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let xml = body.get("schema").and_then(Value::as_str).unwrap_or("");
    let cfg = match LabelConfig::parse(xml, &info.task, &state.label_studio.options.map) {
        Ok(cfg) => cfg,
        Err(e) => {
            let message = format!("project {project}: {}", shown(&e, 400));
            eprintln!("serve: label-studio: setup refused: {message}");
            return refused_setup(message);
        }
    };
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN && t.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from);
    state.label_studio.with_project(project, |p| {
        p.config = Some(cfg);
        if token.is_some() {
            p.setup_token = token;
        }
        // Label Studio may have set the project's version to the backend's title: look again.
        p.version_set = None;
    });
    Json(json!({"model_version": model_version(&info)})).into_response()
}

pub async fn predict(State(state): State<Arc<AppState>>, Json(body): Json<Value>) -> Result<Json<Value>, ApiError> {
    let info = model(&state)?;
    let (_, cfg) = project_config(&state, &info, &body, "label_config")?;
    let tasks = body.get("tasks").and_then(Value::as_array).ok_or_else(|| ApiError::bad_request("no `tasks` list"))?;
    if tasks.len() > MAX_TASKS {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("more than {MAX_TASKS} tasks in one request")));
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
                remember_fetch(&state, reference, s.id.clone());
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
                    .filter_map(|(c, _)| state.label_studio.options.map.choice_of(&cfg, c))
                    .collect();
                let margin = -informativeness(&model.task, &p, &model.thresholds, Informativeness::Margin);
                json!({"result": [{"from_name": cfg.from_name, "to_name": cfg.to_name, "type": "choices",
                                   "value": {"choices": choices}, "score": margin}],
                       "score": margin, "model_version": version})
            }
            Err(e) => {
                let id = task.get("id").map(|v| shown(&v.to_string(), 24)).unwrap_or_default();
                eprintln!("serve: label-studio: task {id}: {}", shown(&e, 300));
                json!({"result": [], "score": 0.0, "model_version": version, "error": e})
            }
        });
    }
    Ok(Json(json!({"results": results})))
}

pub async fn webhook(State(state): State<Arc<AppState>>, Json(body): Json<Value>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let action = body.get("action").and_then(Value::as_str).unwrap_or("").to_string();
    let info = model(&state)?;
    match action.as_str() {
        "ANNOTATION_CREATED" | "ANNOTATION_UPDATED" => {
            let project = project_of(&body)?;
            let (_, cfg) = project_config(&state, &info, &body, "label_config")?;
            let task = body.get("task").ok_or_else(|| ApiError::bad_request("no `task` in the event"))?;
            let annotation = body.get("annotation").ok_or_else(|| ApiError::bad_request("no `annotation` in the event"))?;
            match accept(&state, &info, project, &cfg, task, annotation).await? {
                Accepted::Ignored(reason) => Ok((StatusCode::CREATED, Json(json!({"status": "ignored", "reason": reason})))),
                Accepted::Stored(n) => {
                    let job = (n >= state.label_studio.options.train_after).then(|| start_job(&state, &info)).flatten();
                    Ok((StatusCode::CREATED, Json(json!({"status": "stored", "pending": n, "job": job}))))
                }
            }
        }
        "START_TRAINING" => {
            let project = project_of(&body)?;
            state.label_studio.with_project(project, |_| ());
            let mut caught_up = 0;
            if crate::labelling::api_for(&state, project).is_some() {
                match catch_up(&state, &info, project).await {
                    Ok(c) => caught_up = c.added,
                    Err(e) => eprintln!("serve: label-studio: project {project}: cannot catch up with its annotations: {}", shown(&e, 300)),
                }
            }
            let job = start_job(&state, &info);
            let n = state.label_studio.pending.lock().unwrap().len();
            let status = if job.is_some() { "training" } else { "nothing to train" };
            Ok((StatusCode::CREATED, Json(json!({"status": status, "pending": n, "caught_up": caught_up, "job": job}))))
        }
        _ => Ok((StatusCode::CREATED, Json(json!({"status": "ignored", "action": shown(&action, 64)})))),
    }
}
