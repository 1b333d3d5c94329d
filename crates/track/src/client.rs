//! A small MLflow REST client: experiments, runs, `log-batch` (chunked to the server's
//! limits), artifacts through the server's proxy, and the model registry with aliases.
//! Retries 5xx answers and connection errors with backoff; credentials come from the
//! standard variables (`MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and
//! `MLFLOW_TRACKING_PASSWORD`) and are never printed.

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Most metrics, params and tags per `log-batch` call (MLflow's own limits).
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
const MAX_TAGS: usize = 100;
/// Attempts of a call that fails with a 5xx answer or a connection error.
const ATTEMPTS: u32 = 3;

/// A tracking server.
pub struct MlflowClient {
    base: String,
    auth: Option<String>,
    agent: ureq::Agent,
    attempts: u32,
}

/// One metric value at a step.
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub step: i64,
}

/// An MLflow answer that was an error: its HTTP status and `error_code`.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "MLflow answered {} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl MlflowClient {
    /// A client of the server at `uri` (`http://host:port`, credentials in the standard
    /// variables or in the URI's user part).
    pub fn new(uri: &str) -> Result<Self> {
        let (base, userinfo) = split_userinfo(uri.trim_end_matches('/'))?;
        let auth = if let Ok(token) = std::env::var("MLFLOW_TRACKING_TOKEN") {
            Some(format!("Bearer {token}"))
        } else if let (Ok(u), Ok(p)) = (std::env::var("MLFLOW_TRACKING_USERNAME"), std::env::var("MLFLOW_TRACKING_PASSWORD")) {
            Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))))
        } else {
            userinfo.map(|ui| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(ui)))
        };
        let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5)).timeout(Duration::from_secs(300)).build();
        Ok(MlflowClient { base, auth, agent, attempts: ATTEMPTS })
    }

    /// The server's address without credentials (safe to print and record).
    pub fn uri(&self) -> &str {
        &self.base
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut last = None;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << (attempt - 1)));
            }
            let mut req = self.agent.request(method, &url);
            if let Some(a) = &self.auth {
                req = req.set("Authorization", a);
            }
            let res = match &body {
                Some(b) => req.send_json(b.clone()),
                None => req.call(),
            };
            match res {
                Ok(r) => return Ok(r.into_json().unwrap_or(Value::Null)),
                Err(ureq::Error::Status(status, r)) => {
                    let v: Value = r.into_json().unwrap_or(Value::Null);
                    let err = ApiError {
                        status,
                        code: v["error_code"].as_str().unwrap_or("").to_string(),
                        message: v["message"].as_str().unwrap_or("").to_string(),
                    };
                    if status < 500 {
                        return Err(err.into());
                    }
                    last = Some(anyhow!(err));
                }
                Err(e) => last = Some(anyhow!("cannot reach the MLflow server at {}: {}", self.base, transport_message(&e))),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The id of experiment `name`, created when missing.
    pub fn experiment_id(&self, name: &str) -> Result<String> {
        let q = format!("/api/2.0/mlflow/experiments/get-by-name?experiment_name={}", encode(name));
        match self.call("GET", &q, None) {
            Ok(v) => return string(&v["experiment"]["experiment_id"]),
            Err(e) if is_code(&e, "RESOURCE_DOES_NOT_EXIST") => {}
            Err(e) => return Err(e),
        }
        match self.call("POST", "/api/2.0/mlflow/experiments/create", Some(json!({ "name": name }))) {
            Ok(v) => string(&v["experiment_id"]),
            // Created meanwhile by another process.
            Err(e) if is_code(&e, "RESOURCE_ALREADY_EXISTS") => string(&self.call("GET", &q, None)?["experiment"]["experiment_id"]),
            Err(e) => Err(e),
        }
    }

    /// Creates a run that started at `start_ms` (Unix milliseconds); returns its id and
    /// artifact root (`mlflow-artifacts:/...`).
    pub fn create_run(&self, experiment_id: &str, name: &str, start_ms: i64, tags: &[(String, String)]) -> Result<(String, String)> {
        let tags: Vec<Value> = tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        let v = self.call(
            "POST",
            "/api/2.0/mlflow/runs/create",
            Some(json!({"experiment_id": experiment_id, "run_name": name, "start_time": start_ms, "tags": tags})),
        )?;
        Ok((string(&v["run"]["info"]["run_id"])?, string(&v["run"]["info"]["artifact_uri"])?))
    }

    /// The name of a run.
    pub fn run_name(&self, run_id: &str) -> Result<String> {
        string(&self.call("GET", &format!("/api/2.0/mlflow/runs/get?run_id={run_id}"), None)?["run"]["info"]["run_name"])
    }

    /// The artifact root of a run.
    pub fn artifact_root(&self, run_id: &str) -> Result<String> {
        string(&self.call("GET", &format!("/api/2.0/mlflow/runs/get?run_id={run_id}"), None)?["run"]["info"]["artifact_uri"])
    }

    /// Logs metrics, params and tags in as many `log-batch` calls as the limits need.
    pub fn log_batch(&self, run_id: &str, metrics: &[Metric], params: &[(String, String)], tags: &[(String, String)]) -> Result<()> {
        let ts = now_ms();
        let metrics: Vec<Value> =
            metrics.iter().map(|m| json!({"key": m.key, "value": m.value, "timestamp": ts, "step": m.step})).collect();
        let params: Vec<Value> = params.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        let tags: Vec<Value> = tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        let (mut m, mut p, mut t) = (metrics.chunks(MAX_METRICS), params.chunks(MAX_PARAMS), tags.chunks(MAX_TAGS));
        loop {
            let (cm, cp, ct) = (m.next().unwrap_or(&[]), p.next().unwrap_or(&[]), t.next().unwrap_or(&[]));
            if cm.is_empty() && cp.is_empty() && ct.is_empty() {
                return Ok(());
            }
            self.call("POST", "/api/2.0/mlflow/runs/log-batch", Some(json!({"run_id": run_id, "metrics": cm, "params": cp, "tags": ct})))?;
        }
    }

    /// Marks a run finished (or failed) at `end_ms`.
    pub fn finish_run(&self, run_id: &str, ok: bool, end_ms: i64) -> Result<()> {
        let status = if ok { "FINISHED" } else { "FAILED" };
        self.call("POST", "/api/2.0/mlflow/runs/update", Some(json!({"run_id": run_id, "status": status, "end_time": end_ms}))).map(drop)
    }

    /// Uploads `file` as `path` under a run's artifact root, through the server's proxy.
    pub fn upload_artifact(&self, artifact_root: &str, path: &str, file: &Path) -> Result<()> {
        let bytes = std::fs::read(file).map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?;
        let url = self.proxy_url(artifact_root, path)?;
        let mut last = None;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << (attempt - 1)));
            }
            let mut req = self.agent.put(&url).set("Content-Type", "application/octet-stream");
            if let Some(a) = &self.auth {
                req = req.set("Authorization", a);
            }
            match req.send_bytes(&bytes) {
                Ok(_) => return Ok(()),
                Err(ureq::Error::Status(s, r)) if s < 500 => {
                    bail!("uploading {path}: MLflow answered {s}: {}", r.into_string().unwrap_or_default())
                }
                Err(e) => last = Some(anyhow!("uploading {path}: {}", transport_message(&e))),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The proxy address of `path` under an artifact root.
    fn proxy_url(&self, artifact_root: &str, path: &str) -> Result<String> {
        let rel = artifact_root.strip_prefix("mlflow-artifacts:/").ok_or_else(|| {
            anyhow!("artifact root {artifact_root} is not served through the tracking server (start `mlflow server` with --artifacts-destination)")
        })?;
        Ok(format!("{}/api/2.0/mlflow-artifacts/artifacts/{}/{path}", self.base, rel.trim_start_matches('/')))
    }

    /// The files under artifact directory `path` of a run (recursively).
    pub fn list_artifacts(&self, run_id: &str, path: &str) -> Result<Vec<String>> {
        let v = self.call("GET", &format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}&path={}", encode(path)), None)?;
        let mut out = Vec::new();
        for f in v["files"].as_array().into_iter().flatten() {
            let p = string(&f["path"])?;
            if f["is_dir"].as_bool() == Some(true) {
                out.extend(self.list_artifacts(run_id, &p)?);
            } else {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Downloads `path` under an artifact root (`mlflow-artifacts:/...`).
    pub fn download_artifact(&self, artifact_root: &str, path: &str) -> Result<Vec<u8>> {
        let mut req = self.agent.get(&self.proxy_url(artifact_root, path)?);
        if let Some(a) = &self.auth {
            req = req.set("Authorization", a);
        }
        let r = req.call().map_err(|e| anyhow!("downloading {path}: {}", transport_message(&e)))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes)?;
        Ok(bytes)
    }

    /// Creates registered model `name` unless it exists.
    pub fn ensure_registered_model(&self, name: &str) -> Result<()> {
        match self.call("POST", "/api/2.0/mlflow/registered-models/create", Some(json!({ "name": name }))) {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, "RESOURCE_ALREADY_EXISTS") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Registers the artifacts at `source` of `run_id` as a new version; returns its number.
    pub fn create_model_version(&self, name: &str, source: &str, run_id: &str) -> Result<String> {
        let v =
            self.call("POST", "/api/2.0/mlflow/model-versions/create", Some(json!({"name": name, "source": source, "run_id": run_id})))?;
        string(&v["model_version"]["version"])
    }

    /// Points `alias` of model `name` at `version`.
    pub fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<()> {
        self.call("POST", "/api/2.0/mlflow/registered-models/alias", Some(json!({"name": name, "alias": alias, "version": version})))
            .map(drop)
    }

    /// A model version (by number or by alias): version, run id, source.
    pub fn model_version(&self, name: &str, version: &VersionRef) -> Result<(String, String, String)> {
        let v = match version {
            VersionRef::Number(n) => {
                self.call("GET", &format!("/api/2.0/mlflow/model-versions/get?name={}&version={n}", encode(name)), None)?
            }
            VersionRef::Alias(a) => {
                self.call("GET", &format!("/api/2.0/mlflow/registered-models/alias?name={}&alias={}", encode(name), encode(a)), None)?
            }
        };
        let mv = &v["model_version"];
        Ok((string(&mv["version"])?, string(&mv["run_id"])?, string(&mv["source"])?))
    }
}

/// Which version of a registered model: a number or an alias.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionRef {
    Number(String),
    Alias(String),
}

fn string(v: &Value) -> Result<String> {
    v.as_str().map(str::to_string).ok_or_else(|| anyhow!("unexpected answer from MLflow (missing a field): {v}"))
}

fn is_code(e: &anyhow::Error, code: &str) -> bool {
    e.downcast_ref::<ApiError>().is_some_and(|a| a.code == code)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn transport_message(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(s, _) => format!("HTTP {s}"),
        ureq::Error::Transport(t) => t.kind().to_string() + t.message().map(|m| format!(": {m}")).unwrap_or_default().as_str(),
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `http://user:pass@host:port` -> (`http://host:port`, `Some("user:pass")`).
fn split_userinfo(uri: &str) -> Result<(String, Option<String>)> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        bail!("--mlflow {uri:?}: expected http://host:port (a tracking server)");
    };
    if scheme != "http" && scheme != "https" {
        bail!("--mlflow {uri:?}: only http(s) tracking servers are supported (not {scheme}://; run `mlflow server` and point at it)");
    }
    Ok(match rest.split_once('@') {
        Some((ui, host)) if !ui.contains('/') => (format!("{scheme}://{host}"), Some(ui.to_string())),
        _ => (uri.to_string(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_stay_in_the_uri() {
        let (base, ui) = split_userinfo("http://me:secret@127.0.0.1:5000").unwrap();
        assert_eq!(base, "http://127.0.0.1:5000");
        assert_eq!(ui.as_deref(), Some("me:secret"));
        assert!(split_userinfo("file:///tmp/mlruns").is_err());
        assert!(split_userinfo("localhost:5000").is_err());
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
