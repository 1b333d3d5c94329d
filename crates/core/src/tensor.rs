//! Tensor plumbing shared by every stage: host pixels -> normalised NCHW model input,
//! uploads that do not stall the GPU, and reading values back to the host.

use crate::model::Normalization;
use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

/// `[B, H, W, 3]` uint8 -> `[B, 3, H, W]` float32 on `device`, scaled to [0, 1].
pub fn to_unit_nchw(pixels: &Tensor, device: Device) -> Tensor {
    upload(pixels, device).permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0
}

/// `[B, S, S, 3]` uint8 pixels as a CPU tensor, copied into uninitialised storage.
/// `Tensor::from_slice` zero-fills first, an OpenMP-parallel operator: when ONNX Runtime
/// scores, libtorch's idle threads woken by it spin against ONNX Runtime's on a small CPU
/// (model-only scoring on 2 cores: 275 -> 329 images/s without it).
pub fn pixel_tensor(bytes: &[u8], images: usize, side: usize) -> Result<Tensor> {
    let len = images * side * side * 3;
    anyhow::ensure!(bytes.len() == len, "{} bytes of pixels for {images} images of {side}x{side}x3", bytes.len());
    let t = Tensor::empty([images as i64, side as i64, side as i64, 3], (Kind::Uint8, Device::Cpu));
    // SAFETY: `t` is a new contiguous CPU tensor of exactly `len` bytes, not yet shared.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), t.data_ptr() as *mut u8, len) };
    Ok(t)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_tensor_holds_the_bytes_in_order_and_checks_their_count() {
        let bytes: Vec<u8> = (0..2 * 2 * 2 * 3).map(|v| v as u8).collect();
        let t = pixel_tensor(&bytes, 2, 2).unwrap();
        assert_eq!(t.size(), [2, 2, 2, 3]);
        assert_eq!(t.kind(), Kind::Uint8);
        assert_eq!(Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(), bytes);
        assert_eq!(t.int64_value(&[1, 0, 1, 2]), 17);
        let err = pixel_tensor(&bytes[1..], 2, 2).unwrap_err().to_string();
        assert_eq!(err, "23 bytes of pixels for 2 images of 2x2x3");
    }
}
