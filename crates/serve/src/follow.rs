//! Follows the served run: loads `runs/best` (or the fixed `--run`, or a registered model
//! version in MLflow) at start-up and, when `best` (or the alias) moves (a promotion by a retrain job, or `evaluate`/`retrain` in a shell), loads the
//! new run beside the old one and hands it to the engine. A run that fails to load is refused:
//! the old model keeps serving and `/model` says why.

use crate::engine::RegistryVersion;
use crate::engine::{Engine, ModelInfo, Served};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vocml_core::infer::{LoadOptions, Predictor};

/// The follower's view, shared with `/model` and `/ready`.
#[derive(Default)]
pub struct FollowState {
    /// Why the last run tried was not swapped in (cleared by a successful load).
    pub last_error: Mutex<Option<String>>,
}

/// What is served.
pub enum Target {
    /// A run directory or link; `follow` re-resolves it at every poll (`runs/best`), else it
    /// is loaded once (a fixed `--run`).
    Local { path: PathBuf, follow: bool },
    /// A registered model version in MLflow (`models:/NAME@ALIAS` follows the alias).
    Registry { tracking_uri: String, model: vocml_track::registry::ModelUri },
}

impl Target {
    fn follows(&self) -> bool {
        match self {
            Target::Local { follow, .. } => *follow,
            Target::Registry { model, .. } => matches!(model.version, vocml_track::client::VersionRef::Alias(_)),
        }
    }

    /// The local run directory it points at now, and its registry version when it came
    /// from one.
    fn resolve(&self) -> anyhow::Result<(PathBuf, Option<RegistryVersion>)> {
        match self {
            Target::Local { path, .. } => Ok((
                std::fs::canonicalize(path)
                    .map_err(|_| anyhow::anyhow!("{} does not exist: train and select a run first", path.display()))?,
                None,
            )),
            Target::Registry { tracking_uri, model } => {
                let (dir, version) = vocml_track::registry::fetch(tracking_uri, model, &vocml_track::registry::cache_dir())?;
                Ok((dir, Some(RegistryVersion { model: model.name.clone(), version })))
            }
        }
    }
}

/// What the follower watches and how it loads.
pub struct Follower {
    pub target: Target,
    pub device: tch::Device,
    /// What scores: libtorch or ONNX Runtime on the run's exported file.
    pub runtime: vocml_core::infer::Engine,
    pub poll: Duration,
}

impl Follower {
    /// Runs on its own thread until `stop` is set.
    pub fn spawn(self, engine: Arc<Engine>, state: Arc<FollowState>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("follow".into())
            .spawn(move || {
                let mut tried: Option<PathBuf> = None;
                let mut version = 0;
                while !stop.load(Ordering::SeqCst) {
                    if self.target.follows() || version == 0 {
                        self.check(&engine, &state, &mut tried, &mut version);
                    }
                    std::thread::sleep(self.poll);
                }
            })
            .expect("spawn the follower")
    }

    fn check(&self, engine: &Engine, state: &FollowState, tried: &mut Option<PathBuf>, version: &mut u64) {
        let (dir, registry) = match self.target.resolve() {
            Ok(d) => d,
            Err(e) => {
                *state.last_error.lock().unwrap() = Some(format!("{e:#}"));
                return;
            }
        };
        if tried.as_deref() == Some(dir.as_path()) {
            return;
        }
        *tried = Some(dir.clone());
        match load(&dir, &LoadOptions { device: self.device, tta: None, engine: self.runtime }, *version + 1, registry) {
            Ok(served) => {
                *version += 1;
                eprintln!("serve: serving {} ({}, version {})", served.info.run, served.info.model, served.info.version);
                engine.install(served);
                *state.last_error.lock().unwrap() = None;
            }
            Err(e) => {
                let still = engine.info().map(|i| format!("; still serving {}", i.run)).unwrap_or_default();
                let msg = format!("not swapping to {}: {e:#}{still}", dir.display());
                eprintln!("serve: {msg}");
                *state.last_error.lock().unwrap() = Some(msg);
            }
        }
    }
}

/// Loads a run for serving.
fn load(dir: &Path, opts: &LoadOptions, version: u64, registry: Option<RegistryVersion>) -> anyhow::Result<Served> {
    let predictor = Predictor::load(dir, opts)?;
    let info = Arc::new(ModelInfo::of(&predictor, version, registry));
    Ok(Served { predictor, info })
}
