//! Validation scoring shared by `train` and `retrain`: metrics of a head's logits against
//! the validation labels, and the metric that early stopping and promotion follow.

use crate::eval::metrics::{compute, mean_ap, per_class_ap, MultiLabelMetrics};
use crate::task::Task;
use crate::tensor::host_values;
use anyhow::Result;
use tch::Tensor;

pub use crate::run::options::Monitor;

impl Monitor {
    /// The score to maximise.
    pub fn score(self, task: &Task, v: &Validation) -> f64 {
        match self {
            Monitor::F1 => monitored(task, &v.metrics),
            Monitor::Map => v.map,
            Monitor::Loss => -v.loss,
        }
    }

    /// The name recorded in the run.
    pub fn name(self, task: &Task) -> &'static str {
        match self {
            Monitor::F1 => monitored_name(task),
            Monitor::Map => "mAP",
            Monitor::Loss => "loss",
        }
    }
}

/// One validation pass: loss, metrics at 0.5 (or arg-max), and mean average precision.
#[derive(Debug, Clone)]
pub struct Validation {
    pub loss: f64,
    pub metrics: MultiLabelMetrics,
    pub map: f64,
}

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
        let v = self.validate(task, head, loss)?;
        Ok((v.loss, v.metrics))
    }

    /// [`Self::score`] with the mean average precision of the probabilities.
    pub fn validate(&self, task: &Task, head: impl Fn(&Tensor) -> Tensor, loss: impl Fn(&Tensor, &Tensor) -> Tensor) -> Result<Validation> {
        tch::no_grad(|| {
            let logits = head(&self.features);
            let val_loss = loss(&logits, &self.labels).double_value(&[]);
            let half = vec![0.5f32; task.classes.len()];
            let (metrics, probs) = score_logits(task, &logits, self.y, &half)?;
            let map = mean_ap(&per_class_ap(&probs, self.y, task.classes.len()));
            Ok(Validation { loss: val_loss, metrics, map })
        })
    }
}
