//! Per-class decision thresholds of a run (`thresholds.json`, written by `evaluate` and
//! `retrain`), validated against the run's classes when read.

use crate::run::THRESHOLDS_FILE;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Per-class decision thresholds stored with a run (written by `evaluate`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub classes: Vec<String>,
    pub thresholds: Vec<f32>,
    /// Where they were tuned (e.g. `val`).
    pub tuned_on: String,
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
    }
}
