//! The steps of a retrain on the parent's frozen backbone: the corrected images, their
//! features with the replay pool's and validation's, and the head's fine-tuning.

use crate::dataset::prepared::SplitData;
use crate::eval::validation::ValidationSet;
use crate::infer::loaded::LoadedModel;
use crate::io::image::SquareResizer;
use crate::retrain::feedback::{Correction, FeedbackStore, Pending};
use crate::retrain::RetrainConfig;
use crate::tensor::{host_values, to_unit_nchw};
use crate::train::augment::{augment, AugmentConfig};
use crate::train::features::rows_features;
use crate::train::history::{EpochRecord, TrainObserver};
use crate::train::optim::Adam;
use crate::train::step::head_step;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{Device, Tensor};

/// The corrected images at the model's input size: `[K, 3, S, S]` in [0, 1] on the device,
/// their label rows, and the SHA-256 of each one's resized pixels (to find the same image in
/// the prepared splits).
pub struct CorrectedImages {
    pub pixels: Tensor,
    pub labels: Vec<f32>,
    pub count: i64,
    pub pixel_hashes: HashSet<[u8; 32]>,
}

/// Decodes and resizes every stored correction, checking its labels against the task.
pub fn load_corrected(
    store: &FeedbackStore,
    all: &[Correction],
    pending: &[Pending],
    parent: &LoadedModel,
    feedback_dir: &Path,
    max_pixels: u64,
    device: Device,
) -> Result<CorrectedImages> {
    let classes = &parent.classes;
    let s = parent.image_size as i64;
    let mut resizer = SquareResizer::new(parent.image_size, parent.resize, max_pixels);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut pixel_hashes = HashSet::new();
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
        let buf = match pending.iter().find(|p| p.correction.sha256 == corr.sha256) {
            Some(p) => resizer.load_bytes(&p.bytes).map_err(|e| anyhow::anyhow!("{}: {e}", corr.source))?,
            None => resizer
                .load(&store.image_path(corr))
                .map_err(|e| anyhow::anyhow!("feedback image {} ({}): {e}", store.image_path(corr).display(), corr.source))?,
        };
        pixel_hashes.insert(Sha256::digest(&buf).into());
        pixels.extend(buf);
        labels.extend(row);
    }
    let count = all.len() as i64;
    let pixels = to_unit_nchw(&Tensor::from_slice(&pixels).view([count, s, s, 3]), device);
    Ok(CorrectedImages { pixels, labels, count, pixel_hashes })
}

/// The images the promotion gate judges on: the prepared data's test split, which neither the
/// parent nor the candidate was trained, early-stopped or given thresholds on, less any image
/// that is also a correction (the candidate was trained on those). Without a test split, the
/// validation split (which favours the parent: it was early-stopped there).
pub struct GateImages {
    /// `test` or `val`.
    pub split: &'static str,
    /// Backbone features `[n, D]`, and with the run's flip TTA those of the mirrored images.
    pub features: Tensor,
    pub mirrored: Option<Tensor>,
    /// Labels, row-major `[n, C]`.
    pub labels: Vec<f32>,
    /// Test images left out because they are corrections.
    pub excluded: usize,
}

impl GateImages {
    /// Probabilities `[n, C]` (host, row-major) of the parent's head as it is now: the mean
    /// over the image and its mirror when the run scores with TTA, as `predict` does.
    pub fn probabilities(&self, parent: &LoadedModel) -> Result<Vec<f32>> {
        let p = |f: &Tensor| parent.task.probabilities(&parent.head_logits(f, false));
        tch::no_grad(|| match &self.mirrored {
            Some(m) => host_values(&((p(&self.features) + p(m)) / 2.0)),
            None => host_values(&p(&self.features)),
        })
    }
}

/// Features of the gate's images (see [`GateImages`]).
pub fn gate_images(
    parent: &LoadedModel,
    test: &SplitData,
    val_features: &Tensor,
    val: &SplitData,
    corrected: &CorrectedImages,
    cancel: &AtomicBool,
) -> Result<GateImages> {
    let mut keep = Vec::with_capacity(test.len());
    for chunk in (0..test.len()).collect::<Vec<_>>().chunks(64) {
        let bytes = test.pixel_bytes(chunk)?;
        let row = bytes.len() / chunk.len();
        let is_correction = |b: &[u8]| corrected.pixel_hashes.contains(&<[u8; 32]>::from(Sha256::digest(b)));
        keep.extend(chunk.iter().zip(bytes.chunks_exact(row)).filter(|(_, b)| !is_correction(b)).map(|(&i, _)| i));
    }
    let excluded = test.len() - keep.len();
    if keep.is_empty() {
        let features = val_features.shallow_clone();
        return Ok(GateImages { split: "val", features, mirrored: None, labels: val.y.clone(), excluded });
    }
    let c = test.classes;
    let device = parent.device;
    let batch = crate::device::inference_batch(device);
    let mirror = parent.tta;
    let mut plain = Vec::new();
    let mut mirrored = Vec::new();
    for idx in keep.chunks(batch) {
        if cancel.load(Ordering::SeqCst) {
            bail!(crate::Interrupted);
        }
        let xs = to_unit_nchw(&test.pixels(idx)?, device);
        plain.push(parent.features_of_unit(&xs));
        if mirror {
            mirrored.push(parent.features_of_unit(&xs.flip([3])));
        }
    }
    let labels = keep.iter().flat_map(|&i| test.y[i * c..(i + 1) * c].iter().copied()).collect();
    let mirrored = mirror.then(|| Tensor::cat(&mirrored, 0));
    Ok(GateImages { split: "test", features: Tensor::cat(&plain, 0), mirrored, labels, excluded })
}

/// Cached features of everything the head trains and is judged on.
pub struct RetrainFeatures {
    /// Corrections: the clean view, then `replicate - 1` augmented views, `[K * views, D]`.
    pub corrections: Tensor,
    pub correction_labels: Tensor,
    /// The replay sample of the parent's training split, when replay is on.
    pub pool: Option<(Tensor, Tensor)>,
    pub pool_size: usize,
    pub val: Tensor,
}

/// Features of the corrections (clean and augmented views), the replay pool and validation;
/// the draws come from `rng` in that order.
#[allow(clippy::too_many_arguments)]
pub fn compute_features(
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
    let pool_size = match (cfg.no_replay, cfg.replay_all) {
        (true, _) => 0,
        (false, true) => train.len(),
        (false, false) => train.len().min((4 * views * k as usize).max(200)),
    };
    let batch = crate::device::inference_batch(device);
    observer.phase("features", (views + pool_size.div_ceil(batch) + val.len().div_ceil(batch)) as u64);
    let corrections = tch::no_grad(|| -> Result<Tensor> {
        let mut parts = vec![parent.features_of_unit(&corrected.pixels)];
        observer.done(1, None);
        for _ in 1..views {
            if cancel.load(Ordering::SeqCst) {
                bail!(crate::Interrupted);
            }
            parts.push(parent.features_of_unit(&augment(&corrected.pixels, &aug, rng)));
            observer.done(1, None);
        }
        Ok(Tensor::cat(&parts, 0))
    })?;
    let correction_labels = Tensor::from_slice(&corrected.labels).view([k, c]).to_device(device).repeat([views as i64, 1]);
    let step = |_: usize| observer.done(1, None);
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
pub fn fine_tune_head(
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
    let per_epoch = if cfg.replay_all { feats.pool_size as f64 } else { (n_corr as f64) * cfg.replay_ratio };
    let n_replay = feats.pool.as_ref().map_or(0, |_| per_epoch.round() as i64).min(feats.pool_size as i64);
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
            observer.done(1, Some(step_loss));
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
