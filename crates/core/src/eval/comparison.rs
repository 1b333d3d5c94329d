//! The comparison of evaluated runs: the tables `evaluate` writes beside them
//! (`comparison.{csv,md}`) and the metric it selects the best by.

use crate::eval::evaluate::Evaluation;
use crate::io::staging::write_atomic;
use crate::run::{COMPARISON_CSV, COMPARISON_MD};
use crate::task::TaskKind;
use anyhow::Result;
use std::path::Path;

/// Metrics a comparison can rank runs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "snake_case"))]
pub enum RankMetric {
    /// Accuracy when every run is multiclass or multihead, else macro-F1.
    Auto,
    MacroF1,
    MicroF1,
    #[cfg_attr(feature = "clap", value(name = "mAP"))]
    Map,
    /// Exact-match accuracy (every label of an image right).
    Accuracy,
    /// The same as accuracy.
    SubsetAccuracy,
    LabelAccuracy,
}

impl RankMetric {
    /// The name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            RankMetric::Auto => "auto",
            RankMetric::MacroF1 => "macro_f1",
            RankMetric::MicroF1 => "micro_f1",
            RankMetric::Map => "mAP",
            RankMetric::Accuracy => "accuracy",
            RankMetric::SubsetAccuracy => "subset_accuracy",
            RankMetric::LabelAccuracy => "label_accuracy",
        }
    }

    /// `Auto` made concrete for these evaluations.
    pub fn resolve(self, evals: &[Evaluation]) -> RankMetric {
        match self {
            RankMetric::Auto if evals.iter().all(|e| e.task != TaskKind::Multilabel) => RankMetric::Accuracy,
            RankMetric::Auto => RankMetric::MacroF1,
            m => m,
        }
    }

    /// The value for an evaluation (at the run's decision thresholds, except mAP); `Auto`
    /// ranks by macro-F1.
    pub fn value(self, e: &Evaluation) -> f64 {
        let m = e.decided();
        match self {
            RankMetric::Auto | RankMetric::MacroF1 => m.macro_f1,
            RankMetric::MicroF1 => m.micro_f1,
            RankMetric::Map => e.map,
            RankMetric::Accuracy => e.accuracy,
            RankMetric::SubsetAccuracy => m.subset_accuracy,
            RankMetric::LabelAccuracy => m.label_accuracy,
        }
    }
}

/// Index of the best evaluation by `metric` (the first of equals); `None` when empty.
pub fn best_index(evals: &[Evaluation], metric: RankMetric) -> Option<usize> {
    (0..evals.len()).reduce(|best, i| if metric.value(&evals[i]) > metric.value(&evals[best]) { i } else { best })
}

/// Writes the comparison of `evals` into `dir` (`comparison.csv`, `comparison.md`, each
/// atomically) and returns the Markdown table.
pub fn write_comparison(dir: &Path, evals: &[Evaluation]) -> Result<String> {
    let (csv, md) = comparison_tables(evals);
    write_atomic(dir, COMPARISON_CSV, csv.as_bytes())?;
    write_atomic(dir, COMPARISON_MD, md.as_bytes())?;
    Ok(md)
}

/// The comparison of several evaluations as CSV and as a Markdown table.
pub fn comparison_tables(evals: &[Evaluation]) -> (String, String) {
    let header = [
        "run",
        "model",
        "tta",
        "macro_f1",
        "micro_f1",
        "mAP",
        "subset_accuracy",
        "label_accuracy",
        "macro_f1_at_0.5",
        "accuracy",
        "loss",
        "parameters",
        "train_seconds",
        "inference_ms_per_image",
    ];
    let mut csv = header.join(",") + "\n";
    let mut md = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for e in evals {
        let m = e.decided();
        let name = e.run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let cells = [
            name,
            e.model.clone(),
            e.tta.to_string(),
            format!("{:.4}", m.macro_f1),
            format!("{:.4}", m.micro_f1),
            format!("{:.4}", e.map),
            format!("{:.4}", m.subset_accuracy),
            format!("{:.4}", m.label_accuracy),
            format!("{:.4}", e.at_half.macro_f1),
            format!("{:.4}", e.accuracy),
            format!("{:.4}", e.loss),
            e.parameters.to_string(),
            format!("{:.1}", e.train_seconds),
            format!("{:.2}", e.inference_ms_per_image),
        ];
        csv += &(cells.join(",") + "\n");
        md += &format!("| {} |\n", cells.join(" | "));
    }
    (csv, md)
}
