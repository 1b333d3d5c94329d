//! Prepared data on disk -> tensors: `X_<split>.npy` read batch by batch, labels,
//! and the conversion of HWC pixels to normalised NCHW model input.

use crate::manifest::Manifest;
use crate::model::Normalization;
use crate::npy::{DType, NpyArray};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// One split of a prepared dataset; images stay on disk and are read per batch.
pub struct SplitData {
    x: NpyArray,
    /// Labels, row-major `[n, classes]`.
    pub y: Vec<f32>,
    pub classes: usize,
    pub size: usize,
}

impl SplitData {
    /// Opens `X_<split>.npy` and `y_<split>.npy` and checks them against the manifest.
    pub fn open(dir: &Path, split: &str, manifest: &Manifest) -> Result<Self> {
        let x = NpyArray::open(&dir.join(format!("X_{split}.npy")))?;
        let y = NpyArray::open(&dir.join(format!("y_{split}.npy")))?;
        let c = manifest.classes.len();
        let s = x.shape();
        if s.len() != 4 || s[3] != 3 || s[1] != s[2] {
            bail!("{}: shape {:?}, expected (N, H, W, 3) with H == W", x.path().display(), s);
        }
        if y.shape() != [s[0], c] {
            bail!(
                "{}: shape {:?}, expected ({}, {c}) to match {} and the manifest's {c} classes",
                y.path().display(),
                y.shape(),
                s[0],
                x.path().display()
            );
        }
        let size = s[1];
        Ok(SplitData { y: y.to_f32_vec()?, x, classes: c, size })
    }

    pub fn len(&self) -> usize {
        self.x.rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels of rows `idx` as a `[B, H, W, 3]` uint8 tensor (float32 arrays are scaled back).
    pub fn pixels(&self, idx: &[usize]) -> Result<Tensor> {
        let raw = self.x.gather_rows(idx)?;
        let buf = match self.x.dtype() {
            DType::U8 => raw,
            DType::F32 => raw
                .chunks_exact(4)
                .map(|c| (f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect(),
        };
        let s = self.size as i64;
        Ok(Tensor::from_slice(&buf).view([idx.len() as i64, s, s, 3]))
    }

    /// Labels of rows `idx` as `[B, C]` float32.
    pub fn labels(&self, idx: &[usize]) -> Tensor {
        let c = self.classes;
        let mut v = Vec::with_capacity(idx.len() * c);
        for &i in idx {
            v.extend_from_slice(&self.y[i * c..(i + 1) * c]);
        }
        Tensor::from_slice(&v).view([idx.len() as i64, c as i64])
    }
}

/// `[B, H, W, 3]` uint8 -> `[B, 3, H, W]` float32 on `device`, scaled to [0, 1].
pub fn to_unit_nchw(pixels: &Tensor, device: Device) -> Tensor {
    upload(pixels, device).permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0
}

/// Copies `t` to `device` without waiting for queued GPU work (a plain copy synchronises
/// the stream, which would stall the GPU every step). Same device: a handle copy.
pub fn upload(t: &Tensor, device: Device) -> Tensor {
    if t.device() == device {
        t.shallow_clone()
    } else {
        t.to_device_(device, t.kind(), true, false)
    }
}

/// A tensor's values, row-major, as float32 on the host (probabilities, logits).
pub fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1)).context("reading tensor values")
}

/// Applies a backbone's normalisation to `[B, 3, H, W]` input in [0, 1].
pub fn normalize(xs: &Tensor, norm: &Normalization) -> Tensor {
    let dev = xs.device();
    let mean = upload(&Tensor::from_slice(&norm.mean.map(|v| v as f32)).view([1, 3, 1, 1]), dev);
    let std = upload(&Tensor::from_slice(&norm.std.map(|v| v as f32)).view([1, 3, 1, 1]), dev);
    (xs - mean) / std
}
