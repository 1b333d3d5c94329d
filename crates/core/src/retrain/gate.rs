//! The promotion gate of a retrain: is the candidate not worse than its parent? Judged on a
//! threshold-free score (mAP; accuracy for multiclass and multihead) over images neither model
//! was selected on (the test split: the parent was early-stopped and given thresholds on the
//! validation split, which biases any comparison there in its favour), scored as the run
//! scores (flip TTA when it has it). The candidate is promoted when its change is at least
//! minus the tolerance; a paired bootstrap interval of the change says how sure that is.
//!
//! The rule and the default tolerance (0.02) were chosen on `make loop` folds 1-2 as the
//! smallest tolerance at which a rule promoted at least 90% of the updates not worse on unseen
//! photos and none worse by more than it: the interval's lower end needed 0.07, the change
//! itself 0.02 (docs/loop.md reports its decisions on folds 3-5).

use crate::eval::metrics::{mean_ap, per_class_ap};
use crate::task::Task;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Bootstrap resamples of the validation images.
pub const RESAMPLES: usize = 1000;

/// The gate's measurement: the score of parent and candidate on the same images, and the
/// 95% paired bootstrap interval of the change (candidate - parent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateScore {
    /// `mAP` or `accuracy`.
    pub metric: String,
    pub images: usize,
    pub before: f64,
    pub after: f64,
    pub low: f64,
    pub high: f64,
    pub resamples: usize,
    /// The split judged on: `test`, or `val` when the data has no usable test split.
    #[serde(default)]
    pub split: String,
    /// Whether each image was averaged with its mirror (the run's TTA).
    #[serde(default)]
    pub tta: bool,
    /// Test images left out because they are also corrections.
    #[serde(default)]
    pub excluded: usize,
}

impl GateScore {
    /// Scores parent and candidate probabilities (`[n, C]`, row-major) against `labels`, and
    /// bootstraps the change over the images with `seed`.
    pub fn measure(task: &Task, parent: &[f32], candidate: &[f32], labels: &[f32], seed: u64) -> GateScore {
        let c = task.classes.len();
        let n = labels.len() / c.max(1);
        let score = |probs: &[f32], y: &[f32]| -> f64 {
            if task.is_grouped() {
                exact_match(task, probs, y)
            } else {
                mean_ap(&per_class_ap(probs, y, c))
            }
        };
        let (before, after) = (score(parent, labels), score(candidate, labels));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut deltas = Vec::with_capacity(RESAMPLES);
        let (mut p, mut q, mut y) = (Vec::with_capacity(n * c), Vec::with_capacity(n * c), Vec::with_capacity(n * c));
        for _ in 0..RESAMPLES {
            p.clear();
            q.clear();
            y.clear();
            for _ in 0..n {
                let i = rng.gen_range(0..n);
                p.extend_from_slice(&parent[i * c..(i + 1) * c]);
                q.extend_from_slice(&candidate[i * c..(i + 1) * c]);
                y.extend_from_slice(&labels[i * c..(i + 1) * c]);
            }
            deltas.push(score(&q, &y) - score(&p, &y));
        }
        deltas.sort_by(f64::total_cmp);
        let at = |f: f64| deltas.get(((RESAMPLES as f64 - 1.0) * f).round() as usize).copied().unwrap_or(0.0);
        GateScore {
            metric: if task.is_grouped() { "accuracy" } else { "mAP" }.into(),
            images: n,
            before,
            after,
            low: at(0.025),
            high: at(0.975),
            resamples: RESAMPLES,
            split: "val".into(),
            tta: false,
            excluded: 0,
        }
    }

    /// The same measurement, saying which images it was made on.
    pub fn on(self, split: &str, tta: bool, excluded: usize) -> GateScore {
        GateScore { split: split.into(), tta, excluded, ..self }
    }

    /// The candidate's score minus the parent's.
    pub fn change(&self) -> f64 {
        self.after - self.before
    }

    /// Whether the candidate is not worse: its change at or above `-tolerance`.
    pub fn not_worse(&self, tolerance: f64) -> bool {
        self.change() >= -tolerance
    }

    /// The decision in words, e.g. `not promoted: mAP 0.873 -> 0.841 on 160 test images (with
    /// flip TTA), a change of -0.032 (95% interval [-0.061, -0.004]) is below -0.020 (the
    /// tolerance)`.
    pub fn explain(&self, tolerance: f64) -> String {
        let mut notes = Vec::new();
        if self.tta {
            notes.push("with flip TTA".to_string());
        }
        if self.excluded > 0 {
            notes.push(format!("{} that are corrections left out", self.excluded));
        }
        let images = match self.split.as_str() {
            "test" => "test images".to_string(),
            _ => {
                notes.push("no test split: the parent was early-stopped on these, which favours it".into());
                "validation images".to_string()
            }
        };
        let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
        let head = format!(
            "{} {:.3} -> {:.3} on {} {images}{notes}, a change of {:+.3} (95% interval [{:+.3}, {:+.3}])",
            self.metric,
            self.before,
            self.after,
            self.images,
            self.change(),
            self.low,
            self.high
        );
        if self.not_worse(tolerance) {
            format!("promoted: {head} is not below -{tolerance:.3} (the tolerance)")
        } else {
            format!("not promoted: {head} is below -{tolerance:.3} (the tolerance)")
        }
    }
}

/// Share of rows whose every decided label matches.
fn exact_match(task: &Task, probs: &[f32], labels: &[f32]) -> f64 {
    let c = task.classes.len();
    super::exact_rows(task, probs, labels, &vec![0.5; c]) as f64 / (labels.len() / c.max(1)).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` rows of 3 classes: labels, a model that ranks them right and one that does not.
    fn rows(n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut y, mut good, mut noise) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n * 3 {
            let t = rng.gen_bool(0.4);
            y.push(t as u8 as f32);
            good.push(if t { rng.gen_range(0.55..1.0) } else { rng.gen_range(0.0..0.6) });
            noise.push(rng.gen_range(0.0..1.0));
        }
        (y, good, noise)
    }

    #[test]
    fn promotes_a_clearly_better_candidate_and_refuses_a_clearly_worse_one() {
        let task = Task::multilabel(vec!["a".into(), "b".into(), "c".into()]);
        let (y, good, noise) = rows(200);
        let better = GateScore::measure(&task, &noise, &good, &y, 1);
        assert!(better.after > better.before + 0.2 && better.low > 0.0, "{better:?}");
        assert!(better.not_worse(0.01) && better.explain(0.01).starts_with("promoted: mAP"), "{}", better.explain(0.01));
        let worse = GateScore::measure(&task, &good, &noise, &y, 1);
        assert!(worse.high < 0.0 && !worse.not_worse(0.01), "{worse:?}");
        assert!(worse.explain(0.01).starts_with("not promoted: mAP"), "{}", worse.explain(0.01));
    }

    #[test]
    fn the_same_model_is_not_worse_and_the_interval_is_seeded() {
        let task = Task::multilabel(vec!["a".into(), "b".into(), "c".into()]);
        let (y, good, _) = rows(150);
        let same = GateScore::measure(&task, &good, &good, &y, 3);
        assert_eq!((same.low, same.high, same.before), (0.0, 0.0, same.after));
        assert!(same.not_worse(0.0));
        let (_, _, noise) = rows(150);
        assert_eq!(GateScore::measure(&task, &good, &noise, &y, 9), GateScore::measure(&task, &good, &noise, &y, 9));
    }
}
