//! Tensor plumbing shared by every stage: host pixels -> normalised NCHW model input,
//! uploads that do not stall the GPU, and reading values back to the host.

use crate::model::Normalization;
use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

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
    let mean = per_channel(norm.mean, dev);
    let std = per_channel(norm.std, dev);
    (xs - mean) / std
}

/// `[1, 3, 1, 1]` float32 values on `device`, made by operators rather than copied from host
/// memory, so that a traced graph (ONNX export) records the values and not an empty tensor.
fn per_channel(values: [f64; 3], device: Device) -> Tensor {
    let parts: Vec<Tensor> = values.iter().map(|&v| Tensor::full([1], v, (Kind::Float, device))).collect();
    Tensor::cat(&parts, 0).view([1, 3, 1, 1])
}
