//! `evaluate --out DIR`: an evaluation in a fixed directory for pipeline tools (DVC, Make),
//! the run left untouched. The directory is replaced atomically and holds `evaluation.json`,
//! `thresholds.json`, the PNGs, `metrics.json` (the headline numbers at the stored rule, flat
//! enough for `dvc metrics show`) and `pr/<class>.csv` (recall, precision: `dvc plots show`
//! data).

use crate::eval::evaluate::{evaluate_to, Evaluation};
use crate::eval::metrics::pr_curve;
use crate::infer::LoadOptions;
use crate::io::staging::{refuse_output_inside_input, refuse_output_over_input, StagingDir};
use crate::run::EVALUATION_FILE;
use crate::thresholds::ThresholdRule;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// The headline metrics file of an evaluation directory.
pub const PIPELINE_METRICS_FILE: &str = "metrics.json";
/// The folder of per-class precision-recall curves (CSV) in an evaluation directory.
pub const PR_DIR: &str = "pr";

/// [`crate::eval::evaluate::evaluate_run`] of `run_dir`, written to the evaluation directory
/// `out` (see [`EvaluationDir`]) instead of the run.
pub fn evaluate_into(
    out: &Path,
    run_dir: &Path,
    data: &Path,
    split: &str,
    load: &LoadOptions,
    batch: usize,
    rule: Option<ThresholdRule>,
) -> Result<Evaluation> {
    let dir = EvaluationDir::create(out, run_dir, data)?;
    let scored = evaluate_to(run_dir, data, split, load, batch, rule, dir.path())?;
    dir.finish(&scored.evaluation, &scored.probs, &scored.labels)?;
    Ok(scored.evaluation)
}

/// An evaluation directory being written.
pub struct EvaluationDir {
    staging: StagingDir,
    target: PathBuf,
}

impl EvaluationDir {
    /// Stages `dir`; refuses (before any work) a `dir` that holds something other than an
    /// earlier evaluation, is a link, or is inside, is or contains the run or the data.
    pub fn create(dir: &Path, run: &Path, data: &Path) -> Result<Self> {
        if dir.is_symlink() {
            bail!("--out {}: is a link; name the directory itself", dir.display());
        }
        if dir.exists() && !replaceable(dir) {
            bail!(
                "--out {}: exists and is not an evaluation directory (no {EVALUATION_FILE} and {PIPELINE_METRICS_FILE}); it is replaced only when it holds one or is empty",
                dir.display()
            );
        }
        for (input, flag) in [(run, "--run"), (data, "--data")] {
            refuse_output_over_input(dir, input, flag)?;
            refuse_output_inside_input(dir, "--out", input, flag)?;
        }
        Ok(EvaluationDir { staging: StagingDir::new(dir)?, target: dir.to_path_buf() })
    }

    /// Where the evaluation's files are staged.
    pub fn path(&self) -> &Path {
        self.staging.path()
    }

    /// Adds `metrics.json` and the PR curves of `probs` against `labels`, then renames the
    /// directory into place.
    pub fn finish(self, e: &Evaluation, probs: &[f32], labels: &[f32]) -> Result<PathBuf> {
        let dir = self.staging.path();
        std::fs::write(dir.join(PIPELINE_METRICS_FILE), serde_json::to_string_pretty(&headline(e))? + "\n")
            .with_context(|| format!("cannot write {PIPELINE_METRICS_FILE}"))?;
        let pr = dir.join(PR_DIR);
        std::fs::create_dir(&pr).with_context(|| format!("cannot create {}", pr.display()))?;
        let c = e.at_half.per_class.len();
        let mut stems = std::collections::HashSet::new();
        for (k, class) in e.at_half.per_class.iter().enumerate() {
            let stem = file_stem(&class.class);
            if !stems.insert(stem.clone()) {
                bail!("classes {:?} would share the curve file {PR_DIR}/{stem}.csv; rename one", class.class);
            }
            let scores: Vec<f32> = probs.iter().skip(k).step_by(c).copied().collect();
            let truth: Vec<bool> = labels.iter().skip(k).step_by(c).map(|&v| v >= 0.5).collect();
            let mut csv = String::from("recall,precision\n");
            for (r, p) in pr_curve(&scores, &truth) {
                csv.push_str(&format!("{r:.6},{p:.6}\n"));
            }
            let file = pr.join(format!("{stem}.csv"));
            std::fs::write(&file, csv).with_context(|| format!("cannot write {}", file.display()))?;
        }
        self.staging.commit(replaceable)?;
        Ok(self.target)
    }
}

/// Whether `--out` may replace `dir`: an empty directory, or an earlier evaluation (its
/// `evaluation.json` parses as one, and `metrics.json` is there).
fn replaceable(dir: &Path) -> bool {
    let evaluation = || {
        std::fs::read_to_string(dir.join(EVALUATION_FILE)).is_ok_and(|t| serde_json::from_str::<Evaluation>(&t).is_ok())
            && dir.join(PIPELINE_METRICS_FILE).is_file()
    };
    dir.is_dir() && (std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) || evaluation())
}

/// `metrics.json`: mAP, the F1s, accuracy and Hamming loss at the thresholds the run decides
/// with, and per class its AP and F1 (per head its accuracy for grouped tasks).
fn headline(e: &Evaluation) -> Value {
    let m = e.decided();
    let mut per_class = Map::new();
    for c in &m.per_class {
        per_class.insert(
            c.class.clone(),
            json!({"ap": c.ap, "f1": c.f1, "precision": c.precision, "recall": c.recall, "threshold": c.threshold}),
        );
    }
    let mut out = json!({
        "mAP": e.map,
        "macro_f1": m.macro_f1,
        "micro_f1": m.micro_f1,
        "accuracy": e.accuracy,
        "hamming_loss": m.hamming_loss,
        "loss": e.loss,
        "images": e.images,
        "per_class": per_class,
    });
    if !e.groups.is_empty() {
        let groups: Map<String, Value> =
            e.groups.iter().map(|g| (g.name.clone(), json!({"accuracy": g.accuracy, "macro_f1": g.macro_f1}))).collect();
        out["groups"] = Value::Object(groups);
    }
    out
}

/// A class name as a file name: letters, digits, `-` and `_` kept, anything else `_`.
fn file_stem(class: &str) -> String {
    class.chars().map(|ch| if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' { ch } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_become_safe_file_names() {
        assert_eq!(file_stem("potted plant"), "potted_plant");
        assert_eq!(file_stem("../x"), "___x");
        assert_eq!(file_stem("dog-2"), "dog-2");
    }

    #[test]
    fn refuses_a_directory_that_is_not_an_evaluation() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("eval");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        std::fs::write(out.join(EVALUATION_FILE), "{}").unwrap();
        let e = EvaluationDir::create(&out, &d.path().join("run"), &d.path().join("data")).err().unwrap();
        assert!(e.to_string().contains("is not an evaluation directory"), "{e}");
        let e = EvaluationDir::create(d.path(), &d.path().join("run"), &d.path().join("data")).err().unwrap();
        assert!(e.to_string().contains("not an evaluation directory") || e.to_string().contains("would delete"), "{e}");
        for f in ["notes.txt", EVALUATION_FILE] {
            std::fs::remove_file(out.join(f)).unwrap();
        }
        assert!(EvaluationDir::create(&out, &d.path().join("run"), &d.path().join("data")).is_ok());
        let run = d.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let e = EvaluationDir::create(&run.join("eval"), &run, &d.path().join("data")).err().unwrap();
        assert!(e.to_string().contains("inside --run"), "{e}");
    }
}
