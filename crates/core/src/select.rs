//! Choosing what to label next (active learning): how informative a prediction is, so the
//! images the model is least sure about go first. Higher is more informative.
//!
//! - `uncertainty`: multilabel, minus the smallest distance of a class's probability to its
//!   (tuned) threshold; grouped tasks, minus the smallest margin between a head's two most
//!   probable classes.
//! - `entropy`: multilabel, the summed binary entropy of the classes; grouped tasks, the summed
//!   entropy of each head's distribution.
//! - `margin`: minus the smallest margin between the two most probable classes of a head
//!   (multilabel: of a class and its complement, |2p - 1|).

use crate::task::Task;

/// A ranking of predictions by informativeness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Informativeness {
    Uncertainty,
    Entropy,
    Margin,
}

/// The informativeness of probabilities `p` under `task` and its `thresholds`.
pub fn informativeness(task: &Task, p: &[f32], thresholds: &[f32], how: Informativeness) -> f32 {
    let binary_entropy = |q: f32| {
        let q = q.clamp(1e-7, 1.0 - 1e-7);
        -(q * q.ln() + (1.0 - q) * (1.0 - q).ln())
    };
    if !task.is_grouped() {
        return match how {
            Informativeness::Uncertainty => -p.iter().zip(thresholds).map(|(&q, &t)| (q - t).abs()).fold(f32::INFINITY, f32::min),
            Informativeness::Entropy => p.iter().map(|&q| binary_entropy(q)).sum(),
            Informativeness::Margin => -p.iter().map(|&q| (2.0 * q - 1.0).abs()).fold(f32::INFINITY, f32::min),
        };
    }
    let heads = task.ranges().into_iter().map(|r| &p[r]);
    match how {
        Informativeness::Entropy => heads.map(|h| h.iter().map(|&q| -q.clamp(1e-7, 1.0) * q.clamp(1e-7, 1.0).ln()).sum::<f32>()).sum(),
        Informativeness::Uncertainty | Informativeness::Margin => -heads
            .map(|h| {
                let mut s: Vec<f32> = h.to_vec();
                s.sort_by(|a, b| b.total_cmp(a));
                s[0] - s.get(1).copied().unwrap_or(0.0)
            })
            .fold(f32::INFINITY, f32::min),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::LabelGroup;

    #[test]
    fn the_least_sure_prediction_ranks_first() {
        let t = Task::multilabel(vec!["a".into(), "b".into()]);
        let th = [0.5, 0.3];
        let sure = informativeness(&t, &[0.99, 0.01], &th, Informativeness::Uncertainty);
        let unsure = informativeness(&t, &[0.99, 0.32], &th, Informativeness::Uncertainty);
        assert!(unsure > sure);
        assert!((unsure + 0.02).abs() < 1e-6, "{unsure}");
        let e_sure = informativeness(&t, &[0.99, 0.01], &th, Informativeness::Entropy);
        let e_unsure = informativeness(&t, &[0.5, 0.5], &th, Informativeness::Entropy);
        assert!(e_unsure > e_sure && (e_unsure - 2.0 * std::f32::consts::LN_2).abs() < 1e-5);
        let g = |n: &str, c: &[&str]| LabelGroup { name: n.into(), classes: c.iter().map(|s| s.to_string()).collect() };
        let heads = Task::multihead(vec![g("color", &["red", "blue"]), g("shape", &["o", "x", "v"])]).unwrap();
        let m = informativeness(&heads, &[0.9, 0.1, 0.4, 0.35, 0.25], &[0.5; 5], Informativeness::Margin);
        assert!((m + 0.05).abs() < 1e-6, "the closest head decides: {m}");
    }
}
