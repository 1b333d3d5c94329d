//! `voc-prep feedback`: a prepared dataset with the feedback store's corrections added to its
//! training split, so that the next full `train` learns from every correction so far (on the
//! `make loop` folds, 10 corrections added to a full retrain gained unseen mAP where a
//! retrain's small update did not: docs/loop.md). Validation and test are the base's, copied
//! byte for byte, so runs before and after are scored on the same images.

use crate::dataset::manifest::{FeedbackAdded, Manifest, SplitInfo, MANIFEST_FILE};
use crate::dataset::prep::{write_split, Candidate, OutputSpec};
use crate::io::npy::{self, DType, NpyArray, NpyWriter};
use crate::io::staging::{refuse_output_over_input, StagingDir};
use crate::progress::Progress;
use crate::retrain::feedback::{Correction, FeedbackStore, STORE_FILE};
use crate::task::Task;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// What `voc-prep feedback` reads and writes.
#[derive(Debug, Clone)]
pub struct FeedbackDataConfig {
    /// The prepared dataset the corrections are added to.
    pub base: PathBuf,
    /// The feedback store (e.g. `runs/feedback`).
    pub feedback: PathBuf,
    pub out: PathBuf,
    /// Replace `out` even if it does not hold an earlier voc-prep output.
    pub force: bool,
    /// Largest stored image decoded (width x height).
    pub max_pixels: u64,
}

/// Rows copied per read.
const CHUNK: usize = 256;

/// Writes `cfg.out`: the base's training rows (less those a correction relabels) followed by
/// every stored correction (resized as the base was), the base's validation and test splits
/// unchanged, and a manifest naming the base and the store. Staged and renamed at the end.
pub fn add_feedback(cfg: &FeedbackDataConfig, progress: &dyn Progress, cancel: &AtomicBool) -> Result<Manifest> {
    refuse_output_over_input(&cfg.out, &cfg.base, "--base")?;
    refuse_output_over_input(&cfg.out, &cfg.feedback, "--feedback")?;
    let base = Manifest::load(&cfg.base)?;
    let task = base.task()?;
    let store_file = cfg.feedback.join(STORE_FILE);
    if !store_file.is_file() {
        bail!(
            "{} holds no corrections ({STORE_FILE} not found; the store is <runs>/feedback unless retrain was given --feedback-dir)",
            cfg.feedback.display()
        );
    }
    let store = FeedbackStore::open(&cfg.feedback)?;
    let stored = store.all()?.corrections;
    if stored.is_empty() {
        bail!("{} holds no corrections", store_file.display());
    }
    let candidates = stored.iter().map(|c| candidate(&task, &store, c, &cfg.base)).collect::<Result<Vec<_>>>()?;
    let dtype = match base.image.dtype.as_str() {
        "uint8" => DType::U8,
        "float32" => DType::F32,
        other => bail!("{}: pixel type {other}; re-run voc-prep", cfg.base.join(MANIFEST_FILE).display()),
    };

    let c = task.classes.len();
    let x = NpyArray::open(&cfg.base.join("X_train.npy"))?;
    let y = NpyArray::open(&cfg.base.join("y_train.npy"))?.to_f32_vec()?;
    let base_ids = &base.splits.train.ids;
    if x.rows() != base_ids.len() || y.len() != base_ids.len() * c {
        bail!("{}: the training arrays do not match manifest.json ({} ids); re-run voc-prep", cfg.base.display(), base_ids.len());
    }
    let relabelled: HashSet<&str> = candidates.iter().map(|k| k.id.as_str()).collect();
    let keep: Vec<usize> = (0..base_ids.len()).filter(|&i| !relabelled.contains(base_ids[i].as_str())).collect();

    let staging = StagingDir::new(&cfg.out)?;
    for name in ["X_val.npy", "y_val.npy", "X_test.npy", "y_test.npy"] {
        std::fs::copy(cfg.base.join(name), staging.path().join(name))
            .with_context(|| format!("cannot copy {} to {}", cfg.base.join(name).display(), staging.path().display()))?;
    }
    let spec = OutputSpec {
        out: cfg.out.clone(),
        size: base.image.size,
        resize: base.image.resize,
        split: base.split.fractions,
        fold: base.split.fold,
        seed: base.split.seed,
        dtype,
        force: cfg.force,
        max_pixels: cfg.max_pixels,
    };
    let mut skipped = base.skipped.clone();
    progress.phase("feedback", candidates.len() as u64);
    let chosen: Vec<&Candidate> = candidates.iter().collect();
    let added = write_split(&spec, &task.classes, staging.path(), "feedback", &chosen, &mut skipped, progress, cancel)?;

    let s = base.image.size as usize;
    let mut xw = NpyWriter::create(&staging.path().join("X_train.npy"), dtype, &[s, s, 3])?;
    for rows in keep.chunks(CHUNK) {
        if cancel.load(Ordering::SeqCst) {
            bail!(crate::Interrupted);
        }
        xw.write_raw_rows(&x.gather_rows(rows)?)?;
    }
    let fx = NpyArray::open(&staging.path().join("X_feedback.npy"))?;
    let mut buf = Vec::new();
    for start in (0..fx.rows()).step_by(CHUNK) {
        buf.clear();
        fx.read_rows(start, (start + CHUNK).min(fx.rows()), &mut buf)?;
        xw.write_raw_rows(&buf)?;
    }
    let count = xw.finish()?;
    let mut ys: Vec<f32> = keep.iter().flat_map(|&i| y[i * c..(i + 1) * c].iter().copied()).collect();
    ys.extend(NpyArray::open(&staging.path().join("y_feedback.npy"))?.to_f32_vec()?);
    npy::write_f32(&staging.path().join("y_train.npy"), &[count, c], &ys)?;
    for name in ["X_feedback.npy", "y_feedback.npy"] {
        std::fs::remove_file(staging.path().join(name))
            .with_context(|| format!("cannot remove {name} from {}", staging.path().display()))?;
    }

    let mut train = SplitInfo { count, ..SplitInfo::default() };
    for (j, class) in task.classes.iter().enumerate() {
        train.per_class.insert(class.clone(), ys.iter().skip(j).step_by(c.max(1)).filter(|&&v| v >= 0.5).count());
    }
    train.ids = keep.iter().map(|&i| base_ids[i].clone()).chain(added.ids.iter().cloned()).collect();
    let mut manifest = base.clone();
    manifest.version = crate::VERSION.into();
    manifest.created = chrono::Local::now().to_rfc3339();
    manifest.splits.train = train;
    manifest.skipped = skipped;
    manifest.feedback = Some(FeedbackAdded {
        base: cfg.base.display().to_string(),
        base_manifest_sha256: Manifest::file_hash(&cfg.base)?,
        store: cfg.feedback.display().to_string(),
        added: added.count,
        replaced: base_ids.len() - keep.len(),
    });
    let manifest_path = staging.path().join(MANIFEST_FILE);
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    if cancel.load(Ordering::SeqCst) {
        bail!(crate::Interrupted);
    }
    let force = cfg.force;
    staging.commit(|old| force || old.join(MANIFEST_FILE).is_file())?;
    Ok(manifest)
}

/// One stored correction as a training row of the base's task: id `feedback:<sha256>`, the
/// store's copy of the image, its labels as the task's columns.
fn candidate(task: &Task, store: &FeedbackStore, c: &Correction, base: &Path) -> Result<Candidate> {
    let mut row = vec![0f32; task.classes.len()];
    for label in &c.labels {
        let Some(col) = task.column_of(label) else {
            bail!(
                "the correction of {} names {label:?}, not a class of {} ({}): was the store written for another task?",
                c.source,
                base.display(),
                task.classes.join(", ")
            );
        };
        row[col] = 1.0;
    }
    task.check_row(&row).with_context(|| format!("the correction of {} does not fit {}", c.source, base.display()))?;
    Ok(Candidate { id: format!("feedback:{}", c.sha256), path: store.image_path(c), labels: row.iter().map(|&v| v >= 0.5).collect() })
}
