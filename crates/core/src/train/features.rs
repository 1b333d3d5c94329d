//! Backbone features without gradients: of a whole split in batches, and the caches of a
//! frozen backbone (a clean view plus augmented views of every training image, filled in
//! place): its pooled features, which let later epochs train only the head, or its trunk's
//! activations, which let fine-tuning run only the last blocks on them (cached-tail
//! fine-tuning, the one forward pass here with gradients).

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

/// What a cache holds per image: the pooled features, or the activations entering the last
/// N blocks (`Trunk(N)`, see [`BackboneNet::trunk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStage {
    Features,
    Trunk(usize),
}

impl Extractor<'_> {
    /// Features (float32) of rows `idx` (clean or augmented) without gradients.
    pub fn rows(&self, data: &SplitData, idx: &[usize], aug: Option<(&AugmentConfig, &mut ChaCha8Rng)>) -> Result<Tensor> {
        self.rows_at(CacheStage::Features, data, idx, aug)
    }

    /// What `stage` names (float32) of rows `idx` without gradients.
    fn rows_at(
        &self,
        stage: CacheStage,
        data: &SplitData,
        idx: &[usize],
        aug: Option<(&AugmentConfig, &mut ChaCha8Rng)>,
    ) -> Result<Tensor> {
        let px = upload(&data.pixels(idx)?, self.device);
        tch::no_grad(|| {
            let xs = model_input(&px, aug, &self.kind.normalization(), self.speed);
            crate::device::bf16_autocast(self.speed.bf16, self.device, || {
                let out = match stage {
                    CacheStage::Features => Some(self.net.features(&xs)),
                    CacheStage::Trunk(blocks) => self.net.trunk(&xs, blocks),
                };
                out.map(|t| t.to_kind(Kind::Float)).with_context(|| format!("{} cannot be split there ({stage:?})", self.kind.name()))
            })?
        })
    }

    /// Pooled features of the last `tail_blocks` blocks on trunk activations `trunk`, with
    /// gradients (cached-tail fine-tuning).
    pub fn tail(&self, trunk: &Tensor, tail_blocks: usize) -> Result<Tensor> {
        crate::device::bf16_autocast(self.speed.bf16, self.device, || {
            self.net
                .tail_features(trunk, tail_blocks)
                .with_context(|| format!("{} cannot be split before its last {tail_blocks} blocks", self.kind.name()))
        })?
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

/// Cached outputs of a frozen backbone (pooled features or trunk activations, as
/// [`CacheStage`] says): `train` is `[views, N, ...]` (view 0 clean, the others augmented),
/// `val` is `[N_val, ...]`.
pub struct FeatureCache {
    pub train: Tensor,
    pub val: Tensor,
    pub views: usize,
}

/// The cache of cached-tail fine-tuning: the frozen trunk's activations entering the last
/// `tail_blocks` blocks, from which those blocks and the head train.
pub struct TrunkCache {
    pub acts: FeatureCache,
    pub tail_blocks: usize,
}

impl TrunkCache {
    /// Pooled features of validation rows through the current tail, without gradients.
    pub fn val_features(&self, ex: &Extractor, batch: usize) -> Result<Tensor> {
        tail_features(ex, &self.acts.val, self.tail_blocks, batch)
    }
}

/// Pooled features (float32) of the last `tail_blocks` blocks on every row of trunk
/// activations `acts`, in batches of `batch`, without gradients.
fn tail_features(ex: &Extractor, acts: &Tensor, tail_blocks: usize, batch: usize) -> Result<Tensor> {
    let parts = batches(acts.size()[0] as usize, batch)
        .map(|r| tch::no_grad(|| ex.tail(&acts.narrow(0, r.start as i64, r.len() as i64), tail_blocks)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0).to_kind(Kind::Float))
}

impl FeatureCache {
    /// Computes the cache batch by batch into tensors allocated once (no per-batch parts to
    /// concatenate). The augmented views draw from `rng` in order: view, then row.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        ex: &Extractor,
        stage: CacheStage,
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
        observer.phase(if stage == CacheStage::Features { "features" } else { "activations" }, total as u64);
        // Allocated at the first batch, when the shape of one image's output is known.
        let mut caches: Option<(Tensor, Tensor)> = None;
        // (rows, view or None for validation, augmented): the clean training view, the augmented ones, validation.
        let fills = (0..views).map(|v| (train, Some(v as i64), v > 0)).chain(std::iter::once((val, None, false)));
        for (data, view, augmented) in fills {
            for r in batches(data.len(), batch) {
                if cancel.load(Ordering::SeqCst) {
                    bail!(crate::Interrupted);
                }
                let idx: Vec<usize> = r.clone().collect();
                let aug = if augmented { augment.map(|a| (a, &mut *rng)) } else { None };
                let out = ex.rows_at(stage, data, &idx, aug)?;
                if stage == CacheStage::Features && out.size().get(1) != Some(&ex.dim) {
                    bail!("{}: features of shape {:?}, expected {} per image", ex.kind.name(), out.size(), ex.dim);
                }
                let (cache, val_cache) = caches.get_or_insert_with(|| {
                    let item = &out.size()[1..];
                    let opts = (Kind::Float, ex.device);
                    (
                        Tensor::empty([&[views as i64, n as i64], item].concat(), opts),
                        Tensor::empty([&[val.len() as i64], item].concat(), opts),
                    )
                });
                let dst = match view {
                    Some(v) => cache.get(v),
                    None => val_cache.shallow_clone(),
                };
                dst.narrow(0, r.start as i64, idx.len() as i64).f_copy_(&out).with_context(|| {
                    format!("{}: outputs of shape {:?}, expected {:?} per image", ex.kind.name(), out.size(), &dst.size()[1..])
                })?;
                observer.done(1, None);
            }
        }
        let (train, val) = caches.context("no images to cache")?;
        Ok(FeatureCache { train, val, views })
    }

    /// The pooled features of this trunk cache (the last `tail_blocks` blocks run on every
    /// cached activation, without gradients), in batches of `batch`: the head-only phase's
    /// cache, at the cost of the tail alone.
    pub fn pooled(&self, ex: &Extractor, tail_blocks: usize, batch: usize) -> Result<FeatureCache> {
        let pool = |acts: &Tensor| tail_features(ex, acts, tail_blocks, batch);
        let train = (0..self.views as i64).map(|v| pool(&self.train.get(v))).collect::<Result<Vec<_>>>()?;
        Ok(FeatureCache { train: Tensor::stack(&train, 0), val: pool(&self.val)?, views: self.views })
    }

    /// Cached features of training rows `rows`, each from the view in `view`.
    pub fn gather(&self, rows: &[usize], view: &[i64], device: Device) -> Tensor {
        let rows: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        let vi = upload(&Tensor::from_slice(view), device);
        let ri = upload(&Tensor::from_slice(&rows), device);
        self.train.index(&[Some(vi), Some(ri)])
    }
}
