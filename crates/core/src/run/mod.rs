//! Runs on disk: directories `runs/<YYYYmmdd-HHMMSS>_<model>/`, staged under a temporary name
//! and renamed when complete (so an interrupted run never looks finished), and their typed
//! `config.json` contract with its readers. Loading a run to score is [`crate::infer`]'s job.

pub mod config;
pub mod options;
pub mod recipe;

use crate::dataset::manifest::Manifest;
use crate::io::staging::StagingDir;
use crate::task::Task;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Files of a finished run.
pub const CONFIG_FILE: &str = "config.json";
pub const HISTORY_FILE: &str = "history.csv";
pub const METRICS_FILE: &str = "metrics.json";
pub const CLASSES_FILE: &str = "classes.json";
pub const MODEL_FILE: &str = "model.safetensors";
/// The ONNX export `export` writes into a run by default, run by the ONNX Runtime engine.
pub const ONNX_FILE: &str = "model.onnx";
pub const CURVES_FILE: &str = "training_curves.png";
pub const PR_CURVES_FILE: &str = "pr_curves.png";
pub const CONFUSION_FILE: &str = "confusion.png";
pub const EVALUATION_FILE: &str = "evaluation.json";
/// What a retrain did and decided (retrained runs only).
pub const RETRAIN_FILE: &str = "retrain.json";
/// The comparison of runs written into a runs directory by `evaluate`.
pub const COMPARISON_CSV: &str = "comparison.csv";
pub const COMPARISON_MD: &str = "comparison.md";
/// Name of the pointer to the selected run inside a runs directory.
pub const BEST_LINK: &str = "best";

/// Where a new run goes.
#[derive(Debug, Clone, PartialEq)]
pub enum RunTarget {
    /// `runs_dir/<timestamp>_<model>`, a new directory each time (`-N` appended when taken).
    Timestamped(PathBuf),
    /// Exactly this directory (`--run-dir`, for pipeline tools that declare outputs in
    /// advance): an earlier run there, or an empty directory, is replaced atomically.
    Exact(PathBuf),
}

impl RunTarget {
    /// `--run-dir` when given, else a timestamped run in `runs_dir`.
    pub fn new(run_dir: Option<&Path>, runs_dir: &Path) -> Self {
        match run_dir {
            Some(dir) => RunTarget::Exact(dir.to_path_buf()),
            None => RunTarget::Timestamped(runs_dir.to_path_buf()),
        }
    }

    /// Refuses (before any work) an exact target that is a link, holds something other
    /// than a run, or is, contains or is inside one of `inputs` (path, flag): the run to
    /// start from, the data.
    pub fn check(&self, inputs: &[(&Path, &str)]) -> Result<()> {
        let RunTarget::Exact(dir) = self else { return Ok(()) };
        if dir.is_symlink() {
            bail!("--run-dir {}: is a link (such as runs/best); name a directory", dir.display());
        }
        if dir.exists() && !replaceable_run(dir) {
            bail!(
                "--run-dir {}: exists and is not a run directory (no readable {CONFIG_FILE}); it is replaced only when it holds a run or is empty",
                dir.display()
            );
        }
        for (input, flag) in inputs {
            crate::io::staging::refuse_replacing_input(dir, "--run-dir", input, flag)?;
            crate::io::staging::refuse_output_inside_input(dir, "--run-dir", input, flag)?;
        }
        Ok(())
    }
}

/// Whether `--run-dir` may replace `dir`: an empty directory or a finished run (its
/// `config.json` reads as a run's).
fn replaceable_run(dir: &Path) -> bool {
    dir.is_dir() && (std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) || config::RunConfig::read(dir).is_ok())
}

/// A run being written.
pub struct RunWriter {
    staging: StagingDir,
    target: PathBuf,
    exact: bool,
}

impl RunWriter {
    /// Stages the run: `runs_dir/<timestamp>_<model>` (the name gets a `-N` suffix if it is
    /// taken when the run finishes) or the exact directory.
    pub fn create(target: &RunTarget, model: &str) -> Result<Self> {
        target.check(&[])?;
        let (target, exact) = match target {
            RunTarget::Timestamped(runs_dir) => {
                std::fs::create_dir_all(runs_dir).with_context(|| format!("cannot create {}", runs_dir.display()))?;
                let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
                (runs_dir.join(format!("{stamp}_{model}")), false)
            }
            RunTarget::Exact(dir) => (dir.clone(), true),
        };
        Ok(RunWriter { staging: StagingDir::new(&target)?, target, exact })
    }

    /// Directory files are staged in.
    pub fn dir(&self) -> &Path {
        self.staging.path()
    }

    /// The directory name the run asks for (see [`RunWriter::finish`]).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes `model.safetensors`: the named tensors as float32 on the CPU, sorted by name.
    pub fn write_model(&self, tensors: impl IntoIterator<Item = (String, Tensor)>) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> =
            tensors.into_iter().map(|(k, v)| (k, v.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous())).collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Tensor::write_safetensors(&tensors, self.dir().join(MODEL_FILE)).with_context(|| format!("cannot write {MODEL_FILE}"))
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(self.dir().join(name), text + "\n").with_context(|| format!("cannot write {name}"))
    }

    pub fn write_text(&self, name: &str, text: &str) -> Result<()> {
        std::fs::write(self.dir().join(name), text).with_context(|| format!("cannot write {name}"))
    }

    /// Renames the staged run into place and returns where it went: the asked-for name, or
    /// that name with a `-N` suffix when another run (of any process) finished under it first;
    /// an exact target is replaced (when it holds a run or is empty).
    pub fn finish(self) -> Result<PathBuf> {
        if self.exact {
            self.staging.commit(replaceable_run)
        } else {
            self.staging.commit_unique()
        }
    }
}

/// Points `runs_dir/best` at `run` (a sibling directory) atomically: a new symlink is
/// created under a temporary name and renamed over the old one, so a reader sees either
/// the old run or the new one.
pub fn point_best(runs_dir: &Path, run: &Path) -> Result<PathBuf> {
    let name = run.file_name().with_context(|| format!("{} has no name", run.display()))?;
    let link = runs_dir.join(BEST_LINK);
    let tmp = runs_dir.join(format!(".{BEST_LINK}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp).with_context(|| format!("cannot create link {}", tmp.display()))?;
    std::fs::rename(&tmp, &link).with_context(|| format!("cannot update {}", link.display()))?;
    Ok(link)
}

/// Finished run directories under `runs_dir` (those with a config.json), sorted by name;
/// the `best` link and staging directories are left out.
pub fn list_runs(runs_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(runs_dir)
        .with_context(|| format!("cannot list {}", runs_dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            !n.starts_with('.') && n != BEST_LINK && e.file_type().map(|t| t.is_dir()).unwrap_or(false)
        })
        .map(|e| e.path())
        .filter(|p| p.join(CONFIG_FILE).is_file())
        .collect();
    runs.sort();
    Ok(runs)
}

/// Refuses data whose task, classes or image size differ from the run's (`run` names it).
pub fn check_data_compatible(task: &Task, image_size: u32, run: &Path, manifest: &Manifest, data: &Path) -> Result<()> {
    if manifest.classes != task.classes {
        bail!(
            "{}: data classes {:?} do not match the run's classes {:?} ({})",
            data.display(),
            manifest.classes,
            task.classes,
            run.display()
        );
    }
    let data_task = manifest.task()?;
    if data_task != *task {
        bail!(
            "{}: the data is a {} task but {} was trained for {}",
            data.display(),
            data_task.kind.name(),
            run.display(),
            task.kind.name()
        );
    }
    if manifest.image.size != image_size {
        bail!(
            "{}: images are {} px but {} was trained at {} px; re-run voc-prep with --size {}",
            data.display(),
            manifest.image.size,
            run.display(),
            image_size,
            image_size
        );
    }
    Ok(())
}
