//! Importers for datasets that are not VOC, into the same prepared format (`X_/y_<split>.npy`
//! and a manifest recording the task and its label groups):
//! - a class-per-folder tree (`root/<class>/**/image`): `multiclass`, or `multilabel` with
//!   folder names split into labels (`red_dress` -> {red, dress});
//! - a CSV `path,<label columns...>`: `multilabel` (one 0/1 column per class), `multiclass`
//!   (one column of class names) or `multihead` (one column of class names per head).
//!
//! Bad input follows the VOC rules: missing, empty or undecodable images are skipped and
//! listed in the manifest; a malformed CSV line or an unusable tree is an error naming it.

use crate::dataset::manifest::{Skipped, SourceInfo};
use crate::dataset::prep::{drop_missing_files, write_dataset, Candidate, OutputSpec};
use crate::io::csv_line;
use crate::io::walk::{files_under, has_image_extension};
use crate::progress::Progress;
use crate::task::{LabelGroup, Task, TaskKind, MULTICLASS_GROUP};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// The manifest's record of an importer's source.
pub(crate) fn source(kind: &str, root: &Path, labels: &str) -> SourceInfo {
    SourceInfo {
        kind: kind.into(),
        root: std::fs::canonicalize(root).unwrap_or(root.to_path_buf()).display().to_string(),
        labels: labels.into(),
        image_set: None,
        ignore_difficult: false,
        difficult_as_positive: false,
        keep_empty: false,
    }
}

/// Imports a class-per-folder tree. `multiclass`: each folder is a class. `multilabel`: each
/// folder name is split on `separator` into labels, and the classes are every label seen.
pub fn import_folders(
    root: &Path,
    kind: TaskKind,
    separator: &str,
    out: &OutputSpec,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<crate::dataset::manifest::Manifest> {
    crate::io::staging::refuse_output_over_input(&out.out, root, "--root")?;
    if !root.is_dir() {
        bail!("--root {}: no such directory", root.display());
    }
    if kind == TaskKind::Multihead {
        bail!("a folder tree gives one label set per folder; for multihead use `voc-prep csv` with one column per head");
    }
    if kind == TaskKind::Multilabel && separator.is_empty() {
        bail!("--separator must not be empty");
    }
    let mut folders: Vec<(String, PathBuf)> = std::fs::read_dir(root)
        .with_context(|| format!("cannot list {}", root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    folders.sort();
    if folders.len() < 2 && kind == TaskKind::Multiclass {
        bail!("{}: found {} class folder(s); expected one sub-folder per class (at least 2)", root.display(), folders.len());
    }
    let labels_of = |folder: &str| -> Vec<String> {
        match kind {
            TaskKind::Multilabel => folder.split(separator).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
            _ => vec![folder.to_string()],
        }
    };
    let classes: Vec<String> = folders.iter().flat_map(|(f, _)| labels_of(f)).collect::<BTreeSet<_>>().into_iter().collect();
    let task = match kind {
        TaskKind::Multiclass => Task::multiclass(classes.clone())?,
        _ => Task::multilabel(classes.clone()),
    };
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    for (folder, dir) in &folders {
        let labels = labels_of(folder);
        let row: Vec<bool> = classes.iter().map(|c| labels.contains(c)).collect();
        let mut n = 0;
        for f in files_under(dir)? {
            let id = f.strip_prefix(root).unwrap_or(&f).to_string_lossy().into_owned();
            if !has_image_extension(&f) {
                skipped.push(Skipped { id, path: f.display().to_string(), reason: "not an image file (extension)".into() });
                continue;
            }
            candidates.push(Candidate { id, path: f, labels: row.clone() });
            n += 1;
        }
        if n == 0 {
            bail!("{}: class folder {folder:?} holds no images", dir.display());
        }
    }
    drop_missing_files(&mut candidates, &mut skipped);
    let how = match kind {
        TaskKind::Multilabel => format!("folder names split on {separator:?}"),
        _ => "folder names".to_string(),
    };
    write_dataset(out, &task, &candidates, skipped, source("folders", root, &how), 0, progress, cancel)
}

/// One row of a label CSV: the resolved path, the path as listed (the id), the label values.
type LabelRow = (PathBuf, String, Vec<String>);

/// Reads a label CSV: its label column names and rows, each checked against the task kind.
fn read_label_csv(csv: &Path, kind: TaskKind, base: &Path) -> Result<(Vec<String>, Vec<LabelRow>)> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("cannot read {}", csv.display()))?;
    let mut records = csv_line::records(&text);
    let (h, header) = records.next().with_context(|| format!("{}: empty file", csv.display()))?;
    let at = format!("{}:{h}", csv.display());
    let header = header.map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
    if header.len() < 2 || header[0] != "path" {
        bail!("{at}: header {:?}: expected \"path,<label columns...>\"", header.join(","));
    }
    let columns = &header[1..];
    if let Some(c) = columns.iter().find(|c| c.is_empty()) {
        bail!("{at}: empty column name {c:?}");
    }
    if columns.iter().collect::<HashSet<_>>().len() != columns.len() {
        bail!("{at}: a column name appears twice");
    }
    if kind == TaskKind::Multiclass && columns.len() != 1 {
        bail!("{at}: a multiclass CSV has one label column (found {}: {})", columns.len(), columns.join(","));
    }
    // (resolved path, path as listed = id, label values)
    let mut rows: Vec<LabelRow> = Vec::new();
    let mut seen = HashSet::new();
    for (i, fields) in records {
        let at = format!("{}:{i}", csv.display());
        let f = fields.map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        if f.len() != header.len() {
            bail!("{at}: {} fields, expected {} ({})", f.len(), header.len(), header.join(","));
        }
        if f[0].is_empty() {
            bail!("{at}: empty path");
        }
        if !seen.insert(f[0].clone()) {
            bail!("{at}: {} is listed twice", f[0]);
        }
        let p = PathBuf::from(&f[0]);
        let path = if p.is_absolute() { p } else { base.join(p) };
        for (col, v) in columns.iter().zip(&f[1..]) {
            match kind {
                TaskKind::Multilabel if v != "0" && v != "1" => {
                    bail!("{at}: column {col:?} is {v:?}, expected 0 or 1")
                }
                TaskKind::Multiclass | TaskKind::Multihead if v.is_empty() => {
                    bail!("{at}: column {col:?} is empty, expected a class name")
                }
                _ => {}
            }
        }
        rows.push((path, f[0].clone(), f[1..].to_vec()));
    }
    if rows.is_empty() {
        bail!("{}: no images listed", csv.display());
    }
    Ok((columns.to_vec(), rows))
}

/// Imports a CSV `path,<label columns>` (header required). `multilabel`: each column is a
/// class with values 0/1; `multiclass`: one column of class names; `multihead`: one column
/// of class names per head (the header names the heads). Relative paths are resolved against
/// `images_root` (default: the CSV's directory). Classes are sorted by name in each group.
pub fn import_csv(
    csv: &Path,
    kind: TaskKind,
    images_root: Option<&Path>,
    out: &OutputSpec,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<crate::dataset::manifest::Manifest> {
    let base = images_root.map(Path::to_path_buf).unwrap_or_else(|| csv.parent().unwrap_or(Path::new(".")).to_path_buf());
    crate::io::staging::refuse_output_over_input(&out.out, csv, "--file")?;
    crate::io::staging::refuse_output_over_input(&out.out, &base, "the images of --file")?;
    let (columns, rows) = read_label_csv(csv, kind, &base)?;
    let columns = &columns;
    let task = match kind {
        TaskKind::Multilabel => Task::multilabel(columns.to_vec()),
        _ => {
            let groups: Vec<LabelGroup> = columns
                .iter()
                .enumerate()
                .map(|(g, name)| LabelGroup {
                    name: if kind == TaskKind::Multiclass { MULTICLASS_GROUP.into() } else { name.clone() },
                    classes: rows.iter().map(|r| r.2[g].clone()).collect::<BTreeSet<_>>().into_iter().collect(),
                })
                .collect();
            let task = if kind == TaskKind::Multiclass { Task::multiclass(groups[0].classes.clone()) } else { Task::multihead(groups) };
            task.with_context(|| format!("{}: the label columns do not make a {} task", csv.display(), kind.name()))?
        }
    };
    let mut candidates: Vec<Candidate> = rows
        .iter()
        .map(|(path, id, values)| {
            let labels = match kind {
                TaskKind::Multilabel => values.iter().map(|v| v == "1").collect(),
                _ => {
                    let mut row = vec![false; task.classes.len()];
                    for ((g, r), v) in task.groups.iter().zip(task.ranges()).zip(values) {
                        let k = g.classes.iter().position(|c| c == v).expect("classes were collected from these rows");
                        row[r.start + k] = true;
                    }
                    row
                }
            };
            Candidate { id: id.clone(), path: path.clone(), labels }
        })
        .collect();
    let mut skipped = Vec::new();
    drop_missing_files(&mut candidates, &mut skipped);
    if candidates.is_empty() {
        bail!("{}: none of the {} listed images exists (paths are relative to {})", csv.display(), rows.len(), base.display());
    }
    let how = format!("csv columns {}", columns.join(","));
    write_dataset(out, &task, &candidates, skipped, source("csv", csv, &how), 0, progress, cancel)
}
