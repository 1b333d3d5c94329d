//! The records of the three kinds of run (`train`, `retrain`, `ensemble`) and their parts, as
//! `config.json` holds them.

use crate::io::image::ResizeMode;
use crate::model::head::HeadLayout;
use crate::model::{BackboneKind, Normalization};
use crate::run::options::{RecordedRetrainOptions, RecordedTrainOptions};
use crate::task::{LabelGroup, Task, TaskKind};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Value of the `tool` tag of a trained run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainTool {
    Train,
}

/// Value of the `tool` tag of a retrained run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrainTool {
    Retrain,
}

/// Value of the `kind` tag of an ensemble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsembleKind {
    Ensemble,
}

/// The head recorded with a run: its hidden widths and their dropouts, each `null` (a linear
/// head), one number (one hidden layer, the format of every release) or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    pub hidden: Option<OneOrMany<i64>>,
    pub dropout: Option<OneOrMany<f64>>,
}

/// A value written as itself when alone, else as a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    fn of(values: &[T]) -> Option<Self> {
        match values {
            [] => None,
            [one] => Some(OneOrMany::One(one.clone())),
            many => Some(OneOrMany::Many(many.to_vec())),
        }
    }

    fn to_vec(v: &Option<Self>) -> Vec<T> {
        match v {
            None => Vec::new(),
            Some(OneOrMany::One(x)) => vec![x.clone()],
            Some(OneOrMany::Many(xs)) => xs.clone(),
        }
    }
}

impl HeadSpec {
    /// The record of `layout`.
    pub fn of(layout: &HeadLayout) -> Self {
        HeadSpec { hidden: OneOrMany::of(&layout.hidden), dropout: OneOrMany::of(&layout.dropout) }
    }

    /// The layout to build, checked.
    pub fn layout(&self) -> Result<HeadLayout> {
        let layout = HeadLayout { hidden: OneOrMany::to_vec(&self.hidden), dropout: OneOrMany::to_vec(&self.dropout) };
        layout.validate().context("head")?;
        Ok(layout)
    }
}

/// A run written by `train`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRun {
    pub tool: TrainTool,
    pub version: String,
    pub created: String,
    pub options: RecordedTrainOptions,
    pub weights_used: Option<PathBuf>,
    pub device: String,
    pub data_manifest_sha256: String,
    /// Absent only in runs written before task types existed, which are all multilabel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_groups: Option<Vec<LabelGroup>>,
    pub classes: Vec<String>,
    pub image_size: u32,
    pub resize: ResizeMode,
    pub normalization: Normalization,
    pub head: HeadSpec,
    /// The L2 weight decay the head was trained with, when one was asked for (the value
    /// chosen on validation when several were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// The validation metric early stopping followed (absent in the oldest runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    pub best_epoch: usize,
    pub train_seconds: f64,
    pub train_images: usize,
    pub val_images: usize,
    /// Where the run was logged in MLflow (added once it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowRef>,
}

/// A run's record in an MLflow tracking server: the experiment and run it was logged to and the
/// registered model version its weights became. The URI carries no credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlflowRef {
    pub tracking_uri: String,
    pub experiment_id: String,
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
}

/// What a retrain inherited from its parent (the record's `inherited`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InheritedOptions {
    pub model: BackboneKind,
    pub data: PathBuf,
    /// Absent in retrains written before `train --tta` existed (they had no TTA).
    #[serde(default)]
    pub tta: bool,
    /// The parent's multi-scale sizes (absent: the input's size only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scales: Vec<u32>,
}

/// One stored correction a retrain learned from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrectionRecord {
    pub source: String,
    pub sha256: String,
    pub labels: Vec<String>,
}

/// A run written by `retrain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainRun {
    pub tool: RetrainTool,
    pub version: String,
    pub created: String,
    pub parent: PathBuf,
    /// What this retrain was given: every `retrain` option by its flag name (`from` and
    /// `feedback_dir` resolved, so `retrain --config` of the record makes it again).
    pub options: RecordedRetrainOptions,
    /// What it inherited from its parent. Records written before 0.2 held these two as
    /// `retrain_options` (given) and `options` (inherited); [`super::RunConfig::parse`] reads both.
    pub inherited: InheritedOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_groups: Option<Vec<LabelGroup>>,
    pub corrections_file: PathBuf,
    pub corrections_sha256: String,
    pub corrections_used: Vec<CorrectionRecord>,
    pub device: String,
    pub data_manifest_sha256: String,
    pub classes: Vec<String>,
    pub image_size: u32,
    pub resize: ResizeMode,
    pub normalization: Normalization,
    /// The head, as the parent's (absent in retrains written before heads were configurable:
    /// the backbone's default head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSpec>,
    pub train_seconds: f64,
    /// Where the run was logged in MLflow (added once it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowRef>,
}

/// A saved ensemble (`evaluate --ensemble`): the mean of its members' probabilities.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleRun {
    pub kind: EnsembleKind,
    /// Member runs: names of sibling directories, or absolute paths.
    pub members: Vec<PathBuf>,
    /// Horizontal-flip test-time augmentation by default.
    pub tta: bool,
    pub classes: Vec<String>,
    pub image_size: u32,
    pub resize: ResizeMode,
    pub created: String,
    pub tool_version: String,
}

/// What loading a single (non-ensemble) run needs, borrowed from its config.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub model: BackboneKind,
    pub task: Task,
    pub image_size: u32,
    pub resize: ResizeMode,
    /// The input normalisation recorded with the run.
    pub normalization: Normalization,
    /// Default of `evaluate` and `predict`: average each image with its mirror.
    pub tta: bool,
    /// The prepared data the run was trained on.
    pub data: PathBuf,
    pub train_seconds: f64,
    pub head: HeadLayout,
    /// Input sizes the backbone sees, features concatenated (empty: the input's size).
    pub scales: Vec<u32>,
}
