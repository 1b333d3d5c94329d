//! Building blocks shared by the backbones: convolution + BatchNorm (+ activation).

use tch::{nn, nn::Module, nn::ModuleT, Tensor};

/// Activation after a convolution block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Relu6,
    Silu,
}

impl Act {
    pub fn apply(self, xs: Tensor) -> Tensor {
        match self {
            Act::None => xs,
            Act::Relu => xs.relu(),
            Act::Relu6 => xs.clamp(0.0, 6.0),
            Act::Silu => xs.silu(),
        }
    }
}

/// Conv2d without bias followed by BatchNorm and an activation. BatchNorm always runs in
/// eval mode (running statistics): the backbones are frozen or lightly fine-tuned feature
/// extractors, and re-estimating statistics on small batches destroys their features.
#[derive(Debug)]
pub struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    act: Act,
}

/// Settings of one [`ConvBn`].
#[derive(Debug, Clone, Copy)]
pub struct ConvBnSpec {
    pub c_in: i64,
    pub c_out: i64,
    pub kernel: i64,
    pub stride: i64,
    pub groups: i64,
    pub eps: f64,
    pub act: Act,
}

impl ConvBn {
    /// `conv_path` holds `weight`; `bn_path` holds `weight`, `bias`, `running_mean`,
    /// `running_var`. Padding is `kernel / 2` on every side.
    pub fn new(conv_path: nn::Path, bn_path: nn::Path, s: ConvBnSpec) -> Self {
        let cfg = nn::ConvConfig {
            stride: s.stride,
            padding: s.kernel / 2,
            groups: s.groups,
            bias: false,
            ..Default::default()
        };
        let conv = nn::conv2d(conv_path, s.c_in, s.c_out, s.kernel, cfg);
        let bn = nn::batch_norm2d(bn_path, s.c_out, nn::BatchNormConfig { eps: s.eps, ..Default::default() });
        ConvBn { conv, bn, act: s.act }
    }
}

impl Module for ConvBn {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.act.apply(self.bn.forward_t(&self.conv.forward(xs), false))
    }
}
