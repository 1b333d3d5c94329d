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
/// batch is done, with the image's features when `features` (what
/// [`Predictor::probabilities_and_features`] gives, from the same forward pass). Decoding of
/// the next batch overlaps inference of the current one.
pub fn score_files(
    model: &Predictor,
    files: &[PathBuf],
    batch: usize,
    cancel: &AtomicBool,
    features: bool,
    mut sink: impl FnMut(Scored, Option<Vec<f32>>) -> Result<()>,
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
            let good: Vec<&[u8]> = decoded.iter().filter_map(|(_, r)| r.as_deref().ok()).collect();
            let (probs, described) =
                if features { score_pixels_with_features(model, &good)? } else { (score_pixels(model, &good)?, Rows::default()) };
            let mut next = 0;
            for (path, r) in decoded {
                let (result, row_features) = match r {
                    Ok(_) => {
                        let p = probs.row(next).to_vec();
                        let d = features.then(|| described.row(next).to_vec());
                        next += 1;
                        (Ok(p), d)
                    }
                    Err(e) => (Err(e), None),
                };
                sink(Scored { path, result }, row_features)?;
            }
        }
        if cancel.load(Ordering::SeqCst) {
            bail!(crate::Interrupted);
        }
        Ok(())
    })
}

/// Values of several images, one row of `width` per image in order: probabilities (a column
/// per class) or features. What scoring returns, so no caller cuts a flat buffer into rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    width: usize,
    values: Vec<f32>,
}

impl Rows {
    /// `values` as rows of `width`; an error when they do not divide evenly.
    pub fn new(width: usize, values: Vec<f32>) -> Result<Self> {
        if width == 0 && !values.is_empty() || width > 0 && values.len() % width != 0 {
            bail!("{} values are not rows of {width}", values.len());
        }
        Ok(Rows { width, values })
    }

    /// The rows given one by one (each of `width` values).
    pub fn from_rows<'a>(width: usize, rows: impl IntoIterator<Item = &'a [f32]>) -> Result<Self> {
        Self::new(width, rows.into_iter().flatten().copied().collect())
    }

    /// Number of rows (images).
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// The rows in order.
    pub fn iter(&self) -> impl Iterator<Item = &[f32]> {
        (0..self.len()).map(|i| self.row(i))
    }

    /// Every value, row after row.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

/// Probabilities of decoded images (each `image_size`² x 3 bytes, as [`SquareResizer`] gives
/// them), a row per image in order, in one forward pass.
pub fn score_pixels(model: &Predictor, images: &[&[u8]]) -> Result<Rows> {
    let classes = model.classes().len();
    if images.is_empty() {
        return Rows::new(classes, Vec::new());
    }
    Rows::new(classes, host_values(&model.score(&pixel_batch(model, images)?)?)?)
}

/// [`score_pixels`] and each image's features from the same forward pass
/// ([`Predictor::probabilities_and_features`]), a row per image in order.
pub fn score_pixels_with_features(model: &Predictor, images: &[&[u8]]) -> Result<(Rows, Rows)> {
    let classes = model.classes().len();
    if images.is_empty() {
        return Ok((Rows::new(classes, Vec::new())?, Rows::default()));
    }
    let (p, f) = model.probabilities_and_features(&pixel_batch(model, images)?);
    let width = f.size().get(1).copied().unwrap_or(0) as usize;
    Ok((Rows::new(classes, host_values(&p)?)?, Rows::new(width, host_values(&f)?)?))
}

/// Decoded images as one `[B, H, W, 3]` uint8 tensor, each checked to be the model's size.
fn pixel_batch(model: &Predictor, images: &[&[u8]]) -> Result<Tensor> {
    let s = model.image_size() as i64;
    if let Some(bad) = images.iter().find(|i| i.len() as i64 != s * s * 3) {
        bail!("an image of {} bytes given to a model of {s}x{s}x3 inputs", bad.len());
    }
    crate::tensor::pixel_tensor(&images.concat(), images.len(), s as usize)
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
            let mut cols = vec!["path".to_string(), "labels".to_string()];
            cols.extend(task.classes.iter().map(|c| format!("p_{c}")));
            if top_k > 0 {
                cols.push("top".into());
            }
            if score {
                cols.push("score".into());
            }
            cols.push("error".into());
            writeln!(out, "{}", cols.join(","))?;
        }
        Ok(RowWriter { out, format, task, thresholds, top_k, score })
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

    fn write_row(&mut self, row: &Scored, score: Option<f32>) -> Result<()> {
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
                    writeln!(self.out, "{}", cells.join(","))?;
                } else {
                    let mut obj = serde_json::Map::new();
                    obj.insert("path".into(), path.into());
                    obj.extend(decision_json(&self.task, &self.thresholds, p, self.top_k));
                    if let (true, Some(s)) = (self.score, score) {
                        obj.insert("score".into(), serde_json::json!(s));
                    }
                    let obj = serde_json::Value::Object(obj);
                    writeln!(self.out, "{obj}")?;
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
                writeln!(self.out, "{}", cells.join(","))?;
            }
            (Err(e), Format::Jsonl) => writeln!(self.out, "{}", serde_json::json!({"path": path, "error": e}))?,
        }
        self.out.flush()?;
        Ok(())
    }
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
    fn rows_are_whole_and_read_back_in_order() {
        let rows = Rows::new(2, vec![0.1, 0.9, 0.4, 0.6]).unwrap();
        assert_eq!((rows.len(), rows.width()), (2, 2));
        assert_eq!(rows.iter().collect::<Vec<_>>(), [&[0.1, 0.9][..], &[0.4, 0.6][..]]);
        assert_eq!(Rows::from_rows(2, rows.iter()).unwrap(), rows);
        assert_eq!(Rows::new(3, vec![0.0; 4]).unwrap_err().to_string(), "4 values are not rows of 3");
        assert!(Rows::new(0, Vec::new()).unwrap().is_empty());
    }

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
