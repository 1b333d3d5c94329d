//! Experiment tracking and the model registry in MLflow, the tracker teams already run. A
//! finished vocml run (train or retrain) is logged from its directory: options as params,
//! per-epoch history as metrics, tags, its files as artifacts, its weights as a version of a
//! registered model; `evaluate` adds test metrics; promotion moves the `champion` alias;
//! `models:/NAME@alias` and `models:/NAME/N` are fetched into a local cache to predict or serve.
//! MLflow is never required: without `--mlflow` nothing here runs.

pub mod client;
pub mod registry;

use anyhow::{Context, Result};
use client::{Metric, MlflowClient};
use serde_json::Value;
use std::path::{Path, PathBuf};
use vocml_core::run::config::{MlflowRef, RunConfig};

/// The alias that follows the promoted model.
pub const CHAMPION: &str = "champion";

/// Where and how a tool logs.
#[derive(Debug, Clone)]
pub struct TrackingConfig {
    pub uri: String,
    pub experiment: String,
    /// Registered model name (default: `vocml-<task>-<classes>`).
    pub registered_model: Option<String>,
    /// A failure to log is an error (exit 1) instead of a warning.
    pub required: bool,
}

/// A tool's connection to the tracking server.
pub struct Tracker {
    client: MlflowClient,
    cfg: TrackingConfig,
    tool: &'static str,
}

impl Tracker {
    pub fn new(cfg: TrackingConfig, tool: &'static str) -> Result<Self> {
        Ok(Tracker { client: MlflowClient::new(&cfg.uri)?, cfg, tool })
    }

    /// Applies the failure policy to a logging step: with `--mlflow-required` an error, else
    /// one warning line naming what was not logged (the local run is complete either way).
    pub fn settle<T>(&self, what: &str, r: Result<T>) -> Result<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if self.cfg.required => Err(e.context(format!("MLflow ({}): {what} not logged (--mlflow-required)", self.client.uri()))),
            Err(e) => {
                eprintln!("{}: warning: MLflow ({}): {what} not logged: {e:#}; the local run is complete", self.tool, self.client.uri());
                Ok(None)
            }
        }
    }

    /// Logs the finished run in `run_dir` (once: a run already logged is left as it is) and
    /// records the MLflow run and model version in its `config.json`.
    pub fn log_run(&self, run_dir: &Path) -> Result<MlflowRef> {
        let dir = std::fs::canonicalize(run_dir).with_context(|| format!("cannot open {}", run_dir.display()))?;
        let mut cfg = RunConfig::read(&dir)?;
        if let Some(r) = cfg.mlflow().filter(|r| r.tracking_uri == self.client.uri() && r.model_version.is_some()) {
            return Ok(r.clone());
        }
        let value = serde_json::to_value(&cfg)?;
        let exp = self.client.experiment_id(&self.cfg.experiment)?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // The MLflow run spans the training: it ended when the run was written (`created`).
        let end = value["created"]
            .as_str()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map_or_else(client::now_ms, |t| t.timestamp_millis());
        let start = end - (value["train_seconds"].as_f64().unwrap_or(0.0) * 1000.0) as i64;
        let (run_id, artifact_uri) = self.client.create_run(&exp, &name, start, &run_tags(&dir, &value))?;
        self.client.log_batch(&run_id, &run_metrics(&dir)?, &flatten_params(&value), &[])?;
        let model = self.cfg.registered_model.clone().unwrap_or_else(|| default_model_name(&cfg));
        let mut mref = MlflowRef {
            tracking_uri: self.client.uri().to_string(),
            experiment_id: exp.clone(),
            run_id: run_id.clone(),
            registered_model: Some(model.clone()),
            model_version: None,
        };
        cfg.set_mlflow(mref.clone());
        cfg.rewrite(&dir)?;
        for file in run_files(&dir)? {
            let rel = format!("run/{}", file.file_name().unwrap().to_string_lossy());
            self.client.upload_artifact(&artifact_uri, &rel, &file)?;
        }
        self.client.ensure_registered_model(&model)?;
        let version = self.client.create_model_version(&model, &format!("{artifact_uri}/run"), &run_id)?;
        mref.model_version = Some(version);
        cfg.set_mlflow(mref.clone());
        cfg.rewrite(&dir)?;
        self.client.finish_run(&run_id, true, end)?;
        Ok(mref)
    }

    /// Logs an evaluation of the run in `run_dir` (`evaluation.json` and its plots, in
    /// `eval_dir`: the run itself, or `evaluate --out`) to the MLflow run that trained it,
    /// logging that run first if it was not.
    pub fn log_evaluation(&self, run_dir: &Path, eval_dir: &Path, extra_files: &[PathBuf]) -> Result<()> {
        let mref = self.log_run(run_dir)?;
        let eval: Value = serde_json::from_str(&std::fs::read_to_string(eval_dir.join(vocml_core::run::EVALUATION_FILE))?)?;
        let split = eval["split"].as_str().unwrap_or("test").to_string();
        let mut metrics = Vec::new();
        numeric_leaves(&eval, &split, &mut metrics, &["per_class", "tuned", "thresholds", "images", "parameters", "train_seconds"]);
        for (section, prefix) in [(&eval["per_class"], split.clone()), (&eval["tuned"]["per_class"], format!("{split}_tuned"))] {
            for c in section.as_array().into_iter().flatten() {
                let class = c["class"].as_str().unwrap_or("?");
                for k in ["ap", "f1", "precision", "recall"] {
                    if let Some(v) = c[k].as_f64() {
                        metrics.push(Metric { key: format!("{prefix}_{k}.{class}"), value: v, step: 0 });
                    }
                }
            }
        }
        for set in ["tuned", "shrunk"] {
            if let Some(t) = eval.get(set) {
                numeric_leaves(t, &format!("{split}_{set}"), &mut metrics, &["per_class", "thresholds"]);
            }
        }
        self.client.log_batch(&mref.run_id, &metrics, &[], &[])?;
        let root = self.client.artifact_root(&mref.run_id)?;
        let files = [vocml_core::run::EVALUATION_FILE, vocml_core::run::CONFUSION_FILE, vocml_core::run::PR_CURVES_FILE];
        for f in files.iter().map(|f| eval_dir.join(f)).chain(extra_files.iter().cloned()).filter(|p| p.is_file()) {
            self.client.upload_artifact(&root, &format!("evaluation/{}", f.file_name().unwrap().to_string_lossy()), &f)?;
        }
        Ok(())
    }

    /// Moves the `champion` alias to the model version of the run in `run_dir` (logging it
    /// first if it was not).
    pub fn promote(&self, run_dir: &Path) -> Result<String> {
        let mref = self.log_run(run_dir)?;
        let (model, version) = (mref.registered_model.expect("set by log_run"), mref.model_version.expect("set by log_run"));
        self.client.set_alias(&model, CHAMPION, &version)?;
        Ok(format!("models:/{model}@{CHAMPION} -> version {version}"))
    }
}

/// `vocml-<task>-<classes>` (the classes joined, or a hash of them when there are many).
pub fn default_model_name(cfg: &RunConfig) -> String {
    use sha2::{Digest, Sha256};
    let task = serde_json::to_value(cfg).ok().and_then(|v| v["task"].as_str().map(str::to_string)).unwrap_or_else(|| "multilabel".into());
    let joined = cfg.classes().join("-");
    let classes =
        if joined.len() <= 40 { joined } else { format!("{}classes-{:.8x}", cfg.classes().len(), Sha256::digest(joined.as_bytes())) };
    let classes: String = classes.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("vocml-{task}-{classes}")
}

/// The tags of a run: tool, version, data, device, task, parent, local directory.
fn run_tags(dir: &Path, v: &Value) -> Vec<(String, String)> {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let mut tags = vec![("vocml.run_dir".to_string(), dir.display().to_string())];
    for (tag, key) in [
        ("vocml.tool", "tool"),
        ("vocml.version", "version"),
        ("vocml.data_manifest_sha256", "data_manifest_sha256"),
        ("vocml.device", "device"),
    ] {
        if let Some(x) = s(key) {
            tags.push((tag.into(), x));
        }
    }
    tags.push(("vocml.task".into(), s("task").unwrap_or_else(|| "multilabel".into())));
    tags.push(("mlflow.source.name".into(), format!("vocml {}", s("tool").unwrap_or_default())));
    if let Some(parent) = s("parent") {
        tags.push(("vocml.parent_run_dir".into(), parent.clone()));
        if let Some(p) = RunConfig::read(Path::new(&parent)).ok().and_then(|c| c.mlflow().map(|m| m.run_id.clone())) {
            tags.push(("vocml.parent_mlflow_run".into(), p));
        }
    }
    tags
}

/// Every scalar of the config as a param (`options.lr`, a retrain's `options.epochs` and `inherited.model`, ...),
/// values cut to MLflow's 6,000 characters.
fn flatten_params(v: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k != "mlflow" {
                        walk(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, x, out);
                    }
                }
            }
            Value::Null => {}
            Value::String(s) => out.push((prefix.to_string(), s.chars().take(6000).collect())),
            other => out.push((prefix.to_string(), other.to_string().chars().take(6000).collect())),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// Per-epoch history (step = epoch) and the best epoch's validation metrics.
fn run_metrics(dir: &Path) -> Result<Vec<Metric>> {
    let mut out = Vec::new();
    let history = std::fs::read_to_string(dir.join(vocml_core::run::HISTORY_FILE)).unwrap_or_default();
    let mut lines = history.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let Some(step) = cells.first().and_then(|e| e.parse::<i64>().ok()) else { continue };
        for (k, c) in header.iter().zip(&cells).skip(1) {
            if let Ok(value) = c.parse::<f64>() {
                out.push(Metric { key: k.to_string(), value, step });
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(dir.join(vocml_core::run::METRICS_FILE)) {
        let v: Value = serde_json::from_str(&text)?;
        numeric_leaves(&v["metrics"], "best_val", &mut out, &["per_class"]);
    }
    Ok(out)
}

/// The numeric top-level values of `v` as metrics `<prefix>_<key>`, except `skip`.
fn numeric_leaves(v: &Value, prefix: &str, out: &mut Vec<Metric>, skip: &[&str]) {
    for (k, x) in v.as_object().into_iter().flatten() {
        if let (Some(value), false) = (x.as_f64(), skip.contains(&k.as_str())) {
            out.push(Metric { key: format!("{prefix}_{k}"), value, step: 0 });
        }
    }
}

/// The run's regular, visible files (its artifacts).
fn run_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_flatten_every_scalar_and_skip_the_mlflow_record() {
        let v = serde_json::json!({"tool": "train", "options": {"lr": 0.001, "augment": {"flip": true}, "weights": null}, "mlflow": {"run_id": "x"}});
        let p = flatten_params(&v);
        assert_eq!(
            p,
            vec![("tool".into(), "train".into()), ("options.lr".into(), "0.001".into()), ("options.augment.flip".into(), "true".into())]
        );
    }
}
