//! Training: transfer learning (frozen backbone with BatchNorm in eval mode -> GAP -> head,
//! optional fine-tuning of the last backbone blocks) or a from-scratch model trained whole;
//! Adam; the task's loss (binary cross-entropy, or softmax cross-entropy summed over label
//! groups); early stopping on the task's validation metric with best-epoch restore. With a
//! frozen backbone, features are computed once (a clean view plus a few augmented views per
//! image) and later epochs train only the head.

use crate::augment::AugmentConfig;
use crate::data::{host_values, upload, SplitData};
use crate::manifest::Manifest;
use crate::metrics::{compute, MultiLabelMetrics};
use crate::model::head::Head;
use crate::model::weights::{load_into, read_checkpoint};
use crate::model::{BackboneKind, BackboneNet};
use crate::optim::Adam;
use crate::runs::{RunWriter, CLASSES_FILE, CONFIG_FILE, CURVES_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE};
use crate::schedule::{Plateau, Scheduler};
use crate::task::Task;
use crate::train_step::{model_input, ImageSource, SpeedOptions};
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// Every training option; recorded in the run's `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub augment: Option<AugmentConfig>,
    /// Input size a recipe asks for; the data must have been prepared at it.
    #[serde(default)]
    pub image_size: Option<u32>,
    /// Compute frozen-backbone features once instead of every epoch.
    pub cache_features: bool,
    /// Augmented feature views cached per training image (besides the clean one).
    pub aug_views: usize,
    /// Weight positives by negatives/positives per class in the loss.
    pub pos_weight: bool,
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

fn default_plateau_factor() -> f64 {
    0.2
}

fn default_plateau_patience() -> usize {
    2
}

/// One row of `history.csv`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub phase: &'static str,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_macro_f1: f64,
    pub val_micro_f1: f64,
    /// Exact-match accuracy (all labels right; for multiclass, plain accuracy).
    pub val_accuracy: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// `history.csv` text of the given epochs.
pub fn history_csv(records: &[EpochRecord]) -> String {
    let mut csv = String::from("epoch,phase,train_loss,val_loss,val_macro_f1,val_micro_f1,val_accuracy,lr,seconds\n");
    for r in records {
        csv += &format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:e},{:.3}\n",
            r.epoch, r.phase, r.train_loss, r.val_loss, r.val_macro_f1, r.val_micro_f1, r.val_accuracy, r.lr, r.seconds
        );
    }
    csv
}

/// The validation metric that early stopping and run selection follow: macro-F1 for
/// multilabel, exact-match accuracy for the grouped tasks.
pub fn monitored(task: &Task, m: &MultiLabelMetrics) -> f64 {
    if task.is_grouped() {
        m.subset_accuracy
    } else {
        m.macro_f1
    }
}

/// Name of [`monitored`]'s metric.
pub fn monitored_name(task: &Task) -> &'static str {
    if task.is_grouped() {
        "accuracy"
    } else {
        "macro-F1"
    }
}

/// Metrics of `[n, C]` logits against labels at `thresholds` (multilabel) or by arg-max
/// (grouped tasks), and the probabilities.
pub fn score_logits(task: &Task, logits: &Tensor, labels: &[f32], thresholds: &[f32]) -> Result<(MultiLabelMetrics, Vec<f32>)> {
    let probs = host_values(&task.probabilities(logits))?;
    let decisions = task.decide(&probs, thresholds);
    Ok((compute(&decisions, labels, &task.classes, &vec![0.5; task.classes.len()]), probs))
}

/// Callbacks for progress display, so the library does not print.
pub trait TrainObserver {
    fn phase(&self, _what: &str, _steps: u64) {}
    /// A step finished; `loss` is given when it was read back (not every step on a GPU).
    fn step(&self, _loss: Option<f64>, _images: usize) {}
    fn epoch(&self, _rec: &EpochRecord) {}
}

/// A progress bar is an observer.
impl TrainObserver for ProgressBar {
    fn phase(&self, what: &str, steps: u64) {
        self.reset();
        self.set_length(steps);
        self.set_prefix(what.to_string());
    }
    fn step(&self, loss: Option<f64>, _images: usize) {
        self.inc(1);
        if let Some(loss) = loss {
            self.set_message(format!("loss {loss:.4}"));
        }
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

/// Where the embedded default backbone (EfficientNet-Lite0) is installed by `make setup`.
pub fn default_weights(kind: BackboneKind) -> Option<PathBuf> {
    if kind != BackboneKind::EfficientnetLite0 {
        return None;
    }
    let rel = ".venv/vocml-weights/efficientnet_lite0.safetensors";
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/release/<bin> -> project root
        candidates.extend(exe.ancestors().skip(1).take(4).map(|d| d.join(rel)));
    }
    candidates.push(PathBuf::from(rel));
    candidates.into_iter().find(|p| p.is_file())
}

/// Builds a backbone and loads its weights (features only: the ImageNet classifier is
/// ignored). A from-scratch model keeps its random initialisation (no weights path).
pub fn load_backbone(kind: BackboneKind, weights: Option<&Path>, vs: &nn::VarStore) -> Result<(Box<dyn BackboneNet>, Option<PathBuf>)> {
    let net = kind.build(&vs.root(), false);
    if kind.from_scratch() {
        if let Some(w) = weights {
            bail!("{} is trained from scratch; --weights {} would not be used", kind.name(), w.display());
        }
        return Ok((net, None));
    }
    let path = match weights {
        Some(p) => p.to_path_buf(),
        None => default_weights(kind).with_context(|| match kind {
            BackboneKind::EfficientnetLite0 => {
                "EfficientNet-Lite0 weights not found in .venv/vocml-weights; run `make setup`".to_string()
            }
            _ => format!(
                "{} needs --weights: download torchvision's ImageNet checkpoint with scripts/fetch_torchvision_weights.sh {} (needs internet), or pass your own .safetensors",
                kind.name(),
                kind.name()
            ),
        })?,
    };
    let tensors = read_checkpoint(&path)?;
    load_into(vs, tensors, &path, kind.classifier_prefixes(), &[])?;
    Ok((net, Some(path)))
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Features (float32) of rows `idx` (clean or augmented) without gradients.
fn extract(
    net: &dyn BackboneNet,
    data: &SplitData,
    idx: &[usize],
    kind: BackboneKind,
    aug: Option<(&AugmentConfig, &mut ChaCha8Rng)>,
    device: Device,
    speed: SpeedOptions,
) -> Result<Tensor> {
    let px = upload(&data.pixels(idx)?, device);
    tch::no_grad(|| {
        let xs = model_input(&px, aug, &kind.normalization(), speed);
        crate::device::bf16_autocast(speed.bf16, device, || net.features(&xs).to_kind(Kind::Float))
    })
}

fn batches(n: usize, b: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n.div_ceil(b)).map(move |i| i * b..((i + 1) * b).min(n))
}

/// Trains one model and writes its run directory.
pub fn train(cfg: &TrainConfig, device: Device, observer: &dyn TrainObserver, cancel: &AtomicBool) -> Result<TrainOutcome> {
    let started = Instant::now();
    let manifest = Manifest::load(&cfg.data)?;
    let train_data = SplitData::open(&cfg.data, "train", &manifest)?;
    let val_data = SplitData::open(&cfg.data, "val", &manifest)?;
    if train_data.is_empty() || val_data.is_empty() {
        bail!(
            "{}: training needs non-empty train and val splits (found {} and {}); re-run voc-prep with --split 0.7,0.15,0.15",
            cfg.data.display(),
            train_data.len(),
            val_data.len()
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
    let scratch = cfg.model.from_scratch();
    if scratch && cfg.fine_tune_blocks > 0 {
        bail!("{} is trained from scratch, every layer at once; --fine-tune-blocks applies to the ImageNet backbones", cfg.model.name());
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
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        bail!("--batch-size and --epochs must be at least 1");
    }
    if !(cfg.plateau_factor > 0.0 && cfg.plateau_factor < 1.0) {
        bail!("--plateau-factor {}: expected a factor between 0 and 1", cfg.plateau_factor);
    }
    if cfg.speed.bf16 && !device.is_cuda() {
        bail!("--bf16 needs a CUDA device (bf16 autocast runs on the GPU only)");
    }
    tch::manual_seed(cfg.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let classes = manifest.classes.len() as i64;

    let mut bvs = nn::VarStore::new(device);
    let (net, weights_path) = load_backbone(cfg.model, cfg.weights.as_deref(), &bvs)?;
    if !scratch {
        bvs.freeze();
    }
    if cfg.speed.channels_last {
        crate::model::to_channels_last(&bvs);
    }
    crate::model::fold_frozen_batchnorm(net.as_ref());
    let hvs = nn::VarStore::new(device);
    let head = Head::new(&(hvs.root() / "head"), cfg.model.feature_dim(), classes, cfg.model.head_hidden());

    let pos_weight = cfg.pos_weight.then(|| {
        let n = train_data.len() as f64;
        let w: Vec<f32> = (0..classes as usize)
            .map(|k| {
                let p = (0..train_data.len()).filter(|&i| train_data.y[i * classes as usize + k] > 0.5).count() as f64;
                ((n - p) / p.max(1.0)).clamp(1.0, 100.0) as f32
            })
            .collect();
        upload(&Tensor::from_slice(&w), device)
    });
    let loss_fn = |logits: &Tensor, y: &Tensor| task.loss(logits, y, pos_weight.as_ref());
    let val_labels = upload(&val_data.labels(&(0..val_data.len()).collect::<Vec<_>>()), device);
    let thresholds = vec![0.5f32; classes as usize];

    let mut history = Vec::new();
    let mut best: Option<(f64, usize, Vec<(String, Tensor)>)> = None;

    // --- phase 1: frozen backbone -------------------------------------------------------
    let views = if cfg.augment.is_some() { 1 + cfg.aug_views } else { 1 };
    let (train_cache, val_feats) = if cfg.cache_features && !scratch {
        let n = train_data.len();
        let feature_batch = if device.is_cuda() { cfg.batch_size.max(32) } else { crate::device::inference_batch(device) };
        let total = (n * views + val_data.len()).div_ceil(feature_batch);
        observer.phase("features", total as u64);
        // Filled in place, batch by batch: no per-batch parts to concatenate.
        let dim = cfg.model.feature_dim();
        let cache = Tensor::empty([views as i64, n as i64, dim], (Kind::Float, device));
        let val_cache = Tensor::empty([val_data.len() as i64, dim], (Kind::Float, device));
        // (rows, destination, augmented): the clean training view, the augmented ones, validation.
        let fills = (0..views).map(|v| (&train_data, cache.get(v as i64), v > 0)).chain(std::iter::once((
            &val_data,
            val_cache.shallow_clone(),
            false,
        )));
        for (data, dst, augmented) in fills {
            for r in batches(data.len(), feature_batch) {
                if cancel.load(Ordering::SeqCst) {
                    bail!(crate::Interrupted);
                }
                let idx: Vec<usize> = r.clone().collect();
                let aug = if augmented { cfg.augment.as_ref().map(|a| (a, &mut rng)) } else { None };
                let feats = extract(net.as_ref(), data, &idx, cfg.model, aug, device, cfg.speed)?;
                dst.narrow(0, r.start as i64, idx.len() as i64)
                    .f_copy_(&feats)
                    .with_context(|| format!("{}: features of shape {:?}, expected {dim} per image", cfg.model.name(), feats.size()))?;
                observer.step(None, idx.len());
            }
        }
        (Some(cache), Some(val_cache))
    } else {
        (None, None)
    };

    let val_features = |net: &dyn BackboneNet| -> Result<Tensor> {
        Ok(match &val_feats {
            Some(f) => f.shallow_clone(),
            None => Tensor::cat(
                &batches(val_data.len(), 64)
                    .map(|r| extract(net, &val_data, &r.collect::<Vec<_>>(), cfg.model, None, device, cfg.speed))
                    .collect::<Result<Vec<_>>>()?,
                0,
            ),
        })
    };
    // Batches of pixels for epochs that run the backbone (no cache, or fine-tuning).
    let needs_pixels = train_cache.is_none() || (cfg.fine_tune_blocks > 0 && cfg.fine_tune_epochs > 0);
    let source = if needs_pixels { Some(ImageSource::new(&train_data, device)?) } else { None };
    let read_loss_every = if device.is_cuda() { 20 } else { 1 };

    let mut run_phase = |phase: &'static str,
                         epochs: usize,
                         opt: &mut Adam,
                         trainable_backbone: bool,
                         epoch_offset: usize,
                         history: &mut Vec<EpochRecord>,
                         best: &mut Option<(f64, usize, Vec<(String, Tensor)>)>|
     -> Result<()> {
        let mut since_best = 0;
        let mut plateau =
            (cfg.scheduler == Scheduler::Plateau).then(|| Plateau::new(cfg.plateau_factor, cfg.plateau_patience, opt.lr * 1e-3));
        for e in 0..epochs {
            let t0 = Instant::now();
            let mut order: Vec<usize> = (0..train_data.len()).collect();
            order.shuffle(&mut rng);
            observer.phase(&format!("{phase} {}/{}", e + 1, epochs), order.len().div_ceil(cfg.batch_size) as u64);
            let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
            let mut seen = 0usize;
            for (step, chunk) in order.chunks(cfg.batch_size).enumerate() {
                if cancel.load(Ordering::SeqCst) {
                    bail!(crate::Interrupted);
                }
                let y = upload(&train_data.labels(chunk), device);
                let feats = match (&train_cache, trainable_backbone) {
                    (Some(cache), false) => {
                        let view: Vec<i64> = chunk.iter().map(|_| rng.gen_range(0..views) as i64).collect();
                        let rows: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
                        let vi = upload(&Tensor::from_slice(&view), device);
                        let ri = upload(&Tensor::from_slice(&rows), device);
                        cache.index(&[Some(vi), Some(ri)])
                    }
                    _ => {
                        let px = source.as_ref().context("no image source")?.batch(chunk, device)?;
                        let aug = cfg.augment.as_ref().map(|a| (a, &mut rng));
                        let xs = model_input(&px, aug, &cfg.model.normalization(), cfg.speed);
                        let forward = || net.features_t(&xs, trainable_backbone);
                        if trainable_backbone {
                            crate::device::bf16_autocast(cfg.speed.bf16, device, forward)?
                        } else {
                            tch::no_grad(|| crate::device::bf16_autocast(cfg.speed.bf16, device, forward))?
                        }
                    }
                };
                let loss = crate::device::bf16_autocast(cfg.speed.bf16, device, || loss_fn(&head.forward_t(&feats, true), &y))?;
                opt.backward_step(&loss);
                loss_sum += loss.detach() * chunk.len() as f64;
                seen += chunk.len();
                let shown = (step % read_loss_every == 0).then(|| loss.double_value(&[]));
                observer.step(shown, chunk.len());
            }
            let loss_sum = loss_sum.double_value(&[]);
            let val_feats_now = val_features(net.as_ref())?;
            let (val_loss, m) = tch::no_grad(|| -> Result<_> {
                let logits = head.forward_t(&val_feats_now, false);
                let vl = loss_fn(&logits, &val_labels).double_value(&[]);
                Ok((vl, score_logits(&task, &logits, &val_data.y, &thresholds)?.0))
            })?;
            let rec = EpochRecord {
                epoch: epoch_offset + e + 1,
                phase,
                train_loss: loss_sum / seen.max(1) as f64,
                val_loss,
                val_macro_f1: m.macro_f1,
                val_micro_f1: m.micro_f1,
                val_accuracy: m.subset_accuracy,
                lr: opt.lr,
                seconds: t0.elapsed().as_secs_f64(),
            };
            observer.epoch(&rec);
            history.push(rec.clone());
            if let Some(p) = plateau.as_mut() {
                opt.lr = p.step(val_loss, opt.lr);
            }
            let score = monitored(&task, &m);
            if best.as_ref().is_none_or(|b| score > b.0 + 1e-9) {
                let snapshot = hvs.variables().into_iter().chain(bvs.variables()).map(|(k, v)| (k, v.detach().copy())).collect();
                *best = Some((score, rec.epoch, snapshot));
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= cfg.patience {
                    break;
                }
            }
        }
        Ok(())
    };

    let mut params = hvs.trainable_variables();
    if scratch {
        params.extend(bvs.trainable_variables());
    }
    let mut opt = Adam::new(params, cfg.lr);
    run_phase(if scratch { "train" } else { "frozen" }, cfg.epochs, &mut opt, scratch, 0, &mut history, &mut best)?;

    // --- phase 2: fine-tune the last blocks -------------------------------------------
    if cfg.fine_tune_blocks > 0 && cfg.fine_tune_epochs > 0 {
        restore(&hvs, &bvs, best.as_ref().map(|b| &b.2));
        let prefixes = net.block_prefixes();
        let n = cfg.fine_tune_blocks.min(prefixes.len());
        let chosen = &prefixes[prefixes.len() - n..];
        let mut params = hvs.trainable_variables();
        for (name, var) in bvs.variables() {
            let is_stat = name.ends_with("running_mean") || name.ends_with("running_var");
            if !is_stat && chosen.iter().any(|p| name.starts_with(p.as_str())) {
                params.push(var.set_requires_grad(true));
            }
        }
        crate::model::fold_frozen_batchnorm(net.as_ref());
        let offset = history.len();
        let mut opt = Adam::new(params, cfg.fine_tune_lr);
        run_phase("fine-tune", cfg.fine_tune_epochs, &mut opt, true, offset, &mut history, &mut best)?;
        bvs.freeze();
    }

    let (_, best_epoch, snapshot) = best.context("no epoch completed")?;
    restore(&hvs, &bvs, Some(&snapshot));
    let val_feats_now = val_features(net.as_ref())?;
    let metrics = tch::no_grad(|| score_logits(&task, &head.forward_t(&val_feats_now, false), &val_data.y, &thresholds))?.0;

    // --- run directory -------------------------------------------------------------------
    let run = RunWriter::create(&cfg.runs_dir, cfg.model.name())?;
    let seconds = started.elapsed().as_secs_f64();
    let config = serde_json::json!({
        "tool": "train",
        "version": crate::VERSION,
        "created": chrono::Local::now().to_rfc3339(),
        "options": cfg,
        "weights_used": weights_path,
        "device": device_name(device),
        "data_manifest_sha256": Manifest::file_hash(&cfg.data)?,
        "task": task.kind,
        "label_groups": task.groups,
        "classes": manifest.classes,
        "image_size": manifest.image.size,
        "resize": manifest.image.resize,
        "normalization": cfg.model.normalization(),
        "head": {"hidden": cfg.model.head_hidden(), "dropout": cfg.model.head_hidden().map(|_| crate::model::head::DROPOUT)},
        "monitor": monitored_name(&task),
        "best_epoch": best_epoch,
        "train_seconds": seconds,
        "train_images": train_data.len(),
        "val_images": val_data.len(),
    });
    run.write_json(CONFIG_FILE, &config)?;
    run.write_json(CLASSES_FILE, &manifest.classes)?;
    run.write_json(
        METRICS_FILE,
        &serde_json::json!({"split": "val", "task": task.kind, "best_epoch": best_epoch, "threshold": 0.5, "metrics": metrics}),
    )?;
    run.write_text(HISTORY_FILE, &history_csv(&history))?;
    write_training_curves(&history, &run.dir().join(CURVES_FILE))?;
    let mut tensors: Vec<(String, Tensor)> = bvs.variables().into_iter().chain(hvs.variables()).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let tensors: Vec<(String, Tensor)> =
        tensors.into_iter().map(|(k, v)| (k, v.to_device(Device::Cpu).to_kind(Kind::Float).contiguous())).collect();
    Tensor::write_safetensors(&tensors, run.dir().join(MODEL_FILE)).context("cannot write model.safetensors")?;
    if cancel.load(Ordering::SeqCst) {
        bail!(crate::Interrupted);
    }
    let run_dir = run.finish()?;
    Ok(TrainOutcome { run_dir, best_epoch, metrics, history, seconds, device: device_name(device) })
}

/// Loss and validation F1 per epoch as a PNG.
pub fn write_training_curves(history: &[EpochRecord], path: &Path) -> Result<()> {
    use crate::plot::{render_panels, Panel, Series, PALETTE};
    let pts = |f: &dyn Fn(&EpochRecord) -> f64| history.iter().map(|r| (r.epoch as f64, f(r))).collect::<Vec<_>>();
    let last = history.last().map_or(1.0, |r| r.epoch as f64).max(2.0);
    let max_loss = history.iter().map(|r| r.train_loss.max(r.val_loss)).fold(0.0, f64::max) * 1.05;
    let loss = Panel {
        title: "LOSS".into(),
        x_label: "EPOCH".into(),
        y_label: String::new(),
        x_range: (1.0, last),
        y_range: (0.0, max_loss.max(1e-3)),
        series: vec![
            Series { label: "TRAIN".into(), points: pts(&|r| r.train_loss), color: PALETTE[0] },
            Series { label: "VAL".into(), points: pts(&|r| r.val_loss), color: PALETTE[1] },
        ],
    };
    let f1 = Panel {
        title: "VALIDATION".into(),
        x_label: "EPOCH".into(),
        y_label: String::new(),
        x_range: (1.0, last),
        y_range: (0.0, 1.0),
        series: vec![
            Series { label: "MACRO F1".into(), points: pts(&|r| r.val_macro_f1), color: PALETTE[2] },
            Series { label: "MICRO F1".into(), points: pts(&|r| r.val_micro_f1), color: PALETTE[3] },
            Series { label: "ACCURACY".into(), points: pts(&|r| r.val_accuracy), color: PALETTE[4] },
        ],
    };
    render_panels(&[loss, f1], 2, path)
}

fn restore(hvs: &nn::VarStore, bvs: &nn::VarStore, snapshot: Option<&Vec<(String, Tensor)>>) {
    let Some(snapshot) = snapshot else { return };
    let (hv, bv) = (hvs.variables(), bvs.variables());
    tch::no_grad(|| {
        for (name, saved) in snapshot {
            if let Some(v) = hv.get(name).or_else(|| bv.get(name)) {
                let mut v = v.shallow_clone();
                v.copy_(saved);
            }
        }
    });
}
