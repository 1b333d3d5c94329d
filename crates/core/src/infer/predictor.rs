//! What `evaluate` and `predict` score with: one trained run, or an ensemble of runs whose
//! probabilities are averaged, each optionally with horizontal-flip test-time augmentation
//! (the mean of an image's and its mirror's probabilities).
//!
//! An ensemble is a run directory of its own (`runs/<timestamp>_ensemble/`) whose
//! `config.json` lists its members, so `evaluate` can tune and store its thresholds and
//! `runs/best` can point at it like at any run.

use crate::infer::loaded::LoadedModel;
use crate::infer::onnx::{Engine, Expected, OnnxModel};
use crate::infer::rows::Rows;
use crate::io::image::ResizeMode;
use crate::run::config::{EnsembleKind, EnsembleRun, RunConfig};
use crate::run::{RunWriter, CONFIG_FILE};
use crate::tensor::host_values;
use crate::thresholds::thresholds_for;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// How a run is loaded for scoring: where, with which test-time augmentation, by which engine.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub device: Device,
    /// Horizontal-flip TTA; `None`: the run's recorded default.
    pub tta: Option<bool>,
    pub engine: Engine,
}

impl LoadOptions {
    /// libtorch on `device`, the run's own TTA default.
    pub fn torch(device: Device) -> Self {
        LoadOptions { device, tta: None, engine: Engine::Torch }
    }
}

/// One run or an ensemble, ready to score `[B, H, W, 3]` uint8 images.
pub struct Predictor {
    /// The run (or ensemble) directory; for an unsaved ensemble, its first member.
    pub run_dir: PathBuf,
    /// Model name, e.g. `efficientnet_lite0` or `ensemble(3: efficientnet_lite0)`.
    pub name: String,
    pub thresholds: Vec<f32>,
    pub thresholds_tuned: bool,
    pub tta: bool,
    /// Non-empty; they share classes, input size and resize mode.
    members: Vec<LoadedModel>,
    /// The run's exported file in ONNX Runtime, when the engine choice uses it.
    onnx: Option<OnnxModel>,
    engine_note: Option<String>,
}

impl Predictor {
    /// Loads a run or a saved ensemble as `opts` say.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let (device, tta) = (opts.device, opts.tta);
        // Resolved once: a `best` link that moves meanwhile cannot mix two runs' files.
        let dir = &std::fs::canonicalize(dir).with_context(|| format!("cannot open run {}", dir.display()))?;
        match RunConfig::read(dir)? {
            RunConfig::Ensemble(cfg) => {
                let base = dir.parent().unwrap_or(Path::new("."));
                let paths: Vec<PathBuf> = cfg.members.iter().map(|m| base.join(m)).collect();
                let mut p = Self::from_members(&paths, &LoadOptions { tta: Some(tta.unwrap_or(cfg.tta)), engine: Engine::Torch, ..*opts })?;
                p.run_dir = dir.clone();
                (p.thresholds, p.thresholds_tuned) = thresholds_for(dir, p.classes())?;
                p.attach_engine(opts.engine, device)?;
                Ok(p)
            }
            single => {
                let mut p = Self::from_loaded(vec![LoadedModel::from_config(dir, &single, device)?], tta)?;
                p.attach_engine(opts.engine, device)?;
                Ok(p)
            }
        }
    }

    /// Opens the run's exported `model.onnx` in ONNX Runtime when `choice` asks for it: always
    /// with `onnx` (an error if it cannot), with `auto` when the device is the CPU and the file
    /// exists and matches the run.
    fn attach_engine(&mut self, choice: Engine, device: Device) -> Result<()> {
        let file = self.run_dir.join(crate::run::ONNX_FILE);
        match choice {
            Engine::Torch => return Ok(()),
            Engine::Auto if device != Device::Cpu || !file.is_file() => return Ok(()),
            Engine::Onnx if device != Device::Cpu => {
                bail!("the ONNX Runtime engine runs on the CPU; use --device cpu or --engine torch")
            }
            Engine::Onnx if !file.is_file() => bail!(
                "{} has no {}: run `export --run {}` first, or use --engine torch",
                self.run_dir.display(),
                crate::run::ONNX_FILE,
                self.run_dir.display()
            ),
            _ => {}
        }
        let want = Expected {
            classes: self.classes(),
            image_size: self.image_size(),
            tta: self.tta,
            members: self.members.len(),
            normalization: self.normalization(),
        };
        match OnnxModel::load(&file, &want, tch::get_num_threads().max(1) as usize) {
            Ok(m) => self.onnx = Some(m),
            Err(e) if choice == Engine::Onnx => return Err(e),
            Err(e) => self.engine_note = Some(format!("{e:#}")),
        }
        Ok(())
    }

    /// The engine that scores images: `onnxruntime` or `libtorch`.
    pub fn engine(&self) -> &'static str {
        if self.onnx.is_some() {
            "onnxruntime"
        } else {
            "libtorch"
        }
    }

    /// Why `--engine auto` kept libtorch although the run has an exported file.
    pub fn engine_note(&self) -> Option<&str> {
        self.engine_note.as_deref()
    }

    /// Averages the given runs (an unsaved ensemble when there are several: thresholds 0.5;
    /// TTA when every member records it, unless `opts.tta` says). They must share classes,
    /// image size and resize mode. One run is loaded as [`Predictor::load`] would.
    pub fn from_members(dirs: &[PathBuf], opts: &LoadOptions) -> Result<Self> {
        if let [one] = dirs {
            return Self::load(one, opts);
        }
        if dirs.is_empty() {
            bail!("an ensemble needs at least one run");
        }
        let (device, tta) = (opts.device, opts.tta);
        if opts.engine == Engine::Onnx {
            bail!("the ONNX Runtime engine runs one exported file: save the ensemble with `evaluate --ensemble`, export it, and pass it as one --run");
        }
        let mut members = Vec::with_capacity(dirs.len());
        for d in dirs {
            let d = std::fs::canonicalize(d).with_context(|| format!("cannot open run {}", d.display()))?;
            let cfg = RunConfig::read(&d)?;
            if cfg.as_ensemble().is_some() {
                bail!("{}: an ensemble cannot be a member of another ensemble; list its runs instead", d.display());
            }
            members.push(LoadedModel::from_config(&d, &cfg, device)?);
        }
        Self::from_loaded(members, tta)
    }

    /// One loaded run, or several averaged (see [`Predictor::from_members`]).
    fn from_loaded(members: Vec<LoadedModel>, tta: Option<bool>) -> Result<Self> {
        let first = &members[0];
        for m in &members[1..] {
            if m.task != first.task || m.image_size != first.image_size || m.resize != first.resize {
                bail!(
                    "{} ({} {:?}, {} px, {}) and {} ({} {:?}, {} px, {}) cannot be averaged: members need the same task, classes, image size and resize mode",
                    first.run_dir.display(),
                    first.task.kind.name(),
                    first.classes,
                    first.image_size,
                    first.resize.name(),
                    m.run_dir.display(),
                    m.task.kind.name(),
                    m.classes,
                    m.image_size,
                    m.resize.name()
                );
            }
        }
        let single = members.len() == 1;
        let tta = tta.unwrap_or_else(|| members.iter().all(|m| m.tta));
        let name = if single {
            first.kind.name().to_string()
        } else {
            let mut kinds: Vec<&str> = members.iter().map(|m| m.kind.name()).collect();
            kinds.dedup();
            format!("ensemble({}: {})", members.len(), kinds.join("+"))
        };
        Ok(Predictor {
            run_dir: first.run_dir.clone(),
            name,
            thresholds: if single { first.thresholds.clone() } else { vec![0.5; first.classes.len()] },
            thresholds_tuned: single && first.thresholds_tuned,
            tta,
            members,
            onnx: None,
            engine_note: None,
        })
    }

    /// The task (shared by the members).
    pub fn task(&self) -> &crate::task::Task {
        &self.members[0].task
    }

    /// Class names, in output column order.
    pub fn classes(&self) -> &[String] {
        &self.members[0].classes
    }

    /// The run it was retrained from, for a single retrained run.
    pub fn parent(&self) -> Option<&Path> {
        match self.members.as_slice() {
            [one] => one.parent.as_deref(),
            _ => None,
        }
    }

    /// The first member's data directory, as its config records it.
    pub fn data_dir(&self) -> &std::path::Path {
        self.members[0].data_dir()
    }

    /// Input side in pixels.
    pub fn image_size(&self) -> u32 {
        self.members[0].image_size
    }

    pub fn resize(&self) -> ResizeMode {
        self.members[0].resize
    }

    /// Parameters of all members together.
    pub fn parameters(&self) -> i64 {
        self.members.iter().map(|m| m.parameters).sum()
    }

    /// Training time of all members together.
    pub fn train_seconds(&self) -> f64 {
        self.members.iter().map(|m| m.train_seconds).sum()
    }

    /// Number of averaged runs.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a predictor has at least one run.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Probabilities of decoded images (each `image_size`² x 3 bytes, as
    /// [`crate::io::image::SquareResizer`] gives them), a row per image in order, in one
    /// forward pass.
    pub fn score_images(&self, images: &[&[u8]]) -> Result<Rows> {
        let classes = self.classes().len();
        if images.is_empty() {
            return Rows::new(classes, Vec::new());
        }
        Rows::new(classes, host_values(&self.score(&self.pixel_batch(images)?)?)?)
    }

    /// [`Predictor::score_images`] and each image's features from the same forward pass
    /// ([`Predictor::probabilities_and_features`]), a row per image in order.
    pub fn score_images_with_features(&self, images: &[&[u8]]) -> Result<(Rows, Rows)> {
        let classes = self.classes().len();
        if images.is_empty() {
            return Ok((Rows::new(classes, Vec::new())?, Rows::default()));
        }
        let (p, f) = self.probabilities_and_features(&self.pixel_batch(images)?);
        let width = f.size().get(1).copied().unwrap_or(0) as usize;
        Ok((Rows::new(classes, host_values(&p)?)?, Rows::new(width, host_values(&f)?)?))
    }

    /// Decoded images as one `[B, H, W, 3]` uint8 tensor, each checked to be the model's size.
    fn pixel_batch(&self, images: &[&[u8]]) -> Result<Tensor> {
        let s = self.image_size() as i64;
        if let Some(bad) = images.iter().find(|i| i.len() as i64 != s * s * 3) {
            bail!("an image of {} bytes given to a model of {s}x{s}x3 inputs", bad.len());
        }
        crate::tensor::pixel_tensor(&images.concat(), images.len(), s as usize)
    }

    /// Probabilities `[B, C]` on the CPU from the chosen engine: ONNX Runtime when the run's
    /// exported file is attached, else [`Self::probabilities`] (libtorch).
    pub fn score(&self, pixels: &Tensor) -> Result<Tensor> {
        match &self.onnx {
            Some(m) => m.probabilities(pixels),
            None => Ok(self.probabilities(pixels)),
        }
    }

    /// Probabilities `[B, C]` on the CPU from libtorch: the mean over members (and over the mirrored view
    /// with TTA) of each member's sigmoid outputs.
    pub fn probabilities(&self, pixels: &Tensor) -> Tensor {
        if let ([one], false) = (self.members.as_slice(), self.tta) {
            return one.probabilities(pixels);
        }
        self.forward(pixels, false).0
    }

    /// The input normalisation every member shares, if they do.
    pub fn normalization(&self) -> Option<crate::model::Normalization> {
        let first = self.members[0].normalization;
        self.members.iter().all(|m| m.normalization == first).then_some(first)
    }

    /// Probabilities `[B, C]` of `[B, 3, H, W]` float input already normalised with the
    /// shared [`normalization`](Self::normalization) (the ONNX export's default input): the
    /// same mean over members and mirrored views as [`Self::probabilities`].
    pub fn probabilities_of_normalized(&self, xs: &Tensor) -> Tensor {
        let views = self.with_mirror(xs, 3);
        let sum = self.members.iter().map(|m| self.mean_over_views(m.probabilities_of_normalized(&views))).reduce(|a, b| a + b);
        sum.expect("at least one member") / self.members.len() as f64
    }

    /// [`Self::probabilities`] and, from the same forward passes, a description of each image
    /// for comparing images: every member's backbone features of the unmirrored view, each
    /// scaled to unit length, side by side (`[B, F]` on the CPU).
    pub fn probabilities_and_features(&self, pixels: &Tensor) -> (Tensor, Tensor) {
        let (p, features) = self.forward(pixels, true);
        (p, Tensor::cat(&features, 1).to_device(tch::Device::Cpu))
    }

    /// The mean probabilities over members and views, and when `describe` each member's
    /// unit-length features of the unmirrored view.
    fn forward(&self, pixels: &Tensor, describe: bool) -> (Tensor, Vec<Tensor>) {
        let n = pixels.size()[0];
        let views = self.with_mirror(pixels, 2);
        let mut sum: Option<Tensor> = None;
        let mut features = Vec::new();
        for m in &self.members {
            let p = if describe {
                let (p, f) = m.probabilities_and_features(&views);
                let f = f.narrow(0, 0, n);
                features.push(&f / f.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12));
                p
            } else {
                m.probabilities(&views)
            };
            let p = self.mean_over_views(p);
            sum = Some(match sum {
                Some(s) => s + p,
                None => p,
            });
        }
        (sum.expect("at least one member") / self.members.len() as f64, features)
    }

    /// The batch with TTA's mirrored copies appended (flipped along `width_dim`), so each
    /// member scores an image and its mirror in one forward pass; the batch itself without TTA.
    fn with_mirror(&self, xs: &Tensor, width_dim: i64) -> Tensor {
        match self.tta {
            true => Tensor::cat(&[xs, &xs.flip([width_dim])], 0),
            false => xs.shallow_clone(),
        }
    }

    /// Per image, the mean of its views' probabilities (rows `i` and `n + i` with TTA).
    fn mean_over_views(&self, p: Tensor) -> Tensor {
        match self.tta {
            true => p.reshape([2, -1, self.classes().len() as i64]).mean_dim([0i64].as_slice(), false, tch::Kind::Float),
            false => p,
        }
    }
}

impl Predictor {
    /// Grad-CAM maps `[K, H, W]` in [0, 1] of one `[1, H, W, 3]` uint8 image for outputs
    /// `classes`: the mean over members, and with TTA over the mirrored view (its maps flipped
    /// back).
    pub fn grad_cam(&self, pixels: &Tensor, classes: &[i64]) -> Result<Tensor> {
        let mut sum: Option<Tensor> = None;
        let mut views = 0.0;
        for m in &self.members {
            let mut cams = vec![m.grad_cam(pixels, classes)?];
            if self.tta {
                cams.push(m.grad_cam(&pixels.flip([2]), classes)?.flip([2]));
            }
            for c in cams {
                sum = Some(match sum {
                    Some(s) => s + c,
                    None => c,
                });
                views += 1.0;
            }
        }
        Ok(sum.expect("at least one member") / views)
    }
}

/// Saves an ensemble of `members` as a new run directory in `runs_dir` and returns it.
/// Members inside `runs_dir` are recorded by name, so the directory can be moved whole.
/// `tta` defaults to on when every member records it.
pub fn create_ensemble(runs_dir: &Path, members: &[PathBuf], tta: Option<bool>, device: Device) -> Result<PathBuf> {
    if members.len() < 2 {
        bail!("an ensemble needs at least two runs (got {})", members.len());
    }
    let mut seen = std::collections::HashSet::new();
    for m in members {
        let abs = std::fs::canonicalize(m).with_context(|| format!("cannot open {}", m.display()))?;
        if !seen.insert(abs) {
            bail!("{} is listed twice; an ensemble averages different runs", m.display());
        }
    }
    let loaded = Predictor::from_members(members, &LoadOptions { tta, ..LoadOptions::torch(device) })?;
    let tta = loaded.tta;
    let runs_abs = std::fs::canonicalize(runs_dir).with_context(|| format!("cannot open {}", runs_dir.display()))?;
    let recorded = members
        .iter()
        .map(|m| {
            let abs = std::fs::canonicalize(m).with_context(|| format!("cannot open {}", m.display()))?;
            Ok(match (abs.parent(), abs.file_name()) {
                (Some(parent), Some(name)) if parent == runs_abs => PathBuf::from(name),
                _ => abs,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let cfg = EnsembleRun {
        kind: EnsembleKind::Ensemble,
        members: recorded,
        tta,
        classes: loaded.classes().to_vec(),
        image_size: loaded.image_size(),
        resize: loaded.resize(),
        created: chrono::Local::now().to_rfc3339(),
        tool_version: crate::VERSION.to_string(),
    };
    let writer = RunWriter::create(&crate::run::RunTarget::Timestamped(runs_dir.to_path_buf()), "ensemble")?;
    writer.write_json(CONFIG_FILE, &cfg)?;
    writer.write_json(crate::run::CLASSES_FILE, &cfg.classes)?;
    writer.finish()
}
