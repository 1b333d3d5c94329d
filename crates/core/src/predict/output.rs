//! What `predict` writes for each scored file: the decision at the run's thresholds (the
//! task's rule), as CSV or JSON lines; [`decision_json`] is also what `serve` answers.

use crate::io::csv_line;
use crate::predict::Scored;
use crate::task::{Task, TaskKind};
use anyhow::{bail, Result};
use std::collections::HashSet;
use std::io::Write;

/// Output format of `predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

/// Writes scored rows: path, predicted labels, every class probability, optional top-k.
/// Multilabel labels are the classes at or above their threshold; grouped tasks label each
/// image with the most probable class of every group (JSON lines also give them per head).
pub struct RowWriter<W: Write> {
    out: W,
    format: Format,
    task: Task,
    thresholds: Vec<f32>,
    top_k: usize,
    /// Rows carry a `score` (informativeness, with `predict --rank`).
    score: bool,
}

impl<W: Write> RowWriter<W> {
    /// Creates the writer and writes the CSV header.
    pub fn new(out: W, format: Format, task: Task, thresholds: Vec<f32>, top_k: usize) -> Result<Self> {
        Self::with_score(out, format, task, thresholds, top_k, false)
    }

    /// [`RowWriter::new`], with a `score` column when `score` (rows given by
    /// [`RowWriter::write_scored`]).
    pub fn with_score(mut out: W, format: Format, task: Task, thresholds: Vec<f32>, top_k: usize, score: bool) -> Result<Self> {
        if format == Format::Csv {
            out.write_all(csv_header(&task, top_k, score).as_bytes())?;
        }
        Ok(RowWriter { out, format, task, thresholds, top_k, score })
    }

    /// A writer that goes on after rows already written (`predict --resume`): no header.
    pub fn continuing(out: W, format: Format, task: Task, thresholds: Vec<f32>, top_k: usize) -> Self {
        RowWriter { out, format, task, thresholds, top_k, score: false }
    }

    /// Writes one row with its informativeness score.
    pub fn write_scored(&mut self, row: &Scored, score: Option<f32>) -> Result<()> {
        self.write_row(row, score)
    }

    /// Flushes the rows still buffered (an error here is a lost row, never ignored).
    pub fn finish(mut self) -> Result<()> {
        Ok(self.out.flush()?)
    }

    /// Writes one row and flushes, so a crash keeps every row written so far.
    pub fn write(&mut self, row: &Scored) -> Result<()> {
        self.write_row(row, None)
    }

    /// Each row is one write of its whole line, so an output appended to (`--resume`) holds
    /// whole rows wherever the process is killed.
    fn write_row(&mut self, row: &Scored, score: Option<f32>) -> Result<()> {
        let line = self.line(row, score);
        self.out.write_all(line.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    fn line(&self, row: &Scored, score: Option<f32>) -> String {
        let path = row.path.to_string_lossy();
        match (&row.result, self.format) {
            (Ok(p), fmt) => {
                let decided = self.task.decide(p, &self.thresholds);
                let labels: Vec<&str> =
                    self.task.classes.iter().zip(&decided).filter(|(_, d)| **d >= 0.5).map(|(c, _)| c.as_str()).collect();
                let mut order: Vec<usize> = (0..p.len()).collect();
                order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
                let top: Vec<usize> = order.into_iter().take(self.top_k).collect();
                if fmt == Format::Csv {
                    let mut cells = vec![csv_line::quote(&path), labels.join(";")];
                    cells.extend(p.iter().map(|v| format!("{v:.6}")));
                    if self.top_k > 0 {
                        cells.push(top.iter().map(|&k| format!("{}:{:.4}", self.task.classes[k], p[k])).collect::<Vec<_>>().join(";"));
                    }
                    if self.score {
                        cells.push(score.map(|s| format!("{s:.6}")).unwrap_or_default());
                    }
                    cells.push(String::new());
                    cells.join(",") + "\n"
                } else {
                    let mut obj = serde_json::Map::new();
                    obj.insert("path".into(), path.into());
                    obj.extend(decision_json(&self.task, &self.thresholds, p, self.top_k));
                    if let (true, Some(s)) = (self.score, score) {
                        obj.insert("score".into(), serde_json::json!(s));
                    }
                    format!("{}\n", serde_json::Value::Object(obj))
                }
            }
            (Err(e), Format::Csv) => {
                let mut cells = vec![csv_line::quote(&path), String::new()];
                cells.extend(self.task.classes.iter().map(|_| String::new()));
                if self.top_k > 0 {
                    cells.push(String::new());
                }
                if self.score {
                    cells.push(String::new());
                }
                cells.push(csv_line::quote(e));
                cells.join(",") + "\n"
            }
            (Err(e), Format::Jsonl) => format!("{}\n", serde_json::json!({"path": path, "error": e})),
        }
    }
}

/// The header line `predict` writes first in CSV (none in JSON lines).
pub fn csv_header(task: &Task, top_k: usize, score: bool) -> String {
    let mut cols = vec!["path".to_string(), "labels".to_string()];
    cols.extend(task.classes.iter().map(|c| format!("p_{c}")));
    if top_k > 0 {
        cols.push("top".into());
    }
    if score {
        cols.push("score".into());
    }
    cols.push("error".into());
    cols.join(",") + "\n"
}

/// What the output of an interrupted `predict --resume` already holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Written {
    /// The paths of its rows, as written.
    pub paths: HashSet<String>,
    /// Bytes of whole rows (with the header): a last row without its line break was cut
    /// short and is written again.
    pub whole: usize,
}

/// Reads `text`, an output of `predict` in `format` whose CSV header must be `header`: the
/// paths of its rows and where its whole rows end. A path written twice is an error (the
/// file is not one run's).
pub fn written_rows(text: &str, format: Format, header: &str) -> Result<Written> {
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    let text = &text[..whole];
    let mut paths = HashSet::new();
    let mut add = |path: String, line: usize| match paths.insert(path.clone()) {
        true => Ok(()),
        false => Err(anyhow::anyhow!("line {line}: {path:?} has a row already")),
    };
    match format {
        Format::Jsonl => {
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let row: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| anyhow::anyhow!("line {}: not a row of predict: {e}", i + 1))?;
                let path =
                    row.get("path").and_then(|p| p.as_str()).ok_or_else(|| anyhow::anyhow!("line {}: a row without a path", i + 1))?;
                add(path.to_string(), i + 1)?;
            }
        }
        Format::Csv if text.is_empty() => {}
        Format::Csv => {
            if !text.starts_with(header) {
                let first = text.lines().next().unwrap_or_default();
                bail!("its header is {first:?}; this run writes {:?} (another run, format or --top-k?)", header.trim_end());
            }
            for (line, record) in csv_line::records(text).skip(1) {
                let fields = record.map_err(|e| anyhow::anyhow!("line {line}: {e}"))?;
                add(fields.into_iter().next().unwrap_or_default(), line)?;
            }
        }
    }
    Ok(Written { paths, whole })
}

/// What was decided for one image, as `predict`'s JSON lines and the service give it:
/// `labels` (at or above threshold; per head for grouped tasks), `probabilities` per class,
/// `label` (multiclass) or `heads` (multihead), and `top` when `top_k` > 0.
pub fn decision_json(task: &Task, thresholds: &[f32], p: &[f32], top_k: usize) -> serde_json::Map<String, serde_json::Value> {
    let decided = task.decide(p, thresholds);
    let labels: Vec<&str> = task.classes.iter().zip(&decided).filter(|(_, d)| **d >= 0.5).map(|(c, _)| c.as_str()).collect();
    let probs: serde_json::Map<String, serde_json::Value> =
        task.classes.iter().zip(p).map(|(c, v)| (c.clone(), serde_json::json!(*v))).collect();
    let mut obj = serde_json::Map::new();
    obj.insert("labels".into(), serde_json::json!(labels));
    obj.insert("probabilities".into(), probs.into());
    match task.kind {
        TaskKind::Multiclass => {
            obj.insert("label".into(), serde_json::json!(labels.first()));
        }
        TaskKind::Multihead => {
            let heads: serde_json::Map<String, serde_json::Value> = task
                .groups
                .iter()
                .zip(task.ranges())
                .filter_map(|(g, r)| r.clone().position(|j| decided[j] >= 0.5).map(|k| (g.name.clone(), serde_json::json!(g.classes[k]))))
                .collect();
            obj.insert("heads".into(), heads.into());
        }
        TaskKind::Multilabel => {}
    }
    if top_k > 0 {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let top: Vec<serde_json::Value> =
            order.into_iter().take(top_k).map(|k| serde_json::json!({"class": task.classes[k], "probability": p[k]})).collect();
        obj.insert("top".into(), top.into());
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_quote_and_carry_errors() {
        let mut buf = Vec::new();
        {
            let task = Task::multilabel(vec!["a".into(), "b".into()]);
            let mut w = RowWriter::new(&mut buf, Format::Csv, task, vec![0.5, 0.5], 1).unwrap();
            w.write(&Scored { path: "x,1.jpg".into(), result: Ok(vec![0.9, 0.2]) }).unwrap();
            w.write(&Scored { path: "bad.jpg".into(), result: Err("not an image".into()) }).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "path,labels,p_a,p_b,top,error");
        assert_eq!(lines[1], "\"x,1.jpg\",a,0.900000,0.200000,a:0.9000,");
        assert_eq!(lines[2], "bad.jpg,,,,,not an image");
    }

    #[test]
    fn grouped_rows_name_one_class_per_head() {
        use crate::task::LabelGroup;
        let g = |n: &str, c: &[&str]| LabelGroup { name: n.into(), classes: c.iter().map(|s| s.to_string()).collect() };
        let task = Task::multihead(vec![g("color", &["red", "blue"]), g("shape", &["circle", "square", "star"])]).unwrap();
        let mut buf = Vec::new();
        {
            let mut w = RowWriter::new(&mut buf, Format::Jsonl, task.clone(), vec![0.5; 5], 0).unwrap();
            w.write(&Scored { path: "a.png".into(), result: Ok(vec![0.3, 0.7, 0.2, 0.3, 0.5]) }).unwrap();
        }
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["labels"], serde_json::json!(["color/blue", "shape/star"]));
        assert_eq!(v["heads"], serde_json::json!({"color": "blue", "shape": "star"}));
        let mut buf = Vec::new();
        {
            let mut w = RowWriter::new(&mut buf, Format::Csv, task, vec![0.5; 5], 0).unwrap();
            w.write(&Scored { path: "a.png".into(), result: Ok(vec![0.6, 0.4, 0.2, 0.3, 0.5]) }).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().nth(1).unwrap(), "a.png,color/red;shape/star,0.600000,0.400000,0.200000,0.300000,0.500000,");
    }
}
