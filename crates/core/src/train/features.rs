//! Backbone features without gradients: of a whole split in batches, and the frozen-backbone
//! feature cache (a clean view plus augmented views of every training image, filled in
//! place) that lets later epochs train only the head.

use crate::dataset::prepared::SplitData;
use crate::model::{BackboneKind, BackboneNet};
use crate::tensor::upload;
use crate::train::augment::AugmentConfig;
use crate::train::history::TrainObserver;
use crate::train::step::{model_input, SpeedOptions};
use anyhow::{bail, Context, Result};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Device, Kind, Tensor};

/// Row ranges of `n` rows in batches of `b`.
pub fn batches(n: usize, b: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n.div_ceil(b)).map(move |i| i * b..((i + 1) * b).min(n))
}

/// How a training run computes features: the backbone, its kind and the speed options.
#[derive(Clone, Copy)]
pub struct Extractor<'a> {
    pub net: &'a dyn BackboneNet,
    pub kind: BackboneKind,
    /// Width of the features `net` gives.
    pub dim: i64,
    pub device: Device,
    pub speed: SpeedOptions,
}

impl Extractor<'_> {
    /// Features (float32) of rows `idx` (clean or augmented) without gradients.
    pub fn rows(&self, data: &SplitData, idx: &[usize], aug: Option<(&AugmentConfig, &mut ChaCha8Rng)>) -> Result<Tensor> {
        let px = upload(&data.pixels(idx)?, self.device);
        tch::no_grad(|| {
            let xs = model_input(&px, aug, &self.kind.normalization(), self.speed);
            crate::device::bf16_autocast(self.speed.bf16, self.device, || self.net.features(&xs).to_kind(Kind::Float))
        })
    }

    /// Features of every row of `data`, in batches of `batch`.
    pub fn split(&self, data: &SplitData, batch: usize) -> Result<Tensor> {
        split_features(data, batch, None, &|_: usize| (), &mut |idx| self.rows(data, idx, None))
    }
}

/// Features of every row of `data` in batches of `batch`, by `features_of(rows)`; checks
/// `cancel` before each batch and reports each to `step`.
pub fn split_features(
    data: &SplitData,
    batch: usize,
    cancel: Option<&AtomicBool>,
    step: &dyn Fn(usize),
    features_of: &mut dyn FnMut(&[usize]) -> Result<Tensor>,
) -> Result<Tensor> {
    let idx: Vec<usize> = (0..data.len()).collect();
    rows_features(&idx, batch, cancel, step, features_of)
}

/// Features of rows `idx` in batches of `batch` (see [`split_features`]).
pub fn rows_features(
    idx: &[usize],
    batch: usize,
    cancel: Option<&AtomicBool>,
    step: &dyn Fn(usize),
    features_of: &mut dyn FnMut(&[usize]) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(idx.len().div_ceil(batch.max(1)));
    for chunk in idx.chunks(batch.max(1)) {
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            bail!(crate::Interrupted);
        }
        parts.push(features_of(chunk)?);
        step(chunk.len());
    }
    Ok(Tensor::cat(&parts, 0))
}

/// Cached features of a frozen backbone: `train` is `[views, N, D]` (view 0 clean, the others
/// augmented), `val` is `[N_val, D]`.
pub struct FeatureCache {
    pub train: Tensor,
    pub val: Tensor,
    pub views: usize,
}

impl FeatureCache {
    /// Computes the cache batch by batch into tensors allocated once (no per-batch parts to
    /// concatenate). The augmented views draw from `rng` in order: view, then row.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        ex: &Extractor,
        train: &SplitData,
        val: &SplitData,
        augment: Option<&AugmentConfig>,
        views: usize,
        batch: usize,
        rng: &mut ChaCha8Rng,
        observer: &dyn TrainObserver,
        cancel: &AtomicBool,
    ) -> Result<FeatureCache> {
        let n = train.len();
        let total = (n * views + val.len()).div_ceil(batch);
        observer.phase("features", total as u64);
        let dim = ex.dim;
        let cache = Tensor::empty([views as i64, n as i64, dim], (Kind::Float, ex.device));
        let val_cache = Tensor::empty([val.len() as i64, dim], (Kind::Float, ex.device));
        // (rows, destination, augmented): the clean training view, the augmented ones, validation.
        let fills = (0..views).map(|v| (train, cache.get(v as i64), v > 0)).chain(std::iter::once((val, val_cache.shallow_clone(), false)));
        for (data, dst, augmented) in fills {
            for r in batches(data.len(), batch) {
                if cancel.load(Ordering::SeqCst) {
                    bail!(crate::Interrupted);
                }
                let idx: Vec<usize> = r.clone().collect();
                let aug = if augmented { augment.map(|a| (a, &mut *rng)) } else { None };
                let feats = ex.rows(data, &idx, aug)?;
                dst.narrow(0, r.start as i64, idx.len() as i64)
                    .f_copy_(&feats)
                    .with_context(|| format!("{}: features of shape {:?}, expected {dim} per image", ex.kind.name(), feats.size()))?;
                observer.done(1, None);
            }
        }
        Ok(FeatureCache { train: cache, val: val_cache, views })
    }

    /// Cached features of training rows `rows`, each from the view in `view`.
    pub fn gather(&self, rows: &[usize], view: &[i64], device: Device) -> Tensor {
        let rows: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        let vi = upload(&Tensor::from_slice(view), device);
        let ri = upload(&Tensor::from_slice(&rows), device);
        self.train.index(&[Some(vi), Some(ri)])
    }
}
