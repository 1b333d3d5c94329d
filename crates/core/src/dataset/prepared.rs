//! Prepared data read back: `X_<split>.npy` batch by batch as `[B, H, W, 3]` uint8 tensors
//! (positioned reads, nothing mapped), and the labels.

use crate::dataset::manifest::Manifest;
use crate::io::npy::{DType, NpyArray};
use anyhow::{bail, Result};
use std::path::Path;
use tch::Tensor;

/// One split of a prepared dataset (or several joined, [`SplitData::joined`]); images stay
/// on disk and are read per batch.
pub struct SplitData {
    /// The image arrays, whose rows follow each other.
    x: Vec<NpyArray>,
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
        Ok(SplitData { y: labels, x: vec![x], classes: c, size })
    }

    /// `self`'s rows followed by `other`'s (e.g. train and val for a final fit on both).
    pub fn joined(mut self, other: SplitData) -> Result<SplitData> {
        if (other.classes, other.size) != (self.classes, self.size) || other.x.iter().any(|x| x.dtype() != self.x[0].dtype()) {
            bail!("cannot join splits of different classes, sizes or pixel types");
        }
        self.x.extend(other.x);
        self.y.extend(other.y);
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.x.iter().map(NpyArray::rows).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels of rows `idx` as a `[B, H, W, 3]` uint8 tensor (float32 arrays are scaled back).
    pub fn pixels(&self, idx: &[usize]) -> Result<Tensor> {
        crate::tensor::pixel_tensor(&self.pixel_bytes(idx)?, idx.len(), self.size)
    }

    /// Pixels of rows `idx` as uint8 bytes, `H * W * 3` per row (float32 arrays are scaled
    /// back): the bytes [`pixels`](Self::pixels) holds, and what an image resized as this
    /// data was gives.
    pub fn pixel_bytes(&self, idx: &[usize]) -> Result<Vec<u8>> {
        let raw = self.gather_rows(idx)?;
        let x = &self.x[0];
        let buf = match x.dtype() {
            DType::U8 => raw,
            // One pass: checked and converted without an intermediate float buffer.
            DType::F32 => raw
                .chunks_exact(4)
                .map(|c| match f32::from_le_bytes([c[0], c[1], c[2], c[3]]) {
                    v if (0.0..=1.0).contains(&v) => Ok((v * 255.0).round() as u8),
                    v => bail!("{}: pixel value {v}, expected float32 pixels in [0, 1]", x.path().display()),
                })
                .collect::<Result<Vec<u8>>>()?,
        };
        Ok(buf)
    }

    /// Labels of rows `idx` as `[B, C]` float32.
    /// The raw bytes of rows `idx`, in that order, across the joined arrays.
    fn gather_rows(&self, idx: &[usize]) -> Result<Vec<u8>> {
        if let [x] = self.x.as_slice() {
            return x.gather_rows(idx);
        }
        let row = self.x[0].row_len();
        let mut out = vec![0u8; idx.len() * row];
        let mut start = 0;
        for x in &self.x {
            let end = start + x.rows();
            let (at, local): (Vec<usize>, Vec<usize>) =
                idx.iter().enumerate().filter(|(_, &i)| (start..end).contains(&i)).map(|(k, &i)| (k, i - start)).unzip();
            if !local.is_empty() {
                let bytes = x.gather_rows(&local)?;
                for (k, chunk) in at.iter().zip(bytes.chunks_exact(row)) {
                    out[k * row..(k + 1) * row].copy_from_slice(chunk);
                }
            }
            start = end;
        }
        if let Some(&bad) = idx.iter().find(|&&i| i >= start) {
            bail!("row {bad} is out of range ({start} rows)");
        }
        Ok(out)
    }

    pub fn labels(&self, idx: &[usize]) -> Tensor {
        let c = self.classes;
        let mut v = Vec::with_capacity(idx.len() * c);
        for &i in idx {
            v.extend_from_slice(&self.y[i * c..(i + 1) * c]);
        }
        Tensor::from_slice(&v).view([idx.len() as i64, c as i64])
    }
}
