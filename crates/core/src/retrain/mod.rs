//! `retrain`: incremental learning from user corrections. The corrected images (all in the
//! feedback store) are replicated with augmentation, mixed with a replay sample of the
//! parent's training data, and the parent's head is fine-tuned on cached backbone features.
//! The result is a new run; it replaces `runs/best` only if the gate finds it not worse than
//! its parent on the test split, which neither was selected on (a paired bootstrap interval of
//! the mAP change above minus the tolerance; [`gate`]) or when forced, atomically.
//!
//! [`retrain`] reads as its steps: check the options, load the parent and its data, store and
//! load the corrections, compute features (corrections, replay pool, validation, the gate's
//! images), fine-tune the head, decide on promotion, write the run.

pub mod feedback;
pub mod gate;
pub mod steps;
pub mod training_set;

use crate::dataset::manifest::Manifest;
use crate::dataset::prepared::SplitData;
use crate::eval::metrics::MultiLabelMetrics;
use crate::eval::validation::{score_logits, ValidationSet};
use crate::infer::loaded::LoadedModel;
use crate::io::staging::write_atomic;
use crate::retrain::feedback::{merged, read_corrections_csv, Correction, FeedbackStore, Pending};
use crate::retrain::gate::GateScore;
use crate::retrain::steps::{compute_features, fine_tune_head, gate_images, load_corrected};
use crate::run::config::{CorrectionRecord, HeadSpec, InheritedOptions, RetrainRun, RetrainTool, RunConfig};
use crate::run::options::{RecordedRetrainOptions, RetrainOptions};
use crate::run::{point_best, RunTarget, RunWriter, RETRAIN_FILE};
use crate::task::Task;
use crate::tensor::host_values;
use crate::thresholds::{read_thresholds, Thresholds, Tuned};
use crate::train::history::{EpochRecord, TrainObserver};
use crate::train::record::write_run_files;
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::Device;

/// A checked retrain: the options as given, with the parent run and the feedback store
/// resolved (what the new run records).
#[derive(Debug, Clone)]
pub struct RetrainConfig {
    pub options: RetrainOptions,
    /// The run to start from.
    pub from: PathBuf,
    pub feedback_dir: PathBuf,
    /// Largest image decoded (width x height).
    pub max_pixels: u64,
    /// Where the new run is written (`--run-dir`, else a timestamped run in `runs_dir`,
    /// which runs/best may point at).
    pub target: RunTarget,
}

impl RetrainConfig {
    /// Checks `options` and resolves the parent and the feedback store; images over
    /// `max_pixels` are refused.
    pub fn new(options: RetrainOptions, max_pixels: u64) -> Result<Self> {
        options.validate()?;
        Ok(RetrainConfig {
            from: options.parent(),
            feedback_dir: options.feedback_dir(),
            target: RunTarget::Timestamped(options.runs_dir.clone()),
            options,
            max_pixels,
        })
    }
}

impl std::ops::Deref for RetrainConfig {
    type Target = RetrainOptions;

    fn deref(&self) -> &RetrainOptions {
        &self.options
    }
}

/// What a retrain did; also written to the run as `retrain.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RetrainOutcome {
    pub run_dir: PathBuf,
    pub parent: PathBuf,
    pub corrections_new: usize,
    pub corrections_used: usize,
    /// The store's last record had been cut short by an earlier crash (never acknowledged);
    /// it was left out, and removed when the new corrections were stored.
    pub store_torn_tail: bool,
    /// Corrected images whose whole label set the model predicts, before and after.
    pub corrected_right_before: usize,
    pub corrected_right_after: usize,
    pub parent_val_macro_f1: f64,
    pub new_val_macro_f1: f64,
    /// The metric that decides promotion (mAP, or accuracy for grouped tasks).
    pub monitor: String,
    /// That metric on the validation split (where the parent was early-stopped: shown, not
    /// decided on).
    pub parent_val_score: f64,
    pub new_val_score: f64,
    /// The gate's measurement on the images it judges on: both scores and the interval of the
    /// change.
    pub gate: GateScore,
    /// The same measurement on the validation split, for comparison.
    pub validation: GateScore,
    pub promoted: bool,
    /// The decision in words (`promoted: mAP 0.873 -> 0.869 ..., 95% interval ...`).
    pub reason: String,
    /// What to do next when a small update is not the way (few corrections, or refused): the
    /// commands that add the corrections to the training data and train again.
    pub next_step: Option<String>,
    pub seconds: f64,
}

pub(crate) fn exact_rows(task: &Task, probs: &[f32], labels: &[f32], th: &[f32]) -> usize {
    let c = task.classes.len();
    task.decide(probs, th)
        .chunks(c)
        .zip(labels.chunks(c))
        .filter(|(d, y)| d.iter().zip(y.iter()).all(|(d, y)| (*d >= 0.5) == (*y >= 0.5)))
        .count()
}

/// Whether the new head replaces the parent, and why.
fn promotion(cfg: &RetrainConfig, gate: &GateScore) -> (bool, String) {
    if cfg.force {
        (true, format!("forced ({})", gate.explain(cfg.tolerance)))
    } else {
        (gate.not_worse(cfg.tolerance), gate.explain(cfg.tolerance))
    }
}

/// Runs a retrain; see the module docs.
pub fn retrain(cfg: &RetrainConfig, device: Device, observer: &dyn TrainObserver, cancel: &AtomicBool) -> Result<RetrainOutcome> {
    let started = Instant::now();
    let parent = LoadedModel::load(&cfg.from, device)?;
    let data = cfg.data.clone().unwrap_or_else(|| parent.data_dir().to_path_buf());
    let manifest = Manifest::load(&data)?;
    crate::run::check_data_compatible(&parent.task, parent.image_size, &parent.run_dir, &manifest, &data)?;
    let val = SplitData::open(&data, "val", &manifest)?;
    if val.is_empty() {
        bail!("{}: the val split is empty; retrain needs it to decide on promotion", data.display());
    }
    let task = parent.task.clone();
    let c = parent.classes.len();

    let items = read_corrections_csv(&cfg.corrections, &task, cfg.max_pixels)?;
    // The new corrections are stored only once the new run is written (see `write_run`).
    let pending = FeedbackStore::prepare(&items)?;
    let store = FeedbackStore::open(&cfg.feedback_dir)?;
    let stored = store.all()?;
    let all = merged(&stored.corrections, &pending);
    let corrected = load_corrected(&store, &all, &pending, &parent, &cfg.feedback_dir, cfg.max_pixels, device)?;

    // Both generators seeded: the augmentation and replay draws and the head's dropout repeat.
    tch::manual_seed(cfg.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let train = SplitData::open(&data, "train", &manifest)?;
    let feats = compute_features(cfg, &parent, &corrected, &train, &val, &mut rng, observer, cancel)?;
    let test = SplitData::open(&data, "test", &manifest)?;
    let judged = gate_images(&parent, &test, &feats.val, &val, &corrected, cancel)?;
    let validation = ValidationSet {
        features: feats.val.shallow_clone(),
        labels: val.labels(&(0..val.len()).collect::<Vec<_>>()).to_device(device),
        y: &val.y,
    };

    let half = vec![0.5f32; c];
    let val_scores = |m: &LoadedModel| -> Result<(MultiLabelMetrics, Vec<f32>)> {
        tch::no_grad(|| score_logits(&task, &m.head_logits(&feats.val, false), &val.y, &half))
    };
    let corrected_right = |m: &LoadedModel, th: &[f32]| -> Result<usize> {
        let p = tch::no_grad(|| host_values(&task.probabilities(&m.head_logits(&feats.corrections.narrow(0, 0, corrected.count), false))))?;
        Ok(exact_rows(&task, &p, &corrected.labels, th))
    };
    let (parent_val, parent_probs) = val_scores(&parent)?;
    let right_before = corrected_right(&parent, &parent.thresholds)?;
    let parent_judged = judged.probabilities(&parent)?;

    let records = fine_tune_head(cfg, &parent, &feats, &validation, &mut rng, observer, cancel)?;
    let (new_val, val_probs) = val_scores(&parent)?;
    // The parent's threshold rule carries over (a parent without stored thresholds: the default).
    let rule = read_thresholds(&parent.run_dir)?.map(|t| t.rule).unwrap_or_default();
    let tuned = (!task.is_grouped()).then(|| Tuned::on(&val_probs, &val.y, c));
    let thresholds = tuned.as_ref().map_or_else(|| half.clone(), |t| t.decide_with(rule));
    let right_after = corrected_right(&parent, &thresholds)?;

    let gate = GateScore::measure(&task, &parent_judged, &judged.probabilities(&parent)?, &judged.labels, cfg.seed).on(
        judged.split,
        judged.mirrored.is_some(),
        judged.excluded,
    );
    let validation = GateScore::measure(&task, &parent_probs, &val_probs, &val.y, cfg.seed);
    let (promoted, reason) = promotion(cfg, &gate);
    let next_step = next_step(all.len(), promoted, &parent.run_dir, &data, &cfg.feedback_dir);

    let seconds = started.elapsed().as_secs_f64();
    let config = run_config(cfg, &parent, &data, &all, seconds)?;
    let outcome = RetrainOutcome {
        run_dir: PathBuf::new(),
        parent: parent.run_dir.clone(),
        corrections_new: pending.len(),
        corrections_used: all.len(),
        store_torn_tail: stored.torn_tail,
        corrected_right_before: right_before,
        corrected_right_after: right_after,
        parent_val_macro_f1: parent_val.macro_f1,
        new_val_macro_f1: new_val.macro_f1,
        monitor: gate.metric.clone(),
        parent_val_score: validation.before,
        new_val_score: validation.after,
        gate,
        validation,
        promoted,
        reason,
        next_step,
        seconds,
    };
    let metrics = serde_json::json!({"split": "val", "threshold": 0.5, "metrics": new_val});
    let thresholds = tuned.map(|t| t.record(&parent.classes, rule, "val", "the parent's rule"));
    let new = NewRun { config: &config, metrics: &metrics, thresholds: thresholds.as_ref(), history: &records };
    write_run(cfg, &parent, new, &store, &pending, outcome, cancel)
}

/// Corrections below which a small update gains little: on the `make loop` folds a gentle
/// update gained +0.001 mAP at 10 corrections (a full retrain with them +0.017) and matched a
/// full retrain at 50 (docs/loop.md).
pub const SMALL_UPDATE_MIN: usize = 50;

/// The commands that fold the feedback store into the training data and train the parent's
/// recipe again, when there are fewer than [`SMALL_UPDATE_MIN`] corrections or the update
/// was refused.
fn next_step(corrections: usize, promoted: bool, parent: &Path, data: &Path, feedback: &Path) -> Option<String> {
    if promoted && corrections >= SMALL_UPDATE_MIN {
        return None;
    }
    let why = match promoted {
        true => format!("with {corrections} corrections a small update gains little (below {SMALL_UPDATE_MIN}; docs/loop.md)"),
        false => "the update was not promoted; if the corrections are right".to_string(),
    };
    let recipe = train_ancestor(parent).join(crate::run::CONFIG_FILE);
    let fed = PathBuf::from(format!("{}-feedback", data.display().to_string().trim_end_matches('/')));
    Some(format!(
        "{why}: add the corrections to the training data and train again: voc-prep feedback --base {} --feedback {} --out {} --force && train --config {} --data {}",
        data.display(),
        feedback.display(),
        fed.display(),
        recipe.display(),
        fed.display()
    ))
}

/// The train run a retrained run descends from (itself when it is one).
fn train_ancestor(run: &Path) -> PathBuf {
    let mut at = run.to_path_buf();
    for _ in 0..1000 {
        match RunConfig::read(&at) {
            Ok(RunConfig::Retrain(r)) => at = r.parent.clone(),
            _ => break,
        }
    }
    at
}

/// The new run's `config.json`.
fn run_config(cfg: &RetrainConfig, parent: &LoadedModel, data: &Path, used: &[Correction], seconds: f64) -> Result<RunConfig> {
    Ok(RunConfig::Retrain(Box::new(RetrainRun {
        tool: RetrainTool::Retrain,
        version: crate::VERSION.to_string(),
        created: chrono::Local::now().to_rfc3339(),
        parent: parent.run_dir.clone(),
        options: RecordedRetrainOptions::Flags(RetrainOptions {
            from: Some(parent.run_dir.clone()),
            feedback_dir: Some(cfg.feedback_dir.clone()),
            ..cfg.options.clone()
        }),
        inherited: InheritedOptions { model: parent.kind, data: data.to_path_buf(), tta: parent.tta, scales: parent.scales.clone() },
        task: Some(parent.task.kind),
        label_groups: Some(parent.task.groups.clone()),
        corrections_file: cfg.corrections.clone(),
        corrections_sha256: format!("{:x}", Sha256::digest(std::fs::read(&cfg.corrections)?)),
        corrections_used: used
            .iter()
            .map(|c| CorrectionRecord { source: c.source.clone(), sha256: c.sha256.clone(), labels: c.labels.clone() })
            .collect(),
        device: crate::device::name(parent.device),
        data_manifest_sha256: Manifest::file_hash(data)?,
        classes: parent.classes.clone(),
        image_size: parent.image_size,
        resize: parent.resize,
        normalization: parent.normalization,
        head: Some(HeadSpec::of(&parent.head_layout)),
        train_seconds: seconds,
        mlflow: None,
    })))
}

/// The record files of the new run.
struct NewRun<'a> {
    config: &'a RunConfig,
    metrics: &'a serde_json::Value,
    thresholds: Option<&'a Thresholds>,
    history: &'a [EpochRecord],
}

/// Writes the new run (staged), stores the new corrections, renames the run into place, then
/// moves `runs/best` to it if promoted. A failure or Ctrl-C before the corrections are stored
/// leaves neither them nor the run.
#[allow(clippy::too_many_arguments)]
fn write_run(
    cfg: &RetrainConfig,
    parent: &LoadedModel,
    new: NewRun,
    store: &FeedbackStore,
    pending: &[Pending],
    mut outcome: RetrainOutcome,
    cancel: &AtomicBool,
) -> Result<RetrainOutcome> {
    let run = RunWriter::create(&cfg.target, &format!("{}_retrain", parent.kind.name()))?;
    write_run_files(&run, new.config, new.metrics, new.history)?;
    if let Some(t) = new.thresholds {
        t.write(run.dir())?;
    }
    run.write_model(parent.variables())?;
    outcome.run_dir = run.target().to_path_buf();
    run.write_json(RETRAIN_FILE, &outcome)?;
    if cancel.load(Ordering::SeqCst) {
        bail!(crate::Interrupted);
    }
    store.commit(pending)?;
    let finished = run.finish()?;
    if finished != outcome.run_dir {
        // Another run took the name first: record where this one went.
        outcome.run_dir = finished;
        write_atomic(&outcome.run_dir, RETRAIN_FILE, (serde_json::to_string_pretty(&outcome)? + "\n").as_bytes())?;
    }
    if outcome.promoted && matches!(cfg.target, RunTarget::Timestamped(_)) {
        point_best(&cfg.runs_dir, &outcome.run_dir)?;
    }
    Ok(outcome)
}
