//! Per-class decision thresholds of a run (`thresholds.json`, written by `evaluate` and
//! `retrain`), validated against the run's classes when read, and the rule that turns the
//! thresholds tuned on validation into the ones a run decides with.

use crate::run::THRESHOLDS_FILE;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Validation positives a tuned threshold must have to move halfway from 0.5 under
/// [`ThresholdRule::Shrunk`] (a prior worth this many positives).
pub const SHRINK_POSITIVES: f64 = 50.0;

/// How a run's decision thresholds follow from the per-class thresholds that maximise F1 on
/// validation. Cross-validated in docs/quality.md: tuned thresholds fitted to ~200 validation
/// images help a weak model and cost a strong one on unseen photos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ThresholdRule {
    /// The F1-maximising threshold of each class on validation.
    Tuned,
    /// The tuned threshold moved toward 0.5 in proportion to the evidence behind it:
    /// 0.5 + (t - 0.5) * n / (n + 50), n the class's validation positives.
    #[default]
    Shrunk,
    /// 0.5 for every class.
    #[cfg_attr(feature = "clap", value(alias = "0.5"))]
    Half,
}

impl ThresholdRule {
    /// The name used by the flag, the recipe key and the files.
    pub fn name(self) -> &'static str {
        match self {
            ThresholdRule::Tuned => "tuned",
            ThresholdRule::Shrunk => "shrunk",
            ThresholdRule::Half => "half",
        }
    }

    /// The thresholds this rule decides with, from the F1-maximising `tuned` ones and each
    /// class's validation `positives`.
    pub fn apply(self, tuned: &[f32], positives: &[usize]) -> Vec<f32> {
        match self {
            ThresholdRule::Tuned => tuned.to_vec(),
            ThresholdRule::Half => vec![0.5; tuned.len()],
            ThresholdRule::Shrunk => tuned
                .iter()
                .zip(positives)
                .map(|(&t, &n)| {
                    let w = n as f64 / (n as f64 + SHRINK_POSITIVES);
                    (0.5 + (t as f64 - 0.5) * w) as f32
                })
                .collect(),
        }
    }
}

impl std::fmt::Display for ThresholdRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-class decision thresholds stored with a run (written by `evaluate` and `retrain`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub classes: Vec<String>,
    pub thresholds: Vec<f32>,
    /// Where they were tuned (e.g. `val`).
    pub tuned_on: String,
    /// The rule that made them from the tuned ones (files written before rules: `tuned`).
    #[serde(default = "tuned_rule")]
    pub rule: ThresholdRule,
    /// Why this rule: the flag, the run's recipe, or the default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

fn tuned_rule() -> ThresholdRule {
    ThresholdRule::Tuned
}

/// The decision thresholds stored in `dir` (and true), or 0.5 for every class (and false);
/// stored thresholds for other classes are an error.
pub fn thresholds_for(dir: &Path, classes: &[String]) -> Result<(Vec<f32>, bool)> {
    match read_thresholds(dir)? {
        Some(t) if t.classes == classes => Ok((t.thresholds, true)),
        Some(t) => {
            bail!("{}: thresholds are for classes {:?}, the model has {:?}", dir.join(THRESHOLDS_FILE).display(), t.classes, classes)
        }
        None => Ok((vec![0.5; classes.len()], false)),
    }
}

/// Reads `thresholds.json` of a run, if `evaluate` has written one.
pub fn read_thresholds(run_dir: &Path) -> Result<Option<Thresholds>> {
    let p = run_dir.join(THRESHOLDS_FILE);
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let t: Thresholds = serde_json::from_str(&text).with_context(|| format!("{}: invalid thresholds file", p.display()))?;
    if t.thresholds.len() != t.classes.len() {
        bail!("{}: {} thresholds for {} classes", p.display(), t.thresholds.len(), t.classes.len());
    }
    if let Some(bad) = t.thresholds.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        bail!("{}: threshold {bad} is outside [0, 1]", p.display());
    }
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_out_of_range_thresholds_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let classes = vec!["a".to_string(), "b".to_string()];
        for (body, expect) in [
            (r#"{"classes":["a","b"],"thresholds":[0.5],"tuned_on":"val"}"#, "1 thresholds for 2 classes"),
            (r#"{"classes":["a","b"],"thresholds":[0.5,1.5],"tuned_on":"val"}"#, "outside [0, 1]"),
            (r#"{"classes":["a","c"],"thresholds":[0.5,0.5],"tuned_on":"val"}"#, "thresholds are for classes"),
        ] {
            std::fs::write(d.path().join(THRESHOLDS_FILE), body).unwrap();
            let err = format!("{:#}", thresholds_for(d.path(), &classes).unwrap_err());
            assert!(err.contains(expect), "{err}");
        }
        std::fs::write(d.path().join(THRESHOLDS_FILE), r#"{"classes":["a","b"],"thresholds":[0.25,0.75],"tuned_on":"val"}"#).unwrap();
        assert_eq!(thresholds_for(d.path(), &classes).unwrap(), (vec![0.25, 0.75], true));
        assert_eq!(read_thresholds(d.path()).unwrap().unwrap().rule, ThresholdRule::Tuned, "files before rules were tuned");
    }

    #[test]
    fn rules_turn_tuned_thresholds_into_decisions() {
        let tuned = [0.9f32, 0.1, 0.3];
        assert_eq!(ThresholdRule::Tuned.apply(&tuned, &[10, 10, 0]), tuned.to_vec());
        assert_eq!(ThresholdRule::Half.apply(&tuned, &[10, 10, 0]), vec![0.5; 3]);
        let s = ThresholdRule::Shrunk.apply(&tuned, &[50, 150, 0]);
        assert!((s[0] - 0.7).abs() < 1e-6, "{s:?}");
        assert!((s[1] - 0.2).abs() < 1e-6, "{s:?}");
        assert_eq!(s[2], 0.5, "no positives: no evidence to move");
    }
}
