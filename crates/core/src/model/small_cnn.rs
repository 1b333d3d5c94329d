//! `small_cnn`: a simple convolutional network trained from scratch, the baseline of the
//! reference comparisons. Three blocks Conv3x3 -> BatchNorm -> ReLU -> MaxPool(2) with 32,
//! 64 and 128 channels, global average pooling and dropout 0.25: 128 features for the
//! output layer. Any input size of at least 16 px.

use super::sequential::{ScratchNet, Sequential};
use tch::nn;

/// Width of the feature vector.
pub const FEATURES: i64 = 128;

/// Builds the network under `p` (`features.*`).
pub fn small_cnn(p: &nn::Path) -> ScratchNet {
    let mut b = Sequential::build(p / "features");
    for (c_in, c_out) in [(3, 32), (32, 64), (64, FEATURES)] {
        b = b.conv(c_in, c_out, 3, 1, 1).batch_norm2d(c_out).relu().max_pool(2, 2, 0);
    }
    ScratchNet::new(b.adaptive_avg_pool([1, 1]).flatten().dropout(0.25).done(), None)
}
