//! Importer for a Label Studio JSON export (the `JSON` format: a list of tasks, each with
//! `data` and `annotations`): a multilabel dataset from the `choices` results of an image
//! classification project. Each task's latest annotation that was not cancelled gives its
//! labels. Image references are resolved without the network: Label Studio's uploads
//! (`/data/upload/...`) and local files (`/data/local-files/?d=...`) under `images_root`,
//! `http(s)` URLs through `url_maps` (`PREFIX=DIR`), plain paths against `images_root`.
//! Tasks without an annotation, with an unmapped URL or a missing file are skipped and listed
//! in the manifest.

use crate::dataset::import::source;
use crate::dataset::manifest::{Manifest, Skipped};
use crate::dataset::prep::{drop_missing_files, write_dataset, Candidate, OutputSpec};
use crate::progress::Progress;
use crate::task::Task;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

#[derive(Deserialize)]
struct LsTask {
    id: serde_json::Value,
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    annotations: Vec<LsAnnotation>,
}

#[derive(Deserialize)]
struct LsAnnotation {
    #[serde(default)]
    was_cancelled: bool,
    #[serde(default)]
    result: Vec<LsResult>,
}

#[derive(Deserialize)]
struct LsResult {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    from_name: String,
    #[serde(default)]
    value: serde_json::Value,
}

/// Where a URL prefix's files are on disk (`--url-map PREFIX=DIR`).
#[derive(Debug, Clone, PartialEq)]
pub struct UrlMap {
    pub prefix: String,
    pub dir: PathBuf,
}

impl std::str::FromStr for UrlMap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((prefix, dir)) if !prefix.is_empty() && !dir.is_empty() => Ok(UrlMap { prefix: prefix.into(), dir: dir.into() }),
            _ => Err(format!("{s:?}: expected PREFIX=DIR, e.g. https://bucket.example/images/=/data/images")),
        }
    }
}

/// What to read from an export.
pub struct LabelStudioImport<'a> {
    pub json: &'a Path,
    /// Base of uploads, local files and plain paths (default: the JSON's folder).
    pub images_root: Option<&'a Path>,
    pub url_maps: &'a [UrlMap],
    /// The `data` key of the image (default: `image`).
    pub image_key: &'a str,
    /// The `<Choices>` tag's name, when the project has several.
    pub from_name: Option<&'a str>,
    /// Label columns in order (default: every choice seen, sorted).
    pub classes: Option<&'a [String]>,
}

/// The file an image reference names, or why there is none.
fn resolve(reference: &str, root: &Path, maps: &[UrlMap]) -> Result<PathBuf, String> {
    if let Some(rest) = reference.strip_prefix("/data/local-files/?d=") {
        let rel = percent_decode(rest);
        return safe_join(root, &rel).ok_or_else(|| format!("local file {rel:?} leaves the images root"));
    }
    if let Some(rest) = reference.strip_prefix("/data/") {
        let rel = percent_decode(rest);
        return safe_join(root, &rel).ok_or_else(|| format!("{rel:?} leaves the images root"));
    }
    if reference.starts_with("http://")
        || reference.starts_with("https://")
        || reference.starts_with("s3://")
        || reference.starts_with("gs://")
    {
        let m = maps.iter().filter(|m| reference.starts_with(&m.prefix)).max_by_key(|m| m.prefix.len());
        return match m {
            Some(m) => {
                let rel = percent_decode(reference[m.prefix.len()..].split(['?', '#']).next().unwrap_or(""));
                safe_join(&m.dir, &rel).ok_or_else(|| format!("{reference:?} leaves {}", m.dir.display()))
            }
            None => Err("URL not mapped to a folder (--url-map PREFIX=DIR)".into()),
        };
    }
    let p = Path::new(reference);
    Ok(if p.is_absolute() { p.to_path_buf() } else { root.join(p) })
}

/// `root/rel` when `rel` is relative and has no `..`.
fn safe_join(root: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel.trim_start_matches('/'));
    p.components().all(|c| matches!(c, std::path::Component::Normal(_))).then(|| root.join(p))
}

/// `%XX` escapes decoded (invalid escapes kept as they are), as Label Studio writes paths
/// in its `?d=` and upload URLs.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Imports a Label Studio JSON export; see the module docs.
pub fn import_label_studio(how: &LabelStudioImport, out: &OutputSpec, progress: &dyn Progress, cancel: &AtomicBool) -> Result<Manifest> {
    let json = how.json;
    let root = how.images_root.map(Path::to_path_buf).unwrap_or_else(|| json.parent().unwrap_or(Path::new(".")).to_path_buf());
    crate::io::staging::refuse_output_over_input(&out.out, json, "--file")?;
    crate::io::staging::refuse_output_over_input(&out.out, &root, "--images-root")?;
    let text = std::fs::read_to_string(json).with_context(|| format!("cannot read {}", json.display()))?;
    let tasks: Vec<LsTask> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a Label Studio JSON export (a list of tasks with data and annotations)", json.display()))?;
    let from_names: BTreeSet<&str> = tasks
        .iter()
        .flat_map(|t| &t.annotations)
        .flat_map(|a| &a.result)
        .filter(|r| r.kind == "choices")
        .map(|r| r.from_name.as_str())
        .collect();
    let from_name = match (how.from_name, from_names.len()) {
        (Some(n), _) if from_names.contains(n) => n.to_string(),
        (Some(n), _) => bail!("{}: no choices from <Choices name={n:?}> (found {:?})", json.display(), from_names),
        (None, 0) => bail!("{}: no annotation has a choices result (an image classification project with <Choices>)", json.display()),
        (None, 1) => from_names.first().expect("one name").to_string(),
        (None, _) => bail!("{}: choices from several <Choices> tags {:?}; pick one with --from-name", json.display(), from_names),
    };
    // (task id, image reference, labels) of every annotated task; the rest are skipped.
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
    for t in &tasks {
        let id = match &t.id {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let Some(reference) = t.data.get(how.image_key).and_then(|v| v.as_str()) else {
            bail!("{}: task {id} has no data.{} image (set --image-key)", json.display(), how.image_key);
        };
        let Some(annotation) = t.annotations.iter().rev().find(|a| !a.was_cancelled) else {
            skipped.push(Skipped { id, path: reference.to_string(), reason: "no annotation".into() });
            continue;
        };
        let mut labels: Vec<String> = Vec::new();
        for r in annotation.result.iter().filter(|r| r.kind == "choices" && r.from_name == from_name) {
            let choices = r
                .value
                .get("choices")
                .and_then(|c| c.as_array())
                .with_context(|| format!("{}: task {id}: a choices result without value.choices", json.display()))?;
            for c in choices {
                let c = c.as_str().with_context(|| format!("{}: task {id}: choice {c} is not a string", json.display()))?;
                if !labels.iter().any(|l| l == c) {
                    labels.push(c.to_string());
                }
            }
        }
        rows.push((id, reference.to_string(), labels));
    }
    let seen: Vec<String> = rows.iter().flat_map(|r| r.2.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
    let classes: Vec<String> = match how.classes {
        Some(list) => {
            if let Some(unknown) = list.iter().find(|c| !seen.contains(c)) {
                bail!("--classes: no task is labelled {unknown:?} (the export has {})", seen.join(", "));
            }
            list.to_vec()
        }
        None => seen,
    };
    if classes.is_empty() {
        bail!("{}: the annotations choose no class", json.display());
    }
    let mut ids = HashSet::new();
    let mut candidates = Vec::new();
    for (id, reference, labels) in rows {
        if !ids.insert(id.clone()) {
            bail!("{}: task id {id} is listed twice", json.display());
        }
        match resolve(&reference, &root, how.url_maps) {
            Ok(path) => candidates.push(Candidate { id, path, labels: classes.iter().map(|c| labels.contains(c)).collect() }),
            Err(reason) => skipped.push(Skipped { id, path: reference, reason }),
        }
    }
    drop_missing_files(&mut candidates, &mut skipped);
    if candidates.is_empty() {
        bail!("{}: none of the annotated tasks' images was found (images root {})", json.display(), root.display());
    }
    let info = source("label-studio", json, &format!("choices of {from_name}"));
    write_dataset(out, &Task::multilabel(classes), &candidates, skipped, info, 0, progress, cancel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_under_the_root_or_a_mapped_prefix_only() {
        let root = Path::new("/media");
        let maps = vec!["https://cdn.example/img/=/data/img".parse::<UrlMap>().unwrap()];
        assert_eq!(resolve("/data/upload/3/a%20b.jpg", root, &maps), Ok(PathBuf::from("/media/upload/3/a b.jpg")));
        assert_eq!(resolve("/data/local-files/?d=photos/x.jpg", root, &maps), Ok(PathBuf::from("/media/photos/x.jpg")));
        assert_eq!(resolve("https://cdn.example/img/p/q.jpg?v=2", root, &maps), Ok(PathBuf::from("/data/img/p/q.jpg")));
        assert_eq!(resolve("rel/y.png", root, &maps), Ok(PathBuf::from("/media/rel/y.png")));
        assert!(resolve("https://other.example/q.jpg", root, &maps).unwrap_err().contains("--url-map"));
        assert!(resolve("/data/local-files/?d=../etc/passwd", root, &maps).unwrap_err().contains("leaves"));
        assert!(resolve("https://cdn.example/img/../../x", root, &maps).unwrap_err().contains("leaves"));
        assert!("nodir".parse::<UrlMap>().is_err());
    }
}
