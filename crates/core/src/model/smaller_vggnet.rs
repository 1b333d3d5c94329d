//! `smaller_vggnet`: the small VGG-style network of the folder-name multi-label reference
//! (Keras "SmallerVGGNet", 96x96 input), trained from scratch:
//! Conv 32 -> ReLU -> BN -> MaxPool(3) -> Dropout(0.25);
//! 2 x (Conv 64 -> ReLU -> BN) -> MaxPool(2) -> Dropout(0.25);
//! 2 x (Conv 128 -> ReLU -> BN) -> MaxPool(2) -> Dropout(0.25);
//! Flatten -> Dense(1024) -> ReLU -> BN -> Dropout(0.5), then the output layer (sigmoid or
//! softmax by task). Before flattening, the 128-channel map is average-pooled to 8x8 (the
//! map size at 96 px, where it changes nothing), so any input of at least 16 px works.

use super::sequential::{ScratchNet, Sequential};
use tch::nn;

/// Width of the feature vector (the dense layer).
pub const FEATURES: i64 = 1024;
/// Side of the pooled map that is flattened (its size at 96 px input).
const GRID: i64 = 8;

/// Builds the network under `p` (`features.*`, `classifier.*`).
pub fn smaller_vggnet(p: &nn::Path) -> ScratchNet {
    let mut b = Sequential::build(p / "features").conv(3, 32, 3, 1, 1).relu().batch_norm2d(32).max_pool(3, 3, 0).dropout(0.25);
    for (c_in, c) in [(32, 64), (64, 128)] {
        b = b.conv(c_in, c, 3, 1, 1).relu().batch_norm2d(c).conv(c, c, 3, 1, 1).relu().batch_norm2d(c).max_pool(2, 2, 0).dropout(0.25);
    }
    let features = b.adaptive_avg_pool([GRID, GRID]).flatten().done();
    let classifier =
        Sequential::build(p / "classifier").linear(128 * GRID * GRID, FEATURES).relu().batch_norm1d(FEATURES).dropout(0.5).done();
    ScratchNet::new(features, Some(classifier))
}
