//! `processed_data/manifest.json`: what a prepared dataset holds and how it was made.

use crate::dataset::split::{Fold, SplitFractions};
use crate::io::image::ResizeMode;
use crate::task::{LabelGroup, Task, TaskKind};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// File name of the manifest inside a prepared-data directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The three split names, in file order.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    pub tool: String,
    pub version: String,
    pub created: String,
    /// Task type of the labels.
    #[serde(default)]
    pub task: TaskKind,
    /// Class names in label-column order (`<group>/<class>` for multihead).
    pub classes: Vec<String>,
    /// Groups of mutually exclusive classes (multiclass: one; multihead: one per head).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_groups: Vec<LabelGroup>,
    pub image: ImageSpec,
    pub source: SourceInfo,
    pub split: SplitSpec,
    pub splits: Splits,
    /// Inputs that were left out, with the reason.
    pub skipped: Vec<Skipped>,
    /// Annotations carrying an `<incomplete>` element (objects known to be missing).
    pub incomplete_annotations: usize,
    /// Set when `voc-prep feedback` added a feedback store's corrections to a base dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackAdded>,
}

/// Where a dataset's added corrections came from (`voc-prep feedback`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeedbackAdded {
    /// The base dataset directory, and the SHA-256 of its manifest.
    pub base: String,
    pub base_manifest_sha256: String,
    /// The feedback store directory.
    pub store: String,
    /// Corrections added to the training split (ids `feedback:<sha256>`).
    pub added: usize,
    /// Training rows of the base replaced by a later correction of the same image.
    pub replaced: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageSpec {
    pub size: u32,
    pub channels: u32,
    /// Always `NHWC` (N, H, W, 3), RGB.
    pub layout: String,
    /// `uint8` (0..255) or `float32` (0..1).
    pub dtype: String,
    pub resize: ResizeMode,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    pub kind: String,
    pub root: String,
    /// `annotations` or `imagesets`.
    pub labels: String,
    pub image_set: Option<String>,
    pub ignore_difficult: bool,
    pub difficult_as_positive: bool,
    pub keep_empty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SplitSpec {
    pub fractions: SplitFractions,
    pub seed: u64,
    pub method: String,
    /// The cross-validation fold whose images are the test split (`voc-prep --fold I/K`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<Fold>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Splits {
    pub train: SplitInfo,
    pub val: SplitInfo,
    pub test: SplitInfo,
}

impl Splits {
    pub fn get(&self, name: &str) -> Option<&SplitInfo> {
        match name {
            "train" => Some(&self.train),
            "val" => Some(&self.val),
            "test" => Some(&self.test),
            _ => None,
        }
    }
    pub fn get_mut(&mut self, name: &str) -> Option<&mut SplitInfo> {
        match name {
            "train" => Some(&mut self.train),
            "val" => Some(&mut self.val),
            "test" => Some(&mut self.test),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SplitInfo {
    pub count: usize,
    /// Positive images per class.
    pub per_class: BTreeMap<String, usize>,
    /// Image ids in row order of `X_<split>.npy`.
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub id: String,
    pub path: String,
    pub reason: String,
}

impl Manifest {
    /// Reads `<dir>/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {} (is {} a voc-prep output directory?)", path.display(), dir.display()))?;
        Self::parse(&text).with_context(|| format!("{}: not a valid manifest", path.display()))
    }

    /// Parses the text of a `manifest.json`.
    pub fn parse(text: &str) -> Result<Manifest> {
        Ok(serde_json::from_str(text)?)
    }

    /// The task the labels were prepared for.
    pub fn task(&self) -> Result<Task> {
        Task::new(self.task, self.classes.clone(), self.label_groups.clone()).context("manifest.json: inconsistent task")
    }

    /// SHA-256 of the manifest file, recorded by runs to tie them to their data.
    pub fn file_hash(dir: &Path) -> Result<String> {
        use sha2::{Digest, Sha256};
        let bytes = std::fs::read(dir.join(MANIFEST_FILE))?;
        Ok(format!("{:x}", Sha256::digest(bytes)))
    }
}
