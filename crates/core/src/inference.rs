//! A trained run loaded for inference: backbone + head from `model.safetensors`, with the
//! run's task and classes, input size, resize mode, normalisation and decision thresholds.

use crate::data::{normalize, to_unit_nchw};
use crate::imageio::ResizeMode;
use crate::model::head::Head;
use crate::model::weights::{load_into, read_checkpoint};
use crate::model::{BackboneKind, BackboneNet};
use crate::runs::{CONFIG_FILE, MODEL_FILE, THRESHOLDS_FILE};
use crate::task::{LabelGroup, Task, TaskKind};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

/// Per-class decision thresholds stored with a run (written by `evaluate`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Thresholds {
    pub classes: Vec<String>,
    pub thresholds: Vec<f32>,
    /// Where they were tuned (e.g. `val`).
    pub tuned_on: String,
}

/// A run ready to score images.
pub struct LoadedModel {
    pub run_dir: PathBuf,
    pub kind: BackboneKind,
    /// Task type and label groups; `task.classes` are the output columns.
    pub task: Task,
    pub classes: Vec<String>,
    pub image_size: u32,
    pub resize: ResizeMode,
    pub thresholds: Vec<f32>,
    pub thresholds_tuned: bool,
    /// Horizontal-flip test-time augmentation by default (`train --tta`).
    pub tta: bool,
    pub parameters: i64,
    pub train_seconds: f64,
    pub device: Device,
    data: Option<PathBuf>,
    net: Box<dyn BackboneNet>,
    head: Head,
    vs: nn::VarStore,
}

#[derive(Deserialize)]
struct RunConfig {
    options: RunOptions,
    #[serde(default)]
    task: TaskKind,
    #[serde(default)]
    label_groups: Vec<LabelGroup>,
    classes: Vec<String>,
    image_size: u32,
    #[serde(default)]
    resize: ResizeMode,
    #[serde(default)]
    train_seconds: f64,
}

#[derive(Deserialize)]
struct RunOptions {
    model: BackboneKind,
    #[serde(default)]
    data: Option<PathBuf>,
    #[serde(default)]
    tta: bool,
}

impl LoadedModel {
    /// Loads `run_dir` (a run directory or a `best` link to one).
    pub fn load(run_dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = run_dir.join(CONFIG_FILE);
        if let Some(e) = crate::predictor::read_ensemble(run_dir)? {
            bail!("{} is an ensemble of {} runs ({:?}); use one of them here", run_dir.display(), e.members.len(), e.members);
        }
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("{} is not a finished run (no readable config.json)", run_dir.display()))?;
        let cfg: RunConfig = serde_json::from_str(&text).with_context(|| format!("{}: not a valid run config", cfg_path.display()))?;
        let task = Task::new(cfg.task, cfg.classes.clone(), cfg.label_groups.clone())
            .with_context(|| format!("{}: inconsistent task", cfg_path.display()))?;
        let mut vs = nn::VarStore::new(device);
        let kind = cfg.options.model;
        let net = kind.build(&vs.root(), false);
        let head = Head::new(&(vs.root() / "head"), kind.feature_dim(), cfg.classes.len() as i64, kind.head_hidden());
        let model_path = run_dir.join(MODEL_FILE);
        let tensors = read_checkpoint(&model_path)?;
        load_into(&vs, tensors, &model_path, &[], &[])?;
        vs.freeze();
        crate::model::fold_frozen_batchnorm(net.as_ref());
        let parameters = vs.variables().iter().filter(|(k, _)| !k.contains("running_")).map(|(_, v)| v.numel() as i64).sum();
        let (thresholds, tuned) = thresholds_for(run_dir, &cfg.classes)?;
        Ok(LoadedModel {
            run_dir: std::fs::canonicalize(run_dir).unwrap_or(run_dir.to_path_buf()),
            kind,
            task,
            classes: cfg.classes,
            image_size: cfg.image_size,
            resize: cfg.resize,
            thresholds,
            thresholds_tuned: tuned,
            tta: cfg.options.tta,
            parameters,
            train_seconds: cfg.train_seconds,
            device,
            data: cfg.options.data.clone(),
            net,
            head,
            vs,
        })
    }

    /// Backbone features `[B, F]` (on the model's device, no gradient) of `[B, 3, H, W]`
    /// input in [0, 1].
    pub fn features_of_unit(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| self.net.features(&normalize(&xs.to_device(self.device), &self.kind.normalization())))
    }

    /// Head logits `[B, C]` from backbone features.
    pub fn head_logits(&self, features: &Tensor, train: bool) -> Tensor {
        self.head.forward_t(features, train)
    }

    /// All variables (backbone and `head.*`), by name.
    pub fn variables(&self) -> std::collections::HashMap<String, Tensor> {
        self.vs.variables()
    }

    /// The run's data directory, as recorded in its config.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.data.clone()
    }

    /// Probabilities `[B, C]` (on the CPU) for `[B, H, W, 3]` uint8 pixels at the run's size:
    /// sigmoid per class, or softmax per label group.
    pub fn probabilities(&self, pixels: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let xs = normalize(&to_unit_nchw(pixels, self.device), &self.kind.normalization());
            self.task.probabilities(&self.head.forward_t(&self.net.features(&xs), false)).to_device(Device::Cpu)
        })
    }
}

/// The decision thresholds stored in `dir` (and true), or 0.5 for every class (and false);
/// stored thresholds for other classes are an error.
pub fn thresholds_for(dir: &Path, classes: &[String]) -> Result<(Vec<f32>, bool)> {
    match read_thresholds(dir)? {
        Some(t) if t.classes == classes => Ok((t.thresholds, true)),
        Some(t) => {
            bail!("{}: thresholds are for classes {:?}, the model has {:?}", dir.join(THRESHOLDS_FILE).display(), t.classes, classes)
        }
        None => Ok((vec![0.5; classes.len()], false)),
    }
}

/// Reads `thresholds.json` of a run, if `evaluate` has written one.
pub fn read_thresholds(run_dir: &Path) -> Result<Option<Thresholds>> {
    let p = run_dir.join(THRESHOLDS_FILE);
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p)?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: invalid thresholds file", p.display()))?))
}
