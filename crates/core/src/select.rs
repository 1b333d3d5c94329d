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
//!
//! [`diverse_selection`] keeps a selection from being K near-copies of one confusing scene.

use crate::task::Task;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// A ranking of predictions by informativeness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Informativeness {
    Uncertainty,
    Entropy,
    Margin,
}

impl Informativeness {
    pub const ALL: [Informativeness; 3] = [Informativeness::Uncertainty, Informativeness::Entropy, Informativeness::Margin];

    /// The name `predict --rank` and `/queue?rank=` take.
    pub fn name(self) -> &'static str {
        match self {
            Informativeness::Uncertainty => "uncertainty",
            Informativeness::Entropy => "entropy",
            Informativeness::Margin => "margin",
        }
    }

    /// The ranking named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }
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

/// How many times K the most informative candidates [`diverse_selection`] clusters.
pub const DIVERSE_PREFILTER: usize = 10;

/// Diverse mini-batch selection (Zhdanov 2019, "Diverse mini-batch Active Learning"): of the
/// `DIVERSE_PREFILTER`·k most informative items, k-means on their `features` (one row per
/// item of `scores`; rows of another length than the first are left out), each item weighted
/// by its informativeness shifted to be positive, into k clusters, and from each cluster the
/// item nearest its centre. Returns k indices into `scores` (fewer only when there are fewer
/// items), most informative first, equal scores in index order (so `predict --diverse` and
/// `/queue?diverse=true` order the same picks alike); `seed` fixes the k-means++ start.
pub fn diverse_selection(scores: &[f32], features: &[&[f32]], k: usize, seed: u64) -> Vec<usize> {
    let width = features.first().map_or(0, |f| f.len());
    let mut order: Vec<usize> = (0..scores.len().min(features.len())).filter(|&i| features[i].len() == width).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(k.saturating_mul(DIVERSE_PREFILTER));
    if order.len() <= k {
        return order;
    }
    let flat: Vec<f32> = order.iter().flat_map(|&i| features[i].iter().copied()).collect();
    let x = Tensor::from_slice(&flat).view([order.len() as i64, width as i64]);
    let (lo, hi) = order.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &i| (lo.min(scores[i]), hi.max(scores[i])));
    let weights: Vec<f32> = order.iter().map(|&i| scores[i] - lo + 0.05 * (hi - lo) + 1e-6).collect();
    let w = Tensor::from_slice(&weights);
    let clusters = weighted_kmeans(&x, &w, k, seed);
    let centres = &clusters.centres;
    let distances = squared_distances(&x, centres);
    let mut nearest: Vec<Option<(usize, f64)>> = vec![None; k];
    for (row, &c) in clusters.assignment.iter().enumerate() {
        let d = distances.double_value(&[row as i64, c as i64]);
        if nearest[c].is_none_or(|(_, best)| d < best) {
            nearest[c] = Some((row, d));
        }
    }
    let mut picked: Vec<usize> = nearest.into_iter().flatten().map(|(row, _)| order[row]).collect();
    for &i in &order {
        if picked.len() >= k {
            break;
        }
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    picked
}

struct Clusters {
    centres: Tensor,
    assignment: Vec<usize>,
}

/// Squared Euclidean distances `[N, K]` between rows of `x` and `centres`.
fn squared_distances(x: &Tensor, centres: &Tensor) -> Tensor {
    let xx = x.pow_tensor_scalar(2).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let cc = centres.pow_tensor_scalar(2).sum_dim_intlist([1i64].as_slice(), true, Kind::Float).transpose(0, 1);
    (xx - x.matmul(&centres.transpose(0, 1)) * 2.0 + cc).clamp_min(0.0)
}

/// Weighted k-means (k-means++ start weighted by `w`, then Lloyd's steps until the
/// assignment is stable, at most 100) of the rows of `x`.
fn weighted_kmeans(x: &Tensor, w: &Tensor, k: usize, seed: u64) -> Clusters {
    let n = x.size()[0] as usize;
    let weights: Vec<f64> = Vec::<f32>::try_from(w).unwrap_or_default().into_iter().map(f64::from).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let draw = |rng: &mut ChaCha8Rng, mass: &[f64]| {
        let total: f64 = mass.iter().sum();
        if total <= 0.0 {
            return rng.gen_range(0..mass.len());
        }
        let mut r = rng.gen::<f64>() * total;
        for (i, m) in mass.iter().enumerate() {
            if r < *m {
                return i;
            }
            r -= m;
        }
        mass.len() - 1
    };
    let mut chosen = vec![draw(&mut rng, &weights)];
    let mut nearest = vec![f64::INFINITY; n];
    while chosen.len() < k {
        let last = x.get(*chosen.last().expect("one centre") as i64).unsqueeze(0);
        let d: Vec<f32> = Vec::try_from(squared_distances(x, &last).view([-1])).unwrap_or_default();
        for (m, &di) in nearest.iter_mut().zip(&d) {
            *m = m.min(f64::from(di));
        }
        let mass: Vec<f64> = nearest.iter().zip(&weights).map(|(d, w)| d * w).collect();
        chosen.push(draw(&mut rng, &mass));
    }
    let index = Tensor::from_slice(&chosen.iter().map(|&i| i as i64).collect::<Vec<_>>());
    let mut centres = x.index_select(0, &index);
    let mut assignment: Vec<usize> = Vec::new();
    for _ in 0..100 {
        let next: Vec<usize> = Vec::<i64>::try_from(squared_distances(x, &centres).argmin(1, false))
            .unwrap_or_default()
            .into_iter()
            .map(|c| c as usize)
            .collect();
        if next == assignment {
            break;
        }
        assignment = next;
        let labels = Tensor::from_slice(&assignment.iter().map(|&c| c as i64).collect::<Vec<_>>());
        let member =
            Tensor::zeros([n as i64, k as i64], (Kind::Float, x.device())).scatter_value(1, &labels.unsqueeze(1), 1.0) * w.unsqueeze(1);
        let mass = member.sum_dim_intlist([0i64].as_slice(), false, Kind::Float).unsqueeze(1);
        let sums = member.transpose(0, 1).matmul(x);
        // A cluster that lost every item keeps its centre.
        let empty = mass.le(0.0);
        centres = (sums / mass.clamp_min(1e-12)).where_self(&empty.logical_not(), &centres);
    }
    Clusters { centres, assignment }
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

    #[test]
    fn rankings_are_named_as_the_flag_and_query_take_them() {
        for how in Informativeness::ALL {
            assert_eq!(Informativeness::parse(how.name()), Some(how));
        }
        assert_eq!(Informativeness::Margin.name(), "margin");
        assert_eq!(Informativeness::parse("Margin"), None);
    }

    #[test]
    fn equal_scores_come_back_in_index_order() {
        let features: Vec<Vec<f32>> = (0..12).map(|i| vec![(i % 4) as f32 * 10.0, (i / 4) as f32]).collect();
        let rows: Vec<&[f32]> = features.iter().map(Vec::as_slice).collect();
        for seed in 0..5 {
            let picked = diverse_selection(&[1.0; 12], &rows, 4, seed);
            let mut sorted = picked.clone();
            sorted.sort_unstable();
            assert_eq!(picked, sorted, "seed {seed}");
        }
    }

    #[test]
    fn a_diverse_selection_takes_one_image_of_each_group_before_a_second_of_any() {
        // Three tight groups of near-copies; the first group is the most uncertain, so plain
        // ranking would pick only from it.
        let groups = [[1.0f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let mut rows = Vec::new();
        let mut scores = Vec::new();
        for (g, centre) in groups.iter().enumerate() {
            for j in 0..5 {
                rows.extend(centre.iter().map(|v| v + 0.01 * j as f32));
                scores.push(-0.01 * (g * 10 + j) as f32);
            }
        }
        let features: Vec<&[f32]> = rows.chunks(3).collect();
        let picked = diverse_selection(&scores, &features, 3, 7);
        let mut groups_of: Vec<usize> = picked.iter().map(|i| i / 5).collect();
        groups_of.sort();
        assert_eq!(groups_of, vec![0, 1, 2], "{picked:?}");
        assert!(picked.windows(2).all(|w| scores[w[0]] >= scores[w[1]]), "most informative first: {picked:?}");
        assert_eq!(picked, diverse_selection(&scores, &features, 3, 7), "deterministic for a seed");
        assert_eq!(diverse_selection(&scores, &features, 20, 7).len(), 15, "never more than there are");
    }
}
