//! Run directories: `runs/<YYYYmmdd-HHMMSS>_<model>/`, staged under a temporary name and
//! renamed when complete, so an interrupted run never looks finished.

use crate::staging::StagingDir;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Files of a finished run.
pub const CONFIG_FILE: &str = "config.json";
pub const HISTORY_FILE: &str = "history.csv";
pub const METRICS_FILE: &str = "metrics.json";
pub const CLASSES_FILE: &str = "classes.json";
pub const MODEL_FILE: &str = "model.safetensors";

/// A run being written.
pub struct RunWriter {
    staging: StagingDir,
    target: PathBuf,
}

impl RunWriter {
    /// Reserves `runs_dir/<timestamp>_<model>` (with a `-N` suffix if taken).
    pub fn create(runs_dir: &Path, model: &str) -> Result<Self> {
        std::fs::create_dir_all(runs_dir).with_context(|| format!("cannot create {}", runs_dir.display()))?;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
        let mut target = runs_dir.join(format!("{stamp}_{model}"));
        let mut n = 2;
        while target.exists() {
            target = runs_dir.join(format!("{stamp}_{model}-{n}"));
            n += 1;
        }
        Ok(RunWriter { staging: StagingDir::new(&target)?, target })
    }

    /// Directory files are staged in.
    pub fn dir(&self) -> &Path {
        self.staging.path()
    }

    /// Final directory name.
    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(self.dir().join(name), text + "\n").with_context(|| format!("cannot write {name}"))
    }

    pub fn write_text(&self, name: &str, text: &str) -> Result<()> {
        std::fs::write(self.dir().join(name), text).with_context(|| format!("cannot write {name}"))
    }

    /// Renames the staged run into place.
    pub fn finish(self) -> Result<PathBuf> {
        self.staging.commit(|_| false)
    }
}
