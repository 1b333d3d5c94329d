//! Validation scoring shared by `train` and `retrain`: metrics of a head's logits against
//! the validation labels, and the metric that early stopping and promotion follow.

use crate::eval::metrics::{compute, MultiLabelMetrics};
use crate::task::Task;
use crate::tensor::host_values;
use anyhow::Result;
use tch::Tensor;

/// The validation metric that early stopping and run selection follow: macro-F1 for
/// multilabel, exact-match accuracy for the grouped tasks.
pub fn monitored(task: &Task, m: &MultiLabelMetrics) -> f64 {
    if task.is_grouped() {
        m.subset_accuracy
    } else {
        m.macro_f1
    }
}

/// Name of [`monitored`]'s metric.
pub fn monitored_name(task: &Task) -> &'static str {
    if task.is_grouped() {
        "accuracy"
    } else {
        "macro-F1"
    }
}

/// Metrics of `[n, C]` logits against labels at `thresholds` (multilabel) or by arg-max
/// (grouped tasks), and the probabilities.
pub fn score_logits(task: &Task, logits: &Tensor, labels: &[f32], thresholds: &[f32]) -> Result<(MultiLabelMetrics, Vec<f32>)> {
    let probs = host_values(&task.probabilities(logits))?;
    let decisions = task.decide(&probs, thresholds);
    Ok((compute(&decisions, labels, &task.classes, &vec![0.5; task.classes.len()]), probs))
}

/// A validation split as the head sees it: backbone features, labels on the device and on
/// the host.
pub struct ValidationSet<'a> {
    pub features: Tensor,
    pub labels: Tensor,
    pub y: &'a [f32],
}

impl ValidationSet<'_> {
    /// Validation loss and metrics (thresholds 0.5 / arg-max) of a head, without gradients.
    pub fn score(
        &self,
        task: &Task,
        head: impl Fn(&Tensor) -> Tensor,
        loss: impl Fn(&Tensor, &Tensor) -> Tensor,
    ) -> Result<(f64, MultiLabelMetrics)> {
        tch::no_grad(|| {
            let logits = head(&self.features);
            let val_loss = loss(&logits, &self.labels).double_value(&[]);
            let half = vec![0.5f32; task.classes.len()];
            Ok((val_loss, score_logits(task, &logits, self.y, &half)?.0))
        })
    }
}
