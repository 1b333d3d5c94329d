//! `evaluate`: metrics of a run on a prepared split, written to the run (the comparison of
//! runs is [`crate::eval::comparison`]'s). Multilabel runs are scored at 0.5 and at per-class thresholds
//! tuned on validation; grouped tasks (multiclass, multihead) by arg-max per group, with
//! accuracy and a confusion matrix per group.

use crate::dataset::manifest::Manifest;
use crate::dataset::prepared::SplitData;
use crate::eval::metrics::{compute, confusion_matrix, mean_ap, per_class_ap, MultiLabelMetrics};
use crate::infer::{LoadOptions, Predictor};
use crate::io::staging::write_atomic;
use crate::run::check_data_compatible;
use crate::run::config::RunConfig;
use crate::run::{CONFUSION_FILE, EVALUATION_FILE, PR_CURVES_FILE};
use crate::task::TaskKind;
use crate::tensor::host_values;
use crate::thresholds::{read_thresholds, rule_for, ThresholdRule, Tuned};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// The threshold rule of a run, and why ([`crate::thresholds::rule_for`] of what its record
/// and its stored thresholds say).
pub fn threshold_rule_of(run_dir: &Path, flag: Option<ThresholdRule>) -> Result<(ThresholdRule, String)> {
    let recorded = RunConfig::read(run_dir)?.recorded_threshold_rule(run_dir);
    Ok(rule_for(flag, recorded, read_thresholds(run_dir)?.as_ref()))
}

/// Evaluates a run (or a saved ensemble) on `split` of `data`, tuning thresholds on the
/// validation split and deciding with the run's [`threshold_rule_of`] (`rule` overrides
/// it), and writes `evaluation.json`, `thresholds.json` and the plots into it; the run is
/// loaded as `load` says.
pub fn evaluate_run(
    run_dir: &Path,
    data: &Path,
    split: &str,
    load: &LoadOptions,
    batch: usize,
    rule: Option<ThresholdRule>,
) -> Result<Evaluation> {
    Ok(evaluate_to(run_dir, data, split, load, batch, rule, run_dir)?.evaluation)
}

/// An evaluation with the probabilities and labels it was computed from.
pub struct Scored {
    pub evaluation: Evaluation,
    /// Row-major `[images, classes]`.
    pub probs: Vec<f32>,
    pub labels: Vec<f32>,
}

/// [`evaluate_run`], its files written to `dest` instead of the run.
pub fn evaluate_to(
    run_dir: &Path,
    data: &Path,
    split: &str,
    load: &LoadOptions,
    batch: usize,
    rule: Option<ThresholdRule>,
    dest: &Path,
) -> Result<Scored> {
    let model = Predictor::load(run_dir, load)?;
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
    let tuned_th = match (&val, split) {
        (Some(v), _) => Some(Tuned::on(&score_split(&model, v, batch)?.0, &v.y, c)),
        (None, "val") if !task.is_grouped() => Some(Tuned::on(&probs, &target.y, c)),
        _ => None,
    };
    let at = |th: &Vec<f32>| metric_set(&compute(&probs, &target.y, model.classes(), th), &aps, th);
    let tuned = tuned_th.as_ref().map(|t| at(&t.thresholds));
    let shrunk = tuned_th.as_ref().map(|t| at(&t.decide_with(ThresholdRule::Shrunk)));
    if let Some(t) = &tuned_th {
        t.record(model.classes(), rule, "val", &why).write(dest)?;
    }
    let threshold_rule = tuned_th.is_some().then_some(rule);
    let tuned_on = tuned_th.is_some().then(|| "val".to_string());
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
    write_atomic(dest, EVALUATION_FILE, (serde_json::to_string_pretty(&eval)? + "\n").as_bytes())?;
    write_plots(&eval, &probs, &target.y, dest)?;
    Ok(Scored { evaluation: eval, probs, labels: target.y })
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
