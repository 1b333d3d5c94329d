//! `smaller_vggnet`: the small VGG-style network of the folder-name multi-label reference
//! (Keras "SmallerVGGNet", 96x96 input), trained from scratch:
//! Conv 32 -> ReLU -> BN -> MaxPool(3) -> Dropout(0.25);
//! 2 x (Conv 64 -> ReLU -> BN) -> MaxPool(2) -> Dropout(0.25);
//! 2 x (Conv 128 -> ReLU -> BN) -> MaxPool(2) -> Dropout(0.25);
//! Flatten -> Dense(1024) -> ReLU -> BN -> Dropout(0.5), then the output layer (sigmoid or
//! softmax by task). Before flattening, the 128-channel map is average-pooled to 8x8 (the
//! map size at 96 px, where it changes nothing), so any input of at least 16 px works.

use super::backbone::BackboneNet;
use super::layers::ConvBn;
use super::sequential::Sequential;
use tch::{nn, Tensor};

/// Width of the feature vector (the dense layer).
pub const FEATURES: i64 = 1024;
/// Side of the pooled map that is flattened (its size at 96 px input).
const GRID: i64 = 8;

#[derive(Debug)]
pub struct SmallerVggNet {
    features: Sequential,
    classifier: Sequential,
}

impl SmallerVggNet {
    pub fn new(p: &nn::Path) -> Self {
        let features = Sequential::build(p / "features")
            .conv(3, 32, 3, 1, 1)
            .relu()
            .batch_norm2d(32)
            .max_pool(3, 3, 0)
            .dropout(0.25)
            .conv(32, 64, 3, 1, 1)
            .relu()
            .batch_norm2d(64)
            .conv(64, 64, 3, 1, 1)
            .relu()
            .batch_norm2d(64)
            .max_pool(2, 2, 0)
            .dropout(0.25)
            .conv(64, 128, 3, 1, 1)
            .relu()
            .batch_norm2d(128)
            .conv(128, 128, 3, 1, 1)
            .relu()
            .batch_norm2d(128)
            .max_pool(2, 2, 0)
            .dropout(0.25)
            .adaptive_avg_pool([GRID, GRID])
            .flatten()
            .done();
        let classifier =
            Sequential::build(p / "classifier").linear(128 * GRID * GRID, FEATURES).relu().batch_norm1d(FEATURES).dropout(0.5).done();
        SmallerVggNet { features, classifier }
    }
}

impl BackboneNet for SmallerVggNet {
    fn features(&self, xs: &Tensor) -> Tensor {
        self.features_t(xs, false)
    }
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.classifier.forward_t(&self.features.forward_t(xs, train), train)
    }
    fn imagenet_logits(&self, _xs: &Tensor) -> Tensor {
        panic!("smaller_vggnet is trained from scratch and has no ImageNet classifier")
    }
    fn block_prefixes(&self) -> Vec<String> {
        let mut v = self.features.prefixes();
        v.extend(self.classifier.prefixes());
        v
    }
    fn conv_bns(&self) -> Vec<&ConvBn> {
        Vec::new()
    }
}
