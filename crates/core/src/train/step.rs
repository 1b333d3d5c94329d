//! The pieces of one training step that `train`, `retrain` and the speed benchmark share:
//! where batches of pixels come from, how they become model input on the device, the
//! backbone's forward pass and the head's optimisation step, and the speed settings (memory
//! format, bf16 autocast) that change how a step runs but not what it computes.

use crate::dataset::prepared::SplitData;
use crate::model::head::Head;
use crate::model::{channels_last, BackboneNet, Normalization};
use crate::tensor::{to_unit_nchw, upload};
use crate::train::augment::{augment, AugmentConfig};
use crate::train::optim::Adam;
use anyhow::Result;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// How training steps run on the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedOptions {
    /// Convolution weights and activations in channels-last (NHWC) memory.
    pub channels_last: bool,
    /// CUDA autocast in bfloat16 for the forward pass (float32 weights and optimizer).
    pub bf16: bool,
}

/// Training splits up to this size are copied to the GPU once (uint8) and batched there.
pub const RESIDENT_LIMIT_BYTES: usize = 4 << 30;

/// Where training batches come from: the split on disk, or a copy resident in GPU memory.
pub enum ImageSource<'a> {
    Disk(&'a SplitData),
    /// `[N, H, W, 3]` uint8 on the device.
    Resident(Tensor),
}

impl<'a> ImageSource<'a> {
    /// Resident on a GPU when the split is under [`RESIDENT_LIMIT_BYTES`], on disk otherwise.
    pub fn new(data: &'a SplitData, device: Device) -> Result<Self> {
        let bytes = data.len() * data.size * data.size * 3;
        Ok(if device.is_cuda() && bytes <= RESIDENT_LIMIT_BYTES && !data.is_empty() {
            let all: Vec<usize> = (0..data.len()).collect();
            ImageSource::Resident(data.pixels(&all)?.to_device(device))
        } else {
            ImageSource::Disk(data)
        })
    }

    /// Rows `idx` as `[B, H, W, 3]` uint8 on `device`.
    pub fn batch(&self, idx: &[usize], device: Device) -> Result<Tensor> {
        Ok(match self {
            ImageSource::Disk(d) => upload(&d.pixels(idx)?, device),
            ImageSource::Resident(all) => {
                let rows: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
                all.index_select(0, &upload(&Tensor::from_slice(&rows), all.device()))
            }
        })
    }
}

/// `[B, H, W, 3]` uint8 pixels (on the target device) -> normalised `[B, 3, H, W]` float32:
/// scaled to [0, 1], augmented when asked, normalised, in the requested memory format.
pub fn model_input(pixels: &Tensor, aug: Option<(&AugmentConfig, &mut ChaCha8Rng)>, norm: &Normalization, speed: SpeedOptions) -> Tensor {
    let mut xs = to_unit_nchw(pixels, pixels.device());
    if let Some((cfg, rng)) = aug {
        xs = augment(&xs, cfg, rng);
    }
    let xs = crate::tensor::normalize(&xs, norm);
    if speed.channels_last {
        channels_last(&xs)
    } else {
        xs.contiguous()
    }
}

/// Backbone features of model input `xs`: with gradients when the backbone is trained,
/// without otherwise; in bf16 autocast when asked.
pub fn backbone_features(net: &dyn BackboneNet, xs: &Tensor, trains_backbone: bool, bf16: bool, device: Device) -> Result<Tensor> {
    let forward = || net.features_t(xs, trains_backbone);
    if trains_backbone {
        crate::device::bf16_autocast(bf16, device, forward)
    } else {
        tch::no_grad(|| crate::device::bf16_autocast(bf16, device, forward))
    }
}

/// One optimisation step of the head (and whatever `features` were computed from): the
/// loss of the head's training-mode logits, backward, Adam. Returns the loss.
pub fn head_step(
    head: &Head,
    features: &Tensor,
    y: &Tensor,
    loss: impl Fn(&Tensor, &Tensor) -> Tensor,
    opt: &mut Adam,
    bf16: bool,
    device: Device,
) -> Result<Tensor> {
    let loss = crate::device::bf16_autocast(bf16, device, || loss(&head.forward_t(features, true), y))?;
    opt.backward_step(&loss);
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::backbone::IMAGENET;
    use tch::Kind;

    #[test]
    fn model_input_layouts_hold_the_same_values() {
        let px = Tensor::randint(256, [2, 8, 8, 3], (Kind::Uint8, Device::Cpu));
        let a = model_input(&px, None, &IMAGENET, SpeedOptions::default());
        let b = model_input(&px, None, &IMAGENET, SpeedOptions { channels_last: true, bf16: false });
        assert!(a.is_contiguous() && !b.is_contiguous());
        assert_eq!(b.stride()[1], 1);
        assert!((&a - &b).abs().max().double_value(&[]) == 0.0);
        let want = (px.get(1).get(2).get(3).get(0).double_value(&[]) / 255.0 - 0.485) / 0.229;
        assert!((a.double_value(&[1, 0, 2, 3]) - want).abs() < 1e-5);
    }
}
