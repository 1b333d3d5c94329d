//! Grad-CAM (Selvaraju et al.): where the model looked for a class. The gradient of the
//! class logit (before sigmoid or softmax) with respect to the backbone's last convolutional
//! feature map gives one weight per channel (its spatial mean); the map is the ReLU of the
//! weighted sum of the channels, upsampled bilinearly to the input and min-max scaled to
//! [0, 1]. The frozen backbone runs once without gradient; only the head is differentiated,
//! from the feature map taken as a leaf (of a multi-scale backbone, the map at its first
//! size, the other sizes' features held constant). Layers: EfficientNet-Lite0/1/2/B0 and
//! MobileNetV2 the last 1x1 convolution, ResNet `layer4`, VGG16 the output of `features`,
//! GoogLeNet `inception5b`; ViT, ConvNeXt and the from-scratch models have no map here.

use super::head::Head;
use super::net::BackboneNet;
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// Grad-CAM maps `[K, H, W]` in [0, 1] of normalised input `xs` `[1, 3, H, W]` for the
/// logits `classes` (column indices of the head's output).
pub fn grad_cam(net: &dyn BackboneNet, head: &Head, xs: &Tensor, classes: &[i64]) -> Result<Tensor> {
    let (h, w) = match xs.size().as_slice() {
        [1, 3, h, w] => (*h, *w),
        other => bail!("Grad-CAM takes one image [1, 3, H, W], got {other:?}"),
    };
    let Some(map) = tch::no_grad(|| net.feature_map(xs)) else {
        bail!("this backbone has no convolutional feature map to explain");
    };
    // A multi-scale backbone: the map is the first size's; the other sizes' features are
    // constants here.
    let extra = tch::no_grad(|| net.extra_features(xs));
    // Gradients are on here even where the caller turned them off (the service's inference
    // thread does).
    tch::with_grad(|| {
        let map = map.detach().set_requires_grad(true);
        let pooled = map.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        let features = match &extra {
            Some(e) => Tensor::cat(&[&pooled, e], 1),
            None => pooled,
        };
        let logits = head.forward_t(&features, false);
        let mut cams = Vec::with_capacity(classes.len());
        for &c in classes {
            let grads = Tensor::run_backward(&[logits.get(0).get(c)], &[&map], true, false);
            let weights = grads[0].mean_dim([2i64, 3].as_slice(), true, Kind::Float);
            let cam = (weights * &map).sum_dim_intlist([1i64].as_slice(), true, Kind::Float).relu().detach();
            let up = cam.upsample_bilinear2d([h, w], false, None, None).view([h, w]);
            cams.push(min_max(&up));
        }
        Ok(Tensor::stack(&cams, 0))
    })
}

/// Scales `t` to [0, 1]; a constant map becomes zeros.
fn min_max(t: &Tensor) -> Tensor {
    let (lo, hi) = (t.min(), t.max());
    let span = (&hi - &lo).double_value(&[]);
    if span <= 1e-12 {
        return t.zeros_like();
    }
    (t - lo) / span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_map_scales_to_zeros() {
        let flat = min_max(&Tensor::from_slice(&[2.0f32, 2.0]));
        assert_eq!(Vec::<f32>::try_from(flat).unwrap(), vec![0.0, 0.0]);
        let ramp = min_max(&Tensor::from_slice(&[1.0f32, 2.0, 3.0]));
        assert_eq!(Vec::<f32>::try_from(ramp).unwrap(), vec![0.0, 0.5, 1.0]);
    }
}
