//! `alexnet_like`: AlexNet's five convolutions and two dense layers (torchvision's
//! `alexnet.py` widths 64-192-384-256-256, dense 1024 instead of 4096), with BatchNorm after
//! each convolution so it trains from scratch on small datasets, a 5x5 stride-2 first layer
//! and average pooling before the dense layers, so any input of at least 16 px works.
//! Features: `Dropout(0.5) -> Linear(256, 1024) -> ReLU -> Dropout(0.5)`.

use super::sequential::{ScratchNet, Sequential};
use tch::nn;

/// Width of the feature vector.
pub const FEATURES: i64 = 1024;

/// Builds the network under `p` (`features.*`, `classifier.*`).
pub fn alexnet_like(p: &nn::Path) -> ScratchNet {
    let features = Sequential::build(p / "features")
        .conv(3, 64, 5, 2, 2)
        .batch_norm2d(64)
        .relu()
        .max_pool(3, 2, 1)
        .conv(64, 192, 5, 1, 2)
        .batch_norm2d(192)
        .relu()
        .max_pool(3, 2, 1)
        .conv(192, 384, 3, 1, 1)
        .batch_norm2d(384)
        .relu()
        .conv(384, 256, 3, 1, 1)
        .batch_norm2d(256)
        .relu()
        .conv(256, 256, 3, 1, 1)
        .batch_norm2d(256)
        .relu()
        .max_pool(3, 2, 1)
        .adaptive_avg_pool([1, 1])
        .flatten()
        .done();
    let classifier = Sequential::build(p / "classifier").dropout(0.5).linear(256, FEATURES).relu().dropout(0.5).done();
    ScratchNet::new(features, Some(classifier))
}
