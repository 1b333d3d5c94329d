//! Prepared data read back: `X_<split>.npy` batch by batch as `[B, H, W, 3]` uint8 tensors
//! (positioned reads, nothing mapped), and the labels.

use crate::dataset::manifest::Manifest;
use crate::io::npy::{DType, NpyArray};
use anyhow::{bail, Result};
use std::path::Path;
use tch::Tensor;

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
        if size != manifest.image.size as usize {
            bail!("{}: {size} px images, but manifest.json says {} px; re-run voc-prep", x.path().display(), manifest.image.size);
        }
        if x.dtype().name() != manifest.image.dtype {
            bail!("{}: {} pixels, but manifest.json says {}; re-run voc-prep", x.path().display(), x.dtype().name(), manifest.image.dtype);
        }
        let labels = y.to_f32_vec()?;
        if let Some(i) = labels.iter().position(|&v| v != 0.0 && v != 1.0) {
            bail!("{}: row {}, column {}: label {}, expected 0 or 1", y.path().display(), i / c.max(1), i % c.max(1), labels[i]);
        }
        Ok(SplitData { y: labels, x, classes: c, size })
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
            // One pass: checked and converted without an intermediate float buffer.
            DType::F32 => raw
                .chunks_exact(4)
                .map(|c| match f32::from_le_bytes([c[0], c[1], c[2], c[3]]) {
                    v if (0.0..=1.0).contains(&v) => Ok((v * 255.0).round() as u8),
                    v => bail!("{}: pixel value {v}, expected float32 pixels in [0, 1]", self.x.path().display()),
                })
                .collect::<Result<Vec<u8>>>()?,
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
