//! `serve` as a Label Studio ML backend (under `/label-studio`): the project's labelling
//! config checked against the served model, task images fetched from Label Studio, its REST
//! API (`api`), and the state the backend keeps: each project it serves (bounded), and the
//! annotations waiting for the next retrain job.

pub mod api;
pub mod config;
pub mod fetch;

use crate::jobs::Correction;
use config::{ClassMap, LabelConfig};
use fetch::ImageSource;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Most annotations held for the next retrain job; more are refused until one starts.
pub const MAX_PENDING: usize = 10_000;
/// Most projects remembered; the one seen longest ago is forgotten first.
pub const MAX_PROJECTS: usize = 64;
/// Longest project id (Label Studio's are numbers).
pub const MAX_PROJECT_ID_DIGITS: usize = 18;
/// The file (in the runs directory) naming the projects served, so that a restarted server
/// catches up with their annotations.
pub const PROJECTS_FILE: &str = "label-studio-projects.json";

/// What `serve --label-studio-*` configures.
#[derive(Debug, Clone)]
pub struct LabelStudioOptions {
    pub images: ImageSource,
    pub map: ClassMap,
    /// Annotations that start a retrain job (START_TRAINING starts one sooner).
    pub train_after: usize,
}

/// A project id from what Label Studio sends: a number, the project object, or
/// `<id>.<created timestamp>`; `None` for anything else.
pub fn project_id(v: &serde_json::Value) -> Option<u64> {
    let text = match v {
        serde_json::Value::Object(o) => return o.get("id").and_then(project_id),
        serde_json::Value::String(s) => s.split('.').next().unwrap_or_default().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if text.is_empty() || text.len() > MAX_PROJECT_ID_DIGITS || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// What the backend knows of one project.
#[derive(Debug, Clone, Default)]
pub struct Project {
    /// Its labelling config, checked against the served model.
    pub config: Option<LabelConfig>,
    /// The API token Label Studio sent with its last setup call (kept in memory only).
    pub setup_token: Option<String>,
    /// The `model_version` last set on (or found in) the project.
    pub version_set: Option<String>,
    /// The served version the unlabelled tasks' predictions were last asked for.
    pub predicted_for: Option<String>,
    /// Whether its ML webhook carries the service's token.
    pub webhook_authenticated: bool,
    /// No call to its API before this (after a failure).
    pub retry_at: Option<Instant>,
    /// The last failure said on stderr (each different one once).
    pub last_error: Option<String>,
    seen: Option<Instant>,
}

/// The backend's state: its options, the projects it serves, and the annotations waiting for
/// the next retrain job (one per task: a later annotation replaces an earlier).
pub struct LabelStudio {
    pub options: LabelStudioOptions,
    projects: Mutex<HashMap<u64, Project>>,
    pub pending: Mutex<Vec<PendingAnnotation>>,
    /// Task image references already fetched, by reference: their upload id.
    pub fetched: Mutex<HashMap<String, String>>,
    /// Where the served projects are recorded.
    projects_file: PathBuf,
}

/// An annotation accepted and not yet given to a retrain job.
#[derive(Clone)]
pub struct PendingAnnotation {
    pub project: u64,
    pub task: u64,
    pub correction: Correction,
}

impl LabelStudio {
    /// The backend of the runs directory `runs_dir`, with the projects recorded there.
    pub fn new(options: LabelStudioOptions, runs_dir: &Path) -> Self {
        let projects_file = runs_dir.join(PROJECTS_FILE);
        let known: Vec<u64> = std::fs::read(&projects_file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let projects = known.into_iter().take(MAX_PROJECTS).map(|id| (id, Project::default())).collect();
        LabelStudio { options, projects: Mutex::new(projects), pending: Mutex::default(), fetched: Mutex::default(), projects_file }
    }

    /// Runs `f` on project `id`'s state, adding it (and forgetting the one seen longest ago
    /// past [`MAX_PROJECTS`]); a new project is recorded in the runs directory.
    pub fn with_project<R>(&self, id: u64, f: impl FnOnce(&mut Project) -> R) -> R {
        let mut projects = self.projects.lock().unwrap();
        let added = !projects.contains_key(&id);
        if added && projects.len() >= MAX_PROJECTS {
            let oldest = projects.iter().min_by_key(|(_, p)| p.seen).map(|(k, _)| *k);
            if let Some(k) = oldest {
                projects.remove(&k);
            }
        }
        let p = projects.entry(id).or_default();
        p.seen = Some(Instant::now());
        let out = f(p);
        if added {
            let ids: Vec<u64> = projects.keys().copied().collect();
            drop(projects);
            self.record(&ids);
        }
        out
    }

    /// Project `id`'s state, if it is known.
    pub fn project(&self, id: u64) -> Option<Project> {
        self.projects.lock().unwrap().get(&id).cloned()
    }

    /// Updates project `id`'s state if it is still known.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut Project)) {
        if let Some(p) = self.projects.lock().unwrap().get_mut(&id) {
            f(p);
        }
    }

    /// The known projects' ids.
    pub fn project_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.projects.lock().unwrap().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn record(&self, ids: &[u64]) {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        let dir = self.projects_file.parent().unwrap_or(Path::new("."));
        let name = self.projects_file.file_name().and_then(|n| n.to_str()).unwrap_or(PROJECTS_FILE);
        let text = serde_json::to_string(&ids).unwrap_or_default() + "\n";
        if let Err(e) = vocml_core::io::staging::write_atomic(dir, name, text.as_bytes()) {
            eprintln!("serve: label-studio: cannot record the served projects: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options() -> LabelStudioOptions {
        LabelStudioOptions { images: ImageSource::default(), map: ClassMap::default(), train_after: 10 }
    }

    #[test]
    fn project_ids_are_numbers_of_bounded_length() {
        assert_eq!(project_id(&json!(7)), Some(7));
        assert_eq!(project_id(&json!("12.1700000000")), Some(12));
        assert_eq!(project_id(&json!({"id": 3, "title": "x"})), Some(3));
        assert_eq!(project_id(&json!("9".repeat(MAX_PROJECT_ID_DIGITS + 1))), None);
        assert_eq!(project_id(&json!("../1")), None);
        assert_eq!(project_id(&json!(null)), None);
        assert_eq!(project_id(&json!(-4)), None);
    }

    #[test]
    fn projects_are_bounded_and_recorded_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let ls = LabelStudio::new(options(), dir.path());
        for id in 0..(MAX_PROJECTS as u64 + 10) {
            ls.with_project(id, |_| ());
        }
        assert_eq!(ls.project_ids().len(), MAX_PROJECTS);
        assert!(ls.project(0).is_none() && ls.project(MAX_PROJECTS as u64 + 9).is_some(), "the oldest are forgotten");
        let again = LabelStudio::new(options(), dir.path());
        assert_eq!(again.project_ids(), ls.project_ids());
    }
}
