//! `retrain`: incremental learning from user corrections. The corrected images (all in the
//! feedback store) are replicated with augmentation, mixed with a replay sample of the
//! parent's training data, and the parent's head is fine-tuned on cached backbone features.
//! The result is a new run; it replaces `runs/best` only if it is not worse than its parent
//! on validation by more than a tolerance (or when forced), atomically.
//!
//! [`retrain`] reads as its steps: check the options, load the parent and its data, store and
//! load the corrections, compute features (corrections, replay pool, validation), fine-tune
//! the head, decide on promotion, write the run.

pub mod feedback;

use crate::dataset::manifest::Manifest;
use crate::dataset::prepared::SplitData;
use crate::eval::metrics::{tune_thresholds, MultiLabelMetrics};
use crate::eval::validation::{monitored, monitored_name, score_logits, ValidationSet};
use crate::io::image::SquareResizer;
use crate::retrain::feedback::{read_corrections_csv, Correction, FeedbackStore};
use crate::run::config::{CorrectionRecord, InheritedOptions, RetrainRun, RetrainTool, RunConfig};
use crate::run::loaded::LoadedModel;
use crate::run::thresholds::Thresholds;
use crate::run::{point_best, write_atomic, RunWriter, RETRAIN_FILE, THRESHOLDS_FILE};
use crate::task::Task;
use crate::tensor::{host_values, to_unit_nchw};
use crate::train::augment::{augment, AugmentConfig};
use crate::train::features::rows_features;
use crate::train::history::{EpochRecord, TrainObserver};
use crate::train::optim::Adam;
use crate::train::record::write_run_files;
use crate::train::step::head_step;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{Device, Tensor};

/// Most copies of each corrected image per epoch (`--replicate`).
pub const MAX_REPLICATE: usize = 1000;

/// Every retrain option; recorded in the new run's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainConfig {
    pub from: PathBuf,
    pub corrections: PathBuf,
    /// Prepared data for replay and validation (default: the parent's).
    pub data: Option<PathBuf>,
    pub epochs: usize,
    pub replicate: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub replay: bool,
    /// Replay images per corrected sample in each epoch.
    pub replay_ratio: f64,
    pub tolerance: f64,
    pub force: bool,
    pub runs_dir: PathBuf,
    pub feedback_dir: PathBuf,
    pub seed: u64,
}

/// What a retrain did; also written to the run as `retrain.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RetrainOutcome {
    pub run_dir: PathBuf,
    pub parent: PathBuf,
    pub corrections_new: usize,
    pub corrections_used: usize,
    /// Corrected images whose whole label set the model predicts, before and after.
    pub corrected_right_before: usize,
    pub corrected_right_after: usize,
    pub parent_val_macro_f1: f64,
    pub new_val_macro_f1: f64,
    /// The validation metric that decides promotion (macro-F1, or accuracy for grouped tasks).
    pub monitor: String,
    pub parent_val_score: f64,
    pub new_val_score: f64,
    pub promoted: bool,
    pub reason: String,
    pub seconds: f64,
}

impl RetrainConfig {
    /// Checks every numeric option before anything is read or written.
    pub fn validate(&self) -> Result<()> {
        if !(self.replay_ratio.is_finite() && self.replay_ratio >= 0.0 && self.replay_ratio <= 100.0) {
            bail!("--replay-ratio {}: expected a number in [0, 100]", self.replay_ratio);
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            bail!("--tolerance {}: expected a number >= 0", self.tolerance);
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 10.0) {
            bail!("--lr {}: expected a learning rate in (0, 10]", self.lr);
        }
        if self.epochs == 0 || self.batch_size == 0 {
            bail!("--epochs and --batch-size must be at least 1");
        }
        if !(1..=MAX_REPLICATE).contains(&self.replicate) {
            bail!("--replicate {}: expected 1..={MAX_REPLICATE} copies per corrected image", self.replicate);
        }
        Ok(())
    }
}

fn exact_rows(task: &Task, probs: &[f32], labels: &[f32], th: &[f32]) -> usize {
    let c = task.classes.len();
    task.decide(probs, th)
        .chunks(c)
        .zip(labels.chunks(c))
        .filter(|(d, y)| d.iter().zip(y.iter()).all(|(d, y)| (*d >= 0.5) == (*y >= 0.5)))
        .count()
}

/// The corrected images at the model's input size: `[K, 3, S, S]` in [0, 1] on the device,
/// and their label rows.
struct CorrectedImages {
    pixels: Tensor,
    labels: Vec<f32>,
    count: i64,
}

/// Decodes and resizes every stored correction, checking its labels against the task.
fn load_corrected(
    store: &FeedbackStore,
    all: &[Correction],
    parent: &LoadedModel,
    feedback_dir: &Path,
    device: Device,
) -> Result<CorrectedImages> {
    let classes = &parent.classes;
    let s = parent.image_size as i64;
    let mut resizer = SquareResizer::new(parent.image_size, parent.resize);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for corr in all {
        let row: Vec<f32> = classes.iter().map(|cl| corr.labels.contains(cl) as u8 as f32).collect();
        if let Some(l) = corr.labels.iter().find(|l| !classes.contains(l)) {
            bail!(
                "{}: the stored correction of {} has label {l:?}, which this model does not have; keep each model's corrections apart with --feedback-dir",
                feedback_dir.display(),
                corr.source
            );
        }
        parent
            .task
            .check_row(&row)
            .map_err(|e| anyhow::anyhow!("{}: the stored correction of {}: {e}", feedback_dir.display(), corr.source))?;
        let buf = resizer
            .load(&store.image_path(corr))
            .map_err(|e| anyhow::anyhow!("feedback image {} ({}): {e}", store.image_path(corr).display(), corr.source))?;
        pixels.extend(buf);
        labels.extend(row);
    }
    let count = all.len() as i64;
    let pixels = to_unit_nchw(&Tensor::from_slice(&pixels).view([count, s, s, 3]), device);
    Ok(CorrectedImages { pixels, labels, count })
}

/// Cached features of everything the head trains and is judged on.
struct RetrainFeatures {
    /// Corrections: the clean view, then `replicate - 1` augmented views, `[K * views, D]`.
    corrections: Tensor,
    correction_labels: Tensor,
    /// The replay sample of the parent's training split, when replay is on.
    pool: Option<(Tensor, Tensor)>,
    pool_size: usize,
    val: Tensor,
}

#[allow(clippy::too_many_arguments)]
fn compute_features(
    cfg: &RetrainConfig,
    parent: &LoadedModel,
    corrected: &CorrectedImages,
    train: &SplitData,
    val: &SplitData,
    rng: &mut ChaCha8Rng,
    observer: &dyn TrainObserver,
    cancel: &AtomicBool,
) -> Result<RetrainFeatures> {
    let device = parent.device;
    let c = parent.classes.len() as i64;
    let aug = AugmentConfig::default();
    let views = cfg.replicate.max(1);
    let k = corrected.count;
    let pool_size = if cfg.replay { train.len().min((4 * views * k as usize).max(200)) } else { 0 };
    let batch = crate::device::inference_batch(device);
    observer.phase("features", (views + pool_size.div_ceil(batch) + val.len().div_ceil(batch)) as u64);
    let corrections = tch::no_grad(|| -> Result<Tensor> {
        let mut parts = vec![parent.features_of_unit(&corrected.pixels)];
        observer.step(None, k as usize);
        for _ in 1..views {
            if cancel.load(Ordering::SeqCst) {
                bail!(crate::Interrupted);
            }
            parts.push(parent.features_of_unit(&augment(&corrected.pixels, &aug, rng)));
            observer.step(None, k as usize);
        }
        Ok(Tensor::cat(&parts, 0))
    })?;
    let correction_labels = Tensor::from_slice(&corrected.labels).view([k, c]).to_device(device).repeat([views as i64, 1]);
    let step = |n: usize| observer.step(None, n);
    let features_of =
        |d: &SplitData, idx: &[usize]| -> Result<Tensor> { Ok(parent.features_of_unit(&to_unit_nchw(&d.pixels(idx)?, device))) };
    let pool = if pool_size > 0 {
        let mut idx: Vec<usize> = (0..train.len()).collect();
        idx.shuffle(rng);
        idx.truncate(pool_size);
        idx.sort_unstable();
        let feats = rows_features(&idx, batch, Some(cancel), &step, &mut |idx| features_of(train, idx))?;
        Some((feats, train.labels(&idx).to_device(device)))
    } else {
        None
    };
    let val_idx: Vec<usize> = (0..val.len()).collect();
    let val = rows_features(&val_idx, batch, Some(cancel), &step, &mut |idx| features_of(val, idx))?;
    Ok(RetrainFeatures { corrections, correction_labels, pool, pool_size, val })
}

/// Fine-tunes the parent's head in place on the corrections (and replay), one record per
/// epoch; the parent's files are untouched.
#[allow(clippy::too_many_arguments)]
fn fine_tune_head(
    cfg: &RetrainConfig,
    parent: &LoadedModel,
    feats: &RetrainFeatures,
    validation: &ValidationSet,
    rng: &mut ChaCha8Rng,
    observer: &dyn TrainObserver,
    cancel: &AtomicBool,
) -> Result<Vec<EpochRecord>> {
    let task = &parent.task;
    let device = parent.device;
    let vars = parent.variables();
    let mut head: Vec<(String, Tensor)> =
        vars.iter().filter(|(n, _)| n.starts_with("head.")).map(|(n, v)| (n.clone(), v.shallow_clone())).collect();
    head.sort_by(|a, b| a.0.cmp(&b.0));
    let params: Vec<Tensor> = head.iter().map(|(_, v)| v.set_requires_grad(true)).collect();
    let mut opt = Adam::new(params, cfg.lr);
    let n_corr = feats.corrections.size()[0];
    let n_replay = feats.pool.as_ref().map_or(0, |_| ((n_corr as f64) * cfg.replay_ratio).round() as i64).min(feats.pool_size as i64);
    let loss = |logits: &Tensor, y: &Tensor| task.loss(logits, y, None);
    let mut records = Vec::new();
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        let (mut x, mut y) = (feats.corrections.shallow_clone(), feats.correction_labels.shallow_clone());
        if let Some((pf, pl)) = &feats.pool {
            let mut pick: Vec<i64> = (0..feats.pool_size as i64).collect();
            pick.shuffle(rng);
            let pick = Tensor::from_slice(&pick[..n_replay as usize]).to_device(device);
            x = Tensor::cat(&[x, pf.index_select(0, &pick)], 0);
            y = Tensor::cat(&[y, pl.index_select(0, &pick)], 0);
        }
        let n = x.size()[0];
        let mut order: Vec<i64> = (0..n).collect();
        order.shuffle(rng);
        observer.phase(&format!("retrain {epoch}/{}", cfg.epochs), (n as usize).div_ceil(cfg.batch_size) as u64);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(cfg.batch_size) {
            if cancel.load(Ordering::SeqCst) {
                bail!(crate::Interrupted);
            }
            let idx = Tensor::from_slice(chunk).to_device(device);
            let step_loss = head_step(parent.head(), &x.index_select(0, &idx), &y.index_select(0, &idx), loss, &mut opt, false, device)?
                .double_value(&[]);
            loss_sum += step_loss * chunk.len() as f64;
            observer.step(Some(step_loss), chunk.len());
        }
        let (val_loss, m) = validation.score(task, |f| parent.head_logits(f, false), loss)?;
        let train_loss = loss_sum / n as f64;
        if !(train_loss.is_finite() && val_loss.is_finite()) {
            bail!("retraining diverged in epoch {epoch}: loss is {train_loss} (train) / {val_loss} (val); lower --lr");
        }
        records.push(EpochRecord::new(epoch, "retrain", train_loss, val_loss, &m, cfg.lr, t0.elapsed().as_secs_f64()));
    }
    for (_, v) in &head {
        let _ = v.set_requires_grad(false);
    }
    Ok(records)
}

/// Whether the new head replaces the parent, and why.
fn promotion(cfg: &RetrainConfig, metric: &str, before: f64, after: f64) -> (bool, String) {
    if cfg.force {
        (true, "forced with --force".to_string())
    } else if after + cfg.tolerance >= before {
        (true, format!("validation {metric} {after:.4} is within {} of the parent's {before:.4}", cfg.tolerance))
    } else {
        (false, format!("validation {metric} fell from {before:.4} to {after:.4}, more than the tolerance {}", cfg.tolerance))
    }
}

/// Runs a retrain; see the module docs.
pub fn retrain(cfg: &RetrainConfig, device: Device, observer: &dyn TrainObserver, cancel: &AtomicBool) -> Result<RetrainOutcome> {
    let started = Instant::now();
    cfg.validate()?;
    let parent = LoadedModel::load(&cfg.from, device)?;
    let data = cfg.data.clone().unwrap_or_else(|| parent.data_dir().to_path_buf());
    let manifest = Manifest::load(&data)?;
    crate::run::check_data_compatible(&parent.task, parent.image_size, &parent.run_dir, &manifest, &data)?;
    let val = SplitData::open(&data, "val", &manifest)?;
    if val.is_empty() {
        bail!("{}: the val split is empty; retrain needs it to decide on promotion", data.display());
    }
    let task = parent.task.clone();
    let c = parent.classes.len();

    let items = read_corrections_csv(&cfg.corrections, &task)?;
    let store = FeedbackStore::open(&cfg.feedback_dir)?;
    let new = store.append(&items)?;
    let all = store.all()?;
    let corrected = load_corrected(&store, &all, &parent, &cfg.feedback_dir, device)?;

    // Both generators seeded: the augmentation and replay draws and the head's dropout repeat.
    tch::manual_seed(cfg.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let train = SplitData::open(&data, "train", &manifest)?;
    let feats = compute_features(cfg, &parent, &corrected, &train, &val, &mut rng, observer, cancel)?;
    let validation = ValidationSet {
        features: feats.val.shallow_clone(),
        labels: val.labels(&(0..val.len()).collect::<Vec<_>>()).to_device(device),
        y: &val.y,
    };

    let half = vec![0.5f32; c];
    let val_metrics = |m: &LoadedModel| -> Result<MultiLabelMetrics> {
        Ok(tch::no_grad(|| score_logits(&task, &m.head_logits(&feats.val, false), &val.y, &half))?.0)
    };
    let corrected_right = |m: &LoadedModel, th: &[f32]| -> Result<usize> {
        let p = tch::no_grad(|| host_values(&task.probabilities(&m.head_logits(&feats.corrections.narrow(0, 0, corrected.count), false))))?;
        Ok(exact_rows(&task, &p, &corrected.labels, th))
    };
    let parent_val = val_metrics(&parent)?;
    let right_before = corrected_right(&parent, &parent.thresholds)?;

    let records = fine_tune_head(cfg, &parent, &feats, &validation, &mut rng, observer, cancel)?;
    let (new_val, val_probs) = tch::no_grad(|| score_logits(&task, &parent.head_logits(&feats.val, false), &val.y, &half))?;
    let thresholds = if task.is_grouped() { half.clone() } else { tune_thresholds(&val_probs, &val.y, c) };
    let right_after = corrected_right(&parent, &thresholds)?;

    let metric = monitored_name(&task);
    let (before, after) = (monitored(&task, &parent_val), monitored(&task, &new_val));
    let (promoted, reason) = promotion(cfg, metric, before, after);

    let run = RunWriter::create(&cfg.runs_dir, &format!("{}_retrain", parent.kind.name()))?;
    let seconds = started.elapsed().as_secs_f64();
    let config = RunConfig::Retrain(Box::new(RetrainRun {
        tool: RetrainTool::Retrain,
        version: crate::VERSION.to_string(),
        created: chrono::Local::now().to_rfc3339(),
        parent: parent.run_dir.clone(),
        retrain_options: cfg.clone(),
        options: InheritedOptions { model: parent.kind, data: data.clone(), tta: parent.tta },
        task: Some(task.kind),
        label_groups: Some(task.groups.clone()),
        corrections_file: cfg.corrections.clone(),
        corrections_sha256: format!("{:x}", Sha256::digest(std::fs::read(&cfg.corrections)?)),
        corrections_used: all
            .iter()
            .map(|c| CorrectionRecord { source: c.source.clone(), sha256: c.sha256.clone(), labels: c.labels.clone() })
            .collect(),
        device: crate::device::name(device),
        data_manifest_sha256: Manifest::file_hash(&data)?,
        classes: parent.classes.clone(),
        image_size: parent.image_size,
        resize: parent.resize,
        normalization: parent.kind.normalization(),
        train_seconds: seconds,
    }));
    write_run_files(&run, &config, &serde_json::json!({"split": "val", "threshold": 0.5, "metrics": new_val}), &records)?;
    if !task.is_grouped() {
        run.write_json(THRESHOLDS_FILE, &Thresholds { classes: parent.classes.clone(), thresholds, tuned_on: "val".into() })?;
    }
    run.write_model(parent.variables())?;
    let mut outcome = RetrainOutcome {
        run_dir: run.target().to_path_buf(),
        parent: parent.run_dir.clone(),
        corrections_new: new.len(),
        corrections_used: all.len(),
        corrected_right_before: right_before,
        corrected_right_after: right_after,
        parent_val_macro_f1: parent_val.macro_f1,
        new_val_macro_f1: new_val.macro_f1,
        monitor: metric.to_string(),
        parent_val_score: before,
        new_val_score: after,
        promoted,
        reason,
        seconds,
    };
    run.write_json(RETRAIN_FILE, &outcome)?;
    if cancel.load(Ordering::SeqCst) {
        bail!(crate::Interrupted);
    }
    let finished = run.finish()?;
    if finished != outcome.run_dir {
        // Another run took the name first: record where this one went.
        outcome.run_dir = finished;
        write_atomic(&outcome.run_dir, RETRAIN_FILE, (serde_json::to_string_pretty(&outcome)? + "\n").as_bytes())?;
    }
    if promoted {
        point_best(&cfg.runs_dir, &outcome.run_dir)?;
    }
    Ok(outcome)
}

/// The default feedback store location inside a runs directory.
pub fn default_feedback_dir(runs_dir: &Path) -> PathBuf {
    runs_dir.join("feedback")
}
