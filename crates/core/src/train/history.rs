//! What training reports as it goes: one record per epoch (`history.csv`, the training
//! curves PNG) and the observer callbacks the binaries turn into progress bars.

use crate::eval::metrics::MultiLabelMetrics;
use crate::progress::Progress;
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

/// One row of `history.csv`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub phase: &'static str,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_macro_f1: f64,
    pub val_micro_f1: f64,
    /// Exact-match accuracy (all labels right; for multiclass, plain accuracy).
    pub val_accuracy: f64,
    pub lr: f64,
    pub seconds: f64,
}

impl EpochRecord {
    /// The record of an epoch from its losses and validation metrics.
    pub fn new(epoch: usize, phase: &'static str, train_loss: f64, val_loss: f64, val: &MultiLabelMetrics, lr: f64, seconds: f64) -> Self {
        EpochRecord {
            epoch,
            phase,
            train_loss,
            val_loss,
            val_macro_f1: val.macro_f1,
            val_micro_f1: val.micro_f1,
            val_accuracy: val.subset_accuracy,
            lr,
            seconds,
        }
    }
}

/// `history.csv` text of the given epochs.
pub fn history_csv(records: &[EpochRecord]) -> String {
    let mut csv = String::from("epoch,phase,train_loss,val_loss,val_macro_f1,val_micro_f1,val_accuracy,lr,seconds\n");
    for r in records {
        csv += &format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:e},{:.3}\n",
            r.epoch, r.phase, r.train_loss, r.val_loss, r.val_macro_f1, r.val_micro_f1, r.val_accuracy, r.lr, r.seconds
        );
    }
    csv
}

/// Loss and validation F1 per epoch as a PNG.
pub fn write_training_curves(history: &[EpochRecord], path: &Path) -> Result<()> {
    use crate::io::plot::{render_panels, Panel, Series, PALETTE};
    let pts = |f: &dyn Fn(&EpochRecord) -> f64| history.iter().map(|r| (r.epoch as f64, f(r))).collect::<Vec<_>>();
    let last = history.last().map_or(1.0, |r| r.epoch as f64).max(2.0);
    let max_loss = history.iter().map(|r| r.train_loss.max(r.val_loss)).fold(0.0, f64::max) * 1.05;
    let loss = Panel {
        title: "LOSS".into(),
        x_label: "EPOCH".into(),
        y_label: String::new(),
        x_range: (1.0, last),
        y_range: (0.0, max_loss.max(1e-3)),
        series: vec![
            Series { label: "TRAIN".into(), points: pts(&|r| r.train_loss), color: PALETTE[0] },
            Series { label: "VAL".into(), points: pts(&|r| r.val_loss), color: PALETTE[1] },
        ],
    };
    let f1 = Panel {
        title: "VALIDATION".into(),
        x_label: "EPOCH".into(),
        y_label: String::new(),
        x_range: (1.0, last),
        y_range: (0.0, 1.0),
        series: vec![
            Series { label: "MACRO F1".into(), points: pts(&|r| r.val_macro_f1), color: PALETTE[2] },
            Series { label: "MICRO F1".into(), points: pts(&|r| r.val_micro_f1), color: PALETTE[3] },
            Series { label: "ACCURACY".into(), points: pts(&|r| r.val_accuracy), color: PALETTE[4] },
        ],
    };
    render_panels(&[loss, f1], 2, path)
}

/// What training reports: the [`Progress`] of its phases and steps, and each finished epoch.
pub trait TrainObserver: Progress {
    fn epoch(&self, _rec: &EpochRecord) {}
}

impl TrainObserver for crate::progress::Silent {}
