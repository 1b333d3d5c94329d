//! The ONNX Runtime engine: a run's exported `model.onnx` (see [`crate::export`]) scored by
//! ONNX Runtime instead of libtorch, for `predict`, `evaluate` and `serve` on the CPU.
//! Training, features and Grad-CAM stay on libtorch. The library is the `libonnxruntime`
//! the PyPI wheel ships, loaded at run time ([`crate::venv::onnxruntime_library`]).
//!
//! The caller chooses ([`Engine`], from `--engine`): `torch`; `onnx` (an error when the run
//! has no matching exported file); `auto` (the default of the tools): ONNX Runtime on the CPU
//! when the run holds a `model.onnx` that matches it, libtorch otherwise.

use crate::model::Normalization;
use anyhow::{anyhow, bail, Context, Result};
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::TensorRef;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use tch::{Device, Kind, Tensor};

/// Which engine scores images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Engine {
    /// ONNX Runtime when the run has a matching `model.onnx` and the device is the CPU.
    Auto,
    /// libtorch always.
    #[default]
    Torch,
    /// ONNX Runtime; an error when it cannot be used.
    Onnx,
}

/// What the exported graph takes as input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// `float32 [batch, 3, H, W]`, normalised with the run's mean and std (what most ONNX
    /// consumers expect; the metadata gives the normalisation).
    Normalized,
    /// `uint8 [batch, H, W, 3]` RGB pixels at the run's size, scaled and normalised inside the
    /// graph (no knowledge of ImageNet means needed; what vocml's own engine feeds).
    Pixels,
}

impl InputKind {
    /// How the input is described in the file's metadata (`vocml.input`).
    pub fn describe(self) -> &'static str {
        match self {
            InputKind::Normalized => "float32 [batch, 3, H, W]: RGB in [0, 1], minus vocml.mean, divided by vocml.std",
            InputKind::Pixels => "uint8 [batch, H, W, 3]: RGB pixels, resized to vocml.image_size by vocml.resize",
        }
    }
}

/// What the exported file must agree on with the run that loads it.
pub struct Expected<'a> {
    pub classes: &'a [String],
    pub image_size: u32,
    pub tta: bool,
    pub members: usize,
    pub normalization: Option<Normalization>,
}

/// An exported run in an ONNX Runtime session.
pub struct OnnxModel {
    session: Mutex<Session>,
    input: InputKind,
    normalization: Option<Normalization>,
    classes: usize,
}

impl OnnxModel {
    /// Opens `path` with `threads` intra-op threads after checking its `vocml.*` metadata
    /// against `want`.
    pub fn load(path: &Path, want: &Expected, threads: usize) -> Result<Self> {
        let env = environment()?;
        let session = Session::builder(env)
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3).map_err(|e| e.into()))
            .and_then(|b| b.with_intra_threads(threads.max(1)).map_err(|e| e.into()))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| anyhow!("{}: ONNX Runtime cannot load it: {e}", path.display()))?;
        let (input, classes) = check_contract(&session, path, want)?;
        Ok(OnnxModel { session: Mutex::new(session), input, normalization: want.normalization, classes })
    }

    /// Probabilities `[B, C]` on the CPU of `[B, H, W, 3]` uint8 pixels.
    pub fn probabilities(&self, pixels: &Tensor) -> Result<Tensor> {
        // No libtorch operator runs here: its idle OpenMP threads would spin against ONNX
        // Runtime's on a small CPU.
        let pixels = pixels.to_device(Device::Cpu).contiguous();
        let shape = pixels.size();
        let bytes = Vec::<u8>::try_from(pixels.flatten(0, -1)).context("reading pixels")?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = match (self.input, &self.normalization) {
            (InputKind::Normalized, Some(norm)) => {
                let data = normalized_nchw(&bytes, (shape[1] * shape[2]) as usize, norm);
                let input = TensorRef::from_array_view((vec![shape[0], 3, shape[1], shape[2]], data.as_slice()))?;
                session.run(ort::inputs!["images" => input])
            }
            _ => {
                let input = TensorRef::from_array_view((shape.clone(), bytes.as_slice()))?;
                session.run(ort::inputs!["images" => input])
            }
        }
        .map_err(|e| anyhow!("ONNX Runtime: {e}"))?;
        let (_, p) = outputs["probabilities"].try_extract_tensor::<f32>().map_err(|e| anyhow!("ONNX Runtime output: {e}"))?;
        Ok(Tensor::from_slice(p).view([shape[0], self.classes as i64]).to_kind(Kind::Float))
    }
}

/// `[B, H, W, 3]` uint8 (`plane` = H * W) -> `[B, 3, H, W]` float32 normalised as the
/// backbone expects: `(x / 255 - mean) / std` per channel.
fn normalized_nchw(bytes: &[u8], plane: usize, norm: &Normalization) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len()];
    let scale: [f32; 3] = std::array::from_fn(|c| (1.0 / (255.0 * norm.std[c])) as f32);
    let shift: [f32; 3] = std::array::from_fn(|c| (-norm.mean[c] / norm.std[c]) as f32);
    for (image, dst) in bytes.chunks_exact(plane * 3).zip(out.chunks_exact_mut(plane * 3)) {
        for (i, px) in image.chunks_exact(3).enumerate() {
            for c in 0..3 {
                dst[c * plane + i] = px[c] as f32 * scale[c] + shift[c];
            }
        }
    }
    out
}

/// Checks the file's `vocml.*` metadata against the run; returns its input kind and class
/// count.
fn check_contract(session: &Session, path: &Path, want: &Expected) -> Result<(InputKind, usize)> {
    let meta = session.metadata().map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let key = |k: &str| meta.custom(k).with_context(|| format!("{}: no {k} metadata; was it written by `export`?", path.display()));
    let stale = |what: &str| anyhow!("{} does not match its run ({what}); export it again with `export --run`", path.display());
    let classes: Vec<String> = serde_json::from_str(&key("vocml.classes")?).map_err(|_| stale("classes"))?;
    if classes != want.classes {
        return Err(stale("classes"));
    }
    if key("vocml.image_size")?.parse::<u32>().ok() != Some(want.image_size) {
        return Err(stale("image size"));
    }
    if key("vocml.tta")? != want.tta.to_string() {
        return Err(stale(if want.tta { "the run uses flip TTA, the file does not" } else { "the file has flip TTA, this run does not" }));
    }
    if key("vocml.members")? != want.members.to_string() {
        return Err(stale("ensemble members"));
    }
    let input = match key("vocml.input_dtype")?.as_str() {
        "uint8" => InputKind::Pixels,
        "float32" if want.normalization.is_some() => InputKind::Normalized,
        other => bail!("{}: input type {other} is not one vocml feeds", path.display()),
    };
    Ok((input, classes.len()))
}

/// The one ONNX Runtime environment of the process, made on first use.
fn environment() -> Result<&'static ort::environment::Environment> {
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let lib = crate::venv::onnxruntime_library()
            .ok_or("the ONNX Runtime library was not found: run `make setup` (it installs onnxruntime), or set ORT_DYLIB_PATH")?;
        let builder = ort::init_from(&lib).map_err(|e| format!("cannot load {}: {e}", lib.display()))?;
        builder.with_name("vocml").build().map_err(|e| format!("ONNX Runtime: {e}"))
    });
    env.as_ref().map_err(|e| anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalisation_equals_libtorchs() {
        let norm = Normalization { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
        let pixels = Tensor::randint(256, [2, 5, 7, 3], (Kind::Uint8, Device::Cpu));
        let want = crate::tensor::normalize(&crate::tensor::to_unit_nchw(&pixels, Device::Cpu), &norm);
        let bytes = Vec::<u8>::try_from(pixels.flatten(0, -1)).unwrap();
        let got = Tensor::from_slice(&normalized_nchw(&bytes, 35, &norm)).view([2, 3, 5, 7]);
        assert!(got.allclose(&want, 1e-5, 1e-5, false));
    }
}
