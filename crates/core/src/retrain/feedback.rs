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

/// Parses a corrections CSV (`path,labels` with `;`-separated labels; empty = no class).
/// For multiclass a row names exactly one class; for multihead one class per head, as
/// `<head>/<class>` or as a class name only one head has. Labels are returned as the task's
/// column names. Relative paths are resolved against the working directory, then the CSV's
/// directory. Unknown classes, label sets the task forbids, unreadable images and duplicate
/// paths are errors naming the line.
pub fn read_corrections_csv(csv: &Path, task: &Task) -> Result<Vec<(PathBuf, Vec<String>)>> {
    let classes = &task.classes;
    let text = std::fs::read_to_string(csv).with_context(|| format!("cannot read corrections file {}", csv.display()))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, h)) if h.trim().replace(' ', "") == "path,labels" => {}
        Some((i, h)) => bail!("{}:{}: header is {h:?}, expected \"path,labels\"", csv.display(), i + 1),
        None => bail!("{}: empty corrections file", csv.display()),
    }
    let base = csv.parent().unwrap_or(Path::new("."));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, line) in lines {
        let at = format!("{}:{}", csv.display(), i + 1);
        let fields = csv_line::split(line).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        let [path, labels] = fields.as_slice() else {
            bail!("{at}: {} fields, expected 2 (\"path,labels\"; quote a path that holds a comma)", fields.len());
        };
        let mut p = PathBuf::from(path);
        if p.is_relative() && !p.exists() && base.join(&p).exists() {
            p = base.join(&p);
        }
        let key = std::fs::canonicalize(&p).unwrap_or(p.clone());
        if !seen.insert(key) {
            bail!("{at}: {path} is listed twice");
        }
        let mut set = Vec::new();
        for l in labels.split(';').map(str::trim).filter(|l| !l.is_empty()) {
            let Some(col) = task.column_of(l) else {
                bail!("{at}: unknown class {l:?}; the model's classes are {}", classes.join(", "));
            };
            if !set.contains(&classes[col]) {
                set.push(classes[col].clone());
            }
        }
        if task.is_grouped() {
            let row: Vec<f32> = classes.iter().map(|c| set.contains(c) as u8 as f32).collect();
            task.check_row(&row).map_err(|e| anyhow::anyhow!("{at}: {e} (a {} correction names one class per head)", task.kind.name()))?;
        }
        decode_file(&p).map_err(|e| anyhow::anyhow!("{at}: cannot use image {}: {e}", p.display()))?;
        out.push((p, set));
    }
    if out.is_empty() {
        bail!("{}: no corrections listed", csv.display());
    }
    Ok(out)
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

    /// Copies each image into the store and appends its correction (one fsync'd line each).
    pub fn append(&self, items: &[(PathBuf, Vec<String>)]) -> Result<Vec<Correction>> {
        let mut added = Vec::new();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(STORE_FILE))
            .with_context(|| format!("cannot open {}", self.dir.join(STORE_FILE).display()))?;
        for (path, labels) in items {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let sha = format!("{:x}", Sha256::digest(&bytes));
            let c = Correction {
                source: path.display().to_string(),
                sha256: sha,
                labels: labels.clone(),
                added: chrono::Local::now().to_rfc3339(),
            };
            let dst = self.image_path(&c);
            if !dst.exists() {
                let tmp = dst.with_extension("tmp");
                std::fs::write(&tmp, &bytes)?;
                std::fs::rename(&tmp, &dst)?;
            }
            writeln!(f, "{}", serde_json::to_string(&c)?)?;
            added.push(c);
        }
        f.sync_all()?;
        Ok(added)
    }

    /// Every correction so far; a later correction of the same image replaces an earlier one.
    pub fn all(&self) -> Result<Vec<Correction>> {
        let p = self.dir.join(STORE_FILE);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        };
        let mut out: Vec<Correction> = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let c: Correction = match serde_json::from_str(line) {
                Ok(c) => c,
                // A line cut short by a crash while appending is the last one: ignore it.
                Err(_) if i + 1 == text.lines().count() => continue,
                Err(e) => bail!("{}:{}: {e}", p.display(), i + 1),
            };
            out.retain(|o| o.sha256 != c.sha256);
            out.push(c);
        }
        Ok(out)
    }
}
