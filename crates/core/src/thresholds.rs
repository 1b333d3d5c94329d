//! Decision thresholds, in one place: tuned per class on validation ([`Tuned`]), turned by a
//! [`ThresholdRule`] into the ones a run decides with, chosen for a run ([`rule_for`]), stored
//! as `thresholds.json` ([`Thresholds::write`], by `evaluate` and `retrain`) and read back
//! checked against the run's classes ([`thresholds_for`]).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The thresholds file of a run.
pub const THRESHOLDS_FILE: &str = "thresholds.json";

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

impl Thresholds {
    /// Writes `thresholds.json` into `run_dir` atomically.
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        crate::io::staging::write_atomic(run_dir, THRESHOLDS_FILE, (serde_json::to_string_pretty(self)? + "\n").as_bytes())
    }
}

/// Thresholds tuned on one split: each class's F1-maximising threshold and the positives
/// behind it (what [`ThresholdRule::Shrunk`] weighs).
#[derive(Debug, Clone, PartialEq)]
pub struct Tuned {
    pub thresholds: Vec<f32>,
    pub positives: Vec<usize>,
}

impl Tuned {
    /// Tunes on row-major `[n, c]` probabilities and 0/1 labels.
    pub fn on(probs: &[f32], labels: &[f32], c: usize) -> Tuned {
        Tuned { thresholds: tune(probs, labels, c), positives: positives(labels, c) }
    }

    /// The thresholds `rule` decides with.
    pub fn decide_with(&self, rule: ThresholdRule) -> Vec<f32> {
        rule.apply(&self.thresholds, &self.positives)
    }

    /// The record of a run deciding with `rule`, tuned on the split `tuned_on`.
    pub fn record(&self, classes: &[String], rule: ThresholdRule, tuned_on: &str, why: &str) -> Thresholds {
        Thresholds {
            classes: classes.to_vec(),
            thresholds: self.decide_with(rule),
            tuned_on: tuned_on.to_string(),
            rule,
            why: why.to_string(),
        }
    }
}

/// Positive labels (>= 0.5) per class of a row-major `[n, c]` label array.
pub fn positives(labels: &[f32], c: usize) -> Vec<usize> {
    (0..c).map(|k| labels.iter().skip(k).step_by(c).filter(|&&v| v >= 0.5).count()).collect()
}

/// What a run's record says about its threshold rule (read by [`crate::run::config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedRule {
    /// A refit: its validation images were trained on.
    Refit,
    /// The rule its recipe asked for (a trained run; an ensemble whose members agree).
    Recipe(ThresholdRule),
    /// Nothing (a retrained run, an ensemble whose members disagree).
    None,
}

/// The rule a run decides with, and why: `flag` when given, else 0.5 for a refit, else its
/// recipe's, else the rule its stored thresholds were made with (`stored`), else the default.
pub fn rule_for(flag: Option<ThresholdRule>, recorded: RecordedRule, stored: Option<&Thresholds>) -> (ThresholdRule, String) {
    match (flag, recorded, stored) {
        (Some(rule), _, _) => (rule, "--thresholds".into()),
        (None, RecordedRule::Refit, _) => (ThresholdRule::Half, "a refit: its validation images were trained on".into()),
        (None, RecordedRule::Recipe(rule), _) => (rule, "the run's recipe (thresholds)".into()),
        (None, RecordedRule::None, Some(t)) => (t.rule, "the rule its thresholds were stored with".into()),
        (None, RecordedRule::None, None) => (ThresholdRule::default(), "the default rule".into()),
    }
}

/// Per-class thresholds maximising F1 on the given data (midpoints between distinct scores;
/// ties go to the threshold closest to 0.5). Classes without positives keep 0.5.
pub fn tune(probs: &[f32], labels: &[f32], c: usize) -> Vec<f32> {
    (0..c)
        .map(|k| {
            let s: Vec<f32> = probs.iter().skip(k).step_by(c).copied().collect();
            let t: Vec<bool> = labels.iter().skip(k).step_by(c).map(|&v| v >= 0.5).collect();
            let positives = t.iter().filter(|&&b| b).count();
            if positives == 0 {
                return 0.5;
            }
            let mut uniq = s.clone();
            uniq.sort_by(|a, b| a.total_cmp(b));
            uniq.dedup();
            let mut candidates: Vec<f32> = uniq.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
            candidates.push(0.5);
            candidates.push(uniq[0] / 2.0);
            let score = |th: f32| {
                let (mut tp, mut fp) = (0usize, 0usize);
                for (&p, &truth) in s.iter().zip(&t) {
                    if p >= th {
                        if truth {
                            tp += 1
                        } else {
                            fp += 1
                        }
                    }
                }
                let fn_ = positives - tp;
                2.0 * tp as f64 / (2 * tp + fp + fn_).max(1) as f64
            };
            let mut best = (f64::MIN, 0.5f32);
            for th in candidates {
                let f = score(th);
                let closer = (th - 0.5).abs() < (best.1 - 0.5).abs();
                if f > best.0 + 1e-12 || ((f - best.0).abs() <= 1e-12 && closer) {
                    best = (f, th);
                }
            }
            best.1
        })
        .collect()
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
    read_thresholds_file(&p).map(Some)
}

/// Reads a `thresholds.json` (a run's, or one `evaluate --out` wrote), checked for length and
/// range.
pub fn read_thresholds_file(p: &Path) -> Result<Thresholds> {
    let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    let t: Thresholds = serde_json::from_str(&text).with_context(|| format!("{}: invalid thresholds file", p.display()))?;
    if t.thresholds.len() != t.classes.len() {
        bail!("{}: {} thresholds for {} classes", p.display(), t.thresholds.len(), t.classes.len());
    }
    if let Some(bad) = t.thresholds.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        bail!("{}: threshold {bad} is outside [0, 1]", p.display());
    }
    Ok(t)
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
    fn tuned_thresholds_separate_the_classes() {
        // class 0 positives score 0.3-0.4, negatives 0.1-0.2: the best cut is between.
        let probs = [0.4, 0.9, 0.3, 0.8, 0.2, 0.1, 0.1, 0.2];
        let labels = [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let tuned = Tuned::on(&probs, &labels, 2);
        assert!(tuned.thresholds[0] > 0.2 && tuned.thresholds[0] <= 0.3, "{tuned:?}");
        assert_eq!(tuned.thresholds[1], 0.5, "no positives keeps 0.5");
        assert_eq!(tuned.positives, vec![2, 0]);
        let d = tuned.decide_with(ThresholdRule::Shrunk);
        assert!((d[0] - (0.5 + (tuned.thresholds[0] - 0.5) * 2.0 / 52.0)).abs() < 1e-6, "{d:?}");
    }

    #[test]
    fn the_rule_is_the_flag_then_a_refits_then_the_recipes_then_the_stored_one() {
        let stored =
            Thresholds { classes: vec![], thresholds: vec![], tuned_on: "val".into(), rule: ThresholdRule::Tuned, why: String::new() };
        let recipe = RecordedRule::Recipe(ThresholdRule::Half);
        assert_eq!(rule_for(Some(ThresholdRule::Tuned), RecordedRule::Refit, None).0, ThresholdRule::Tuned);
        assert_eq!(rule_for(None, RecordedRule::Refit, Some(&stored)).0, ThresholdRule::Half);
        assert_eq!(rule_for(None, recipe, Some(&stored)).0, ThresholdRule::Half);
        assert_eq!(rule_for(None, RecordedRule::None, Some(&stored)).0, ThresholdRule::Tuned);
        assert_eq!(rule_for(None, RecordedRule::None, None), (ThresholdRule::Shrunk, "the default rule".to_string()));
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
