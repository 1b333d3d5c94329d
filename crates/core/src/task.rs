//! Task types: what the label columns mean, and so which loss, activation and decision rule a
//! model uses.
//!
//! Labels are always stored as a `[N, C]` 0/1 float matrix (`y_<split>.npy`). For
//! `multilabel` every column is an independent yes/no (sigmoid + binary cross-entropy, a
//! threshold per class). For `multiclass` the columns form one group with exactly one 1 per
//! row; for `multihead` they form several groups (e.g. `type`, `part`, `angle`), one 1 per
//! group and row, and the flat column names are `<group>/<class>`. Grouped tasks use one
//! softmax per group, cross-entropy summed over groups, and arg-max decisions.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use tch::{Kind, Reduction, Tensor};

/// The three task types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Any subset of the classes per image (sigmoid per class).
    #[default]
    Multilabel,
    /// Exactly one class per image (softmax).
    Multiclass,
    /// Exactly one class per label group (one softmax per group, shared backbone).
    Multihead,
}

impl TaskKind {
    pub const ALL: [TaskKind; 3] = [TaskKind::Multilabel, TaskKind::Multiclass, TaskKind::Multihead];

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Multilabel => "multilabel",
            TaskKind::Multiclass => "multiclass",
            TaskKind::Multihead => "multihead",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match Self::ALL.into_iter().find(|k| k.name() == s) {
            Some(k) => Ok(k),
            None => bail!("unknown task {s:?}; expected multilabel, multiclass or multihead"),
        }
    }
}

/// One group of mutually exclusive classes (a head).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelGroup {
    pub name: String,
    pub classes: Vec<String>,
}

/// Name of the single group of a `multiclass` task.
pub const MULTICLASS_GROUP: &str = "class";

/// A task type with its label columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub kind: TaskKind,
    /// Flat column names, in label-column order.
    pub classes: Vec<String>,
    /// Groups of columns (empty for `multilabel`).
    pub groups: Vec<LabelGroup>,
}

impl Task {
    /// A multi-label task over `classes`.
    pub fn multilabel(classes: Vec<String>) -> Task {
        Task { kind: TaskKind::Multilabel, classes, groups: Vec::new() }
    }

    /// A single-label task over `classes`.
    pub fn multiclass(classes: Vec<String>) -> Result<Task> {
        let groups = vec![LabelGroup { name: MULTICLASS_GROUP.into(), classes: classes.clone() }];
        Task::new(TaskKind::Multiclass, classes, groups)
    }

    /// A multi-head task; the flat columns are `<group>/<class>`.
    pub fn multihead(groups: Vec<LabelGroup>) -> Result<Task> {
        let classes = groups.iter().flat_map(|g| g.classes.iter().map(move |c| format!("{}/{c}", g.name))).collect();
        Task::new(TaskKind::Multihead, classes, groups)
    }

    /// Checks that `groups` partition `classes` as `kind` requires.
    pub fn new(kind: TaskKind, classes: Vec<String>, groups: Vec<LabelGroup>) -> Result<Task> {
        let task = Task { kind, classes, groups };
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = task.classes.iter().find(|c| !seen.insert(c.as_str())) {
            bail!("class {dup:?} appears twice");
        }
        match kind {
            TaskKind::Multilabel if !task.groups.is_empty() => {
                bail!("a multilabel task has no label groups")
            }
            TaskKind::Multilabel => {}
            TaskKind::Multiclass | TaskKind::Multihead => {
                if kind == TaskKind::Multiclass && task.groups.len() != 1 {
                    bail!("a multiclass task has exactly one label group (found {})", task.groups.len());
                }
                if task.groups.is_empty() {
                    bail!("a multihead task needs at least one label group");
                }
                if let Some(g) = task.groups.iter().find(|g| g.classes.len() < 2) {
                    bail!("label group {:?} has {} class(es); a softmax head needs at least 2", g.name, g.classes.len());
                }
                let flat: Vec<String> = match kind {
                    TaskKind::Multiclass => task.groups[0].classes.clone(),
                    _ => task.groups.iter().flat_map(|g| g.classes.iter().map(move |c| format!("{}/{c}", g.name))).collect(),
                };
                if flat != task.classes {
                    bail!("the label groups do not match the class columns {:?}", task.classes);
                }
            }
        }
        if task.classes.is_empty() {
            bail!("a task needs at least one class");
        }
        Ok(task)
    }

    /// Whether classes come in mutually exclusive groups (softmax heads).
    pub fn is_grouped(&self) -> bool {
        self.kind != TaskKind::Multilabel
    }

    /// Column ranges of the groups.
    pub fn ranges(&self) -> Vec<Range<usize>> {
        let mut start = 0;
        self.groups
            .iter()
            .map(|g| {
                let r = start..start + g.classes.len();
                start = r.end;
                r
            })
            .collect()
    }

    /// The training loss (mean over the batch): binary cross-entropy with logits (optionally
    /// weighting positives per class), or the sum over groups of softmax cross-entropy. `y`
    /// may hold soft targets (see [`Task::smooth_targets`]).
    pub fn loss(&self, logits: &Tensor, y: &Tensor, pos_weight: Option<&Tensor>) -> Tensor {
        if !self.is_grouped() {
            return logits.binary_cross_entropy_with_logits(y, None::<Tensor>, pos_weight.map(|w| w.shallow_clone()), Reduction::Mean);
        }
        let mut total: Option<Tensor> = None;
        for r in self.ranges() {
            let (s, n) = (r.start as i64, r.len() as i64);
            let target = y.narrow(1, s, n).to_kind(Kind::Float);
            let log_p = logits.narrow(1, s, n).to_kind(Kind::Float).log_softmax(1, Kind::Float);
            let l = -(target * log_p).sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float);
            total = Some(match total {
                Some(t) => t + l,
                None => l,
            });
        }
        total.expect("grouped tasks have groups")
    }

    /// Label smoothing of 0/1 targets by `epsilon`: `y (1 - e) + e / 2` per column (Keras'
    /// binary cross-entropy), or `y (1 - e) + e / K` within each group of K classes (PyTorch's
    /// cross-entropy `label_smoothing`). Zero returns the labels unchanged.
    pub fn smooth_targets(&self, y: &Tensor, epsilon: f64) -> Tensor {
        if epsilon == 0.0 {
            return y.shallow_clone();
        }
        if !self.is_grouped() {
            return y * (1.0 - epsilon) + epsilon / 2.0;
        }
        let parts: Vec<Tensor> = self
            .ranges()
            .iter()
            .map(|r| y.narrow(1, r.start as i64, r.len() as i64) * (1.0 - epsilon) + epsilon / r.len() as f64)
            .collect();
        Tensor::cat(&parts, 1)
    }

    /// Probabilities from logits: sigmoid per column, or softmax within each group.
    pub fn probabilities(&self, logits: &Tensor) -> Tensor {
        if !self.is_grouped() {
            return logits.sigmoid();
        }
        let parts: Vec<Tensor> =
            self.ranges().iter().map(|r| logits.narrow(1, r.start as i64, r.len() as i64).softmax(1, Kind::Float)).collect();
        Tensor::cat(&parts, 1)
    }

    /// 0/1 decisions from row-major `[n, C]` probabilities: `p >= threshold` per column, or
    /// the arg-max of each group.
    pub fn decide(&self, probs: &[f32], thresholds: &[f32]) -> Vec<f32> {
        let c = self.classes.len();
        if !self.is_grouped() {
            return probs.iter().enumerate().map(|(i, &p)| (p >= thresholds[i % c]) as u8 as f32).collect();
        }
        let ranges = self.ranges();
        let mut out = vec![0.0; probs.len()];
        for (row, chunk) in probs.chunks(c).enumerate() {
            for r in &ranges {
                let best = r.clone().max_by(|&a, &b| chunk[a].total_cmp(&chunk[b]).then(b.cmp(&a))).expect("non-empty group");
                out[row * c + best] = 1.0;
            }
        }
        out
    }

    /// The loss of row-major `[n, C]` probabilities (e.g. averaged over an ensemble or TTA
    /// views), matching [`Task::loss`] on the logits they came from (without `pos_weight`).
    pub fn loss_from_probs(&self, probs: &[f32], labels: &[f32]) -> f64 {
        let c = self.classes.len();
        let n = (probs.len() / c.max(1)).max(1) as f64;
        let ln = |p: f32| (p as f64).clamp(1e-7, 1.0 - 1e-7).ln();
        if !self.is_grouped() {
            let sum: f64 = probs
                .iter()
                .zip(labels)
                .map(|(&p, &y)| if y >= 0.5 { -ln(p) } else { -(1.0 - (p as f64).clamp(1e-7, 1.0 - 1e-7)).ln() })
                .sum();
            return sum / (n * c as f64);
        }
        let sum: f64 = probs.iter().zip(labels).filter(|(_, &y)| y >= 0.5).map(|(&p, _)| -ln(p)).sum();
        sum / n
    }

    /// Checks that one 0/1 label row has exactly one 1 per group (grouped tasks).
    pub fn check_row(&self, row: &[f32]) -> Result<()> {
        for (g, r) in self.groups.iter().zip(self.ranges()) {
            let on = row[r].iter().filter(|&&v| v >= 0.5).count();
            if on != 1 {
                bail!("label group {:?} has {on} classes set, expected exactly 1", g.name);
            }
        }
        Ok(())
    }

    /// The flat column of class `label` in a grouped task: `<group>/<class>`, or a class name
    /// that only one group has.
    pub fn column_of(&self, label: &str) -> Option<usize> {
        if let Some(i) = self.classes.iter().position(|c| c == label) {
            return Some(i);
        }
        if self.kind != TaskKind::Multihead {
            return None;
        }
        let hits: Vec<usize> =
            self.classes.iter().enumerate().filter(|(_, c)| c.rsplit_once('/').is_some_and(|(_, n)| n == label)).map(|(i, _)| i).collect();
        match hits.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn heads() -> Task {
        Task::multihead(vec![
            LabelGroup { name: "color".into(), classes: s(&["red", "blue"]) },
            LabelGroup { name: "shape".into(), classes: s(&["circle", "square", "star"]) },
        ])
        .unwrap()
    }

    #[test]
    fn multihead_columns_and_decisions() {
        let t = heads();
        assert_eq!(t.classes, s(&["color/red", "color/blue", "shape/circle", "shape/square", "shape/star"]));
        assert_eq!(t.ranges(), vec![0..2, 2..5]);
        let d = t.decide(&[0.3, 0.7, 0.2, 0.5, 0.3, 0.6, 0.4, 0.1, 0.1, 0.8], &[0.5; 5]);
        assert_eq!(d, vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(t.column_of("square"), Some(3));
        assert_eq!(t.column_of("color/blue"), Some(1));
        assert_eq!(t.column_of("green"), None);
        assert!(t.check_row(&[0.0, 1.0, 0.0, 0.0, 1.0]).is_ok());
        assert!(t.check_row(&[1.0, 1.0, 0.0, 0.0, 1.0]).unwrap_err().to_string().contains("\"color\" has 2"));
    }

    #[test]
    fn grouped_loss_is_the_sum_of_per_group_cross_entropy() {
        let t = heads();
        let logits = Tensor::from_slice(&[1.0f32, -1.0, 0.5, 2.0, -0.5]).view([1, 5]);
        let y = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.0]).view([1, 5]);
        let got = t.loss(&logits, &y, None).double_value(&[]);
        let ce = |z: &[f64], k: usize| -(z[k].exp() / z.iter().map(|v| v.exp()).sum::<f64>()).ln();
        let want = ce(&[1.0, -1.0], 0) + ce(&[0.5, 2.0, -0.5], 1);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let p = Vec::<f32>::try_from(t.probabilities(&logits).flatten(0, -1)).unwrap();
        assert!((p[0] + p[1] - 1.0).abs() < 1e-6 && (p[2] + p[3] + p[4] - 1.0).abs() < 1e-6);
        let from_probs = t.loss_from_probs(&p, &[1.0, 0.0, 0.0, 1.0, 0.0]);
        assert!((from_probs - want).abs() < 1e-5, "{from_probs} vs {want}");
    }

    #[test]
    fn multilabel_uses_thresholds_and_bce() {
        let t = Task::multilabel(s(&["a", "b"]));
        assert_eq!(t.decide(&[0.4, 0.6], &[0.3, 0.7]), vec![1.0, 0.0]);
        let logits = Tensor::from_slice(&[0.0f32, 0.0]).view([1, 2]);
        let y = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        assert!((t.loss(&logits, &y, None).double_value(&[]) - std::f64::consts::LN_2).abs() < 1e-6);
        assert!((t.loss_from_probs(&[0.5, 0.5], &[1.0, 0.0]) - std::f64::consts::LN_2).abs() < 1e-6);
    }

    #[test]
    fn smoothed_targets_match_keras_and_pytorch() {
        let y = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.0]).view([1, 5]);
        let flat = |t: Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        let ml = Task::multilabel(s(&["a", "b", "c", "d", "e"]));
        let close = |got: Vec<f32>, want: [f32; 5]| got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6);
        assert!(close(flat(ml.smooth_targets(&y, 0.2)), [0.9, 0.1, 0.1, 0.9, 0.1]));
        assert_eq!(flat(ml.smooth_targets(&y, 0.0)), flat(y.shallow_clone()));
        let t = heads();
        assert!(close(flat(t.smooth_targets(&y, 0.3)), [0.85, 0.15, 0.1, 0.8, 0.1]));
        // Soft-target cross-entropy equals PyTorch's cross_entropy(label_smoothing=0.3) summed over groups.
        let logits = Tensor::from_slice(&[1.0f32, -1.0, 0.5, 2.0, -0.5]).view([1, 5]);
        let got = t.loss(&logits, &t.smooth_targets(&y, 0.3), None).double_value(&[]);
        let smoothed_ce = |z: &[f64], k: usize, e: f64| {
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            let n = z.len() as f64;
            z.iter().enumerate().map(|(i, v)| -((if i == k { 1.0 - e } else { 0.0 }) + e / n) * (v - lse)).sum::<f64>()
        };
        let want = smoothed_ce(&[1.0, -1.0], 0, 0.3) + smoothed_ce(&[0.5, 2.0, -0.5], 1, 0.3);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn invalid_tasks_are_refused() {
        assert!(Task::multiclass(s(&["only"])).is_err());
        assert!(Task::multiclass(s(&["a", "a"])).is_err());
        assert!(
            Task::new(TaskKind::Multiclass, s(&["a", "b"]), vec![LabelGroup { name: "class".into(), classes: s(&["a", "c"]) }]).is_err()
        );
        assert_eq!(TaskKind::parse("multihead").unwrap(), TaskKind::Multihead);
        assert!(TaskKind::parse("regression").is_err());
    }
}
