//! Batch scoring of image files and folders: sharding, a pipeline that
//! decodes the next batch in parallel while the current one runs through the model, and
//! CSV / JSON-lines rows written as they come.

use crate::io::csv_line;
use crate::io::image::SquareResizer;
use crate::run::predictor::Predictor;
use crate::task::{Task, TaskKind};
use crate::tensor::host_values;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use tch::Tensor;

/// A `--shard K/N` selection (K in 1..=N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub fn parse(spec: &str) -> Result<Self> {
        let (k, n) = spec.split_once('/').with_context(|| format!("--shard {spec:?}: expected K/N, e.g. 1/4"))?;
        let (k, n): (u64, u64) = (
            k.trim().parse().with_context(|| format!("--shard {spec:?}: K is not a number"))?,
            n.trim().parse().with_context(|| format!("--shard {spec:?}: N is not a number"))?,
        );
        if n == 0 || k == 0 || k > n {
            bail!("--shard {spec:?}: need 1 <= K <= N");
        }
        Ok(Shard { index: k, count: n })
    }

    /// Whether `path` belongs to this shard: a stable hash (FNV-1a) of the path text.
    pub fn contains(&self, path: &Path) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in path.to_string_lossy().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % self.count == self.index - 1
    }
}

/// The outcome for one input file: probabilities per class, or why it failed.
pub struct Scored {
    pub path: PathBuf,
    pub result: Result<Vec<f32>, String>,
}

/// Scores `files` in batches, calling `sink` for each file in input order as soon as its
/// batch is done. Decoding of the next batch overlaps inference of the current one.
pub fn score_files(
    model: &Predictor,
    files: &[PathBuf],
    batch: usize,
    cancel: &AtomicBool,
    mut sink: impl FnMut(Scored) -> Result<()>,
) -> Result<()> {
    let size = model.image_size();
    let mode = model.resize();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(PathBuf, Result<Vec<u8>, String>)>>(2);
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(move || {
            for chunk in files.chunks(batch.max(1)) {
                if cancel.load(Ordering::SeqCst) {
                    break;
                }
                let decoded: Vec<_> = chunk.par_iter().map_init(|| SquareResizer::new(size, mode), |r, p| (p.clone(), r.load(p))).collect();
                if tx.send(decoded).is_err() {
                    break;
                }
            }
        });
        for decoded in rx {
            if cancel.load(Ordering::SeqCst) {
                bail!(crate::Interrupted);
            }
            let good: Vec<&Vec<u8>> = decoded.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
            let mut probs: Vec<f32> = Vec::new();
            if !good.is_empty() {
                let s = size as i64;
                let flat: Vec<u8> = good.iter().flat_map(|v| v.iter().copied()).collect();
                let px = Tensor::from_slice(&flat).view([good.len() as i64, s, s, 3]);
                probs = host_values(&model.probabilities(&px))?;
            }
            let c = model.classes().len();
            let mut next = 0;
            for (path, r) in decoded {
                let result = match r {
                    Ok(_) => {
                        let p = probs[next * c..(next + 1) * c].to_vec();
                        next += 1;
                        Ok(p)
                    }
                    Err(e) => Err(e),
                };
                sink(Scored { path, result })?;
            }
        }
        if cancel.load(Ordering::SeqCst) {
            bail!(crate::Interrupted);
        }
        Ok(())
    })
}

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
}

impl<W: Write> RowWriter<W> {
    /// Creates the writer and writes the CSV header.
    pub fn new(mut out: W, format: Format, task: Task, thresholds: Vec<f32>, top_k: usize) -> Result<Self> {
        if format == Format::Csv {
            let mut cols = vec!["path".to_string(), "labels".to_string()];
            cols.extend(task.classes.iter().map(|c| format!("p_{c}")));
            if top_k > 0 {
                cols.push("top".into());
            }
            cols.push("error".into());
            writeln!(out, "{}", cols.join(","))?;
        }
        Ok(RowWriter { out, format, task, thresholds, top_k })
    }

    /// Writes one row and flushes, so a crash keeps every row written so far.
    /// Flushes the rows still buffered (an error here is a lost row, never ignored).
    pub fn finish(mut self) -> Result<()> {
        Ok(self.out.flush()?)
    }

    pub fn write(&mut self, row: &Scored) -> Result<()> {
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
                    cells.push(String::new());
                    writeln!(self.out, "{}", cells.join(","))?;
                } else {
                    let probs: serde_json::Map<String, serde_json::Value> =
                        self.task.classes.iter().zip(p).map(|(c, v)| (c.clone(), serde_json::json!(*v))).collect();
                    let mut obj = serde_json::json!({"path": path, "labels": labels, "probabilities": probs});
                    match self.task.kind {
                        TaskKind::Multiclass => obj["label"] = serde_json::json!(labels.first()),
                        TaskKind::Multihead => {
                            let heads: serde_json::Map<String, serde_json::Value> = self
                                .task
                                .groups
                                .iter()
                                .zip(self.task.ranges())
                                .filter_map(|(g, r)| {
                                    r.clone().position(|j| decided[j] >= 0.5).map(|k| (g.name.clone(), serde_json::json!(g.classes[k])))
                                })
                                .collect();
                            obj["heads"] = heads.into();
                        }
                        TaskKind::Multilabel => {}
                    }
                    if self.top_k > 0 {
                        obj["top"] = top.iter().map(|&k| serde_json::json!({"class": self.task.classes[k], "probability": p[k]})).collect();
                    }
                    writeln!(self.out, "{obj}")?;
                }
            }
            (Err(e), Format::Csv) => {
                let mut cells = vec![csv_line::quote(&path), String::new()];
                cells.extend(self.task.classes.iter().map(|_| String::new()));
                if self.top_k > 0 {
                    cells.push(String::new());
                }
                cells.push(csv_line::quote(e));
                writeln!(self.out, "{}", cells.join(","))?;
            }
            (Err(e), Format::Jsonl) => writeln!(self.out, "{}", serde_json::json!({"path": path, "error": e}))?,
        }
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_inputs() {
        let paths: Vec<PathBuf> = (0..500).map(|i| PathBuf::from(format!("dir/img_{i}.jpg"))).collect();
        let shards: Vec<Shard> = (1..=4).map(|k| Shard::parse(&format!("{k}/4")).unwrap()).collect();
        for p in &paths {
            assert_eq!(shards.iter().filter(|s| s.contains(p)).count(), 1);
        }
        assert!(shards.iter().all(|s| paths.iter().filter(|p| s.contains(p)).count() > 80));
        assert!(Shard::parse("0/4").is_err() && Shard::parse("5/4").is_err() && Shard::parse("x").is_err());
    }

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
