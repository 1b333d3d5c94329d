//! Label Studio's REST API as the backend uses it: a project's config and `model_version`,
//! the webhook Label Studio made for the backend (its headers), the annotated tasks, the
//! unlabelled tasks and their predictions. Calls go only to `--label-studio-url`, with its API
//! key or the token Label Studio sent at setup (`Authorization: Token`, never logged), follow
//! no redirects, and read answers up to a bound. Blocking: run them off the async threads.

use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;

/// Largest answer read (an export of a big project included).
pub const MAX_ANSWER_BYTES: u64 = 64 << 20;
/// Tasks asked for per page, and per prediction request sent back to the backend.
pub const PAGE: usize = 50;

/// A Label Studio server and a key for it.
pub struct Api {
    base: String,
    key: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(base: &str, key: &str, timeout: Duration) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            agent: ureq::AgentBuilder::new().timeout(timeout).redirects(0).build(),
        }
    }

    /// One call; the JSON answer or a one-line reason naming the path (never the key).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let req = self.agent.request(method, &format!("{}{path}", self.base)).set("Authorization", &format!("Token {}", self.key));
        let shown = path.split('?').next().unwrap_or(path);
        let res = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        }
        .map_err(|e| match e {
            ureq::Error::Status(401 | 403, _) => format!(
                "Label Studio refused the API key on {shown} (pass a valid one with --label-studio-api-key-file, and allow legacy tokens in its organisation)"
            ),
            ureq::Error::Status(code, _) => format!("Label Studio answered {method} {shown} with HTTP {code}"),
            ureq::Error::Transport(t) => format!("Label Studio at {} did not answer {method} {shown}: {}", self.base, t.kind()),
        })?;
        let mut text = String::new();
        res.into_reader().take(MAX_ANSWER_BYTES + 1).read_to_string(&mut text).map_err(|e| format!("{shown}: {e}"))?;
        if text.len() as u64 > MAX_ANSWER_BYTES {
            return Err(format!("Label Studio's answer to {shown} is over {} MiB", MAX_ANSWER_BYTES >> 20));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| format!("Label Studio's answer to {shown} is not JSON: {e}"))
    }

    /// The project's labelling config and `model_version`.
    pub fn project(&self, project: u64) -> Result<(String, String), String> {
        let p = self.call("GET", &format!("/api/projects/{project}"), None)?;
        let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        Ok((text("label_config"), text("model_version")))
    }

    /// Sets the project's `model_version`: the version whose predictions the data manager
    /// scores and sorts by, and the labelling view shows. Label Studio refuses (400) a version
    /// of which it holds no prediction yet: then `false`.
    pub fn set_model_version(&self, project: u64, version: &str) -> Result<bool, String> {
        match self.call("PATCH", &format!("/api/projects/{project}"), Some(&json!({"model_version": version}))) {
            Ok(_) => Ok(true),
            Err(e) if e.ends_with("HTTP 400") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the webhook Label Studio created for this backend (`<ML backend URL>/webhook`,
    /// for a backend URL ending in `/label-studio`) the header `Authorization: <value>`;
    /// how many webhooks it changed.
    pub fn authenticate_webhook(&self, project: u64, value: &str) -> Result<usize, String> {
        let backends = self.call("GET", &format!("/api/ml?project={project}"), None)?;
        let ours: Vec<String> = backends
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.get("url").and_then(Value::as_str))
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| u.ends_with("/label-studio"))
            .map(|u| format!("{u}/webhook"))
            .collect();
        let hooks = self.call("GET", &format!("/api/webhooks/?project={project}"), None)?;
        let mut changed = 0;
        for hook in hooks.as_array().into_iter().flatten() {
            let (Some(id), Some(url)) = (hook.get("id").and_then(Value::as_u64), hook.get("url").and_then(Value::as_str)) else {
                continue;
            };
            if !ours.iter().any(|o| o == url) {
                continue;
            }
            let mut headers = hook.get("headers").and_then(Value::as_object).cloned().unwrap_or_default();
            if headers.get("Authorization").and_then(Value::as_str) == Some(value) {
                changed += 1;
                continue;
            }
            headers.insert("Authorization".into(), Value::String(value.into()));
            self.call("PATCH", &format!("/api/webhooks/{id}/"), Some(&json!({"headers": headers})))?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Every task with an annotation, with its data and annotations (the project's JSON
    /// export).
    pub fn annotated_tasks(&self, project: u64) -> Result<Vec<Value>, String> {
        let export = self.call("GET", &format!("/api/projects/{project}/export?exportType=JSON&download_resources=false"), None)?;
        match export {
            Value::Array(tasks) => Ok(tasks),
            _ => Err(format!("Label Studio's export of project {project} is not a list of tasks")),
        }
    }

    /// The ids of the project's tasks without an annotation, at most `max`.
    pub fn unlabelled_tasks(&self, project: u64, max: usize) -> Result<Vec<u64>, String> {
        let mut ids = Vec::new();
        for page in 1.. {
            let answer = self.call("GET", &format!("/api/tasks/?project={project}&page={page}&page_size={PAGE}&fields=task_only"), None);
            // Past the last page Label Studio answers 404.
            let answer = match answer {
                Err(e) if e.ends_with("HTTP 404") && page > 1 => break,
                other => other?,
            };
            let tasks = answer.get("tasks").and_then(Value::as_array).cloned().unwrap_or_default();
            ids.extend(
                tasks
                    .iter()
                    .filter(|t| t.get("total_annotations").and_then(Value::as_u64).unwrap_or(0) == 0)
                    .filter_map(|t| t.get("id").and_then(Value::as_u64)),
            );
            let total = answer.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
            if tasks.len() < PAGE || page * PAGE >= total || ids.len() >= max {
                break;
            }
        }
        ids.truncate(max);
        Ok(ids)
    }

    /// Asks Label Studio to get predictions for `tasks` from its ML backend (the data
    /// manager's "Retrieve predictions"): it calls the backend's `/predict` for those without
    /// one from the current model version.
    pub fn retrieve_predictions(&self, project: u64, tasks: &[u64]) -> Result<(), String> {
        let body = json!({"selectedItems": {"all": false, "included": tasks}});
        self.call("POST", &format!("/api/dm/actions?id=retrieve_tasks_predictions&project={project}"), Some(&body)).map(drop)
    }
}
