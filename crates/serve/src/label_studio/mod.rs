//! `serve` as a Label Studio ML backend (under `/label-studio`): the project's labelling
//! config checked against the served model, task images fetched from Label Studio, and
//! annotations batched into the same retrain jobs as `/retrain`.

pub mod config;
pub mod fetch;

use crate::jobs::Correction;
use config::{ClassMap, LabelConfig};
use fetch::ImageSource;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most annotations held for the next retrain job; more are refused until one starts.
pub const MAX_PENDING: usize = 10_000;

/// What `serve --label-studio-*` configures.
#[derive(Debug, Clone)]
pub struct LabelStudioOptions {
    pub images: ImageSource,
    pub map: ClassMap,
    /// Annotations that start a retrain job (START_TRAINING starts one sooner).
    pub train_after: usize,
}

/// The backend's state: its options, each project's checked config, and the annotations
/// waiting for the next retrain job (one per task: a later annotation replaces an earlier).
pub struct LabelStudio {
    pub options: LabelStudioOptions,
    pub projects: Mutex<HashMap<String, LabelConfig>>,
    pub pending: Mutex<Vec<(String, Correction)>>,
    /// Task image references already fetched, by reference: their upload id.
    pub fetched: Mutex<HashMap<String, String>>,
}

impl LabelStudio {
    pub fn new(options: LabelStudioOptions) -> Self {
        LabelStudio { options, projects: Mutex::default(), pending: Mutex::default(), fetched: Mutex::default() }
    }
}
