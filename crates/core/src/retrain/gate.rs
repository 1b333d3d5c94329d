//! The promotion gate of a retrain: is the candidate not worse than its parent? Judged on a
//! threshold-free score (mAP; accuracy for multiclass and multihead) over the validation
//! images, with a paired bootstrap interval of the change, so that a difference the split
//! cannot resolve neither promotes a worse model nor refuses a neutral one by chance.

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
        }
    }

    /// Whether the candidate is not worse: the interval's lower end at or above `-tolerance`.
    pub fn not_worse(&self, tolerance: f64) -> bool {
        self.low >= -tolerance
    }

    /// The decision in words, e.g. `not promoted: mAP 0.873 -> 0.861, 95% interval of the
    /// change [-0.022, -0.001] reaches below -0.010 (the tolerance)`.
    pub fn explain(&self, tolerance: f64) -> String {
        let head = format!(
            "{} {:.3} -> {:.3} on {} validation images, 95% interval of the change [{:+.3}, {:+.3}]",
            self.metric, self.before, self.after, self.images, self.low, self.high
        );
        if self.not_worse(tolerance) {
            format!("promoted: {head} stays above -{tolerance:.3} (the tolerance)")
        } else {
            format!("not promoted: {head} reaches below -{tolerance:.3} (the tolerance)")
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
