//! The classification head: Linear(F, 128) -> ReLU -> Dropout(0.2) -> Linear(128, C), named
//! like PyTorch's `nn.Sequential` (`head.0`, `head.3`), or a single Linear(F, C) (`head.0`)
//! after the from-scratch models' own dense layers. Outputs logits; the task turns them into
//! probabilities (sigmoid per class, or softmax per label group: one output block per head).

use tch::{nn, nn::Module, Tensor};

/// Width of the hidden layer.
pub const HIDDEN: i64 = 128;
/// Dropout probability between the two layers.
pub const DROPOUT: f64 = 0.2;

#[derive(Debug)]
pub enum Head {
    /// Linear -> ReLU -> Dropout -> Linear.
    Hidden { fc1: nn::Linear, fc2: nn::Linear },
    /// One Linear layer.
    Linear(nn::Linear),
}

impl Head {
    /// Builds the head under `p` (use `root / "head"`), with a hidden layer of `hidden` units
    /// or none.
    pub fn new(p: &nn::Path, features: i64, classes: i64, hidden: Option<i64>) -> Self {
        match hidden {
            Some(h) => Head::Hidden {
                fc1: nn::linear(p / 0, features, h, Default::default()),
                fc2: nn::linear(p / 3, h, classes, Default::default()),
            },
            None => Head::Linear(nn::linear(p / 0, features, classes, Default::default())),
        }
    }

    /// Logits `[N, C]`; dropout is active only when `train`.
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        match self {
            Head::Hidden { fc1, fc2 } => fc2.forward(&fc1.forward(features).relu().dropout(DROPOUT, train)),
            Head::Linear(fc) => fc.forward(features),
        }
    }
}
