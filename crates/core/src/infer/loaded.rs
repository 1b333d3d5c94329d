//! A trained run loaded for inference: backbone + head from `model.safetensors`, with the
//! run's task and classes, input size, resize mode, normalisation and decision thresholds.

use crate::io::image::ResizeMode;
use crate::model::head::{Head, HeadLayout};
use crate::model::weights::{load_into, read_checkpoint};
use crate::model::{BackboneKind, BackboneNet, Normalization};
use crate::run::config::RunConfig;
use crate::run::MODEL_FILE;
use crate::task::Task;
use crate::tensor::{normalize, to_unit_nchw};
use crate::thresholds::thresholds_for;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

/// A run ready to score images.
pub struct LoadedModel {
    pub run_dir: PathBuf,
    pub kind: BackboneKind,
    /// Task type and label groups; `task.classes` are the output columns.
    pub task: Task,
    pub classes: Vec<String>,
    pub image_size: u32,
    pub resize: ResizeMode,
    /// The input normalisation the run recorded (its backbone's).
    pub normalization: Normalization,
    pub thresholds: Vec<f32>,
    pub thresholds_tuned: bool,
    /// Horizontal-flip test-time augmentation by default (`train --tta`).
    pub tta: bool,
    pub parameters: i64,
    pub train_seconds: f64,
    pub device: Device,
    /// The head's layout (what a retrain of this run builds again).
    pub head_layout: HeadLayout,
    /// Input sizes the backbone sees (multi-scale features; empty: `image_size` only).
    pub scales: Vec<u32>,
    /// The run it was retrained from (retrained runs).
    pub parent: Option<PathBuf>,
    data: PathBuf,
    net: Box<dyn BackboneNet>,
    head: Head,
    vs: nn::VarStore,
}

impl LoadedModel {
    /// Loads `run_dir` (a run directory or a `best` link to one).
    pub fn load(run_dir: &Path, device: Device) -> Result<Self> {
        // Resolved once: a `best` link that moves meanwhile cannot mix two runs' files.
        let run_dir = &std::fs::canonicalize(run_dir).with_context(|| format!("cannot open run {}", run_dir.display()))?;
        Self::from_config(run_dir, &RunConfig::read(run_dir)?, device)
    }

    /// Loads the weights of `run_dir` (resolved) whose `config.json` is `cfg`.
    pub fn from_config(run_dir: &Path, cfg: &RunConfig, device: Device) -> Result<Self> {
        let run_dir = &run_dir.to_path_buf();
        let spec = cfg.model_spec().with_context(|| run_dir.display().to_string())?;
        let classes = spec.task.classes.clone();
        let mut vs = nn::VarStore::new(device);
        let kind = spec.model;
        let net = crate::model::multi_scale::at_scales(kind.build(&vs.root(), false), &spec.scales);
        let dim = crate::model::multi_scale::feature_dim(kind, &spec.scales);
        let head = Head::new(&(vs.root() / "head"), dim, classes.len() as i64, &spec.head);
        let model_path = run_dir.join(MODEL_FILE);
        let tensors = read_checkpoint(&model_path)?;
        load_into(&vs, tensors, &model_path, &[], &[])?;
        vs.freeze();
        crate::model::fold_frozen_batchnorm(net.as_ref());
        let parameters = vs.variables().iter().filter(|(k, _)| !k.contains("running_")).map(|(_, v)| v.numel() as i64).sum();
        let (thresholds, tuned) = thresholds_for(run_dir, &classes)?;
        Ok(LoadedModel {
            run_dir: run_dir.clone(),
            kind,
            task: spec.task,
            classes,
            image_size: spec.image_size,
            resize: spec.resize,
            normalization: spec.normalization,
            thresholds,
            thresholds_tuned: tuned,
            tta: spec.tta,
            parameters,
            train_seconds: spec.train_seconds,
            device,
            head_layout: spec.head.clone(),
            scales: spec.scales.clone(),
            parent: match cfg {
                RunConfig::Retrain(r) => Some(r.parent.clone()),
                _ => None,
            },
            data: spec.data,
            net,
            head,
            vs,
        })
    }

    /// Backbone features `[B, F]` (on the model's device, no gradient) of `[B, 3, H, W]`
    /// input in [0, 1].
    pub fn features_of_unit(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| self.net.features(&normalize(&xs.to_device(self.device), &self.normalization)))
    }

    /// Head logits `[B, C]` from backbone features.
    pub fn head_logits(&self, features: &Tensor, train: bool) -> Tensor {
        self.head.forward_t(features, train)
    }

    /// The classification head.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// All variables (backbone and `head.*`), by name.
    pub fn variables(&self) -> std::collections::HashMap<String, Tensor> {
        self.vs.variables()
    }

    /// The run's data directory, as recorded in its config.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Grad-CAM maps `[K, H, W]` (on the CPU, in [0, 1]) of one `[1, H, W, 3]` uint8 image at
    /// the run's size, for head outputs `classes`.
    pub fn grad_cam(&self, pixels: &Tensor, classes: &[i64]) -> Result<Tensor> {
        let xs = normalize(&to_unit_nchw(pixels, self.device), &self.normalization);
        let cams = crate::model::grad_cam::grad_cam(self.net.as_ref(), &self.head, &xs, classes)
            .with_context(|| format!("{}: no Grad-CAM", self.kind.name()))?;
        Ok(cams.to_device(Device::Cpu))
    }

    /// Probabilities `[B, C]` (on the CPU) for `[B, H, W, 3]` uint8 pixels at the run's size:
    /// sigmoid per class, or softmax per label group.
    pub fn probabilities(&self, pixels: &Tensor) -> Tensor {
        self.probabilities_and_features(pixels).0
    }

    /// Probabilities `[B, C]` (on the CPU) and backbone features `[B, F]` (on the model's
    /// device) of one forward pass of `[B, H, W, 3]` uint8 pixels.
    pub fn probabilities_and_features(&self, pixels: &Tensor) -> (Tensor, Tensor) {
        tch::no_grad(|| {
            let xs = normalize(&to_unit_nchw(pixels, self.device), &self.normalization);
            let features = self.net.features(&xs);
            let p = self.task.probabilities(&self.head.forward_t(&features, false)).to_device(Device::Cpu);
            (p, features)
        })
    }

    /// Probabilities `[B, C]` (on the model's device) of input already normalised with the
    /// run's [`normalization`](Self::normalization), `[B, 3, H, W]` float.
    pub fn probabilities_of_normalized(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| self.task.probabilities(&self.head.forward_t(&self.net.features(xs), false)))
    }
}
