//! The options schema: what `train` and `retrain` take, named as their long flags. The same
//! names are the keys of a recipe file and of the `options` block a run
//! records in `config.json`, so `train --config runs/X/config.json` reproduces run X. The
//! defaults and the checks are defined here once, for the flags, recipes, retrain and serve.
//! Runs written before this schema recorded their options by field name; they still load
//! ([`recorded`]) and are turned into this schema when read. `retrain`'s are in [`retrain`].

mod recorded;
mod retrain;

pub use recorded::{LegacyAugment, LegacyRetrainOptions, LegacySpeed, LegacyTrainOptions, RecordedRetrainOptions, RecordedTrainOptions};
pub use retrain::{default_feedback_dir, RetrainOptions, MAX_REPLICATE};

use crate::io::image::MAX_IMAGE_SIZE;
use crate::model::head::{HeadLayout, DROPOUT, MAX_WIDTH};
use crate::model::BackboneKind;
use crate::thresholds::ThresholdRule;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What `train`'s early stopping (and its choice between weight decays) follows on validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "snake_case"))]
pub enum Monitor {
    /// The task's decision metric: macro-F1 at 0.5, or accuracy for multiclass and multihead.
    #[default]
    F1,
    /// Mean average precision (threshold-free, steadier on small validation splits).
    Map,
    /// The validation loss (lower is better).
    Loss,
}

/// Which schedule a training phase follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Scheduler {
    /// The phase's learning rate throughout.
    #[default]
    #[cfg_attr(feature = "clap", value(alias = "none"))]
    Constant,
    /// Multiply the rate by a factor after some epochs without a better validation loss.
    Plateau,
    /// Cosine decay from the phase's rate towards 0 over its epochs, per epoch
    /// (`torch.optim.lr_scheduler.CosineAnnealingLR` with T_max = the phase's epochs).
    Cosine,
}

/// Hidden widths of a head, written as the flag is: `512,256`, or `linear` for none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadWidths(pub Vec<i64>);

impl std::str::FromStr for HeadWidths {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "linear" {
            return Ok(HeadWidths(Vec::new()));
        }
        s.split(',')
            .map(|w| match w.trim().parse::<i64>() {
                Ok(n) if (1..=MAX_WIDTH).contains(&n) => Ok(n),
                _ => Err(format!("{w:?}: expected `linear` or hidden widths 1..={MAX_WIDTH} separated by commas, e.g. 512,256")),
            })
            .collect::<Result<_, _>>()
            .map(HeadWidths)
    }
}

impl std::fmt::Display for HeadWidths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("linear");
        }
        let widths: Vec<String> = self.0.iter().map(i64::to_string).collect();
        f.write_str(&widths.join(","))
    }
}

impl Serialize for HeadWidths {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HeadWidths {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Most augmented feature views cached per image (each costs a backbone pass per image).
pub const MAX_AUG_VIEWS: usize = 64;

/// The options of one `train` run: every per-run flag of `train`, by its long name. Recipes
/// set them (`--config`), flags override the recipe, the defaults fill the rest; the run
/// records them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields, default)]
pub struct TrainOptions {
    /// voc-prep output directory (X_*.npy, y_*.npy, manifest.json).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR", default_value_os_t = TrainOptions::default().data))]
    pub data: PathBuf,
    /// Model: efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2 (embedded ImageNet
    /// weights); mobilenet_v2, efficientnet_b0,
    /// resnet50, resnet18, vgg16, googlenet, vit_b_16 or convnext_tiny (torchvision layouts; pass
    /// --weights); small_cnn, alexnet_like or smaller_vggnet (from scratch, no weights).
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "NAME", default_value_t = TrainOptions::default().model, conflicts_with = "models", hide_possible_values = true))]
    pub model: BackboneKind,
    /// Backbone checkpoint (.safetensors, or a .pth libtorch can read); default for the
    /// efficientnet_lite models: the ones installed by `make setup`.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub weights: Option<PathBuf>,
    /// Maximum epochs of the frozen phase.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = TrainOptions::default().epochs))]
    pub epochs: usize,
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = TrainOptions::default().batch_size))]
    pub batch_size: usize,
    /// Adam learning rate of the frozen phase.
    #[cfg_attr(feature = "clap", arg(long, value_name = "LR", default_value_t = TrainOptions::default().lr))]
    pub lr: f64,
    /// Early stopping: epochs without a better validation score (the one --monitor names).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = TrainOptions::default().patience))]
    pub patience: usize,
    /// A final fit: train on the train and val splits together for exactly --epochs epochs
    /// (no early stopping: nothing is held out), once a recipe and its epoch count are
    /// chosen (e.g. a run's best_epoch). Validation scores in its history are on trained
    /// images; evaluate stores 0.5 thresholds for it unless --thresholds says otherwise.
    #[cfg_attr(feature = "clap", arg(long))]
    pub refit: bool,
    /// After the frozen phase, unfreeze the last N backbone blocks and train them too. The
    /// EfficientNet-Lite models (without --scales) train them from cached activations of
    /// the frozen blocks before them (the trunk runs once per cached view); other backbones,
    /// --scales and --no-cache run the whole backbone on augmented pixels every step.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = TrainOptions::default().fine_tune_blocks))]
    pub fine_tune_blocks: usize,
    /// Maximum epochs of the fine-tuning phase.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = TrainOptions::default().fine_tune_epochs))]
    pub fine_tune_epochs: usize,
    /// Learning rate of the fine-tuning phase.
    #[cfg_attr(feature = "clap", arg(long, value_name = "LR", default_value_t = TrainOptions::default().fine_tune_lr))]
    pub fine_tune_lr: f64,
    /// Fine-tuning with discriminative rates: the k-th unfrozen block from the top learns at
    /// --fine-tune-lr times F^k (e.g. 0.7); the head keeps --fine-tune-lr.
    #[cfg_attr(feature = "clap", arg(long, value_name = "F", default_value_t = TrainOptions::default().fine_tune_lr_decay))]
    pub fine_tune_lr_decay: f64,
    /// Learning-rate schedule of each phase: constant, plateau (multiply the rate by
    /// --plateau-factor after --plateau-patience epochs without a lower validation loss,
    /// down to 1/1000 of the phase's rate, like Keras' ReduceLROnPlateau), or cosine (decay
    /// towards 0 over the phase's epochs).
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "NAME", default_value_t = TrainOptions::default().scheduler))]
    pub scheduler: Scheduler,
    #[cfg_attr(feature = "clap", arg(long, value_name = "F", default_value_t = TrainOptions::default().plateau_factor))]
    pub plateau_factor: f64,
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = TrainOptions::default().plateau_patience))]
    pub plateau_patience: usize,
    /// No augmentation at all (the ranges below are ignored).
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_augment: bool,
    /// Augmentation: rotation drawn from +-DEG degrees.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DEG", default_value_t = TrainOptions::default().rotation))]
    pub rotation: f64,
    /// Augmentation: no random horizontal flip.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_flip: bool,
    /// Augmentation: brightness factor drawn from 1 +- F.
    #[cfg_attr(feature = "clap", arg(long, value_name = "F", default_value_t = TrainOptions::default().brightness))]
    pub brightness: f64,
    /// Augmentation: horizontal shift drawn from +-F of the width (Keras' width_shift_range).
    #[cfg_attr(feature = "clap", arg(long, value_name = "F", default_value_t = 0.0))]
    pub width_shift: f64,
    /// Augmentation: vertical shift drawn from +-F of the height.
    #[cfg_attr(feature = "clap", arg(long, value_name = "F", default_value_t = 0.0))]
    pub height_shift: f64,
    /// Augmentation: zoom factor drawn from 1 +- F (above 1 magnifies).
    #[cfg_attr(feature = "clap", arg(long, value_name = "F", default_value_t = 0.0))]
    pub zoom: f64,
    /// Augmentation: shear angle drawn from +-DEG degrees.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DEG", default_value_t = 0.0))]
    pub shear: f64,
    /// Augmentation: contrast factor drawn from 1 +- F.
    #[cfg_attr(feature = "clap", arg(long, value_name = "F", default_value_t = 0.0))]
    pub contrast: f64,
    /// Augmentation: saturation factor drawn from 1 +- F.
    #[cfg_attr(feature = "clap", arg(long, value_name = "F", default_value_t = 0.0))]
    pub saturation: f64,
    /// Head between the features and the outputs: hidden widths, each followed by ReLU and
    /// dropout (e.g. 512,256), or `linear` (logistic regression on the features). Default:
    /// 128 for the ImageNet backbones, linear for the from-scratch models.
    #[cfg_attr(feature = "clap", arg(long, value_name = "W,W.. | linear"))]
    pub head: Option<HeadWidths>,
    /// Dropout after each hidden layer of --head: one value for all, or one per layer
    /// (default 0.2).
    #[cfg_attr(feature = "clap", arg(long, value_name = "P,P..", value_delimiter = ',', requires = "head"))]
    pub head_dropout: Vec<f64>,
    /// L2 weight decay of the head's optimizer (PyTorch Adam's weight_decay). Several values
    /// (e.g. 1e-4,1e-3,1e-2): the head is trained once per value and the best on validation
    /// is kept (cheap on cached features). Default: none.
    #[cfg_attr(feature = "clap", arg(long, value_name = "WD,WD..", value_delimiter = ','))]
    pub weight_decay: Vec<f64>,
    /// Input size the run must have: the data must have been prepared at it (voc-prep
    /// --size); recipes name their size this way. The run records it, and evaluate and
    /// predict use it.
    #[cfg_attr(feature = "clap", arg(long, value_name = "PX"))]
    pub image_size: Option<u32>,
    /// Input sizes the backbone sees, its features at each concatenated for the head
    /// (multi-scale features; each size resized from the data's, e.g. data at 448 and
    /// --scales 448,320). The run records them; evaluate, predict and serve use them.
    /// Default: the data's size only.
    #[cfg_attr(feature = "clap", arg(long, value_name = "PX,PX..", value_delimiter = ','))]
    pub scales: Vec<u32>,
    /// Run the backbone every epoch instead of caching its features.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_cache: bool,
    /// Augmented feature views cached per training image (besides the clean one).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = TrainOptions::default().aug_views))]
    pub aug_views: usize,
    /// Validation score that early stopping follows (and that picks among --weight-decay
    /// values): f1 (macro-F1 at 0.5; accuracy for multiclass/multihead), map (mean average
    /// precision, threshold-free) or loss.
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "NAME", default_value_t = TrainOptions::default().monitor))]
    pub monitor: Monitor,
    /// Weight positive labels by negatives/positives per class in the binary cross-entropy
    /// (class imbalance; multilabel data).
    #[cfg_attr(feature = "clap", arg(long))]
    pub pos_weight: bool,
    /// Label smoothing of the training targets: 1 -> 1 - E/2 and 0 -> E/2 per class (Keras'
    /// binary cross-entropy), or E spread over each softmax group (PyTorch's cross-entropy).
    /// Validation scores the true labels. One value for every model, or one per --models
    /// entry. Default: 0 (none).
    #[cfg_attr(feature = "clap", arg(long, value_name = "E,E..", value_delimiter = ','))]
    pub label_smoothing: Vec<f64>,
    /// Record horizontal-flip test-time augmentation as this run's default for evaluate and
    /// predict (each image averaged with its mirror; training is unchanged).
    #[cfg_attr(feature = "clap", arg(long))]
    pub tta: bool,
    /// The decision thresholds `evaluate` stores for this run: tuned (F1-maximising on
    /// val), shrunk (tuned, moved toward 0.5 unless many validation positives back them) or
    /// half (0.5 for every class).
    #[cfg_attr(feature = "clap", arg(long, value_enum, value_name = "RULE", default_value_t = TrainOptions::default().thresholds))]
    pub thresholds: ThresholdRule,
    /// Channels-last (NHWC) memory for convolutions. The default on the CPU, where it
    /// measured 10-90% faster for every backbone; on a GPU it pays off in long runs with
    /// tensor cores, so there it is this opt-in.
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "no_channels_last"))]
    pub channels_last: bool,
    /// Contiguous (NCHW) memory, also on the CPU.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_channels_last: bool,
    /// bfloat16 autocast for the backbone and head on CUDA (weights, optimizer and loss stay
    /// float32).
    #[cfg_attr(feature = "clap", arg(long))]
    pub bf16: bool,
    #[cfg_attr(feature = "clap", arg(long, value_name = "S", default_value_t = TrainOptions::default().seed))]
    pub seed: u64,
    /// Where run directories are created.
    #[cfg_attr(feature = "clap", arg(long, visible_alias = "runs", value_name = "DIR", default_value_os_t = TrainOptions::default().runs_dir))]
    pub runs_dir: PathBuf,
}

/// The reference recipe: batch 16, Adam 1e-4, 10 epochs, patience 3, rotation 15, flip,
/// brightness 0.2, on EfficientNet-Lite0.
impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            data: "processed_data".into(),
            model: BackboneKind::EfficientnetLite0,
            weights: None,
            epochs: 10,
            batch_size: 16,
            lr: 1e-4,
            patience: 3,
            refit: false,
            fine_tune_blocks: 0,
            fine_tune_epochs: 5,
            fine_tune_lr: 1e-5,
            fine_tune_lr_decay: 1.0,
            scheduler: Scheduler::Constant,
            plateau_factor: 0.2,
            plateau_patience: 2,
            no_augment: false,
            rotation: 15.0,
            no_flip: false,
            brightness: 0.2,
            width_shift: 0.0,
            height_shift: 0.0,
            zoom: 0.0,
            shear: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            head: None,
            head_dropout: Vec::new(),
            weight_decay: Vec::new(),
            image_size: None,
            scales: Vec::new(),
            no_cache: false,
            aug_views: 2,
            monitor: Monitor::F1,
            pos_weight: false,
            label_smoothing: Vec::new(),
            tta: false,
            thresholds: ThresholdRule::default(),
            channels_last: false,
            no_channels_last: false,
            bf16: false,
            seed: 42,
            runs_dir: "runs".into(),
        }
    }
}

/// Largest value of each augmentation range, by option name.
const AUGMENT_LIMITS: [(&str, f64); 8] = [
    ("rotation", 180.0),
    ("brightness", 1.0),
    ("width_shift", 1.0),
    ("height_shift", 1.0),
    ("zoom", 0.9),
    ("shear", 60.0),
    ("contrast", 1.0),
    ("saturation", 1.0),
];

impl TrainOptions {
    /// Checks every option of one run (values named by their option keys, which are also the
    /// flags' long names).
    pub fn validate(&self) -> Result<()> {
        if self.refit && self.weight_decay.len() > 1 {
            bail!("refit: a final fit has no validation data to choose among weight_decay values; give one");
        }
        if self.batch_size == 0 || self.epochs == 0 {
            bail!("batch_size and epochs must be at least 1");
        }
        for (key, lr) in [("lr", self.lr), ("fine_tune_lr", self.fine_tune_lr)] {
            if !(lr.is_finite() && lr > 0.0 && lr <= 10.0) {
                bail!("{key} {lr}: expected a learning rate in (0, 10]");
            }
        }
        if !(self.plateau_factor > 0.0 && self.plateau_factor < 1.0) {
            bail!("plateau_factor {}: expected a factor between 0 and 1", self.plateau_factor);
        }
        if let Some(size) = self.image_size.filter(|s| !(1..=MAX_IMAGE_SIZE).contains(s)) {
            bail!("image_size {size}: expected 1..={MAX_IMAGE_SIZE} pixels");
        }
        crate::model::multi_scale::check_sizes(self.model, &self.scales).context("scales")?;
        if self.aug_views > MAX_AUG_VIEWS {
            bail!("aug_views {}: at most {MAX_AUG_VIEWS} augmented views per image", self.aug_views);
        }
        let ranges =
            [self.rotation, self.brightness, self.width_shift, self.height_shift, self.zoom, self.shear, self.contrast, self.saturation];
        for ((key, max), value) in AUGMENT_LIMITS.into_iter().zip(ranges) {
            if !(value.is_finite() && (0.0..=max).contains(&value)) {
                bail!("{key} {value}: expected a range in [0, {max}]");
            }
        }
        if !(self.fine_tune_lr_decay > 0.0 && self.fine_tune_lr_decay <= 1.0) {
            bail!("fine_tune_lr_decay {}: expected a factor in (0, 1]", self.fine_tune_lr_decay);
        }
        if self.label_smoothing.len() > 1 {
            bail!("label_smoothing: {} values for one model; give one", self.label_smoothing.len());
        }
        if let Some(e) = self.label_smoothing.iter().find(|e| !(e.is_finite() && (0.0..1.0).contains(*e))) {
            bail!("label_smoothing {e}: expected a value in [0, 1)");
        }
        if let Some(wd) = self.weight_decay.iter().find(|wd| !(wd.is_finite() && (0.0..=1.0).contains(*wd))) {
            bail!("weight_decay {wd}: expected values in [0, 1]");
        }
        if self.head.is_none() && !self.head_dropout.is_empty() {
            bail!("head_dropout needs head (the default head's dropout is {DROPOUT})");
        }
        if self.channels_last && self.no_channels_last {
            bail!("channels_last and no_channels_last contradict each other");
        }
        self.head_layout().context("head / head_dropout")?;
        Ok(())
    }

    /// The head to train: `head` with its dropouts, or the backbone's default.
    pub fn head_layout(&self) -> Result<HeadLayout> {
        match &self.head {
            Some(widths) => HeadLayout::new(widths.0.clone(), self.head_dropout.clone()),
            None => Ok(self.model.default_head()),
        }
    }

    /// The label smoothing of this run (0: none).
    pub fn label_smoothing(&self) -> f64 {
        self.label_smoothing.first().copied().unwrap_or(0.0)
    }

    /// Whether convolutions use channels-last memory on `device`: asked for, or on the CPU
    /// unless refused.
    pub fn channels_last_on(&self, device: tch::Device) -> bool {
        self.channels_last || (!self.no_channels_last && device == tch::Device::Cpu)
    }

    /// The option keys and values as a recipe table (what `--config` expands into flags).
    pub fn recipe(&self) -> serde_json::Map<String, serde_json::Value> {
        recipe_of(self)
    }
}

/// Options as a recipe table: their keys and values, unset ones left out.
pub(crate) fn recipe_of(options: &impl Serialize) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(options) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => unreachable!("options serialize to an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_widths_read_and_write_as_the_flag() {
        assert_eq!("512,256".parse::<HeadWidths>().unwrap(), HeadWidths(vec![512, 256]));
        assert_eq!("linear".parse::<HeadWidths>().unwrap().to_string(), "linear");
        assert_eq!(HeadWidths(vec![128]).to_string(), "128");
        assert!("0".parse::<HeadWidths>().unwrap_err().contains("expected `linear` or hidden widths"));
    }

    #[test]
    fn the_record_of_the_defaults_is_every_key_and_reads_back_equal() {
        let o = TrainOptions::default();
        let text = serde_json::to_string(&o).unwrap();
        let back: TrainOptions = serde_json::from_str(&text).unwrap();
        assert_eq!(back, o);
        let recipe = o.recipe();
        assert!(recipe.contains_key("no_cache") && recipe.contains_key("rotation") && !recipe.contains_key("head"));
        assert!(matches!(serde_json::from_str::<RecordedTrainOptions>(&text).unwrap(), RecordedTrainOptions::Flags(_)));
    }

    #[test]
    fn checks_name_the_option_not_a_flag() {
        let bad = TrainOptions { batch_size: 0, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().to_string(), "batch_size and epochs must be at least 1");
        let bad = RetrainOptions { corrections: "c.csv".into(), batch_size: 0, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().to_string(), "epochs and batch_size must be at least 1");
        let bad = TrainOptions { zoom: 2.0, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().to_string(), "zoom 2: expected a range in [0, 0.9]");
    }
}
