//! Training: transfer learning (frozen backbone with BatchNorm in eval mode -> GAP -> head,
//! optional fine-tuning of the last backbone blocks) or a from-scratch model trained whole;
//! Adam; the task's loss (binary cross-entropy, or softmax cross-entropy summed over label
//! groups); early stopping on the task's validation metric with best-epoch restore. With a
//! frozen backbone, features are computed once (a clean view plus a few augmented views per
//! image) and later epochs train only the head.
//!
//! [`train`] reads as its steps: open and check the data, build the model, cache features,
//! run the frozen (or from-scratch) phase and the fine-tuning phase with [`epochs`], restore
//! the best epoch, write the run with [`record`].

pub mod augment;
pub mod epochs;
pub mod features;
pub mod history;
pub mod optim;
pub mod record;
pub mod schedule;
pub mod step;

use crate::dataset::manifest::Manifest;
use crate::dataset::prepared::SplitData;
use crate::eval::metrics::MultiLabelMetrics;
use crate::eval::validation::Monitor;
use crate::model::head::{Head, HeadLayout};
use crate::model::pretrained::load_backbone;
use crate::model::{BackboneKind, BackboneNet};
use crate::run::config::{HeadSpec, RunConfig, TrainRun, TrainTool};
use crate::run::RunWriter;
use crate::task::Task;
use crate::tensor::upload;
use crate::train::augment::AugmentConfig;
use crate::train::epochs::{Best, EpochLoop, Phase};
use crate::train::features::{Extractor, FeatureCache};
use crate::train::history::{EpochRecord, TrainObserver};
use crate::train::optim::Adam;
use crate::train::schedule::Scheduler;
use crate::train::step::{ImageSource, SpeedOptions};
use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{nn, Device, Tensor};

/// Every training option; recorded in the run's `config.json`. Options added after the first
/// release default, when absent, to the behaviour runs had before they existed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub model: BackboneKind,
    pub weights: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub patience: usize,
    pub fine_tune_blocks: usize,
    pub fine_tune_epochs: usize,
    pub fine_tune_lr: f64,
    /// Fine-tuning: the k-th unfrozen block from the top learns at fine_tune_lr * decay^k
    /// (discriminative rates; 1: one rate).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub fine_tune_lr_decay: f64,
    pub augment: Option<AugmentConfig>,
    /// Input size a recipe asks for; the data must have been prepared at it.
    #[serde(default)]
    pub image_size: Option<u32>,
    /// Input sizes the backbone sees, its features at each concatenated (multi-scale
    /// features, resized from the data's size). Empty: the data's size only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scales: Vec<u32>,
    /// Compute frozen-backbone features once instead of every epoch.
    pub cache_features: bool,
    /// Augmented feature views cached per training image (besides the clean one).
    pub aug_views: usize,
    /// Weight positives by negatives/positives per class in the loss.
    pub pos_weight: bool,
    /// Label smoothing of the training targets (0: none; validation scores the labels).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub label_smoothing: f64,
    /// The validation score early stopping follows.
    #[serde(default, skip_serializing_if = "is_default_monitor")]
    pub monitor: Monitor,
    /// Hidden widths of the head (empty: a linear head); absent: the backbone's default head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Vec<i64>>,
    /// Dropout after each hidden layer of `head` (one value for all, or one per layer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub head_dropout: Vec<f64>,
    /// L2 weight decay of the first phase's optimizer; several values are each tried and the
    /// best on validation kept. Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_decay: Vec<f64>,
    pub seed: u64,
    pub runs_dir: PathBuf,
    /// Learning-rate schedule of each phase.
    #[serde(default)]
    pub scheduler: Scheduler,
    /// Plateau schedule: the factor applied to the rate when the validation loss stalls.
    #[serde(default = "default_plateau_factor")]
    pub plateau_factor: f64,
    /// Plateau schedule: epochs in a row without a lower validation loss before a cut.
    #[serde(default = "default_plateau_patience")]
    pub plateau_patience: usize,
    /// Default of `evaluate` and `predict` for this run: average each image with its
    /// horizontal mirror.
    #[serde(default)]
    pub tta: bool,
    /// Memory format and autocast; they change speed, not the recipe.
    #[serde(default)]
    pub speed: SpeedOptions,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_default_monitor(m: &Monitor) -> bool {
    *m == Monitor::default()
}

fn default_plateau_factor() -> f64 {
    0.2
}

fn default_plateau_patience() -> usize {
    2
}

impl TrainConfig {
    /// Checks every numeric option before anything is read or written.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.epochs == 0 {
            bail!("--batch-size and --epochs must be at least 1");
        }
        for (flag, lr) in [("--lr", self.lr), ("--fine-tune-lr", self.fine_tune_lr)] {
            if !(lr.is_finite() && lr > 0.0 && lr <= 10.0) {
                bail!("{flag} {lr}: expected a learning rate in (0, 10]");
            }
        }
        if !(self.plateau_factor > 0.0 && self.plateau_factor < 1.0) {
            bail!("--plateau-factor {}: expected a factor between 0 and 1", self.plateau_factor);
        }
        if let Some(size) = self.image_size.filter(|s| !(1..=crate::run::config::MAX_IMAGE_SIZE).contains(s)) {
            bail!("--image-size {size}: expected 1..={} pixels", crate::run::config::MAX_IMAGE_SIZE);
        }
        crate::model::multi_scale::check_sizes(self.model, &self.scales).context("--scales")?;
        if self.aug_views > MAX_AUG_VIEWS {
            bail!("--aug-views {}: at most {MAX_AUG_VIEWS} augmented views per image", self.aug_views);
        }
        if let Some(a) = &self.augment {
            a.validate()?;
        }
        if !(self.fine_tune_lr_decay > 0.0 && self.fine_tune_lr_decay <= 1.0) {
            bail!("--fine-tune-lr-decay {}: expected a factor in (0, 1]", self.fine_tune_lr_decay);
        }
        if !(self.label_smoothing.is_finite() && (0.0..1.0).contains(&self.label_smoothing)) {
            bail!("--label-smoothing {}: expected a value in [0, 1)", self.label_smoothing);
        }
        if let Some(wd) = self.weight_decay.iter().find(|wd| !(wd.is_finite() && (0.0..=1.0).contains(*wd))) {
            bail!("--weight-decay {wd}: expected values in [0, 1]");
        }
        if self.head.is_none() && !self.head_dropout.is_empty() {
            bail!("--head-dropout needs --head (the default head's dropout is {})", crate::model::head::DROPOUT);
        }
        self.head_layout().context("--head / --head-dropout")?;
        Ok(())
    }

    /// The head to train: `head` with its dropouts, or the backbone's default.
    pub fn head_layout(&self) -> Result<HeadLayout> {
        match &self.head {
            Some(hidden) => HeadLayout::new(hidden.clone(), self.head_dropout.clone()),
            None => Ok(self.model.default_head()),
        }
    }
}

/// Most augmented feature views cached per image (each costs a backbone pass per image).
pub const MAX_AUG_VIEWS: usize = 64;

/// What a finished training run produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub best_epoch: usize,
    pub metrics: MultiLabelMetrics,
    pub history: Vec<EpochRecord>,
    pub seconds: f64,
    pub device: String,
}

/// The prepared data of a training run, checked against the recipe.
struct TrainingData {
    manifest: Manifest,
    task: Task,
    train: SplitData,
    val: SplitData,
}

impl TrainingData {
    fn open(cfg: &TrainConfig) -> Result<Self> {
        let manifest = Manifest::load(&cfg.data)?;
        let train = SplitData::open(&cfg.data, "train", &manifest)?;
        let val = SplitData::open(&cfg.data, "val", &manifest)?;
        if train.is_empty() || val.is_empty() {
            bail!(
                "{}: training needs non-empty train and val splits (found {} and {}); re-run voc-prep with --split 0.7,0.15,0.15",
                cfg.data.display(),
                train.len(),
                val.len()
            );
        }
        let task = manifest.task()?;
        let min = cfg.model.min_input_size();
        if manifest.image.size < min {
            bail!(
                "{}: {} px images are too small for {} (at least {min} px); re-run voc-prep with a larger --size",
                cfg.data.display(),
                manifest.image.size,
                cfg.model.name()
            );
        }
        if cfg.model.from_scratch() && cfg.fine_tune_blocks > 0 {
            bail!(
                "{} is trained from scratch, every layer at once; --fine-tune-blocks applies to the ImageNet backbones",
                cfg.model.name()
            );
        }
        if cfg.pos_weight && task.is_grouped() {
            bail!("--pos-weight weights the binary cross-entropy of multilabel tasks; this data is {}", task.kind.name());
        }
        if let Some(size) = cfg.image_size.filter(|&s| s != manifest.image.size) {
            bail!(
                "{}: images are {} px but the recipe asks for {size} px; prepare the data with voc-prep --size {size}",
                cfg.data.display(),
                manifest.image.size
            );
        }
        Ok(TrainingData { manifest, task, train, val })
    }

    /// Per-class positive weights of the binary cross-entropy: negatives/positives, in [1, 100].
    fn pos_weight(&self, device: Device) -> Tensor {
        let c = self.manifest.classes.len();
        let n = self.train.len() as f64;
        let w: Vec<f32> = (0..c)
            .map(|k| {
                let p = (0..self.train.len()).filter(|&i| self.train.y[i * c + k] > 0.5).count() as f64;
                ((n - p) / p.max(1.0)).clamp(1.0, 100.0) as f32
            })
            .collect();
        upload(&Tensor::from_slice(&w), device)
    }
}

/// The model being trained: backbone and head in two variable stores, so the head can train
/// alone on a frozen backbone.
struct Model {
    backbone_vs: nn::VarStore,
    head_vs: nn::VarStore,
    net: Box<dyn BackboneNet>,
    head: Head,
    /// The checkpoint the backbone came from (none for a from-scratch model).
    weights: Option<PathBuf>,
}

impl Model {
    /// Builds the backbone with its weights (frozen unless trained from scratch, BatchNorm
    /// folded, in the asked memory format) and a fresh head.
    fn build(cfg: &TrainConfig, classes: usize, device: Device) -> Result<Self> {
        let mut backbone_vs = nn::VarStore::new(device);
        let (net, weights) = load_backbone(cfg.model, cfg.weights.as_deref(), &backbone_vs)?;
        let net = crate::model::multi_scale::at_scales(net, &cfg.scales);
        if !cfg.model.from_scratch() {
            backbone_vs.freeze();
        }
        if cfg.speed.channels_last {
            crate::model::to_channels_last(&backbone_vs);
        }
        crate::model::fold_frozen_batchnorm(net.as_ref());
        let head_vs = nn::VarStore::new(device);
        let dim = crate::model::multi_scale::feature_dim(cfg.model, &cfg.scales);
        let head = Head::new(&(head_vs.root() / "head"), dim, classes as i64, &cfg.head_layout()?);
        Ok(Model { backbone_vs, head_vs, net, head, weights })
    }

    /// Parameters of the first phase: the head, and the whole backbone when from scratch.
    fn first_phase_parameters(&self, scratch: bool) -> Vec<Tensor> {
        let mut params = self.head_vs.trainable_variables();
        if scratch {
            params.extend(self.backbone_vs.trainable_variables());
        }
        params
    }

    /// Parameters of fine-tuning: the head and the last `blocks` backbone blocks (BatchNorm
    /// statistics stay frozen), now requiring gradients, with their rate multipliers: 1 for
    /// the head, `decay^k` for the k-th block from the top (discriminative rates).
    fn fine_tune_parameters(&self, blocks: usize, decay: f64) -> (Vec<Tensor>, Vec<f64>) {
        let prefixes = self.net.block_prefixes();
        let chosen = &prefixes[prefixes.len() - blocks.min(prefixes.len())..];
        let mut params = self.head_vs.trainable_variables();
        let mut scales = vec![1.0; params.len()];
        for (name, var) in self.backbone_vs.variables() {
            let is_stat = name.ends_with("running_mean") || name.ends_with("running_var");
            if let Some(i) = chosen.iter().position(|p| name.starts_with(p.as_str())).filter(|_| !is_stat) {
                params.push(var.set_requires_grad(true));
                scales.push(decay.powi((chosen.len() - i) as i32));
            }
        }
        (params, scales)
    }
}

/// Trains one model and writes its run directory.
pub fn train(cfg: &TrainConfig, device: Device, observer: &dyn TrainObserver, cancel: &AtomicBool) -> Result<TrainOutcome> {
    let started = Instant::now();
    cfg.validate()?;
    if cfg.speed.bf16 && !device.is_cuda() {
        bail!("--bf16 needs a CUDA device (bf16 autocast runs on the GPU only)");
    }
    let data = TrainingData::open(cfg)?;
    let task = &data.task;
    tch::manual_seed(cfg.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let scratch = cfg.model.from_scratch();
    let mut model = Model::build(cfg, data.manifest.classes.len(), device)?;
    let pos_weight = cfg.pos_weight.then(|| data.pos_weight(device));
    let ex = Extractor {
        net: model.net.as_ref(),
        kind: cfg.model,
        dim: crate::model::multi_scale::feature_dim(cfg.model, &cfg.scales),
        device,
        speed: cfg.speed,
    };

    let views = if cfg.augment.is_some() { 1 + cfg.aug_views } else { 1 };
    let cache = if cfg.cache_features && !scratch {
        let batch = if device.is_cuda() { cfg.batch_size.max(32) } else { crate::device::inference_batch(device) };
        Some(FeatureCache::build(&ex, &data.train, &data.val, cfg.augment.as_ref(), views, batch, &mut rng, observer, cancel)?)
    } else {
        None
    };
    // Batches of pixels for epochs that run the backbone (no cache, or fine-tuning).
    let fine_tune = cfg.fine_tune_blocks > 0 && cfg.fine_tune_epochs > 0;
    let source = if cache.is_none() || fine_tune { Some(ImageSource::new(&data.train, device)?) } else { None };
    let mut epochs = EpochLoop {
        cfg,
        task,
        train: &data.train,
        val: &data.val,
        val_labels: upload(&data.val.labels(&(0..data.val.len()).collect::<Vec<_>>()), device),
        extractor: ex,
        head: &model.head,
        pos_weight: pos_weight.as_ref(),
        cache: cache.as_ref(),
        source: source.as_ref(),
        views,
        variables: [&model.head_vs, &model.backbone_vs],
        rng: &mut rng,
        observer,
        cancel,
        history: Vec::new(),
        best: None,
    };

    let phase = if scratch { Phase::Scratch } else { Phase::Frozen };
    let params = model.first_phase_parameters(scratch);
    let weight_decay = match cfg.weight_decay.as_slice() {
        [] => None,
        [wd] => Some(*wd),
        candidates => Some(epochs.run_per_weight_decay(phase, cfg.epochs, cfg.lr, &params, candidates)?),
    };
    if cfg.weight_decay.len() <= 1 {
        epochs.run(phase, cfg.epochs, &mut Adam::new(params, cfg.lr).with_weight_decay(weight_decay.unwrap_or(0.0)), 0)?;
    }

    if fine_tune {
        epochs.restore_best();
        let (params, scales) = model.fine_tune_parameters(cfg.fine_tune_blocks, cfg.fine_tune_lr_decay);
        crate::model::fold_frozen_batchnorm(model.net.as_ref());
        let offset = epochs.history.len();
        let mut opt = Adam::new(params, cfg.fine_tune_lr);
        if cfg.fine_tune_lr_decay != 1.0 {
            opt = opt.with_lr_scales(&scales);
        }
        epochs.run(Phase::FineTune, cfg.fine_tune_epochs, &mut opt, offset)?;
    }

    let Best { epoch: best_epoch, .. } = *epochs.best.as_ref().context("no epoch completed")?;
    epochs.restore_best();
    let metrics = epochs.validate()?.metrics;
    let history = std::mem::take(&mut epochs.history);
    drop(epochs);
    model.backbone_vs.freeze();
    let seconds = started.elapsed().as_secs_f64();
    let run_dir = write_run(cfg, &data, &model, device, &history, best_epoch, &metrics, weight_decay, seconds, cancel)?;
    Ok(TrainOutcome { run_dir, best_epoch, metrics, history, seconds, device: crate::device::name(device) })
}

/// Writes the run directory of a finished training (staged, then renamed into place).
#[allow(clippy::too_many_arguments)]
fn write_run(
    cfg: &TrainConfig,
    data: &TrainingData,
    model: &Model,
    device: Device,
    history: &[EpochRecord],
    best_epoch: usize,
    metrics: &MultiLabelMetrics,
    weight_decay: Option<f64>,
    seconds: f64,
    cancel: &AtomicBool,
) -> Result<PathBuf> {
    let task = &data.task;
    let run = RunWriter::create(&cfg.runs_dir, cfg.model.name())?;
    let config = RunConfig::Train(Box::new(TrainRun {
        tool: TrainTool::Train,
        version: crate::VERSION.to_string(),
        created: chrono::Local::now().to_rfc3339(),
        options: cfg.clone(),
        weights_used: model.weights.clone(),
        device: crate::device::name(device),
        data_manifest_sha256: Manifest::file_hash(&cfg.data)?,
        task: Some(task.kind),
        label_groups: Some(task.groups.clone()),
        classes: data.manifest.classes.clone(),
        image_size: data.manifest.image.size,
        resize: data.manifest.image.resize,
        normalization: cfg.model.normalization(),
        head: HeadSpec::of(&cfg.head_layout()?),
        weight_decay,
        monitor: Some(cfg.monitor.name(task).to_string()),
        best_epoch,
        train_seconds: seconds,
        train_images: data.train.len(),
        val_images: data.val.len(),
        mlflow: None,
    }));
    let metrics_json =
        serde_json::json!({"split": "val", "task": task.kind, "best_epoch": best_epoch, "threshold": 0.5, "metrics": metrics});
    record::write_run_files(&run, &config, &metrics_json, history)?;
    run.write_model(model.backbone_vs.variables().into_iter().chain(model.head_vs.variables()))?;
    if cancel.load(Ordering::SeqCst) {
        bail!(crate::Interrupted);
    }
    run.finish()
}
