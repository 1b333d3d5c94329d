//! The feedback store: every accepted correction, with a copy of its image, kept under
//! `runs/feedback/` so each retrain learns from all corrections so far.

use crate::io::csv_line;
use crate::io::image::decode_file;
use crate::task::Task;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Store file (JSON lines) inside the feedback directory.
pub const STORE_FILE: &str = "corrections.jsonl";

/// One user correction: an image and its true label set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    /// The path as given by the user.
    pub source: String,
    /// SHA-256 of the image file; the copy is `images/<sha256>`.
    pub sha256: String,
    pub labels: Vec<String>,
    pub added: String,
}

/// One correction to store: its image file, its true labels and the name the store records
/// it under.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCorrection {
    pub path: PathBuf,
    pub labels: Vec<String>,
    /// The CSV's `source` column, else the path as listed.
    pub source: String,
}

/// Parses a corrections CSV (`path,labels` with `;`-separated labels; empty = no class; an
/// optional third column `source` names each correction in the store instead of its path).
/// For multiclass a row names exactly one class; for multihead one class per head, as
/// `<head>/<class>` or as a class name only one head has. Labels are returned as the task's
/// column names. Relative paths are resolved against the working directory, then the CSV's
/// directory. Unknown classes, label sets the task forbids, unreadable images and duplicate
/// paths are errors naming the line.
pub fn read_corrections_csv(csv: &Path, task: &Task, max_pixels: u64) -> Result<Vec<NewCorrection>> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("cannot read corrections file {}", csv.display()))?;
    let rows = parse_corrections(&text, task).map_err(|(line, e)| match line {
        0 => anyhow::anyhow!("{}: {e}", csv.display()),
        n => anyhow::anyhow!("{}:{n}: {e}", csv.display()),
    })?;
    let base = csv.parent().unwrap_or(Path::new("."));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for row in rows {
        let at = format!("{}:{}", csv.display(), row.line);
        let mut p = PathBuf::from(&row.path);
        if p.is_relative() && !p.exists() && base.join(&p).exists() {
            p = base.join(&p);
        }
        let key = std::fs::canonicalize(&p).unwrap_or(p.clone());
        if !seen.insert(key) {
            bail!("{at}: {} is listed twice", row.path);
        }
        decode_file(&p, max_pixels).map_err(|e| anyhow::anyhow!("{at}: cannot use image {}: {e}", p.display()))?;
        out.push(NewCorrection { path: p, labels: row.labels, source: row.source.unwrap_or(row.path) });
    }
    Ok(out)
}

/// One row of a corrections CSV as written: its first line, the path as listed, its labels
/// as the task's column names, and its `source` when the file has that column.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrectionRow {
    pub line: usize,
    pub path: String,
    pub labels: Vec<String>,
    pub source: Option<String>,
}

/// Longest `source` a corrections CSV may give.
pub const MAX_SOURCE_LEN: usize = 1024;

/// Parses the text of a corrections CSV against `task` (no file access): the header, the
/// fields of each row, known classes, label sets the task allows. Errors carry the line they
/// are on (0 for the whole file).
pub fn parse_corrections(text: &str, task: &Task) -> Result<Vec<CorrectionRow>, (usize, String)> {
    let classes = &task.classes;
    let mut records = csv_line::records(text);
    let with_source = match records.next() {
        Some((_, Ok(h))) if h.iter().map(|f| f.replace(' ', "")).eq(["path", "labels"]) => false,
        Some((_, Ok(h))) if h.iter().map(|f| f.replace(' ', "")).eq(["path", "labels", "source"]) => true,
        Some((i, Ok(h))) => return Err((i, format!("header is {:?}, expected \"path,labels\" or \"path,labels,source\"", h.join(",")))),
        Some((i, Err(e))) => return Err((i, e)),
        None => return Err((0, "empty corrections file".into())),
    };
    let want = 2 + with_source as usize;
    let mut out = Vec::new();
    for (line, fields) in records {
        let fields = fields.map_err(|e| (line, e))?;
        let (path, labels, source) = match (fields.as_slice(), with_source) {
            ([path, labels], false) => (path, labels, None),
            ([path, labels, source], true) => (path, labels, Some(source.clone())),
            _ => return Err((line, format!("{} fields, expected {want} (quote a path that holds a comma)", fields.len()))),
        };
        if let Some(s) = &source {
            if s.is_empty() || s.len() > MAX_SOURCE_LEN || s.chars().any(char::is_control) {
                return Err((line, format!("source: expected 1 to {MAX_SOURCE_LEN} bytes without control characters")));
            }
        }
        if path.is_empty() {
            return Err((line, "empty path".into()));
        }
        let mut set = Vec::new();
        for l in labels.split(';').map(str::trim).filter(|l| !l.is_empty()) {
            let Some(col) = task.column_of(l) else {
                return Err((line, format!("unknown class {l:?}; the model's classes are {}", classes.join(", "))));
            };
            if !set.contains(&classes[col]) {
                set.push(classes[col].clone());
            }
        }
        if task.is_grouped() {
            let row: Vec<f32> = classes.iter().map(|c| set.contains(c) as u8 as f32).collect();
            task.check_row(&row).map_err(|e| (line, format!("{e} (a {} correction names one class per head)", task.kind.name())))?;
        }
        out.push(CorrectionRow { line, path: path.clone(), labels: set, source });
    }
    if out.is_empty() {
        return Err((0, "no corrections listed".into()));
    }
    Ok(out)
}

/// A correction read and hashed but not stored yet, with its image bytes.
#[derive(Debug, Clone)]
pub struct Pending {
    pub correction: Correction,
    pub bytes: Vec<u8>,
}

/// What the store holds: the corrections (a later one of an image replaces an earlier one),
/// and whether its last line was cut short by a crash mid-append (it is left out; it was never
/// acknowledged, and the next commit removes it).
#[derive(Debug, Default)]
pub struct Stored {
    pub corrections: Vec<Correction>,
    pub torn_tail: bool,
    /// The source of every record, replaced ones included: what the store has ever learnt.
    pub sources: HashSet<String>,
}

/// The store in `dir`.
pub struct FeedbackStore {
    dir: PathBuf,
}

impl FeedbackStore {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("images")).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(FeedbackStore { dir: dir.to_path_buf() })
    }

    pub fn image_path(&self, c: &Correction) -> PathBuf {
        self.dir.join("images").join(&c.sha256)
    }

    fn store_file(&self) -> PathBuf {
        self.dir.join(STORE_FILE)
    }

    /// Reads and hashes the corrections' images; nothing is written.
    pub fn prepare(items: &[NewCorrection]) -> Result<Vec<Pending>> {
        let added = chrono::Local::now().to_rfc3339();
        items
            .iter()
            .map(|item| {
                let bytes = std::fs::read(&item.path).with_context(|| format!("cannot read {}", item.path.display()))?;
                let sha256 = format!("{:x}", Sha256::digest(&bytes));
                let correction = Correction { source: item.source.clone(), sha256, labels: item.labels.clone(), added: added.clone() };
                Ok(Pending { correction, bytes })
            })
            .collect()
    }

    /// Stores `pending`: each image under its hash (written, synced, renamed), then all their
    /// lines appended with one write and synced. A torn last line left by a crash is cut off
    /// first, so a later record never joins it. Concurrent commits (two retrains) take turns
    /// on an exclusive lock of the store file.
    pub fn commit(&self, pending: &[Pending]) -> Result<()> {
        for p in pending {
            let dst = self.image_path(&p.correction);
            if !dst.exists() {
                write_synced(&dst, &p.bytes)?;
            }
        }
        let path = self.store_file();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // Another retrain may be appending: the tail is only judged torn under the lock.
        f.lock().with_context(|| format!("cannot lock {}", path.display()))?;
        cut_torn_tail(&f, &path)?;
        let mut lines = String::new();
        for p in pending {
            lines += &serde_json::to_string(&p.correction)?;
            lines.push('\n');
        }
        f.write_all(lines.as_bytes()).and_then(|()| f.sync_all()).with_context(|| format!("cannot append to {}", path.display()))
    }

    /// Every stored correction; a later correction of the same image replaces an earlier one.
    /// A malformed line other than a torn last one is an error naming it.
    pub fn all(&self) -> Result<Stored> {
        let p = self.store_file();
        let text = match std::fs::read(&p) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        };
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Stored::default();
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let c: Correction = match serde_json::from_str(line) {
                Ok(c) => c,
                Err(_) if i + 1 == lines.len() && !complete => {
                    out.torn_tail = true;
                    continue;
                }
                Err(e) => bail!("{}:{}: damaged record ({e}); remove or fix that line", p.display(), i + 1),
            };
            out.sources.insert(c.source.clone());
            out.corrections.retain(|o| o.sha256 != c.sha256);
            out.corrections.push(c);
        }
        Ok(out)
    }
}

/// Stored corrections followed by `pending` ones, a later one of an image replacing an
/// earlier one.
pub fn merged(stored: &[Correction], pending: &[Pending]) -> Vec<Correction> {
    let mut all = stored.to_vec();
    for p in pending {
        all.retain(|o| o.sha256 != p.correction.sha256);
        all.push(p.correction.clone());
    }
    all
}

/// Writes `bytes` to `dst` through a synced temporary file and a rename.
fn write_synced(dst: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dst.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dst).with_context(|| format!("cannot write {}", dst.display()))
}

/// Truncates the store file after its last newline (a record cut short by a crash).
fn cut_torn_tail(f: &std::fs::File, path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut r = f;
    let tail = len.min(1 << 20);
    r.seek(SeekFrom::Start(len - tail))?;
    let mut buf = vec![0u8; tail as usize];
    r.read_exact(&mut buf)?;
    if buf.last() == Some(&b'\n') {
        return Ok(());
    }
    let keep = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => len - tail + i as u64 + 1,
        None if tail == len => 0,
        None => bail!("{}: the last record is over 1 MiB long and cut short; remove it", path.display()),
    };
    f.set_len(keep).with_context(|| format!("cannot repair {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(dir: &Path, name: &str, label: &str) -> Pending {
        let p = dir.join(name);
        std::fs::write(&p, name.as_bytes()).unwrap();
        FeedbackStore::prepare(&[NewCorrection { source: p.display().to_string(), path: p, labels: vec![label.to_string()] }])
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_torn_last_line_is_reported_then_cut_off_by_the_next_commit() {
        let d = tempfile::tempdir().unwrap();
        let store = FeedbackStore::open(&d.path().join("fb")).unwrap();
        let a = pending(d.path(), "a.jpg", "dog");
        store.commit(std::slice::from_ref(&a)).unwrap();
        // A crash in the middle of the next append.
        let mut f = std::fs::OpenOptions::new().append(true).open(store.store_file()).unwrap();
        f.write_all(br#"{"source":"b.jpg","sha2"#).unwrap();
        let s = store.all().unwrap();
        assert_eq!((s.corrections.len(), s.torn_tail), (1, true));
        let c = pending(d.path(), "c.jpg", "cat");
        store.commit(std::slice::from_ref(&c)).unwrap();
        let s = store.all().unwrap();
        assert!(!s.torn_tail);
        assert_eq!(s.corrections, [a.correction, c.correction]);
        assert!(store.image_path(&s.corrections[1]).is_file());
    }

    #[test]
    fn a_damaged_middle_line_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let store = FeedbackStore::open(&d.path().join("fb")).unwrap();
        std::fs::write(store.store_file(), "garbage\n{\"x\":1}\n").unwrap();
        let err = format!("{:#}", store.all().unwrap_err());
        assert!(err.contains("corrections.jsonl:1: damaged record"), "{err}");
    }

    #[test]
    fn later_corrections_of_an_image_replace_earlier_ones() {
        let d = tempfile::tempdir().unwrap();
        let a = pending(d.path(), "a.jpg", "dog");
        let mut a2 = a.clone();
        a2.correction.labels = vec!["cat".into()];
        let all = merged(std::slice::from_ref(&a.correction), &[a2.clone()]);
        assert_eq!(all, [a2.correction]);
    }

    #[test]
    fn a_source_column_names_the_correction_and_is_checked() {
        let task = Task::multilabel(vec!["dog".into(), "cat".into()]);
        let rows = parse_corrections("path,labels,source\na.jpg,dog,label-studio:1/7/3@t\n", &task).unwrap();
        assert_eq!(rows[0].source.as_deref(), Some("label-studio:1/7/3@t"));
        assert_eq!(parse_corrections("path,labels\na.jpg,dog\n", &task).unwrap()[0].source, None);
        assert!(parse_corrections("path,labels,source\na.jpg,dog\n", &task).unwrap_err().1.contains("expected 3"));
        let long = format!("path,labels,source\na.jpg,dog,{}\n", "x".repeat(MAX_SOURCE_LEN + 1));
        assert!(parse_corrections(&long, &task).unwrap_err().1.contains("source"));
    }
}
