//! Multi-label metrics from probabilities and 0/1 labels at per-class thresholds.

use serde::{Deserialize, Serialize};

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

/// Dataset-level multi-label metrics. Precision, recall and F1 of a class with no
/// predicted (or no actual) positives are 0, like scikit-learn's `zero_division=0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelMetrics {
    pub macro_f1: f64,
    pub micro_f1: f64,
    /// Macro-averaged precision.
    pub precision: f64,
    /// Macro-averaged recall.
    pub recall: f64,
    /// Fraction of images whose whole label set is predicted exactly.
    pub subset_accuracy: f64,
    /// Fraction of (image, class) decisions that are wrong.
    pub hamming_loss: f64,
    pub per_class: Vec<ClassMetrics>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Computes metrics; `probs` and `labels` are row-major `[n, classes.len()]`.
pub fn compute(probs: &[f32], labels: &[f32], classes: &[String], thresholds: &[f32]) -> MultiLabelMetrics {
    let c = classes.len();
    assert_eq!(probs.len(), labels.len());
    assert_eq!(thresholds.len(), c);
    let n = if c == 0 { 0 } else { probs.len() / c };
    let (mut tp, mut fp, mut fn_) = (vec![0usize; c], vec![0usize; c], vec![0usize; c]);
    let (mut exact, mut wrong) = (0usize, 0usize);
    for i in 0..n {
        let mut all_right = true;
        for k in 0..c {
            let pred = probs[i * c + k] >= thresholds[k];
            let truth = labels[i * c + k] >= 0.5;
            match (pred, truth) {
                (true, true) => tp[k] += 1,
                (true, false) => fp[k] += 1,
                (false, true) => fn_[k] += 1,
                (false, false) => {}
            }
            if pred != truth {
                all_right = false;
                wrong += 1;
            }
        }
        exact += all_right as usize;
    }
    let per_class: Vec<ClassMetrics> = (0..c)
        .map(|k| {
            let p = ratio(tp[k], tp[k] + fp[k]);
            let r = ratio(tp[k], tp[k] + fn_[k]);
            ClassMetrics {
                class: classes[k].clone(),
                precision: p,
                recall: r,
                f1: f1(p, r),
                support: tp[k] + fn_[k],
                tp: tp[k],
                fp: fp[k],
                fn_: fn_[k],
            }
        })
        .collect();
    let mean = |f: &dyn Fn(&ClassMetrics) -> f64| {
        if c == 0 {
            0.0
        } else {
            per_class.iter().map(f).sum::<f64>() / c as f64
        }
    };
    let (stp, sfp, sfn) = (tp.iter().sum::<usize>(), fp.iter().sum::<usize>(), fn_.iter().sum::<usize>());
    MultiLabelMetrics {
        macro_f1: mean(&|m| m.f1),
        micro_f1: f1(ratio(stp, stp + sfp), ratio(stp, stp + sfn)),
        precision: mean(&|m| m.precision),
        recall: mean(&|m| m.recall),
        subset_accuracy: ratio(exact, n),
        hamming_loss: ratio(wrong, n * c),
        per_class,
    }
}

/// VOC (2010 onwards) average precision of one class: the area under the precision-recall
/// curve after making precision monotonically decreasing. `None` without positives.
pub fn average_precision(scores: &[f32], truth: &[bool]) -> Option<f64> {
    let positives = truth.iter().filter(|&&t| t).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut rec = vec![0.0];
    let mut prec = vec![0.0];
    for &i in &order {
        if truth[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        rec.push(tp as f64 / positives as f64);
        prec.push(tp as f64 / (tp + fp) as f64);
    }
    rec.push(1.0);
    prec.push(0.0);
    for i in (0..prec.len() - 1).rev() {
        prec[i] = prec[i].max(prec[i + 1]);
    }
    Some((1..rec.len()).map(|i| (rec[i] - rec[i - 1]) * prec[i]).sum())
}

/// Precision-recall points (recall, precision) of one class, by decreasing score.
pub fn pr_curve(scores: &[f32], truth: &[bool]) -> Vec<(f64, f64)> {
    let positives = truth.iter().filter(|&&t| t).count().max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen) = (0.0, 0.0);
    let mut pts = vec![(0.0, 1.0)];
    for &i in &order {
        seen += 1.0;
        if truth[i] {
            tp += 1.0;
        }
        pts.push((tp / positives, tp / seen));
    }
    pts
}

/// Per-class AP over row-major `[n, c]` arrays; `None` for classes without positives.
pub fn per_class_ap(probs: &[f32], labels: &[f32], c: usize) -> Vec<Option<f64>> {
    (0..c)
        .map(|k| {
            let s: Vec<f32> = probs.iter().skip(k).step_by(c).copied().collect();
            let t: Vec<bool> = labels.iter().skip(k).step_by(c).map(|&v| v >= 0.5).collect();
            average_precision(&s, &t)
        })
        .collect()
}

/// Mean of the defined APs (classes with positives).
pub fn mean_ap(aps: &[Option<f64>]) -> f64 {
    let v: Vec<f64> = aps.iter().flatten().copied().collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Confusion matrix of one group of mutually exclusive columns: `m[truth][predicted]`
/// counts over the rows of row-major `[n, c]` 0/1 labels and decisions.
pub fn confusion_matrix(labels: &[f32], decisions: &[f32], c: usize, group: std::ops::Range<usize>) -> Vec<Vec<usize>> {
    let k = group.len();
    let mut m = vec![vec![0usize; k]; k];
    for (y, d) in labels.chunks(c).zip(decisions.chunks(c)) {
        let truth = group.clone().position(|j| y[j] >= 0.5);
        let pred = group.clone().position(|j| d[j] >= 0.5);
        if let (Some(t), Some(p)) = (truth, pred) {
            m[t][p] += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    #[test]
    fn confusion_matrix_counts_truth_by_prediction() {
        // 2 columns before the group, group of 3 columns.
        let labels = [0.0, 1.0, 1.0, 0.0, 0.0, /**/ 1.0, 0.0, 0.0, 0.0, 1.0, /**/ 0.0, 0.0, 0.0, 0.0, 1.0];
        let decide = [0.0, 1.0, 1.0, 0.0, 0.0, /**/ 1.0, 0.0, 0.0, 1.0, 0.0, /**/ 0.0, 0.0, 0.0, 0.0, 1.0];
        let m = confusion_matrix(&labels, &decide, 5, 2..5);
        assert_eq!(m, vec![vec![1, 0, 0], vec![0, 0, 0], vec![0, 1, 1]]);
    }

    #[test]
    fn average_precision_hand_computed() {
        // ranks: +, -, +, -  -> precision envelope 1, 2/3 at recalls .5, 1
        let ap = average_precision(&[0.9, 0.8, 0.7, 0.6], &[true, false, true, false]).unwrap();
        assert!((ap - (0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-12, "{ap}");
        assert_eq!(average_precision(&[0.9, 0.1], &[true, true]), Some(1.0));
        assert_eq!(average_precision(&[0.9, 0.1], &[false, false]), None);
        assert!((mean_ap(&[Some(1.0), None, Some(0.5)]) - 0.75).abs() < 1e-12);
    }

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn hand_computed_example() {
        // 4 images, 2 classes.
        // class 0: truth 1,1,0,0  pred 1,0,1,0 -> tp1 fp1 fn1 -> p .5 r .5 f1 .5
        // class 1: truth 1,0,0,1  pred 1,0,0,1 -> tp2 -> f1 1
        let probs = [0.9, 0.8, 0.2, 0.1, 0.7, 0.3, 0.4, 0.6];
        let labels = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let m = compute(&probs, &labels, &names(2), &[0.5, 0.5]);
        assert!((m.per_class[0].f1 - 0.5).abs() < 1e-12);
        assert!((m.per_class[1].f1 - 1.0).abs() < 1e-12);
        assert!((m.macro_f1 - 0.75).abs() < 1e-12);
        // micro: tp 3, fp 1, fn 1 -> p .75 r .75
        assert!((m.micro_f1 - 0.75).abs() < 1e-12);
        // exact rows: image 0 (1,1 vs 1,1) yes, 1 (0,0 vs 1,0) no, 2 (1,0 vs 0,0) no, 3 yes
        assert!((m.subset_accuracy - 0.5).abs() < 1e-12);
        assert!((m.hamming_loss - 2.0 / 8.0).abs() < 1e-12);
        assert_eq!(m.per_class[0].support, 2);
    }

    #[test]
    fn no_positives_and_all_negative_predictions_give_zero_not_nan() {
        let m = compute(&[0.1, 0.2], &[0.0, 0.0], &names(1), &[0.5]);
        assert_eq!(m.per_class[0].f1, 0.0);
        assert_eq!(m.micro_f1, 0.0);
        assert_eq!(m.subset_accuracy, 1.0);
        let m = compute(&[0.1, 0.2], &[1.0, 1.0], &names(1), &[0.5]);
        assert_eq!(m.per_class[0].recall, 0.0);
        assert_eq!(m.hamming_loss, 1.0);
    }

    #[test]
    fn thresholds_are_per_class() {
        let m = compute(&[0.3, 0.3], &[1.0, 0.0], &names(2), &[0.25, 0.5]);
        assert_eq!(m.per_class[0].tp, 1);
        assert_eq!(m.per_class[1].fp, 0);
    }
}
