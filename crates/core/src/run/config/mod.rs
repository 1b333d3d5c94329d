//! The run contract: `config.json` of every run directory as one typed value. `train`,
//! `retrain` and `evaluate --ensemble` write it; everything that loads a run reads it here.
//! Unknown keys are errors (a misspelt key never silently becomes a default), and the values
//! are validated before any model is built from them.
//!
//! A run is one of three kinds, told apart by the tag each has always written: `"tool":
//! "train"`, `"tool": "retrain"`, or `"kind": "ensemble"`.

mod records;

pub use records::{
    CorrectionRecord, EnsembleKind, EnsembleRun, HeadSpec, InheritedOptions, MlflowRef, ModelSpec, OneOrMany, RetrainRun, RetrainTool,
    TrainRun, TrainTool,
};

use crate::io::image::MAX_IMAGE_SIZE;
use crate::run::options::TrainOptions;
use crate::run::CONFIG_FILE;
use crate::task::Task;
use crate::thresholds::{RecordedRule, ThresholdRule};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::Path;

/// `config.json` of a run.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RunConfig {
    Train(Box<TrainRun>),
    Retrain(Box<RetrainRun>),
    Ensemble(EnsembleRun),
}

impl RunConfig {
    /// Reads and validates `dir/config.json`.
    pub fn read(dir: &Path) -> Result<RunConfig> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{} is not a finished run (no readable {CONFIG_FILE})", dir.display()))?;
        Self::parse(&text).with_context(|| format!("{}: not a valid run config", path.display()))
    }

    /// What this run's record says about its threshold rule (`dir`: where it was read from,
    /// against which an ensemble's member names resolve).
    pub fn recorded_threshold_rule(&self, dir: &Path) -> RecordedRule {
        let recipe = |cfg: &RunConfig| match cfg {
            RunConfig::Train(r) => Some(r.options.options().thresholds),
            _ => None,
        };
        match self {
            RunConfig::Train(r) if r.options.options().refit => RecordedRule::Refit,
            RunConfig::Ensemble(e) => {
                let base = dir.parent().unwrap_or(Path::new("."));
                let rules: Vec<Option<ThresholdRule>> =
                    e.members.iter().map(|m| RunConfig::read(&base.join(m)).ok().as_ref().and_then(recipe)).collect();
                match rules.first().copied().flatten().filter(|r| rules.iter().all(|x| *x == Some(*r))) {
                    Some(rule) => RecordedRule::Recipe(rule),
                    None => RecordedRule::None,
                }
            }
            other => recipe(other).map_or(RecordedRule::None, RecordedRule::Recipe),
        }
    }

    /// Rewrites `dir/config.json` with this config (atomically: a reader sees the old file or
    /// the new one).
    pub fn rewrite(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        crate::io::staging::write_atomic(dir, CONFIG_FILE, text.as_bytes())
    }

    /// Parses and validates the text of a `config.json`.
    pub fn parse(text: &str) -> Result<RunConfig> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let tag = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let cfg = match (tag("kind").as_deref(), tag("tool").as_deref()) {
            (Some("ensemble"), _) => RunConfig::Ensemble(serde_json::from_value(value)?),
            (_, Some("train")) => RunConfig::Train(Box::new(serde_json::from_value(value)?)),
            (_, Some("retrain")) => RunConfig::Retrain(Box::new(serde_json::from_value(given_and_inherited(value))?)),
            (kind, tool) => {
                bail!("unknown run kind (kind {kind:?}, tool {tool:?}); expected tool \"train\" or \"retrain\", or kind \"ensemble\"")
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The options this run was made with, as a recipe for `tool` (`train` for a trained run,
    /// `retrain` for a retrained one): `tool --config <run>/config.json` makes the run again.
    pub fn recipe(&self, tool: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
        match (self, tool) {
            (RunConfig::Train(r), "train") => Ok(r.options.options().recipe()),
            (RunConfig::Retrain(r), "retrain") => Ok(r.options.options().recipe()),
            (RunConfig::Train(_), _) => bail!("a trained run: its options are train's (train --config)"),
            (RunConfig::Retrain(_), _) => bail!("a retrained run: its options are retrain's (retrain --config)"),
            (RunConfig::Ensemble(_), _) => bail!("an ensemble records no training options (evaluate --ensemble made it)"),
        }
    }

    /// The run's MLflow record, if it was logged.
    pub fn mlflow(&self) -> Option<&MlflowRef> {
        match self {
            RunConfig::Train(t) => t.mlflow.as_ref(),
            RunConfig::Retrain(r) => r.mlflow.as_ref(),
            RunConfig::Ensemble(_) => None,
        }
    }

    /// Records where the run was logged (ensembles are not logged).
    pub fn set_mlflow(&mut self, m: MlflowRef) {
        match self {
            RunConfig::Train(t) => t.mlflow = Some(m),
            RunConfig::Retrain(r) => r.mlflow = Some(m),
            RunConfig::Ensemble(_) => {}
        }
    }

    /// The class names, in output column order.
    pub fn classes(&self) -> &[String] {
        match self {
            RunConfig::Train(r) => &r.classes,
            RunConfig::Retrain(r) => &r.classes,
            RunConfig::Ensemble(e) => &e.classes,
        }
    }

    /// Input side in pixels.
    pub fn image_size(&self) -> u32 {
        match self {
            RunConfig::Train(r) => r.image_size,
            RunConfig::Retrain(r) => r.image_size,
            RunConfig::Ensemble(e) => e.image_size,
        }
    }

    /// The ensemble, if this run is one.
    pub fn as_ensemble(&self) -> Option<&EnsembleRun> {
        match self {
            RunConfig::Ensemble(e) => Some(e),
            _ => None,
        }
    }

    /// What building and scoring a single run needs; an error for an ensemble.
    pub fn model_spec(&self) -> Result<ModelSpec> {
        let trained: TrainOptions;
        let (model, task, groups, classes, image_size, resize, normalization, tta, data, train_seconds, head, scales) = match self {
            RunConfig::Train(r) => {
                trained = r.options.options();
                (
                    trained.model,
                    r.task,
                    &r.label_groups,
                    &r.classes,
                    r.image_size,
                    r.resize,
                    r.normalization,
                    trained.tta,
                    &trained.data,
                    r.train_seconds,
                    Some(&r.head),
                    &trained.scales,
                )
            }
            RunConfig::Retrain(r) => (
                r.inherited.model,
                r.task,
                &r.label_groups,
                &r.classes,
                r.image_size,
                r.resize,
                r.normalization,
                r.inherited.tta,
                &r.inherited.data,
                r.train_seconds,
                r.head.as_ref(),
                &r.inherited.scales,
            ),
            RunConfig::Ensemble(e) => bail!("is an ensemble of {} runs ({:?}); use one of them here", e.members.len(), e.members),
        };
        let task = match (task, groups) {
            (Some(kind), groups) => Task::new(kind, classes.clone(), groups.clone().unwrap_or_default())?,
            (None, None) => Task::multilabel(classes.clone()),
            (None, Some(_)) => bail!("label_groups without a task"),
        };
        let head = match head {
            Some(h) => h.layout()?,
            None => model.default_head(),
        };
        Ok(ModelSpec {
            model,
            task,
            image_size,
            resize,
            normalization,
            tta,
            data: data.clone(),
            train_seconds,
            head,
            scales: scales.clone(),
        })
    }

    fn validate(&self) -> Result<()> {
        let classes = self.classes();
        if classes.is_empty() {
            bail!("no classes");
        }
        if let Some(dup) = classes.iter().enumerate().find_map(|(i, c)| classes[..i].contains(c).then_some(c)) {
            bail!("class {dup:?} is listed twice");
        }
        let size = self.image_size();
        if !(1..=MAX_IMAGE_SIZE).contains(&size) {
            bail!("image_size {size}: expected 1..={MAX_IMAGE_SIZE}");
        }
        if let Some(e) = self.as_ensemble() {
            if e.members.len() < 2 {
                bail!("an ensemble needs at least two members, found {}", e.members.len());
            }
            return Ok(());
        }
        let spec = self.model_spec()?;
        let n = spec.normalization;
        if !(n.mean.iter().all(|m| m.is_finite()) && n.std.iter().all(|s| s.is_finite() && *s > 0.0)) {
            bail!("normalization {n:?}: expected finite means and positive standard deviations");
        }
        let min = spec.model.min_input_size();
        if size < min {
            bail!("image_size {size} is below {}'s minimum of {min}", spec.model.name());
        }
        crate::model::multi_scale::check_sizes(spec.model, &spec.scales).context("scales")?;
        Ok(())
    }
}

/// A retrain record in the current layout: one written before 0.2 held what the retrain was
/// given as `retrain_options` and what it inherited as `options`; they become `options` and
/// `inherited` (a rewrite then writes the current layout).
fn given_and_inherited(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(o) = value.as_object_mut() {
        if let Some(given) = o.remove("retrain_options") {
            if let Some(inherited) = o.remove("options") {
                o.insert("inherited".into(), inherited);
            }
            o.insert("options".into(), given);
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::image::ResizeMode;
    use crate::model::BackboneKind;
    use crate::task::TaskKind;

    /// A train config as written by vocml 0.1.0 before this module existed.
    pub const TRAIN_V010: &str = r#"{
  "tool": "train", "version": "0.1.0", "created": "2026-11-28T10:00:00+00:00",
  "options": {"data": "processed_data", "model": "efficientnet_lite0", "weights": null, "epochs": 10,
    "batch_size": 16, "lr": 0.0001, "patience": 3, "fine_tune_blocks": 0, "fine_tune_epochs": 5,
    "fine_tune_lr": 1e-05, "augment": {"rotation_degrees": 15.0, "hflip": true, "brightness": 0.2},
    "image_size": null, "cache_features": true, "aug_views": 2, "pos_weight": false, "seed": 42,
    "runs_dir": "runs", "scheduler": "constant", "plateau_factor": 0.2, "plateau_patience": 2,
    "tta": false, "speed": {"channels_last": true, "bf16": false}},
  "weights_used": ".venv/vocml-weights/efficientnet_lite0.safetensors", "device": "cpu",
  "data_manifest_sha256": "ab", "task": "multilabel", "label_groups": [],
  "classes": ["person", "chair", "dog", "sofa"], "image_size": 64, "resize": "stretch",
  "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
  "head": {"hidden": 128, "dropout": 0.2}, "monitor": "macro-F1", "best_epoch": 3,
  "train_seconds": 4.2, "train_images": 168, "val_images": 36
}"#;

    #[test]
    fn bad_multi_scale_sizes_in_a_run_are_refused() {
        let with = |scales: &str| TRAIN_V010.replace("\"image_size\": null,", &format!("\"image_size\": null, \"scales\": {scales},"));
        let spec = RunConfig::parse(&with("[64, 32]")).unwrap().model_spec().unwrap();
        assert_eq!(spec.scales, vec![64, 32]);
        assert_eq!(
            format!("{:#}", RunConfig::parse(&with("[64, 8]")).unwrap_err()),
            "scales: 8 px: expected 32..=4096 pixels for efficientnet_lite0"
        );
        assert!(format!("{:#}", RunConfig::parse(&with("[64, 64]")).unwrap_err()).contains("64 px is listed twice"));
        assert!(RunConfig::parse(&with("\"big\"")).is_err());
    }

    #[test]
    fn label_smoothing_in_a_run_is_read_and_a_bad_one_refused() {
        let with = |v: &str| TRAIN_V010.replace("\"pos_weight\": false,", &format!("\"pos_weight\": false, \"label_smoothing\": {v},"));
        let RunConfig::Train(run) = RunConfig::parse(&with("0.1")).unwrap() else { panic!("a train run") };
        assert_eq!(run.options.options().label_smoothing(), 0.1);
        let RunConfig::Train(old) = RunConfig::parse(TRAIN_V010).unwrap() else { panic!("a train run") };
        assert_eq!(old.options.options().label_smoothing(), 0.0, "absent: none");
        assert!(format!("{:#}", RunConfig::parse(&with("\"x\"")).unwrap_err()).contains("invalid type: string \"x\", expected f64"));
    }

    #[test]
    fn reads_a_run_written_before_the_typed_contract() {
        let cfg = RunConfig::parse(TRAIN_V010).unwrap();
        let spec = cfg.model_spec().unwrap();
        assert_eq!(spec.model, BackboneKind::EfficientnetLite0);
        assert_eq!(spec.task, Task::multilabel(cfg.classes().to_vec()));
        assert_eq!((spec.image_size, spec.resize, spec.tta), (64, ResizeMode::Stretch, false));
        let again = serde_json::to_value(&cfg).unwrap();
        let before: serde_json::Value = serde_json::from_str(TRAIN_V010).unwrap();
        assert_eq!(again, before, "a config round-trips to the same keys and values");
    }

    /// Run configs written by vocml 0.1.0 before the typed contract (the demo's runs).
    const WRITTEN_BY_0_1_0: [&str; 3] = [
        include_str!("../testdata/train_v0.1.0.json"),
        include_str!("../testdata/retrain_v0.1.0.json"),
        include_str!("../testdata/train_multihead_v0.1.0.json"),
    ];

    #[test]
    fn runs_written_by_0_1_0_load_and_round_trip() {
        for text in WRITTEN_BY_0_1_0 {
            let cfg = RunConfig::parse(text).unwrap();
            let spec = cfg.model_spec().unwrap();
            assert_eq!(spec.task.classes, cfg.classes());
            // A retrain's record comes back in the current layout, with the same values.
            let before = given_and_inherited(serde_json::from_str(text).unwrap());
            assert_eq!(serde_json::to_value(&cfg).unwrap(), before, "same keys and values after a round trip");
        }
        let heads = RunConfig::parse(WRITTEN_BY_0_1_0[2]).unwrap().model_spec().unwrap();
        assert_eq!((heads.model, heads.task.kind, heads.image_size), (BackboneKind::SmallCnn, TaskKind::Multihead, 32));
        assert_eq!(heads.task.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["color", "shape"]);
    }

    #[test]
    fn the_recorded_normalization_is_the_one_used() {
        let text = TRAIN_V010.replace(r#""mean": [0.5, 0.5, 0.5]"#, r#""mean": [0.4, 0.5, 0.6]"#);
        let spec = RunConfig::parse(&text).unwrap().model_spec().unwrap();
        assert_eq!(spec.normalization.mean, [0.4, 0.5, 0.6]);
        let bad = TRAIN_V010.replace(r#""std": [0.5, 0.5, 0.5]"#, r#""std": [0.5, 0.0, 0.5]"#);
        assert!(format!("{:#}", RunConfig::parse(&bad).unwrap_err()).contains("positive standard deviations"));
    }

    #[test]
    fn a_run_from_before_task_types_is_multilabel() {
        let mut v: serde_json::Value = serde_json::from_str(TRAIN_V010).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("task");
        o.remove("label_groups");
        o.remove("monitor");
        let spec = RunConfig::parse(&v.to_string()).unwrap().model_spec().unwrap();
        assert_eq!(spec.task.kind, TaskKind::Multilabel);
    }

    #[test]
    fn misspelt_missing_or_bad_values_are_errors() {
        let cases: [(&str, &str, serde_json::Value); 6] = [
            ("resize", "resize_mode", serde_json::json!("letterbox")),
            ("image_size", "image_size", serde_json::json!(0)),
            ("image_size", "image_size", serde_json::json!(100000)),
            ("classes", "classes", serde_json::json!([])),
            ("classes", "classes", serde_json::json!(["a", "a"])),
            ("tool", "tool", serde_json::json!("trian")),
        ];
        for (remove, key, value) in cases {
            let mut v: serde_json::Value = serde_json::from_str(TRAIN_V010).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove(remove);
            o.insert(key.into(), value.clone());
            let err = RunConfig::parse(&v.to_string()).map(|_| ()).unwrap_err();
            assert!(!format!("{err:#}").is_empty(), "{key}={value} was accepted");
        }
        let mut v: serde_json::Value = serde_json::from_str(TRAIN_V010).unwrap();
        v.as_object_mut().unwrap().remove("resize");
        let err = format!("{:#}", RunConfig::parse(&v.to_string()).unwrap_err());
        assert!(err.contains("resize"), "{err}");
    }

    #[test]
    fn ensembles_parse_and_are_not_single_models() {
        let text = r#"{"kind": "ensemble", "members": ["a", "b"], "tta": true, "classes": ["x", "y"],
            "image_size": 64, "resize": "stretch", "created": "now", "tool_version": "0.1.0"}"#;
        let cfg = RunConfig::parse(text).unwrap();
        assert_eq!(cfg.as_ensemble().unwrap().members.len(), 2);
        assert!(cfg.model_spec().is_err());
    }
}
