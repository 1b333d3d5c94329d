//! The multi-label head: Linear(F, 128) -> ReLU -> Dropout(0.2) -> Linear(128, C), named
//! like PyTorch's `nn.Sequential` (`head.0`, `head.3`). Outputs logits; sigmoid gives
//! per-class probabilities.

use tch::{nn, nn::Module, Tensor};

/// Width of the hidden layer.
pub const HIDDEN: i64 = 128;
/// Dropout probability between the two layers.
pub const DROPOUT: f64 = 0.2;

#[derive(Debug)]
pub struct Head {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Head {
    /// Builds the head under `p` (use `root / "head"`).
    pub fn new(p: &nn::Path, features: i64, classes: i64) -> Self {
        Head {
            fc1: nn::linear(p / 0, features, HIDDEN, Default::default()),
            fc2: nn::linear(p / 3, HIDDEN, classes, Default::default()),
        }
    }

    /// Logits `[N, C]`; dropout is active only when `train`.
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        let h = self.fc1.forward(features).relu().dropout(DROPOUT, train);
        self.fc2.forward(&h)
    }
}
