//! Training: transfer learning (frozen backbone with BatchNorm in eval mode -> GAP -> head,
//! optional fine-tuning of the last backbone blocks) or a from-scratch model trained whole;
//! Adam; the task's loss (binary cross-entropy, or softmax cross-entropy summed over label
//! groups); early stopping on the task's validation metric with best-epoch restore. With a
//! frozen backbone, features are computed once (a clean view plus a few augmented views per
//! image) and later epochs train only the head; when the last blocks are fine-tuned and the
//! backbone splits before them, the frozen trunk's activations are cached instead, and
//! fine-tuning runs only those blocks and the head (cached-tail fine-tuning).
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
use crate::model::head::Head;
use crate::model::pretrained::load_backbone;
use crate::model::BackboneNet;
use crate::run::config::{HeadSpec, RunConfig, TrainRun, TrainTool};
use crate::run::options::{RecordedTrainOptions, TrainOptions};
use crate::run::{RunTarget, RunWriter};
use crate::task::Task;
use crate::tensor::upload;
use crate::train::augment::AugmentConfig;
use crate::train::epochs::{Best, EpochLoop, Phase};
use crate::train::features::{CacheStage, Extractor, FeatureCache, TrunkCache};
use crate::train::history::{EpochRecord, TrainObserver};
use crate::train::optim::Adam;
use crate::train::step::{ImageSource, SpeedOptions};
use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{nn, Device, Tensor};

/// A checked training recipe resolved for a device: what [`train`] runs. The options are
/// recorded as they were given; the other fields are what they resolve to.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub options: TrainOptions,
    pub augment: Option<AugmentConfig>,
    pub cache_features: bool,
    pub label_smoothing: f64,
    pub speed: SpeedOptions,
    /// Where the run is written (`--run-dir`, else a timestamped run in `runs_dir`).
    pub target: RunTarget,
}

impl TrainConfig {
    /// Checks `options` and resolves them for `device` (every check before anything is read
    /// or written).
    pub fn new(options: TrainOptions, device: Device) -> Result<Self> {
        options.validate()?;
        if options.bf16 && !device.is_cuda() {
            bail!("bf16 needs a CUDA device (bf16 autocast runs on the GPU only)");
        }
        Ok(TrainConfig {
            augment: AugmentConfig::of(&options),
            cache_features: !options.no_cache,
            label_smoothing: options.label_smoothing(),
            speed: SpeedOptions { channels_last: options.channels_last_on(device), bf16: options.bf16 },
            target: RunTarget::Timestamped(options.runs_dir.clone()),
            options,
        })
    }
}

impl std::ops::Deref for TrainConfig {
    type Target = TrainOptions;

    fn deref(&self) -> &TrainOptions {
        &self.options
    }
}

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
        let mut train = SplitData::open(&cfg.data, "train", &manifest)?;
        let val = SplitData::open(&cfg.data, "val", &manifest)?;
        if cfg.refit {
            train = train.joined(SplitData::open(&cfg.data, "val", &manifest)?)?;
        }
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

/// Cached-tail fine-tuning keeps the trunk's activations in memory up to this size; above it
/// the last blocks fine-tune on pixels through the whole backbone.
pub const TRUNK_CACHE_LIMIT_BYTES: usize = 6 << 30;

/// Bytes of a float32 trunk cache of `rows` images at `size` px before the last `tail_blocks`
/// blocks (the trunk run once on one blank image to learn its output's shape).
fn trunk_cache_bytes(ex: &Extractor, tail_blocks: usize, size: u32, rows: usize) -> Result<usize> {
    let blank = Tensor::zeros([1, 3, size as i64, size as i64], (tch::Kind::Float, ex.device));
    let out = tch::no_grad(|| ex.net.trunk(&blank, tail_blocks)).context("the backbone cannot be split there")?;
    Ok(out.numel() * 4 * rows)
}

/// Trains one model and writes its run directory.
pub fn train(cfg: &TrainConfig, device: Device, observer: &dyn TrainObserver, cancel: &AtomicBool) -> Result<TrainOutcome> {
    let started = Instant::now();
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
    let fine_tune = cfg.fine_tune_blocks > 0 && cfg.fine_tune_epochs > 0;
    let cached = cfg.cache_features && !scratch;
    let batch = if device.is_cuda() { cfg.batch_size.max(32) } else { crate::device::inference_batch(device) };
    // Cached-tail fine-tuning where the backbone splits before its tuned blocks: the trunk's
    // activations are cached once and the head-only phase's features pooled from them.
    let tail_blocks = cfg.fine_tune_blocks.min(model.net.block_prefixes().len());
    let trunk = if cached && fine_tune && model.net.splits_before(tail_blocks) {
        let bytes = trunk_cache_bytes(&ex, tail_blocks, data.manifest.image.size, views * data.train.len() + data.val.len())?;
        if bytes <= TRUNK_CACHE_LIMIT_BYTES {
            observer.note(&format!(
                "fine-tuning the last {tail_blocks} blocks from cached activations ({:.0} MiB)",
                bytes as f64 / (1 << 20) as f64
            ));
            let stage = CacheStage::Trunk(tail_blocks);
            let acts =
                FeatureCache::build(&ex, stage, &data.train, &data.val, cfg.augment.as_ref(), views, batch, &mut rng, observer, cancel)?;
            Some(TrunkCache { acts, tail_blocks })
        } else {
            observer.note(&format!(
                "fine-tuning the last {tail_blocks} blocks on pixels: their cached activations would take {:.1} GiB (over {} GiB)",
                bytes as f64 / (1u64 << 30) as f64,
                TRUNK_CACHE_LIMIT_BYTES >> 30
            ));
            None
        }
    } else {
        None
    };
    let cache = match &trunk {
        Some(t) => Some(t.acts.pooled(&ex, tail_blocks, batch)?),
        None if cached => Some(FeatureCache::build(
            &ex,
            CacheStage::Features,
            &data.train,
            &data.val,
            cfg.augment.as_ref(),
            views,
            batch,
            &mut rng,
            observer,
            cancel,
        )?),
        None => None,
    };
    // Batches of pixels for epochs that run the whole backbone (no cache, or fine-tuning without a trunk cache).
    let source = if cache.is_none() || (fine_tune && trunk.is_none()) { Some(ImageSource::new(&data.train, device)?) } else { None };
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
        trunk: trunk.as_ref(),
        backbone_tuned: false,
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
        epochs.backbone_tuned = true;
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
    let run = RunWriter::create(&cfg.target, cfg.model.name())?;
    let config = RunConfig::Train(Box::new(TrainRun {
        tool: TrainTool::Train,
        version: crate::VERSION.to_string(),
        created: chrono::Local::now().to_rfc3339(),
        options: RecordedTrainOptions::Flags(cfg.options.clone()),
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
