//! A backbone seen at several input sizes (multi-scale features): the image is resized to
//! each size (bilinear; antialiased when shrinking, as torchvision's `Resize`) and the pooled
//! features of each size are concatenated, in the order the sizes are listed.

use super::layers::ConvBn;
use super::{BackboneKind, BackboneNet};
use anyhow::{bail, Result};
use tch::Tensor;

/// Most sizes a multi-scale backbone may be seen at (each costs a backbone pass).
pub const MAX_SIZES: usize = 4;

/// A backbone run at several input sizes.
#[derive(Debug)]
pub struct MultiScale {
    net: Box<dyn BackboneNet>,
    sizes: Vec<i64>,
}

/// `net` seen at `sizes` (pixels); `net` itself when `sizes` is empty (the input's own size).
pub fn at_scales(net: Box<dyn BackboneNet>, sizes: &[u32]) -> Box<dyn BackboneNet> {
    if sizes.is_empty() {
        return net;
    }
    Box::new(MultiScale { net, sizes: sizes.iter().map(|&s| s as i64).collect() })
}

/// Width of the features `kind` gives at `sizes` (the one size of the input when empty).
pub fn feature_dim(kind: BackboneKind, sizes: &[u32]) -> i64 {
    kind.feature_dim() * sizes.len().max(1) as i64
}

/// Checks sizes for `kind`: each at least its minimum input and at most
/// [`MAX_IMAGE_SIZE`](crate::io::image::MAX_IMAGE_SIZE), none twice, at most [`MAX_SIZES`].
pub fn check_sizes(kind: BackboneKind, sizes: &[u32]) -> Result<()> {
    let (min, max) = (kind.min_input_size(), crate::io::image::MAX_IMAGE_SIZE);
    if sizes.len() > MAX_SIZES {
        bail!("{} sizes: at most {MAX_SIZES}", sizes.len());
    }
    if let Some(s) = sizes.iter().find(|s| !(min..=max).contains(*s)) {
        bail!("{s} px: expected {min}..={max} pixels for {}", kind.name());
    }
    if let Some(s) = sizes.iter().enumerate().find_map(|(i, s)| sizes[..i].contains(s).then_some(s)) {
        bail!("{s} px is listed twice");
    }
    Ok(())
}

/// `xs` `[N, C, H, W]` resized to `size` x `size`.
fn resized(xs: &Tensor, size: i64) -> Tensor {
    let (h, w) = (xs.size()[2], xs.size()[3]);
    if (h, w) == (size, size) {
        xs.shallow_clone()
    } else if size < h.min(w) {
        xs.internal_upsample_bilinear2d_aa([size, size], false, None, None)
    } else {
        xs.upsample_bilinear2d([size, size], false, None, None)
    }
}

impl MultiScale {
    fn concat(&self, sizes: &[i64], f: impl Fn(&Tensor) -> Tensor, xs: &Tensor) -> Tensor {
        let parts: Vec<Tensor> = sizes.iter().map(|&s| f(&resized(xs, s))).collect();
        Tensor::cat(&parts, 1)
    }
}

impl BackboneNet for MultiScale {
    fn features(&self, xs: &Tensor) -> Tensor {
        self.concat(&self.sizes, |x| self.net.features(x), xs)
    }

    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.concat(&self.sizes, |x| self.net.features_t(x, train), xs)
    }

    /// The map at the first size.
    fn feature_map(&self, xs: &Tensor) -> Option<Tensor> {
        self.net.feature_map(&resized(xs, self.sizes[0]))
    }

    fn extra_features(&self, xs: &Tensor) -> Option<Tensor> {
        (self.sizes.len() > 1).then(|| self.concat(&self.sizes[1..], |x| self.net.features(x), xs))
    }

    fn imagenet_logits(&self, xs: &Tensor) -> Tensor {
        self.net.imagenet_logits(xs)
    }

    fn block_prefixes(&self) -> Vec<String> {
        self.net.block_prefixes()
    }

    fn conv_bns(&self) -> Vec<&ConvBn> {
        self.net.conv_bns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    /// A randomly initialised Lite0 seen at 64 and 32 px, with its variables.
    fn lite0_at_64_and_32() -> (nn::VarStore, Box<dyn BackboneNet>) {
        let vs = nn::VarStore::new(Device::Cpu);
        let multi = at_scales(BackboneKind::EfficientnetLite0.build(&vs.root(), false), &[64, 32]);
        (vs, multi)
    }

    #[test]
    fn features_are_those_of_each_size_concatenated() {
        tch::manual_seed(0);
        let (_vs, multi) = lite0_at_64_and_32();
        let kind = BackboneKind::EfficientnetLite0;
        let xs = Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let f = tch::no_grad(|| multi.features(&xs));
        assert_eq!(f.size(), [2, feature_dim(kind, &[64, 32])]);
        assert_eq!(feature_dim(kind, &[64, 32]), 2 * 1280);
        let small = xs.internal_upsample_bilinear2d_aa([32, 32], false, None, None);
        let extra = tch::no_grad(|| multi.extra_features(&xs)).unwrap();
        let map = tch::no_grad(|| multi.feature_map(&xs)).unwrap();
        // The first 1280 are the full-size features (the pooled map), the rest the 32 px ones.
        assert!(f.narrow(1, 0, 1280).allclose(&map.mean_dim([2i64, 3].as_slice(), false, Kind::Float), 1e-5, 1e-6, false));
        assert!(f.narrow(1, 1280, 1280).allclose(&extra, 1e-6, 1e-7, false));
        // At 32 px the second size is the input itself.
        let direct = tch::no_grad(|| multi.features(&small).narrow(1, 1280, 1280));
        assert!(f.narrow(1, 1280, 1280).allclose(&direct, 1e-5, 1e-6, false));
        assert_eq!(feature_dim(kind, &[]), 1280);
    }

    /// Grad-CAM of a multi-scale backbone explains the first size's map: with a linear head
    /// the channel weights are the head's weights of that size's features (over the map's
    /// area), so the map is ReLU(sum_c W[k, c] map_c), upsampled and scaled to [0, 1].
    #[test]
    fn grad_cam_explains_the_first_size_with_the_others_held() {
        tch::manual_seed(1);
        let (vs, multi) = lite0_at_64_and_32();
        let kind = BackboneKind::EfficientnetLite0;
        let head = crate::model::head::Head::new(
            &(vs.root() / "head"),
            feature_dim(kind, &[64, 32]),
            2,
            &crate::model::head::HeadLayout::linear(),
        );
        let w = vs.variables().into_iter().find(|(k, _)| k.starts_with("head.") && k.ends_with("weight")).unwrap().1;
        let xs = Tensor::rand([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let got = crate::model::grad_cam::grad_cam(multi.as_ref(), &head, &xs, &[0, 1]).unwrap();
        let map = tch::no_grad(|| multi.feature_map(&xs)).unwrap();
        for k in 0..2 {
            let wk = w.get(k).narrow(0, 0, 1280).view([1, 1280, 1, 1]);
            let cam = (wk * &map).sum_dim_intlist([1i64].as_slice(), true, Kind::Float).relu();
            let up = cam.upsample_bilinear2d([64, 64], false, None, None).view([64, 64]);
            let (lo, hi) = (up.min().double_value(&[]), up.max().double_value(&[]));
            // A class with no positive evidence anywhere has an all-zero map.
            let want = if hi - lo > 1e-12 { (up - lo) / (hi - lo) } else { up.zeros_like() };
            let diff = (got.get(k) - want).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "class {k}: max abs diff {diff}");
        }
    }

    #[test]
    fn sizes_are_checked() {
        let kind = BackboneKind::EfficientnetLite0;
        assert!(check_sizes(kind, &[448, 320]).is_ok());
        assert!(check_sizes(kind, &[]).is_ok());
        assert_eq!(check_sizes(kind, &[16]).unwrap_err().to_string(), "16 px: expected 32..=4096 pixels for efficientnet_lite0");
        assert_eq!(check_sizes(kind, &[64, 64]).unwrap_err().to_string(), "64 px is listed twice");
        assert!(check_sizes(kind, &[32, 64, 96, 128, 160]).is_err());
    }
}
