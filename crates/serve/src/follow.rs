//! Follows the served run: loads `runs/best` (or the fixed `--run`) at start-up and, when
//! `best` moves (a promotion by a retrain job, or `evaluate`/`retrain` in a shell), loads the
//! new run beside the old one and hands it to the engine. A run that fails to load is refused:
//! the old model keeps serving and `/model` says why.

use crate::engine::{Engine, ModelInfo, Served};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vocml_core::run::predictor::Predictor;

/// The follower's view, shared with `/model` and `/ready`.
#[derive(Default)]
pub struct FollowState {
    /// Why the last run tried was not swapped in (cleared by a successful load).
    pub last_error: Mutex<Option<String>>,
}

/// What the follower watches and how it loads.
pub struct Follower {
    pub target: PathBuf,
    /// A fixed `--run` is loaded once; `runs/best` is watched.
    pub follow: bool,
    pub device: tch::Device,
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
                    if self.follow || version == 0 {
                        self.check(&engine, &state, &mut tried, &mut version);
                    }
                    std::thread::sleep(self.poll);
                }
            })
            .expect("spawn the follower")
    }

    fn check(&self, engine: &Engine, state: &FollowState, tried: &mut Option<PathBuf>, version: &mut u64) {
        let Ok(dir) = std::fs::canonicalize(&self.target) else {
            if engine.info().is_none() {
                *state.last_error.lock().unwrap() = Some(format!("{} does not exist: train and select a run first", self.target.display()));
            }
            return;
        };
        if tried.as_deref() == Some(dir.as_path()) {
            return;
        }
        *tried = Some(dir.clone());
        match load(&dir, self.device, *version + 1) {
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
fn load(dir: &Path, device: tch::Device, version: u64) -> anyhow::Result<Served> {
    let predictor = Predictor::load(dir, device, None)?;
    let info = Arc::new(ModelInfo::of(&predictor, version));
    Ok(Served { predictor, info })
}
