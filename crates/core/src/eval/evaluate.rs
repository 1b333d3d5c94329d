//! `evaluate`: metrics of a run on a prepared split, written to the run; comparison of runs
//! and selection of the best. Multilabel runs are scored at 0.5 and at per-class thresholds
//! tuned on validation; grouped tasks (multiclass, multihead) by arg-max per group, with
//! accuracy and a confusion matrix per group.

use crate::dataset::manifest::Manifest;
use crate::dataset::prepared::SplitData;
use crate::eval::metrics::{compute, confusion_matrix, mean_ap, per_class_ap, positives_per_class, tune_thresholds, MultiLabelMetrics};
use crate::run::check_data_compatible;
use crate::run::config::RunConfig;
use crate::run::predictor::Predictor;
use crate::run::thresholds::{read_thresholds, ThresholdRule, Thresholds};
use crate::run::{write_atomic, COMPARISON_CSV, COMPARISON_MD, CONFUSION_FILE, EVALUATION_FILE, PR_CURVES_FILE, THRESHOLDS_FILE};
use crate::task::TaskKind;
use crate::tensor::host_values;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

/// Metrics at one set of thresholds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricSet {
    pub thresholds: Vec<f32>,
    pub macro_f1: f64,
    pub micro_f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub subset_accuracy: f64,
    pub label_accuracy: f64,
    pub hamming_loss: f64,
    pub per_class: Vec<ClassReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassReport {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// VOC average precision (null without positives).
    pub ap: Option<f64>,
    pub support: usize,
    pub threshold: f32,
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

/// Accuracy and confusion matrix of one label group (a head) of a grouped task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupReport {
    pub name: String,
    pub classes: Vec<String>,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// `confusion[truth][predicted]`, in `classes` order.
    pub confusion: Vec<Vec<usize>>,
}

/// `evaluation.json`: the metrics at 0.5 (multilabel) or by arg-max (grouped tasks) at the
/// top level (keys `macro_f1`, `micro_f1`, `subset_accuracy`, `label_accuracy`,
/// `hamming_loss`, `accuracy`, `loss`, `mAP`, `per_class`, `groups`), at the thresholds tuned
/// on validation under `tuned` and at those shrunk toward 0.5 under `shrunk` (multilabel);
/// `threshold_rule` says which of the three the run decides with, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub run: PathBuf,
    pub model: String,
    #[serde(default)]
    pub task: TaskKind,
    /// Exact-match accuracy: every label (every head) right.
    #[serde(default)]
    pub accuracy: f64,
    /// The task's loss (binary or summed softmax cross-entropy) on the split.
    #[serde(default)]
    pub loss: f64,
    /// One report per label group (grouped tasks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupReport>,
    /// Whether each image was averaged with its horizontal mirror.
    #[serde(default)]
    pub tta: bool,
    pub data: PathBuf,
    pub split: String,
    pub images: usize,
    #[serde(rename = "mAP")]
    pub map: f64,
    #[serde(flatten)]
    pub at_half: MetricSet,
    /// Thresholds tuned on `tuned_on` (null when there was no validation data).
    pub tuned: Option<MetricSet>,
    pub tuned_on: Option<String>,
    /// The tuned thresholds shrunk toward 0.5 ([`ThresholdRule::Shrunk`]).
    #[serde(default)]
    pub shrunk: Option<MetricSet>,
    /// The rule whose thresholds the run stores and decides with (null: grouped tasks, or
    /// no validation data, so 0.5).
    #[serde(default)]
    pub threshold_rule: Option<ThresholdRule>,
    /// Why that rule: the flag, the run's recipe, the rule it was stored with, or the default.
    #[serde(default)]
    pub threshold_rule_why: String,
    pub parameters: i64,
    pub train_seconds: f64,
    pub inference_ms_per_image: f64,
    /// The engine that scored: `libtorch` or `onnxruntime`.
    #[serde(default)]
    pub engine: String,
}

impl Evaluation {
    /// The metrics at the thresholds the run decides with (its `threshold_rule`; 0.5 when
    /// there is none).
    pub fn decided(&self) -> &MetricSet {
        let set = match self.threshold_rule {
            Some(ThresholdRule::Tuned) => self.tuned.as_ref(),
            Some(ThresholdRule::Shrunk) => self.shrunk.as_ref(),
            Some(ThresholdRule::Half) | None => None,
        };
        set.unwrap_or(&self.at_half)
    }
}

fn metric_set(m: &MultiLabelMetrics, aps: &[Option<f64>], thresholds: &[f32]) -> MetricSet {
    MetricSet {
        thresholds: thresholds.to_vec(),
        macro_f1: m.macro_f1,
        micro_f1: m.micro_f1,
        precision: m.precision,
        recall: m.recall,
        subset_accuracy: m.subset_accuracy,
        label_accuracy: 1.0 - m.hamming_loss,
        hamming_loss: m.hamming_loss,
        per_class: m
            .per_class
            .iter()
            .zip(aps)
            .zip(thresholds)
            .map(|((c, ap), &t)| ClassReport {
                class: c.class.clone(),
                precision: c.precision,
                recall: c.recall,
                f1: c.f1,
                ap: *ap,
                support: c.support,
                threshold: t,
                tp: c.tp,
                fp: c.fp,
                fn_: c.fn_,
            })
            .collect(),
    }
}

/// Probabilities of every row of a split, and the inference time per image in ms.
pub fn score_split(model: &Predictor, split: &SplitData, batch: usize) -> Result<(Vec<f32>, f64)> {
    let t0 = Instant::now();
    let mut probs = Vec::with_capacity(split.len() * split.classes);
    let idx: Vec<usize> = (0..split.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let p = model.score(&split.pixels(chunk)?)?;
        probs.extend(host_values(&p)?);
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3 / split.len().max(1) as f64;
    Ok((probs, ms))
}

/// The threshold rule of a run, and why: `flag` when given, else 0.5 for a refit (its
/// validation images were trained on), else its recipe's `thresholds` (a trained run; an
/// ensemble whose members agree), else the rule its stored thresholds were made with (a
/// retrained run), else the default.
pub fn threshold_rule_of(run_dir: &Path, flag: Option<ThresholdRule>) -> Result<(ThresholdRule, String)> {
    if let Some(rule) = flag {
        return Ok((rule, "--thresholds".into()));
    }
    let recipe = |cfg: &RunConfig| match cfg {
        RunConfig::Train(r) => Some(r.options.options().thresholds),
        _ => None,
    };
    let cfg = RunConfig::read(run_dir)?;
    if let RunConfig::Train(r) = &cfg {
        if r.options.options().refit {
            return Ok((ThresholdRule::Half, "a refit: its validation images were trained on".into()));
        }
    }
    let from_recipe = match &cfg {
        RunConfig::Ensemble(e) => {
            let rules: Vec<Option<ThresholdRule>> = e.members.iter().map(|m| RunConfig::read(m).ok().as_ref().and_then(recipe)).collect();
            rules.first().copied().flatten().filter(|r| rules.iter().all(|x| *x == Some(*r)))
        }
        other => recipe(other),
    };
    if let Some(rule) = from_recipe {
        return Ok((rule, "the run's recipe (thresholds)".into()));
    }
    if let Some(t) = read_thresholds(run_dir)? {
        return Ok((t.rule, "the rule its thresholds were stored with".into()));
    }
    Ok((ThresholdRule::default(), "the default rule".into()))
}

/// Evaluates a run (or a saved ensemble) on `split` of `data`, tuning thresholds on the
/// validation split and deciding with the run's [`threshold_rule_of`] (`rule` overrides
/// it), and writes `evaluation.json` and `thresholds.json` into it. `tta` overrides the run's
/// recorded test-time augmentation default.
pub fn evaluate_run(
    run_dir: &Path,
    data: &Path,
    split: &str,
    device: Device,
    batch: usize,
    tta: Option<bool>,
    rule: Option<ThresholdRule>,
) -> Result<Evaluation> {
    let model = Predictor::load(run_dir, device, tta)?;
    let (rule, why) = threshold_rule_of(&model.run_dir, rule)?;
    let manifest = Manifest::load(data)?;
    let task = model.task().clone();
    check_data_compatible(&task, model.image_size(), &model.run_dir, &manifest, data)?;
    let target = SplitData::open(data, split, &manifest)?;
    if target.is_empty() {
        bail!("{}: the {split} split is empty; choose another with --split", data.display());
    }
    let c = model.classes().len();
    let (probs, ms) = score_split(&model, &target, batch)?;
    let aps = per_class_ap(&probs, &target.y, c);
    let half = vec![0.5f32; c];
    let decisions = task.decide(&probs, &half);
    let at_half = metric_set(&compute(&decisions, &target.y, model.classes(), &half), &aps, &half);
    let groups: Vec<GroupReport> = task
        .groups
        .iter()
        .zip(task.ranges())
        .map(|(g, r)| {
            let confusion = confusion_matrix(&target.y, &decisions, c, r.clone());
            let right: usize = (0..r.len()).map(|i| confusion[i][i]).sum();
            let total: usize = confusion.iter().flatten().sum();
            GroupReport {
                name: g.name.clone(),
                classes: g.classes.clone(),
                accuracy: right as f64 / total.max(1) as f64,
                macro_f1: at_half.per_class[r.clone()].iter().map(|k| k.f1).sum::<f64>() / r.len() as f64,
                confusion,
            }
        })
        .collect();

    let val =
        if split == "val" || task.is_grouped() { None } else { SplitData::open(data, "val", &manifest).ok().filter(|v| !v.is_empty()) };
    let (tuned_th, positives, tuned_on) = match (&val, split) {
        (Some(v), _) => {
            let (vp, _) = score_split(&model, v, batch)?;
            (Some(tune_thresholds(&vp, &v.y, c)), positives_per_class(&v.y, c), Some("val".to_string()))
        }
        (None, "val") if !task.is_grouped() => {
            (Some(tune_thresholds(&probs, &target.y, c)), positives_per_class(&target.y, c), Some("val".to_string()))
        }
        _ => (None, Vec::new(), None),
    };
    let at = |th: &Vec<f32>| metric_set(&compute(&probs, &target.y, model.classes(), th), &aps, th);
    let tuned = tuned_th.as_ref().map(at);
    let shrunk = tuned_th.as_ref().map(|th| at(&ThresholdRule::Shrunk.apply(th, &positives)));
    if let (Some(th), Some(on)) = (&tuned_th, &tuned_on) {
        let t = Thresholds {
            classes: model.classes().to_vec(),
            thresholds: rule.apply(th, &positives),
            tuned_on: on.clone(),
            rule,
            why: why.clone(),
        };
        write_atomic(run_dir, THRESHOLDS_FILE, (serde_json::to_string_pretty(&t)? + "\n").as_bytes())?;
    }
    let threshold_rule = tuned_th.is_some().then_some(rule);
    let eval = Evaluation {
        run: model.run_dir.clone(),
        model: model.name.clone(),
        task: task.kind,
        accuracy: at_half.subset_accuracy,
        loss: task.loss_from_probs(&probs, &target.y),
        groups,
        tta: model.tta,
        data: std::fs::canonicalize(data).unwrap_or(data.to_path_buf()),
        split: split.to_string(),
        images: target.len(),
        map: mean_ap(&aps),
        at_half,
        tuned,
        tuned_on,
        shrunk,
        threshold_rule,
        threshold_rule_why: if threshold_rule.is_some() { why } else { String::new() },
        parameters: model.parameters(),
        train_seconds: model.train_seconds(),
        inference_ms_per_image: ms,
        engine: model.engine().to_string(),
    };
    write_atomic(run_dir, EVALUATION_FILE, (serde_json::to_string_pretty(&eval)? + "\n").as_bytes())?;
    write_plots(&eval, &probs, &target.y, run_dir)?;
    Ok(eval)
}

/// `pr_curves.png` (one panel per class) and the confusion PNGs in the run directory:
/// `confusion.png` (multilabel: TP/FP/FN/TN per class at the run's decision thresholds;
/// multiclass: the matrix) or `confusion_<head>.png` per head (multihead).
fn write_plots(e: &Evaluation, probs: &[f32], labels: &[f32], run_dir: &Path) -> Result<()> {
    use crate::eval::metrics::pr_curve;
    use crate::io::plot::{render_panels, render_table, Panel, Series, PALETTE};
    let c = e.at_half.per_class.len();
    let panels: Vec<Panel> = e
        .at_half
        .per_class
        .iter()
        .enumerate()
        .map(|(k, cl)| {
            let s: Vec<f32> = probs.iter().skip(k).step_by(c).copied().collect();
            let t: Vec<bool> = labels.iter().skip(k).step_by(c).map(|&v| v >= 0.5).collect();
            let ap = cl.ap.map(|a| format!("{a:.3}")).unwrap_or_else(|| "-".into());
            Panel {
                title: format!("{} AP {ap}", cl.class),
                x_label: "RECALL".into(),
                y_label: "PRECISION".into(),
                x_range: (0.0, 1.0),
                y_range: (0.0, 1.0),
                series: vec![Series { label: e.split.clone(), points: pr_curve(&s, &t), color: PALETTE[k % PALETTE.len()] }],
            }
        })
        .collect();
    render_panels(&panels, c.min(4), &run_dir.join(PR_CURVES_FILE))?;
    if !e.groups.is_empty() {
        for g in &e.groups {
            let rows: Vec<(String, Vec<(String, f64)>)> = g
                .classes
                .iter()
                .zip(&g.confusion)
                .map(|(name, row)| {
                    let total = row.iter().sum::<usize>().max(1) as f64;
                    (name.clone(), row.iter().map(|&v| (v.to_string(), v as f64 / total)).collect())
                })
                .collect();
            let title = format!(
                "{} {} SPLIT {} N={} ACCURACY {:.3} (ROWS TRUE, COLUMNS PREDICTED)",
                e.model, g.name, e.split, e.images, g.accuracy
            );
            let file = if e.task == TaskKind::Multihead { format!("confusion_{}.png", g.name) } else { CONFUSION_FILE.to_string() };
            render_table(&title, &g.classes, &rows, &run_dir.join(file))?;
        }
        return Ok(());
    }
    let m = e.decided();
    let n = e.images as f64;
    let rows: Vec<(String, Vec<(String, f64)>)> = m
        .per_class
        .iter()
        .map(|cl| {
            let tn = e.images - cl.tp - cl.fp - cl.fn_;
            let cell = |name: &str, v: usize| (format!("{name} {v}"), v as f64 / n.max(1.0));
            (
                cl.class.clone(),
                vec![cell("TP", cl.tp), cell("FP", cl.fp), cell("FN", cl.fn_), cell("TN", tn), (format!("F1 {:.3}", cl.f1), cl.f1)],
            )
        })
        .collect();
    let header = ["TP", "FP", "FN", "TN", "F1"].map(String::from);
    let rule = e.threshold_rule.map_or("0.5".to_string(), |r| r.name().to_uppercase());
    let title = format!("{} SPLIT {} N={} THRESHOLDS {rule}", e.model, e.split, e.images);
    render_table(&title, &header, &rows, &run_dir.join(CONFUSION_FILE))
}

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
