//! Building blocks shared by the backbones: convolution + BatchNorm (+ ReLU6).

use tch::{nn, nn::Module, nn::ModuleT, Tensor};

/// Conv2d without bias followed by BatchNorm, optionally ReLU6. BatchNorm always runs in
/// eval mode (running statistics): the backbones are frozen feature extractors, and the
/// shipped checkpoints are not meant to be re-normalised on small batches.
#[derive(Debug)]
pub struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    relu6: bool,
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
    pub relu6: bool,
}

impl ConvBn {
    /// `conv_path` holds `weight`; `bn_path` holds `weight`, `bias`, `running_mean`, `running_var`.
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
        ConvBn { conv, bn, relu6: s.relu6 }
    }
}

impl Module for ConvBn {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let ys = self.bn.forward_t(&self.conv.forward(xs), false);
        if self.relu6 {
            ys.clamp(0.0, 6.0)
        } else {
            ys
        }
    }
}
