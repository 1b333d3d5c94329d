//! `retrain`'s options, by its long flag names: the flags, the recipe keys and the record.

use super::recipe_of;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Most copies of each corrected image per epoch (`replicate`).
pub const MAX_REPLICATE: usize = 1000;

/// The options of one `retrain` run, by `retrain`'s long flag names; recorded as the run's
/// `options` (with `from` and `feedback_dir` resolved, so the record reproduces it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields, default)]
pub struct RetrainOptions {
    /// Run to start from (default: <runs-dir>/best).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub from: Option<PathBuf>,
    /// CSV of corrections (`path,labels`).
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE", required = true))]
    pub corrections: PathBuf,
    /// Prepared data for replay and validation (default: the parent run's).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub data: Option<PathBuf>,
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = RetrainOptions::default().epochs))]
    pub epochs: usize,
    /// Augmented copies of each corrected image per epoch.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = RetrainOptions::default().replicate))]
    pub replicate: usize,
    /// Learning rate of the head fine-tuning (low: the parent's head is the start).
    #[cfg_attr(feature = "clap", arg(long, value_name = "LR", default_value_t = RetrainOptions::default().lr))]
    pub lr: f64,
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = RetrainOptions::default().batch_size))]
    pub batch_size: usize,
    /// Do not mix original training data into each epoch (not recommended: the model forgets).
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_replay: bool,
    /// Replay images per corrected sample in each epoch.
    #[cfg_attr(feature = "clap", arg(long, value_name = "R", default_value_t = RetrainOptions::default().replay_ratio))]
    pub replay_ratio: f64,
    /// Replay the whole training split in every epoch (its features computed once) instead
    /// of --replay-ratio images per corrected sample: the head is refitted on everything it
    /// knew plus the corrections.
    #[cfg_attr(feature = "clap", arg(long, conflicts_with_all = ["no_replay", "replay_ratio"]))]
    pub replay_all: bool,
    /// How much worse than its parent the new run may be and still be promoted: it is
    /// promoted when its mAP change on the test split (accuracy for multiclass and multihead
    /// runs) is at least -tolerance.
    #[cfg_attr(feature = "clap", arg(long, value_name = "D", default_value_t = RetrainOptions::default().tolerance))]
    pub tolerance: f64,
    /// Promote the new run to runs/best whatever its validation score.
    #[cfg_attr(feature = "clap", arg(long))]
    pub force: bool,
    /// Where the new run is created and runs/best lives.
    #[cfg_attr(feature = "clap", arg(long, visible_alias = "runs", value_name = "DIR", default_value_os_t = RetrainOptions::default().runs_dir))]
    pub runs_dir: PathBuf,
    /// Feedback store (default: <runs-dir>/feedback).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub feedback_dir: Option<PathBuf>,
    #[cfg_attr(feature = "clap", arg(long, value_name = "S", default_value_t = RetrainOptions::default().seed))]
    pub seed: u64,
}

/// The reference retrain: corrections replicated 10x with augmentation, replay 3 per
/// correction, 30 epochs of the head at 3e-4; promoted within 0.02 of the parent on the test
/// split (the gate's tolerance, chosen on `make loop` folds: docs/loop.md).
impl Default for RetrainOptions {
    fn default() -> Self {
        RetrainOptions {
            from: None,
            corrections: PathBuf::new(),
            data: None,
            epochs: 30,
            replicate: 10,
            lr: 3e-4,
            batch_size: 16,
            no_replay: false,
            replay_ratio: 3.0,
            replay_all: false,
            tolerance: 0.02,
            force: false,
            runs_dir: "runs".into(),
            feedback_dir: None,
            seed: 42,
        }
    }
}

impl RetrainOptions {
    /// Checks every numeric option (named by its key) before anything is read or written.
    pub fn validate(&self) -> Result<()> {
        if !(self.replay_ratio.is_finite() && self.replay_ratio >= 0.0 && self.replay_ratio <= 100.0) {
            bail!("replay_ratio {}: expected a number in [0, 100]", self.replay_ratio);
        }
        if self.replay_all && self.no_replay {
            bail!("replay_all and no_replay contradict each other; choose one");
        }
        if !(self.tolerance.is_finite() && (0.0..=1.0).contains(&self.tolerance)) {
            bail!("tolerance {}: expected a score difference from 0 to 1", self.tolerance);
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 10.0) {
            bail!("lr {}: expected a learning rate in (0, 10]", self.lr);
        }
        if self.epochs == 0 || self.batch_size == 0 {
            bail!("epochs and batch_size must be at least 1");
        }
        if !(1..=MAX_REPLICATE).contains(&self.replicate) {
            bail!("replicate {}: expected 1..={MAX_REPLICATE} copies per corrected image", self.replicate);
        }
        Ok(())
    }

    /// The run to start from: `from`, or `runs_dir/best`.
    pub fn parent(&self) -> PathBuf {
        self.from.clone().unwrap_or_else(|| self.runs_dir.join(crate::run::BEST_LINK))
    }

    /// The feedback store: `feedback_dir`, or `runs_dir/feedback`.
    pub fn feedback_dir(&self) -> PathBuf {
        self.feedback_dir.clone().unwrap_or_else(|| default_feedback_dir(&self.runs_dir))
    }

    /// The option keys and values as a recipe table.
    pub fn recipe(&self) -> serde_json::Map<String, serde_json::Value> {
        recipe_of(self)
    }
}

/// The default feedback store inside a runs directory.
pub fn default_feedback_dir(runs_dir: &std::path::Path) -> PathBuf {
    runs_dir.join("feedback")
}
