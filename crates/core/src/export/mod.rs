//! `export`: a run (or a saved ensemble) as one ONNX file that ONNX Runtime, OpenVINO,
//! TensorRT or a browser runs without vocml.
//!
//! The graph is the forward `predict` runs, traced through libtorch (BatchNorm folded,
//! ensemble members averaged, flip TTA included, the task's sigmoid or per-head softmax at the
//! end), converted by PyTorch's TorchScript ONNX exporter in the project's Python (torch and
//! onnx, which `make setup` installs), given the run's contract as metadata (`vocml.*`
//! keys), checked with `onnx.checker` (full check, standard operators only) and, when
//! onnxruntime is installed, run by ONNX Runtime on images libtorch scored too: outputs must
//! agree to [`PARITY_TOLERANCE`]. With [`Int8Options`] that file is then quantised to int8 by
//! ONNX Runtime's static quantiser (calibrated on the run's training images) and refused when
//! it loses more validation mAP than allowed. The file is written under a hidden name and
//! renamed into place, so an interrupted or failed export leaves nothing behind.

use crate::infer::predictor::Predictor;
use crate::tensor::{normalize, to_unit_nchw};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Device, Kind, Tensor};

/// Largest difference allowed between ONNX Runtime's and libtorch's probabilities.
pub const PARITY_TOLERANCE: f64 = 1e-4;

/// The ONNX opset written (LayerNormalization needs 17); multi-scale runs get 18, whose
/// Resize can anti-alias as libtorch does when it shrinks the input for a second scale.
pub const OPSET: i64 = 17;

const SCRIPT: &str = include_str!("onnx_export.py");
const QUANTIZE_SCRIPT: &str = include_str!("onnx_quantize.py");

/// The int8 file's name in a run directory (the engine keeps running the fp32 `model.onnx`).
pub const INT8_FILE: &str = "model.int8.onnx";

/// Training images that calibrate the int8 activation ranges.
pub const CALIBRATION_IMAGES: usize = 200;

pub use crate::infer::onnx::InputKind;

/// Export settings.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub input: InputKind,
    /// Intra-op threads for the parity check.
    pub threads: usize,
    /// Quantise to int8 after the fp32 checks.
    pub int8: Option<Int8Options>,
}

/// Static int8 quantisation.
#[derive(Debug, Clone)]
pub struct Int8Options {
    /// Prepared dataset (voc-prep's layout): its training images calibrate, its validation
    /// split is scored by both files.
    pub data: PathBuf,
    /// Largest validation mAP the int8 file may lose against fp32.
    pub max_map_drop: f64,
}

/// What the int8 step measured (validation split, ONNX Runtime, the export's threads).
#[derive(Debug, Clone)]
pub struct Int8Report {
    pub calibration_images: usize,
    pub val_images: usize,
    pub map_fp32: f64,
    pub map_int8: f64,
    pub ms_fp32: f64,
    pub ms_int8: f64,
    /// Largest |int8 - fp32| probability over the validation images.
    pub max_abs_diff: f64,
}

/// What an export wrote and found.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Distinct ONNX operators in the graph.
    pub operators: Vec<String>,
    pub nodes: usize,
    /// Largest |ONNX Runtime - libtorch| over the check images; `None` when onnxruntime is not
    /// installed (the check was skipped).
    pub max_abs_diff: Option<f64>,
    pub onnxruntime: Option<String>,
    /// The opset written.
    pub opset: i64,
    /// The `vocml.*` metadata written into the file.
    pub metadata: Vec<(String, String)>,
    /// The int8 step's findings, when it ran (`operators` and `nodes` are then the int8 graph's).
    pub int8: Option<Int8Report>,
}

/// Exports `predictor` (loaded on the CPU) to `out`. `cancel` stops between steps (the
/// converter is a child process, stopped by the same Ctrl-C).
pub fn export_onnx(predictor: &Predictor, out: &Path, opts: &ExportOptions, cancel: &AtomicBool) -> Result<ExportReport> {
    let out = absolute(out)?;
    check_output(&out)?;
    if opts.input == InputKind::Normalized && predictor.normalization().is_none() {
        bail!(
            "the members of {} normalise their input differently; export it with --preprocess (pixels in, each member normalising its own)",
            predictor.run_dir.display()
        );
    }
    if let Some(q) = &opts.int8 {
        check_int8_data(&q.data, predictor.image_size() as usize)?;
    }
    let python = project_python()?;
    let work = WorkDir::new(&out)?;
    let size = predictor.image_size() as i64;
    let pixels = |n: i64, seed: i64| {
        tch::manual_seed(seed);
        Tensor::randint(256, [n, size, size, 3], (Kind::Uint8, Device::Cpu))
    };
    let as_input = |px: &Tensor| match (opts.input, predictor.normalization()) {
        (InputKind::Normalized, Some(norm)) => normalize(&to_unit_nchw(px, Device::Cpu), &norm),
        _ => px.shallow_clone(),
    };

    // Traced with two images, checked with three: the batch axis really is dynamic.
    let example = as_input(&pixels(2, 0));
    let module = tch::no_grad(|| {
        tch::CModule::create_by_tracing("vocml", "forward", &[example.shallow_clone()], &mut |xs: &[Tensor]| {
            vec![match opts.input {
                InputKind::Normalized => predictor.probabilities_of_normalized(&xs[0]),
                InputKind::Pixels => predictor.probabilities(&xs[0]),
            }]
        })
    })
    .context("tracing the network")?;
    let check = pixels(3, 1);
    let want = tch::no_grad(|| predictor.probabilities(&check));
    if cancel.load(Ordering::SeqCst) {
        bail!(crate::Interrupted);
    }
    let file = |name: &str| work.path.join(name);
    module.save(file("traced.pt")).context("saving the traced network")?;
    example.write_npy(file("example.npy")).context("writing the example input")?;
    as_input(&check).write_npy(file("check_input.npy")).context("writing the check input")?;
    want.write_npy(file("check_output.npy")).context("writing the check output")?;
    let metadata = metadata(predictor, opts.input);
    let job = json!({
        "traced": file("traced.pt"),
        "example": file("example.npy"),
        "check_input": file("check_input.npy"),
        "check_output": file("check_output.npy"),
        "out": file("model.onnx"),
        "opset": OPSET,
        "threads": opts.threads.max(1),
        "version": crate::VERSION,
        "doc": format!("{} exported by vocml {} from {}", predictor.name, crate::VERSION, predictor.run_dir.display()),
        "metadata": metadata.iter().cloned().collect::<serde_json::Map<String, serde_json::Value>>(),
    });
    std::fs::write(file("job.json"), serde_json::to_vec_pretty(&job)?).context("writing the export job")?;
    std::fs::write(file("onnx_export.py"), SCRIPT).context("writing the converter script")?;

    let mut found = run_script(&python, &file("onnx_export.py"), &file("job.json"), "ONNX export", cancel)?;
    let max_abs_diff = found["max_abs_diff"].as_f64();
    let onnxruntime = found["onnxruntime"].as_str().map(String::from);
    let opset = found["opset"].as_i64().unwrap_or(OPSET);
    if let Some(d) = max_abs_diff {
        if d.is_nan() || d > PARITY_TOLERANCE {
            bail!("ONNX Runtime's probabilities differ from libtorch's by {d:.2e} (more than {PARITY_TOLERANCE:.0e}); nothing was written");
        }
    }
    let mut written = file("model.onnx");
    let mut int8 = None;
    if let Some(q) = &opts.int8 {
        let job = json!({
            "fp32": written,
            "out": file("model.int8.onnx"),
            "x_train": absolute(&q.data.join("X_train.npy"))?,
            "x_val": absolute(&q.data.join("X_val.npy"))?,
            "y_val": absolute(&q.data.join("y_val.npy"))?,
            "input": if opts.input == InputKind::Pixels { "pixels" } else { "normalized" },
            "images": CALIBRATION_IMAGES,
            "threads": opts.threads.max(1),
            "max_map_drop": q.max_map_drop,
        });
        std::fs::write(file("quantize.json"), serde_json::to_vec_pretty(&job)?).context("writing the quantisation job")?;
        // Beside onnx_export.py, whose checks it imports.
        std::fs::write(file("onnx_quantize.py"), QUANTIZE_SCRIPT).context("writing the quantisation script")?;
        found = run_script(&python, &file("onnx_quantize.py"), &file("quantize.json"), "int8 export", cancel)?;
        let number = |k: &str| found[k].as_f64().with_context(|| format!("the quantiser's report has no {k}"));
        int8 = Some(Int8Report {
            calibration_images: number("calibration_images")? as usize,
            val_images: number("val_images")? as usize,
            map_fp32: number("map_fp32")?,
            map_int8: number("map_int8")?,
            ms_fp32: number("ms_fp32")?,
            ms_int8: number("ms_int8")?,
            max_abs_diff: number("max_abs_diff")?,
        });
        written = file("model.int8.onnx");
    }
    let bytes = std::fs::metadata(&written).context("the converter wrote no file")?.len();
    std::fs::rename(&written, &out).with_context(|| format!("cannot move the exported file to {}", out.display()))?;
    Ok(ExportReport {
        path: out,
        bytes,
        operators: found["operators"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        nodes: found["nodes"].as_u64().unwrap_or(0) as usize,
        max_abs_diff,
        onnxruntime,
        opset,
        metadata: metadata.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string())).collect(),
        int8,
    })
}

/// Runs one of the embedded scripts on its job file; returns its report (the last line of
/// stdout, JSON) or its one-line error.
fn run_script(python: &Path, script: &Path, job: &Path, what: &str, cancel: &AtomicBool) -> Result<serde_json::Value> {
    let run = std::process::Command::new(python)
        .arg(script)
        .arg(job)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if cancel.load(Ordering::SeqCst) {
        bail!(crate::Interrupted);
    }
    if !run.status.success() {
        let stderr = String::from_utf8_lossy(&run.stderr);
        let line = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        bail!("{what} failed: {line}");
    }
    // The tools may print warnings first; the report is the last line.
    let stdout = String::from_utf8_lossy(&run.stdout);
    let report = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    serde_json::from_str(report).with_context(|| format!("reading the {what} report"))
}

/// The int8 step's dataset: training images to calibrate on, a labelled validation split,
/// both at the run's image size.
fn check_int8_data(data: &Path, image_size: usize) -> Result<()> {
    for (split, need_labels) in [("train", false), ("val", true)] {
        let x = data.join(format!("X_{split}.npy"));
        let array = crate::io::npy::NpyArray::open(&x).with_context(|| {
            format!(
                "int8 export calibrates on the training images of {} and checks mAP on its validation split (--data names another prepared dataset)",
                data.display()
            )
        })?;
        let shape = array.shape();
        if shape.len() != 4 || shape[1] != image_size || shape[2] != image_size || shape[3] != 3 {
            bail!(
                "{}: images of shape {shape:?}, but the run takes {image_size}x{image_size}x3 (prepare the data at its size)",
                x.display()
            );
        }
        if array.dtype() != crate::io::npy::DType::U8 {
            bail!("{}: {:?} pixels; int8 export reads voc-prep's uint8 arrays", x.display(), array.dtype());
        }
        if shape[0] == 0 {
            bail!("{}: no images; int8 export needs {split} images", x.display());
        }
        if need_labels && !data.join(format!("y_{split}.npy")).is_file() {
            bail!("{}: no y_{split}.npy beside X_{split}.npy", data.display());
        }
    }
    Ok(())
}

/// The run's contract as `vocml.*` metadata: everything a consumer needs to feed the graph
/// and turn its probabilities into the labels `predict` gives.
fn metadata(p: &Predictor, input: InputKind) -> Vec<(String, serde_json::Value)> {
    let task = p.task();
    let norm = p.normalization();
    let mut m = vec![
        ("vocml.version", crate::VERSION.to_string()),
        ("vocml.model", p.name.clone()),
        ("vocml.run", p.run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
        ("vocml.task", task.kind.name().to_string()),
        ("vocml.classes", json!(task.classes).to_string()),
        ("vocml.label_groups", json!(task.groups).to_string()),
        ("vocml.thresholds", serde_json::to_string(&p.thresholds).unwrap_or_default()),
        ("vocml.threshold_rule", threshold_rule(p)),
        (
            "vocml.decision",
            match task.kind {
                crate::task::TaskKind::Multilabel => "a class is present when its probability >= its threshold",
                _ => "per label group, the most probable class",
            }
            .to_string(),
        ),
        ("vocml.image_size", p.image_size().to_string()),
        ("vocml.resize", p.resize().name().to_string()),
        ("vocml.input", input.describe().to_string()),
        ("vocml.input_layout", if input == InputKind::Pixels { "NHWC" } else { "NCHW" }.to_string()),
        ("vocml.input_dtype", if input == InputKind::Pixels { "uint8" } else { "float32" }.to_string()),
        ("vocml.tta", p.tta.to_string()),
        ("vocml.members", p.len().to_string()),
    ];
    if let Some(n) = norm {
        m.push(("vocml.mean", json!(n.mean).to_string()));
        m.push(("vocml.std", json!(n.std).to_string()));
    }
    m.into_iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v))).collect()
}

/// Which thresholds the file carries and why (the run's `thresholds.json`).
fn threshold_rule(p: &Predictor) -> String {
    match crate::thresholds::read_thresholds(&p.run_dir) {
        Ok(Some(t)) if p.thresholds_tuned && t.why.is_empty() => format!("{} (tuned on {})", t.rule, t.tuned_on),
        Ok(Some(t)) if p.thresholds_tuned => format!("{} (tuned on {}; {})", t.rule, t.tuned_on, t.why),
        _ => "0.5 for every class (the run was not evaluated)".to_string(),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}: not a usable path", p.display()))
}

/// The output must be a file path in an existing, writable folder.
fn check_output(out: &Path) -> Result<()> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if out.file_name().is_none() || out.is_dir() {
        bail!("{} is a directory; name the .onnx file to write", out.display());
    }
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("{} is not a folder", parent.display()),
        Err(_) => bail!("the folder {} does not exist", parent.display()),
    }
}

/// A hidden work folder beside the output (same file system, so the final rename is atomic),
/// removed when dropped.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new(out: &Path) -> Result<Self> {
        let parent = out.parent().unwrap_or(Path::new("."));
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let path = parent.join(format!(".{name}.export-{}", std::process::id()));
        std::fs::remove_dir_all(&path).ok();
        std::fs::create_dir(&path).with_context(|| format!("cannot write in {}", parent.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.path).ok();
    }
}

/// The Python that converts: `VOCML_PYTHON`, else the project's `.venv` (beside the
/// binaries' checkout, as for the embedded weights), else `python3` on the PATH.
pub fn project_python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VOCML_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = crate::venv::project_path(Path::new(".venv/bin/python")) {
        return Ok(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("python3"))
        .find(|p| p.is_file());
    on_path.context("ONNX export needs Python with torch and onnx: run `make setup`, or set VOCML_PYTHON")
}
