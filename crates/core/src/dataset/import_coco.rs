//! Importer for COCO instances JSON (`images`, `annotations`, `categories`): a multilabel
//! dataset whose labels per image are the categories of its instances (any category set,
//! e.g. the 80 COCO classes or the 20 VOC classes). Images without an instance of the chosen
//! classes are left out unless kept as all-negative rows; missing or unreadable image files
//! are skipped and listed in the manifest, as for every source.

use crate::dataset::import::source;
use crate::dataset::manifest::{Manifest, Skipped};
use crate::dataset::prep::{drop_missing_files, write_dataset, Candidate, OutputSpec};
use crate::progress::Progress;
use crate::task::Task;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicBool;

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    category_id: u64,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: u64,
    name: String,
}

/// Imports `json` (COCO instances) with image files under `images_root` (default: the JSON's
/// folder). `classes`: the label columns in order (default: every category, in the file's
/// category order); instances of other categories are ignored. `keep_empty` keeps images
/// with none of the classes as all-negative rows.
pub fn import_coco(
    json: &Path,
    images_root: Option<&Path>,
    classes: Option<&[String]>,
    keep_empty: bool,
    out: &OutputSpec,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Manifest> {
    let base = images_root.map(Path::to_path_buf).unwrap_or_else(|| json.parent().unwrap_or(Path::new(".")).to_path_buf());
    crate::io::staging::refuse_output_over_input(&out.out, json, "--file")?;
    crate::io::staging::refuse_output_over_input(&out.out, &base, "--images-root")?;
    let text = std::fs::read_to_string(json).with_context(|| format!("cannot read {}", json.display()))?;
    let coco: CocoFile = serde_json::from_str(&text)
        .with_context(|| format!("{}: not COCO instances JSON (images, annotations, categories)", json.display()))?;
    let mut names: HashMap<u64, &str> = HashMap::new();
    for c in &coco.categories {
        if names.insert(c.id, &c.name).is_some() {
            bail!("{}: category id {} is listed twice", json.display(), c.id);
        }
    }
    let all: Vec<String> = coco.categories.iter().map(|c| c.name.clone()).collect();
    let classes: Vec<String> = match classes {
        Some(list) => {
            if let Some(unknown) = list.iter().find(|c| !all.contains(c)) {
                bail!("--classes: {unknown:?} is not a category of {} (it has {})", json.display(), all.join(", "));
            }
            list.to_vec()
        }
        None => all.clone(),
    };
    if classes.is_empty() {
        bail!("{}: no categories", json.display());
    }
    if classes.iter().collect::<HashSet<_>>().len() != classes.len() {
        bail!("{}: a category name appears twice; choose the classes with --classes", json.display());
    }
    let mut labels: BTreeMap<u64, HashSet<&str>> = BTreeMap::new();
    let image_ids: HashSet<u64> = coco.images.iter().map(|i| i.id).collect();
    for (n, a) in coco.annotations.iter().enumerate() {
        let name = names
            .get(&a.category_id)
            .with_context(|| format!("{}: annotation {n} has unknown category_id {}", json.display(), a.category_id))?;
        if !image_ids.contains(&a.image_id) {
            bail!("{}: annotation {n} refers to image_id {}, which is not in images", json.display(), a.image_id);
        }
        labels.entry(a.image_id).or_default().insert(name);
    }
    let mut seen = HashSet::new();
    let mut candidates = Vec::new();
    for img in &coco.images {
        if !seen.insert(img.id) {
            bail!("{}: image id {} is listed twice", json.display(), img.id);
        }
        let present = labels.get(&img.id);
        let row: Vec<bool> = classes.iter().map(|c| present.is_some_and(|p| p.contains(c.as_str()))).collect();
        if !keep_empty && !row.iter().any(|&b| b) {
            continue;
        }
        let id = Path::new(&img.file_name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| img.file_name.clone());
        candidates.push(Candidate { id, path: base.join(&img.file_name), labels: row });
    }
    let mut skipped: Vec<Skipped> = Vec::new();
    drop_missing_files(&mut candidates, &mut skipped);
    if candidates.is_empty() {
        bail!("{}: no image with one of the classes exists under {}", json.display(), base.display());
    }
    let task = Task::multilabel(classes);
    let mut info = source("coco", json, "instance categories");
    info.keep_empty = keep_empty;
    write_dataset(out, &task, &candidates, skipped, info, 0, progress, cancel)
}
