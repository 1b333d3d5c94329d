//! `voc-prep`: VOC annotations or ImageSets lists -> filtered, resized, split `.npy` arrays
//! plus `manifest.json`, written atomically into the output directory.

use crate::dataset::manifest::{ImageSpec, Manifest, Skipped, SourceInfo, SplitInfo, SplitSpec, Splits, MANIFEST_FILE, SPLITS};
use crate::dataset::split::{stratified_fold_split, stratified_split, Fold, SplitFractions};
use crate::dataset::voc::annotation::read_annotation;
use crate::dataset::voc::imagesets::{read_class_labels, read_id_list};
use crate::dataset::voc::VocLayout;
use crate::io::image::{ResizeMode, SquareResizer, MAX_IMAGE_SIZE};
use crate::io::npy::{self, DType, NpyWriter};
use crate::io::staging::{refuse_output_over_input, StagingDir};
use crate::progress::Progress;
use crate::task::Task;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Where image-level labels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSource {
    /// An image has a class if its XML has an object of that class.
    Annotations,
    /// Official VOC classification lists `ImageSets/Main/<class>_<set>.txt`.
    ImageSets,
}

impl LabelSource {
    pub fn name(self) -> &'static str {
        match self {
            LabelSource::Annotations => "annotations",
            LabelSource::ImageSets => "imagesets",
        }
    }
}

/// Everything voc-prep needs; built by the binary from its flags.
#[derive(Debug, Clone)]
pub struct PrepConfig {
    pub voc_root: PathBuf,
    pub classes: Vec<String>,
    pub labels: LabelSource,
    /// Annotations: objects marked difficult do not make an image positive.
    pub ignore_difficult: bool,
    /// ImageSets: label 0 (difficult only) counts as present.
    pub difficult_as_positive: bool,
    pub image_set: Option<String>,
    pub keep_empty: bool,
    /// Skip malformed annotation files instead of failing.
    pub skip_bad: bool,
    /// Where and how the dataset is written.
    pub output: OutputSpec,
}

/// Images decoded per parallel batch; bounds memory to a few of these at a time.
const CHUNK: usize = 64;

/// One image selected for preparation: an id (unique in the dataset), its file and its
/// 0/1 label row.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub path: PathBuf,
    pub labels: Vec<bool>,
}

/// Runs the whole preparation and returns the manifest that was written.
pub fn prepare(cfg: &PrepConfig, progress: &dyn Progress, cancel: &AtomicBool) -> Result<Manifest> {
    let layout = VocLayout::new(&cfg.voc_root);
    if !cfg.voc_root.is_dir() {
        bail!("--voc-root {}: no such directory", cfg.voc_root.display());
    }
    refuse_output_over_input(&cfg.output.out, &cfg.voc_root, "--voc-root")?;
    if !layout.images_dir().is_dir() {
        bail!(
            "--voc-root {}: no JPEGImages/ inside; expected the directory holding Annotations/, JPEGImages/, ImageSets/",
            cfg.voc_root.display()
        );
    }
    let mut skipped: Vec<Skipped> = Vec::new();
    let ids = list_ids(cfg, &layout)?;
    let (mut candidates, incomplete) = label_images(cfg, &layout, &ids, &mut skipped)?;
    drop_missing_files(&mut candidates, &mut skipped);
    if !cfg.keep_empty {
        candidates.retain(|c| c.labels.iter().any(|&b| b));
    }
    if candidates.is_empty() {
        bail!(
            "no images left to prepare from {} (classes {}; {} skipped){}",
            cfg.voc_root.display(),
            cfg.classes.join(","),
            skipped.len(),
            if cfg.keep_empty { "" } else { "; --keep-empty keeps images without target classes" }
        );
    }

    let source = SourceInfo {
        kind: "voc".into(),
        root: std::fs::canonicalize(&cfg.voc_root).unwrap_or(cfg.voc_root.clone()).display().to_string(),
        labels: cfg.labels.name().into(),
        image_set: cfg.image_set.clone(),
        ignore_difficult: cfg.ignore_difficult,
        difficult_as_positive: cfg.difficult_as_positive,
        keep_empty: cfg.keep_empty,
    };
    let task = Task::multilabel(cfg.classes.clone());
    write_dataset(&cfg.output, &task, &candidates, skipped, source, incomplete, progress, cancel)
}

/// Where and how a prepared dataset is written (shared by VOC and the importers).
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub out: PathBuf,
    pub size: u32,
    pub resize: ResizeMode,
    pub split: SplitFractions,
    /// Cross-validation: the test split is this fold; train and val share the rest.
    pub fold: Option<Fold>,
    pub seed: u64,
    pub dtype: DType,
    /// Replace an output directory that voc-prep did not write.
    pub force: bool,
    /// Largest image decoded (width x height); larger ones are skipped and listed.
    pub max_pixels: u64,
}

/// Splits `candidates` (stratified by their rarest class), decodes and resizes their images
/// into `X_/y_<split>.npy` and writes the manifest, all in a staging directory renamed over
/// `spec.out` at the end. Unreadable images are skipped and listed in the manifest.
#[allow(clippy::too_many_arguments)]
pub fn write_dataset(
    spec: &OutputSpec,
    task: &Task,
    candidates: &[Candidate],
    mut skipped: Vec<Skipped>,
    source: SourceInfo,
    incomplete: usize,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Manifest> {
    if !(1..=MAX_IMAGE_SIZE).contains(&spec.size) {
        bail!("--size {} is out of range (1..={MAX_IMAGE_SIZE})", spec.size);
    }
    let matrix: Vec<Vec<bool>> = candidates.iter().map(|c| c.labels.clone()).collect();
    let parts = match spec.fold {
        Some(fold) => stratified_fold_split(&matrix, fold, spec.split, spec.seed)?,
        None => stratified_split(&matrix, spec.split, spec.seed),
    };

    let staging = StagingDir::new(&spec.out)?;
    progress.phase("prepare", candidates.len() as u64);
    let mut splits = Splits::default();
    for (name, rows) in SPLITS.iter().zip(parts.iter()) {
        let chosen: Vec<&Candidate> = rows.iter().map(|&i| &candidates[i]).collect();
        let info = write_split(spec, &task.classes, staging.path(), name, &chosen, &mut skipped, progress, cancel)?;
        *splits.get_mut(name).expect("known split") = info;
    }
    if !candidates.is_empty() && SPLITS.iter().all(|n| splits.get(n).is_some_and(|s| s.count == 0)) {
        let first = skipped.last().map(|s| format!(" (e.g. {}: {})", s.path, s.reason)).unwrap_or_default();
        bail!("none of the {} images could be used{first}; nothing was written", candidates.len());
    }

    let manifest = Manifest {
        format: 1,
        tool: "voc-prep".into(),
        version: crate::VERSION.into(),
        created: chrono::Local::now().to_rfc3339(),
        task: task.kind,
        classes: task.classes.clone(),
        label_groups: task.groups.clone(),
        image: ImageSpec { size: spec.size, channels: 3, layout: "NHWC".into(), dtype: spec.dtype.name().into(), resize: spec.resize },
        source,
        split: SplitSpec {
            fractions: spec.split,
            seed: spec.seed,
            method: match spec.fold {
                Some(f) => format!("rarest-class strata, fold {} of {} as test", f.index, f.of),
                None => "rarest-class strata".into(),
            },
            fold: spec.fold,
        },
        splits,
        skipped,
        incomplete_annotations: incomplete,
        feedback: None,
    };
    let text = serde_json::to_string_pretty(&manifest)?;
    let manifest_path = staging.path().join(MANIFEST_FILE);
    std::fs::write(&manifest_path, text + "\n").with_context(|| format!("cannot write {}", manifest_path.display()))?;
    if cancel.load(Ordering::SeqCst) {
        bail!(crate::Interrupted);
    }
    let force = spec.force;
    staging.commit(|old| force || is_replaceable_output(old))?;
    Ok(manifest)
}

/// Moves candidates whose image file is missing or empty to `skipped`.
pub fn drop_missing_files(candidates: &mut Vec<Candidate>, skipped: &mut Vec<Skipped>) {
    candidates.retain(|c| {
        let reason = match std::fs::metadata(&c.path) {
            Err(_) => Some("missing image file"),
            Ok(m) if m.len() == 0 => Some("empty file"),
            Ok(_) => None,
        };
        if let Some(r) = reason {
            skipped.push(Skipped { id: c.id.clone(), path: c.path.display().to_string(), reason: r.into() });
        }
        reason.is_none()
    });
}

/// An existing directory may be replaced if it is empty or holds a previous voc-prep output.
fn is_replaceable_output(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file()
        || std::fs::read_dir(dir)
            .map(|mut it| it.all(|e| e.map(|e| e.file_name().to_string_lossy().starts_with('.')).unwrap_or(false)))
            .unwrap_or(false)
}

fn list_ids(cfg: &PrepConfig, layout: &VocLayout) -> Result<Vec<String>> {
    let mut ids = match &cfg.image_set {
        Some(set) => read_id_list(layout, set)?,
        None => {
            if cfg.labels == LabelSource::ImageSets {
                bail!("--labels imagesets needs --image-set (train, val, trainval or test) to pick the label lists");
            }
            let dir = layout.annotations_dir();
            let mut ids: Vec<String> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "xml"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            ids.sort();
            ids
        }
    };
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.is_empty() {
        bail!("no image ids found under {}", cfg.voc_root.display());
    }
    Ok(ids)
}

/// Labels every id; returns the candidates and the number of `<incomplete>` annotations.
fn label_images(cfg: &PrepConfig, layout: &VocLayout, ids: &[String], skipped: &mut Vec<Skipped>) -> Result<(Vec<Candidate>, usize)> {
    match cfg.labels {
        LabelSource::Annotations => {
            let parsed: Vec<_> = ids
                .par_iter()
                .map(|id| {
                    let path = layout.annotation(id);
                    if !path.exists() {
                        return (id, path, Err(None));
                    }
                    let r = read_annotation(&path).map_err(Some);
                    (id, path, r)
                })
                .collect();
            let mut out = Vec::with_capacity(parsed.len());
            let mut incomplete = 0;
            for (id, path, r) in parsed {
                match r {
                    Ok(ann) => {
                        incomplete += ann.incomplete as usize;
                        let labels = cfg.classes.iter().map(|c| ann.has_class(c, cfg.ignore_difficult)).collect();
                        out.push(Candidate { id: id.clone(), path: layout.image(id), labels });
                    }
                    Err(None) => {
                        skipped.push(Skipped { id: id.clone(), path: path.display().to_string(), reason: "missing annotation file".into() })
                    }
                    Err(Some(e)) if cfg.skip_bad => {
                        skipped.push(Skipped { id: id.clone(), path: path.display().to_string(), reason: e.to_string() })
                    }
                    Err(Some(e)) => return Err(anyhow::Error::new(e).context("pass --skip-bad to skip malformed annotations")),
                }
            }
            Ok((out, incomplete))
        }
        LabelSource::ImageSets => {
            let set = cfg.image_set.as_deref().expect("checked in list_ids");
            let tables = cfg.classes.iter().map(|c| read_class_labels(layout, c, set)).collect::<Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(ids.len());
            'ids: for id in ids {
                let mut labels = Vec::with_capacity(cfg.classes.len());
                for (class, table) in cfg.classes.iter().zip(&tables) {
                    match table.get(id) {
                        Some(&v) => labels.push(v == 1 || (v == 0 && cfg.difficult_as_positive)),
                        None => {
                            skipped.push(Skipped {
                                id: id.clone(),
                                path: layout.main_sets_dir().join(format!("{class}_{set}.txt")).display().to_string(),
                                reason: format!("id not listed in {class}_{set}.txt"),
                            });
                            continue 'ids;
                        }
                    }
                }
                out.push(Candidate { id: id.clone(), path: layout.image(id), labels });
            }
            Ok((out, 0))
        }
    }
}

/// Decodes, resizes and streams one split to `X_<name>.npy` / `y_<name>.npy`. Chunks are
/// decoded in parallel while a writer thread appends the previous chunk, in input order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_split(
    cfg: &OutputSpec,
    classes: &[String],
    dir: &Path,
    name: &str,
    chosen: &[&Candidate],
    skipped: &mut Vec<Skipped>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<SplitInfo> {
    let s = cfg.size as usize;
    let mut xw = NpyWriter::create(&dir.join(format!("X_{name}.npy")), cfg.dtype, &[s, s, 3])?;
    let mut info = SplitInfo::default();
    for class in classes {
        info.per_class.insert(class.clone(), 0);
    }
    type Decoded<'a> = Vec<(&'a Candidate, Result<Vec<u8>, String>)>;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Decoded>(1);
    let (written, ys) = std::thread::scope(|scope| -> Result<_> {
        let writer = scope.spawn(move || -> Result<(Vec<(&Candidate, Result<(), String>)>, NpyWriter)> {
            let mut outcome = Vec::new();
            for chunk in rx {
                for (cand, result) in chunk {
                    match result {
                        Ok(pixels) => {
                            xw.write_u8_rows(&pixels)?;
                            outcome.push((cand, Ok(())));
                        }
                        Err(reason) => outcome.push((cand, Err(reason))),
                    }
                }
            }
            Ok((outcome, xw))
        });
        for chunk in chosen.chunks(CHUNK) {
            if cancel.load(Ordering::SeqCst) {
                break;
            }
            let decoded: Decoded = chunk
                .par_iter()
                .map_init(|| SquareResizer::new(cfg.size, cfg.resize, cfg.max_pixels), |resizer, cand| (*cand, resizer.load(&cand.path)))
                .collect();
            if tx.send(decoded).is_err() {
                break;
            }
            progress.done(chunk.len() as u64, None);
        }
        drop(tx);
        let (outcome, xw) = writer.join().expect("writer thread panicked")?;
        if cancel.load(Ordering::SeqCst) {
            bail!(crate::Interrupted);
        }
        let mut ys: Vec<f32> = Vec::with_capacity(outcome.len() * classes.len());
        for (cand, r) in outcome {
            match r {
                Ok(()) => {
                    for (c, &on) in classes.iter().zip(&cand.labels) {
                        ys.push(on as u8 as f32);
                        *info.per_class.get_mut(c).expect("class") += on as usize;
                    }
                    info.ids.push(cand.id.clone());
                }
                Err(reason) => skipped.push(Skipped { id: cand.id.clone(), path: cand.path.display().to_string(), reason }),
            }
        }
        Ok((xw, ys))
    })?;
    info.count = written.finish()?;
    npy::write_f32(&dir.join(format!("y_{name}.npy")), &[info.count, classes.len()], &ys)?;
    Ok(info)
}
