//! The epoch loop of `train`: shuffled batches through the head (on cached features) or
//! the backbone and head (pixels, augmented on the fly), validation after every epoch, the
//! plateau schedule, and early stopping with a snapshot of the best epoch's weights.

use crate::dataset::prepared::SplitData;
use crate::eval::validation::{Validation, ValidationSet};
use crate::model::head::Head;
use crate::task::Task;
use crate::train::features::{Extractor, FeatureCache, TrunkCache};
use crate::train::history::{EpochRecord, TrainObserver};
use crate::train::optim::Adam;
use crate::train::schedule::{cosine, Plateau, Scheduler};
use crate::train::step::{head_step, model_input, ImageSource};
use crate::train::TrainConfig;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{nn, Kind, Tensor};

/// The phases of a training run, as named in `history.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Head on a frozen backbone.
    Frozen,
    /// A from-scratch model, every layer.
    Scratch,
    /// The last backbone blocks with the head.
    FineTune,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Frozen => "frozen",
            Phase::Scratch => "train",
            Phase::FineTune => "fine-tune",
        }
    }

    /// Whether the backbone's parameters are trained (and so run with gradients).
    fn trains_backbone(self) -> bool {
        self != Phase::Frozen
    }
}

/// The best epoch so far: its monitored score, number and a copy of every variable.
pub struct Best {
    pub score: f64,
    pub epoch: usize,
    snapshot: Vec<(String, Tensor)>,
}

/// Everything the epochs of one training run share.
pub struct EpochLoop<'a> {
    pub cfg: &'a TrainConfig,
    pub task: &'a Task,
    pub train: &'a SplitData,
    pub val: &'a SplitData,
    /// Validation labels on the device.
    pub val_labels: Tensor,
    pub extractor: Extractor<'a>,
    pub head: &'a Head,
    pub pos_weight: Option<&'a Tensor>,
    pub cache: Option<&'a FeatureCache>,
    /// The frozen trunk's activations, when fine-tuning runs the tail on them.
    pub trunk: Option<&'a TrunkCache>,
    /// Whether backbone weights may differ from those `cache` was computed with (from the
    /// fine-tuning phase on): validation then runs the backbone (or the tail) again.
    pub backbone_tuned: bool,
    pub source: Option<&'a ImageSource<'a>>,
    /// Feature views per training image in the cache.
    pub views: usize,
    /// The head's and the backbone's variables (snapshots and restores cover both).
    pub variables: [&'a nn::VarStore; 2],
    pub rng: &'a mut ChaCha8Rng,
    pub observer: &'a dyn TrainObserver,
    pub cancel: &'a AtomicBool,
    pub history: Vec<EpochRecord>,
    pub best: Option<Best>,
}

impl EpochLoop<'_> {
    fn loss(&self, logits: &Tensor, y: &Tensor) -> Tensor {
        self.task.loss(logits, y, self.pos_weight)
    }

    /// Validation loss, metrics and mAP of the current weights.
    pub fn validate(&self) -> Result<Validation> {
        let features = match (self.cache, self.trunk) {
            (Some(c), _) if !self.backbone_tuned => c.val.shallow_clone(),
            (_, Some(t)) => t.val_features(&self.extractor, 64)?,
            _ => self.extractor.split(self.val, 64)?,
        };
        let set = ValidationSet { features, labels: self.val_labels.shallow_clone(), y: &self.val.y };
        set.validate(self.task, |f| self.head.forward_t(f, false), |l, y| self.loss(l, y))
    }

    /// Runs up to `epochs` epochs of `phase` (numbered after `epoch_offset`), stopping early
    /// after `cfg.patience` epochs without a better monitored score.
    pub fn run(&mut self, phase: Phase, epochs: usize, opt: &mut Adam, epoch_offset: usize) -> Result<()> {
        let cfg = self.cfg;
        let mut since_best = 0;
        let mut plateau =
            (cfg.scheduler == Scheduler::Plateau).then(|| Plateau::new(cfg.plateau_factor, cfg.plateau_patience, opt.lr * 1e-3));
        let base_lr = opt.lr;
        for e in 0..epochs {
            if cfg.scheduler == Scheduler::Cosine {
                opt.lr = cosine(base_lr, e, epochs);
            }
            let t0 = Instant::now();
            let train_loss = self.train_epoch(phase, &format!("{} {}/{}", phase.name(), e + 1, epochs), opt)?;
            let v = self.validate()?;
            let (val_loss, m) = (v.loss, &v.metrics);
            if !(train_loss.is_finite() && val_loss.is_finite()) {
                bail!(
                    "training diverged in epoch {}: loss is {} (train) / {} (val); lower --lr or check the data for bad values",
                    epoch_offset + e + 1,
                    train_loss,
                    val_loss
                );
            }
            let rec = EpochRecord::new(epoch_offset + e + 1, phase.name(), train_loss, val_loss, m, opt.lr, t0.elapsed().as_secs_f64());
            self.observer.epoch(&rec);
            self.history.push(rec.clone());
            if let Some(p) = plateau.as_mut() {
                opt.lr = p.step(val_loss, opt.lr);
            }
            let score = cfg.monitor.score(self.task, &v);
            // A refit has no held-out data to stop on: every epoch is the latest best.
            if cfg.refit || self.best.as_ref().is_none_or(|b| score > b.score + 1e-9) {
                let snapshot = self.variables.iter().flat_map(|vs| vs.variables()).map(|(k, v)| (k, v.detach().copy())).collect();
                self.best = Some(Best { score, epoch: rec.epoch, snapshot });
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= cfg.patience {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Trains `phase` once per L2 weight decay in `candidates`, each from the same starting
    /// weights and batch order, and keeps the one whose best epoch scores highest on
    /// validation (its best epoch and history become the loop's). Returns the chosen value.
    pub fn run_per_weight_decay(&mut self, phase: Phase, epochs: usize, lr: f64, params: &[Tensor], candidates: &[f64]) -> Result<f64> {
        let start: Vec<(String, Tensor)> =
            self.variables.iter().flat_map(|vs| vs.variables()).map(|(k, v)| (k, v.detach().copy())).collect();
        let rng = self.rng.clone();
        let mut winner: Option<(f64, Best, Vec<EpochRecord>)> = None;
        for &wd in candidates {
            self.load(&start);
            self.best = None;
            self.history.clear();
            *self.rng = rng.clone();
            tch::manual_seed(self.cfg.seed as i64);
            self.observer.note(&format!("weight decay {wd}"));
            self.run(phase, epochs, &mut Adam::new(params.iter().map(Tensor::shallow_clone).collect(), lr).with_weight_decay(wd), 0)?;
            let best = self.best.take().context("no epoch completed")?;
            self.observer.note(&format!("weight decay {wd}: best validation score {:.4} (epoch {})", best.score, best.epoch));
            if winner.as_ref().is_none_or(|w| best.score > w.1.score + 1e-9) {
                winner = Some((wd, best, std::mem::take(&mut self.history)));
            }
        }
        let (wd, best, history) = winner.context("no weight decay to try")?;
        self.best = Some(best);
        self.history = history;
        Ok(wd)
    }

    /// One pass over the shuffled training split; the mean training loss.
    fn train_epoch(&mut self, phase: Phase, label: &str, opt: &mut Adam) -> Result<f64> {
        let (cfg, device) = (self.cfg, self.extractor.device);
        let read_loss_every = if device.is_cuda() { 20 } else { 1 };
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(self.rng);
        self.observer.phase(label, order.len().div_ceil(cfg.batch_size) as u64);
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        let mut seen = 0usize;
        for (step, chunk) in order.chunks(cfg.batch_size).enumerate() {
            if self.cancel.load(Ordering::SeqCst) {
                bail!(crate::Interrupted);
            }
            let y = self.task.smooth_targets(&crate::tensor::upload(&self.train.labels(chunk), device), cfg.label_smoothing);
            let feats = self.batch_features(phase, chunk)?;
            let loss = head_step(self.head, &feats, &y, |l, y| self.loss(l, y), opt, cfg.speed.bf16, device)?;
            loss_sum += loss.detach() * chunk.len() as f64;
            seen += chunk.len();
            let shown = (step % read_loss_every == 0).then(|| loss.double_value(&[]));
            self.observer.done(1, shown);
        }
        Ok(loss_sum.double_value(&[]) / seen.max(1) as f64)
    }

    /// Features of training rows `chunk`: from a random cached view when the backbone is
    /// frozen and cached, through the tail (with gradients) from a random cached view of the
    /// trunk's activations when fine-tuning from them, else by running the backbone on
    /// (augmented) pixels.
    fn batch_features(&mut self, phase: Phase, chunk: &[usize]) -> Result<Tensor> {
        let (cfg, ex) = (self.cfg, self.extractor);
        let random_views = |rng: &mut ChaCha8Rng| -> Vec<i64> { chunk.iter().map(|_| rng.gen_range(0..self.views) as i64).collect() };
        match (self.cache, self.trunk, phase.trains_backbone()) {
            (Some(cache), _, false) => return Ok(cache.gather(chunk, &random_views(self.rng), ex.device)),
            (_, Some(trunk), true) => return ex.tail(&trunk.acts.gather(chunk, &random_views(self.rng), ex.device), trunk.tail_blocks),
            _ => {}
        }
        let px = self.source.context("no image source")?.batch(chunk, ex.device)?;
        let aug = cfg.augment.as_ref().map(|a| (a, &mut *self.rng));
        let xs = model_input(&px, aug, &ex.kind.normalization(), cfg.speed);
        crate::train::step::backbone_features(ex.net, &xs, phase.trains_backbone(), cfg.speed.bf16, ex.device)
    }

    /// Copies the best epoch's weights back into the model (no-op before any epoch).
    pub fn restore_best(&self) {
        if let Some(best) = &self.best {
            self.load(&best.snapshot);
        }
    }

    /// Copies saved values into the variables of the same names.
    fn load(&self, snapshot: &[(String, Tensor)]) {
        let [hv, bv] = self.variables.map(|vs| vs.variables());
        tch::no_grad(|| {
            for (name, saved) in snapshot {
                if let Some(v) = hv.get(name).or_else(|| bv.get(name)) {
                    let mut v = v.shallow_clone();
                    v.copy_(saved);
                }
            }
        });
    }
}
