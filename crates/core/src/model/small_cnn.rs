//! `small_cnn`: a simple convolutional network trained from scratch, the baseline of the
//! reference comparisons. Three blocks Conv3x3 -> BatchNorm -> ReLU -> MaxPool(2) with 32,
//! 64 and 128 channels, global average pooling and dropout 0.25: 128 features for the
//! output layer. Any input size of at least 16 px.

use super::backbone::BackboneNet;
use super::layers::ConvBn;
use super::sequential::Sequential;
use tch::{nn, Tensor};

/// Width of the feature vector.
pub const FEATURES: i64 = 128;

#[derive(Debug)]
pub struct SmallCnn {
    features: Sequential,
}

impl SmallCnn {
    pub fn new(p: &nn::Path) -> Self {
        let mut b = Sequential::build(p / "features");
        for (c_in, c_out) in [(3, 32), (32, 64), (64, FEATURES)] {
            b = b.conv(c_in, c_out, 3, 1, 1).batch_norm2d(c_out).relu().max_pool(2, 2, 0);
        }
        SmallCnn { features: b.adaptive_avg_pool([1, 1]).flatten().dropout(0.25).done() }
    }
}

impl BackboneNet for SmallCnn {
    fn features(&self, xs: &Tensor) -> Tensor {
        self.features.forward_t(xs, false)
    }
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features.forward_t(xs, train)
    }
    fn imagenet_logits(&self, _xs: &Tensor) -> Tensor {
        panic!("small_cnn is trained from scratch and has no ImageNet classifier")
    }
    fn block_prefixes(&self) -> Vec<String> {
        self.features.prefixes()
    }
    fn conv_bns(&self) -> Vec<&ConvBn> {
        Vec::new()
    }
}
