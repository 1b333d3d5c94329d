//! `retrain`: incremental learning from user corrections. The corrected images (all in the
//! feedback store) are replicated with augmentation, mixed with a replay sample of the
//! parent's training data, and the parent's head is fine-tuned on cached backbone features.
//! The result is a new run; it replaces `runs/best` only if it is not worse than its parent
//! on validation by more than a tolerance (or when forced), atomically.

use crate::augment::{augment, AugmentConfig};
use crate::data::{host_values, to_unit_nchw, SplitData};
use crate::evaluate::check_compatible;
use crate::feedback::{read_corrections_csv, FeedbackStore};
use crate::imageio::{decode_file, SquareResizer};
use crate::inference::{LoadedModel, Thresholds};
use crate::manifest::Manifest;
use crate::metrics::{tune_thresholds, MultiLabelMetrics};
use crate::optim::Adam;
use crate::runs::{point_best, RunWriter, CLASSES_FILE, CONFIG_FILE, CURVES_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, THRESHOLDS_FILE};
use crate::task::Task;
use crate::train::{history_csv, monitored, monitored_name, score_logits, write_training_curves, EpochRecord, TrainObserver};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Every retrain option; recorded in the new run's config.
#[derive(Debug, Clone, Serialize)]
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

fn exact_rows(task: &Task, probs: &[f32], labels: &[f32], th: &[f32]) -> usize {
    let c = task.classes.len();
    task.decide(probs, th)
        .chunks(c)
        .zip(labels.chunks(c))
        .filter(|(d, y)| d.iter().zip(y.iter()).all(|(d, y)| (*d >= 0.5) == (*y >= 0.5)))
        .count()
}

/// Runs a retrain; see the module docs.
pub fn retrain(cfg: &RetrainConfig, device: Device, observer: &dyn TrainObserver, cancel: &AtomicBool) -> Result<RetrainOutcome> {
    let started = Instant::now();
    if !(cfg.replay_ratio.is_finite() && cfg.replay_ratio >= 0.0) {
        bail!("--replay-ratio {}: expected a number >= 0", cfg.replay_ratio);
    }
    if !(cfg.tolerance.is_finite() && cfg.tolerance >= 0.0) {
        bail!("--tolerance {}: expected a number >= 0", cfg.tolerance);
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        bail!("--lr {}: expected a positive learning rate", cfg.lr);
    }
    let parent = LoadedModel::load(&cfg.from, device)?;
    let data = match cfg.data.clone().or_else(|| parent.data_dir()) {
        Some(d) => d,
        None => bail!("{}: the parent run records no data directory; pass --data", cfg.from.display()),
    };
    let manifest = Manifest::load(&data)?;
    check_compatible(&parent.task, parent.image_size, &parent.run_dir, &manifest, &data)?;
    let val = SplitData::open(&data, "val", &manifest)?;
    if val.is_empty() {
        bail!("{}: the val split is empty; retrain needs it to decide on promotion", data.display());
    }
    let c = parent.classes.len();
    let classes = parent.classes.clone();
    let task = parent.task.clone();

    let items = read_corrections_csv(&cfg.corrections, &task)?;
    let store = FeedbackStore::open(&cfg.feedback_dir)?;
    let new = store.append(&items)?;
    let all = store.all()?;

    // Corrected images at the model's input size, and their labels.
    let s = parent.image_size as i64;
    let mut resizer = SquareResizer::new(parent.image_size, parent.resize);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for corr in &all {
        let row: Vec<f32> = classes.iter().map(|cl| corr.labels.contains(cl) as u8 as f32).collect();
        if let Some(l) = corr.labels.iter().find(|l| !classes.contains(l)) {
            bail!(
                "{}: the stored correction of {} has label {l:?}, which this model does not have; keep each model's corrections apart with --feedback-dir",
                cfg.feedback_dir.display(),
                corr.source
            );
        }
        task.check_row(&row)
            .map_err(|e| anyhow::anyhow!("{}: the stored correction of {}: {e}", cfg.feedback_dir.display(), corr.source))?;
        let img = decode_file(&store.image_path(corr))
            .map_err(|e| anyhow::anyhow!("feedback image {} ({}): {e}", store.image_path(corr).display(), corr.source))?;
        let mut buf = vec![0u8; resizer.output_len()];
        resizer.resize_into(&img, &mut buf).map_err(anyhow::Error::msg)?;
        pixels.extend(buf);
        labels.extend(row);
    }
    let k = all.len() as i64;
    let corr_px = to_unit_nchw(&Tensor::from_slice(&pixels).view([k, s, s, 3]), device);
    let corr_y = Tensor::from_slice(&labels).view([k, c as i64]).to_device(device);

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let aug = AugmentConfig::default();
    let views = cfg.replicate.max(1);
    let train = SplitData::open(&data, "train", &manifest)?;
    let pool_size = if cfg.replay { train.len().min((4 * views * all.len()).max(200)) } else { 0 };
    let batch = crate::device::inference_batch(device);
    let steps = views + pool_size.div_ceil(batch) + val.len().div_ceil(batch);
    observer.phase("features", steps as u64);
    let corr_feats = tch::no_grad(|| -> Result<Tensor> {
        let mut parts = vec![parent.features_of_unit(&corr_px)];
        observer.step(None, k as usize);
        for _ in 1..views {
            if cancel.load(Ordering::SeqCst) {
                bail!(crate::Interrupted);
            }
            parts.push(parent.features_of_unit(&augment(&corr_px, &aug, &mut rng)));
            observer.step(None, k as usize);
        }
        Ok(Tensor::cat(&parts, 0))
    })?;
    let corr_labels = corr_y.repeat([views as i64, 1]);
    let feats_of = |d: &SplitData, idx: &[usize]| -> Result<Tensor> {
        let mut parts = Vec::new();
        for chunk in idx.chunks(batch) {
            if cancel.load(Ordering::SeqCst) {
                bail!(crate::Interrupted);
            }
            parts.push(parent.features_of_unit(&to_unit_nchw(&d.pixels(chunk)?, device)));
            observer.step(None, chunk.len());
        }
        Ok(Tensor::cat(&parts, 0))
    };
    let (pool_feats, pool_labels) = if pool_size > 0 {
        let mut idx: Vec<usize> = (0..train.len()).collect();
        idx.shuffle(&mut rng);
        idx.truncate(pool_size);
        idx.sort_unstable();
        (Some(feats_of(&train, &idx)?), Some(train.labels(&idx).to_device(device)))
    } else {
        (None, None)
    };
    let val_idx: Vec<usize> = (0..val.len()).collect();
    let val_feats = feats_of(&val, &val_idx)?;

    let half = vec![0.5f32; c];
    let val_metrics = |m: &LoadedModel| -> Result<MultiLabelMetrics> {
        Ok(tch::no_grad(|| score_logits(&task, &m.head_logits(&val_feats, false), &val.y, &half))?.0)
    };
    let corrected_right = |m: &LoadedModel, th: &[f32]| -> Result<usize> {
        let p = tch::no_grad(|| host_values(&task.probabilities(&m.head_logits(&corr_feats.narrow(0, 0, k), false))))?;
        Ok(exact_rows(&task, &p, &labels, th))
    };
    let parent_val = val_metrics(&parent)?;
    let right_before = corrected_right(&parent, &parent.thresholds)?;

    // Fine-tune the head in place (the parent's files are untouched).
    let vars = parent.variables();
    let mut head: Vec<(String, Tensor)> =
        vars.iter().filter(|(n, _)| n.starts_with("head.")).map(|(n, v)| (n.clone(), v.shallow_clone())).collect();
    head.sort_by(|a, b| a.0.cmp(&b.0));
    let params: Vec<Tensor> = head.iter().map(|(_, v)| v.set_requires_grad(true)).collect();
    let mut opt = Adam::new(params, cfg.lr);
    let n_corr = corr_feats.size()[0];
    let n_replay = pool_feats.as_ref().map_or(0, |_| ((n_corr as f64) * cfg.replay_ratio).round() as i64).min(pool_size as i64);
    let mut records = Vec::new();
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        let (mut x, mut y) = (corr_feats.shallow_clone(), corr_labels.shallow_clone());
        if let (Some(pf), Some(pl)) = (&pool_feats, &pool_labels) {
            let mut pick: Vec<i64> = (0..pool_size as i64).collect();
            pick.shuffle(&mut rng);
            let pick = Tensor::from_slice(&pick[..n_replay as usize]).to_device(device);
            x = Tensor::cat(&[x, pf.index_select(0, &pick)], 0);
            y = Tensor::cat(&[y, pl.index_select(0, &pick)], 0);
        }
        let n = x.size()[0];
        let mut order: Vec<i64> = (0..n).collect();
        order.shuffle(&mut rng);
        observer.phase(&format!("retrain {epoch}/{}", cfg.epochs), (n as usize).div_ceil(cfg.batch_size) as u64);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(cfg.batch_size.max(1)) {
            if cancel.load(Ordering::SeqCst) {
                bail!(crate::Interrupted);
            }
            let idx = Tensor::from_slice(chunk).to_device(device);
            let logits = parent.head_logits(&x.index_select(0, &idx), true);
            let loss = task.loss(&logits, &y.index_select(0, &idx), None);
            opt.backward_step(&loss);
            let l = loss.double_value(&[]);
            loss_sum += l * chunk.len() as f64;
            observer.step(Some(l), chunk.len());
        }
        let (val_loss, m) = tch::no_grad(|| -> Result<_> {
            let logits = parent.head_logits(&val_feats, false);
            let vy = val.labels(&val_idx).to_device(device);
            let vl = task.loss(&logits, &vy, None).double_value(&[]);
            Ok((vl, score_logits(&task, &logits, &val.y, &half)?.0))
        })?;
        let rec = EpochRecord {
            epoch,
            phase: "retrain",
            train_loss: loss_sum / n as f64,
            val_loss,
            val_macro_f1: m.macro_f1,
            val_micro_f1: m.micro_f1,
            val_accuracy: m.subset_accuracy,
            lr: cfg.lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        records.push(rec);
    }
    for (_, v) in &head {
        let _ = v.set_requires_grad(false);
    }
    let (new_val, val_probs) = tch::no_grad(|| score_logits(&task, &parent.head_logits(&val_feats, false), &val.y, &half))?;
    let thresholds = if task.is_grouped() { half.clone() } else { tune_thresholds(&val_probs, &val.y, c) };
    let right_after = corrected_right(&parent, &thresholds)?;

    let metric = monitored_name(&task);
    let (before, after) = (monitored(&task, &parent_val), monitored(&task, &new_val));
    let (promoted, reason) = if cfg.force {
        (true, "forced with --force".to_string())
    } else if after + cfg.tolerance >= before {
        (true, format!("validation {metric} {after:.4} is within {} of the parent's {before:.4}", cfg.tolerance))
    } else {
        (false, format!("validation {metric} fell from {before:.4} to {after:.4}, more than the tolerance {}", cfg.tolerance))
    };

    // The new run.
    let run = RunWriter::create(&cfg.runs_dir, &format!("{}_retrain", parent.kind.name()))?;
    let csv_hash = format!("{:x}", Sha256::digest(std::fs::read(&cfg.corrections)?));
    let seconds = started.elapsed().as_secs_f64();
    let config = serde_json::json!({
        "tool": "retrain",
        "version": crate::VERSION,
        "created": chrono::Local::now().to_rfc3339(),
        "parent": parent.run_dir,
        "retrain_options": cfg,
        "options": {"model": parent.kind, "data": data, "tta": parent.tta},
        "task": task.kind,
        "label_groups": task.groups,
        "corrections_file": cfg.corrections,
        "corrections_sha256": csv_hash,
        "corrections_used": all.iter().map(|c| serde_json::json!({"source": c.source, "sha256": c.sha256, "labels": c.labels})).collect::<Vec<_>>(),
        "device": format!("{device:?}").to_lowercase(),
        "data_manifest_sha256": Manifest::file_hash(&data)?,
        "classes": classes,
        "image_size": parent.image_size,
        "resize": parent.resize,
        "normalization": parent.kind.normalization(),
        "train_seconds": seconds,
    });
    run.write_json(CONFIG_FILE, &config)?;
    run.write_json(CLASSES_FILE, &classes)?;
    run.write_json(METRICS_FILE, &serde_json::json!({"split": "val", "threshold": 0.5, "metrics": new_val}))?;
    if !task.is_grouped() {
        run.write_json(THRESHOLDS_FILE, &Thresholds { classes: classes.clone(), thresholds, tuned_on: "val".into() })?;
    }
    run.write_text(HISTORY_FILE, &history_csv(&records))?;
    write_training_curves(&records, &run.dir().join(CURVES_FILE))?;
    let mut tensors: Vec<(String, Tensor)> =
        vars.into_iter().map(|(n, v)| (n, v.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous())).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&tensors, run.dir().join(MODEL_FILE)).context("cannot write model.safetensors")?;
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
    run.write_json("retrain.json", &outcome)?;
    if cancel.load(Ordering::SeqCst) {
        bail!(crate::Interrupted);
    }
    outcome.run_dir = run.finish()?;
    if promoted {
        point_best(&cfg.runs_dir, &outcome.run_dir)?;
    }
    Ok(outcome)
}

/// The default feedback store location inside a runs directory.
pub fn default_feedback_dir(runs_dir: &Path) -> PathBuf {
    runs_dir.join("feedback")
}
