//! The options blocks a run records in `config.json`, read in either schema: the current one
//! (by flag names), or the field names of runs written before it (`Legacy*`), which are turned
//! into the current schema when read.

use super::{HeadWidths, Monitor, RetrainOptions, Scheduler, TrainOptions};
use crate::model::BackboneKind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The `options` block of a train run's `config.json`: the schema above, or, in runs written
/// before it (told apart by their `cache_features` key), the options by field name.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RecordedTrainOptions {
    Flags(TrainOptions),
    Legacy(LegacyTrainOptions),
}

/// Reads one of two schemas, the older told by a key only it has, so a bad value is reported
/// by the schema it was written in.
fn one_of<'de, D, New, Old, T>(d: D, legacy_key: &str, new: fn(New) -> T, old: fn(Old) -> T) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    New: serde::de::DeserializeOwned,
    Old: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    let value = serde_json::Value::deserialize(d)?;
    if value.get(legacy_key).is_some() {
        serde_json::from_value(value).map(old).map_err(D::Error::custom)
    } else {
        serde_json::from_value(value).map(new).map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for RecordedTrainOptions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(d, "cache_features", RecordedTrainOptions::Flags, RecordedTrainOptions::Legacy)
    }
}

impl<'de> Deserialize<'de> for RecordedRetrainOptions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(d, "replay", RecordedRetrainOptions::Flags, RecordedRetrainOptions::Legacy)
    }
}

impl RecordedTrainOptions {
    /// The options in the current schema.
    pub fn options(&self) -> TrainOptions {
        match self {
            RecordedTrainOptions::Flags(o) => o.clone(),
            RecordedTrainOptions::Legacy(l) => l.options(),
        }
    }
}

/// Augmentation as runs before the options schema recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyAugment {
    pub rotation_degrees: f64,
    pub hflip: bool,
    pub brightness: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub width_shift: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub height_shift: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zoom: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shear_degrees: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub contrast: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub saturation: f64,
}

/// Memory format and autocast as runs before the options schema recorded them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacySpeed {
    pub channels_last: bool,
    pub bf16: bool,
}

/// The `options` of a train run written before the options schema (vocml 0.1.0 to round
/// two): read, rewritten unchanged, and turned into [`TrainOptions`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyTrainOptions {
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
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub fine_tune_lr_decay: f64,
    pub augment: Option<LegacyAugment>,
    #[serde(default)]
    pub image_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scales: Vec<u32>,
    pub cache_features: bool,
    pub aug_views: usize,
    pub pos_weight: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub label_smoothing: f64,
    #[serde(default, skip_serializing_if = "is_default_monitor")]
    pub monitor: Monitor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub head_dropout: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_decay: Vec<f64>,
    pub seed: u64,
    pub runs_dir: PathBuf,
    #[serde(default)]
    pub scheduler: Scheduler,
    #[serde(default = "default_plateau_factor")]
    pub plateau_factor: f64,
    #[serde(default = "default_plateau_patience")]
    pub plateau_patience: usize,
    #[serde(default)]
    pub tta: bool,
    #[serde(default)]
    pub speed: LegacySpeed,
}

impl LegacyTrainOptions {
    /// The same options in the current schema (`speed.channels_last` as the explicit choice it
    /// was, so the run reproduces on any device).
    pub fn options(&self) -> TrainOptions {
        let mut o = TrainOptions {
            data: self.data.clone(),
            model: self.model,
            weights: self.weights.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            patience: self.patience,
            fine_tune_blocks: self.fine_tune_blocks,
            fine_tune_epochs: self.fine_tune_epochs,
            fine_tune_lr: self.fine_tune_lr,
            fine_tune_lr_decay: self.fine_tune_lr_decay,
            scheduler: self.scheduler,
            plateau_factor: self.plateau_factor,
            plateau_patience: self.plateau_patience,
            no_augment: self.augment.is_none(),
            head: self.head.clone().map(HeadWidths),
            head_dropout: self.head_dropout.clone(),
            weight_decay: self.weight_decay.clone(),
            image_size: self.image_size,
            scales: self.scales.clone(),
            no_cache: !self.cache_features,
            aug_views: self.aug_views,
            monitor: self.monitor,
            pos_weight: self.pos_weight,
            label_smoothing: if self.label_smoothing == 0.0 { Vec::new() } else { vec![self.label_smoothing] },
            tta: self.tta,
            channels_last: self.speed.channels_last,
            no_channels_last: !self.speed.channels_last,
            bf16: self.speed.bf16,
            seed: self.seed,
            runs_dir: self.runs_dir.clone(),
            ..TrainOptions::default()
        };
        // Without augmentation the ranges keep their defaults (they are not used).
        if let Some(a) = self.augment {
            (o.rotation, o.no_flip, o.brightness) = (a.rotation_degrees, !a.hflip, a.brightness);
            (o.width_shift, o.height_shift, o.zoom) = (a.width_shift, a.height_shift, a.zoom);
            (o.shear, o.contrast, o.saturation) = (a.shear_degrees, a.contrast, a.saturation);
        }
        o
    }
}

/// The `options` of a retrained run (what it was given): the schema above, or the field names of runs
/// written before it (told apart by their `replay` key).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RecordedRetrainOptions {
    Flags(RetrainOptions),
    Legacy(LegacyRetrainOptions),
}

impl RecordedRetrainOptions {
    /// The options in the current schema.
    pub fn options(&self) -> RetrainOptions {
        match self {
            RecordedRetrainOptions::Flags(o) => o.clone(),
            RecordedRetrainOptions::Legacy(l) => RetrainOptions {
                from: Some(l.from.clone()),
                corrections: l.corrections.clone(),
                data: l.data.clone(),
                epochs: l.epochs,
                replicate: l.replicate,
                lr: l.lr,
                batch_size: l.batch_size,
                no_replay: !l.replay,
                replay_ratio: l.replay_ratio,
                replay_all: false,
                tolerance: l.tolerance,
                force: l.force,
                runs_dir: l.runs_dir.clone(),
                feedback_dir: Some(l.feedback_dir.clone()),
                seed: l.seed,
            },
        }
    }
}

/// A retrain's options as runs before the options schema recorded them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyRetrainOptions {
    pub from: PathBuf,
    pub corrections: PathBuf,
    pub data: Option<PathBuf>,
    pub epochs: usize,
    pub replicate: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub replay: bool,
    pub replay_ratio: f64,
    pub tolerance: f64,
    pub force: bool,
    pub runs_dir: PathBuf,
    pub feedback_dir: PathBuf,
    pub seed: u64,
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
