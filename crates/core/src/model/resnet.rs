//! ResNet-18 and ResNet-50 as in torchvision's `resnet.py` (ResNet-50 is v1.5: stride in the
//! 3x3 convolution), with its parameter names (`conv1`, `bn1`, `layerN.M.conv1..3`, `bnN`,
//! `downsample.0/1`, `fc`), BatchNorm eps 1e-5.

use super::layers::{Act, ConvBn, ConvBnSpec};
use super::net::BackboneNet;
use tch::{nn, nn::Module, Tensor};

const EPS: f64 = 1e-5;

fn spec(c_in: i64, c_out: i64, kernel: i64, stride: i64, act: Act) -> ConvBnSpec {
    ConvBnSpec { c_in, c_out, kernel, stride, groups: 1, eps: EPS, act }
}

/// The residual block type of a depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1x1 -> 3x3 -> 1x1 (ResNet-50 and deeper), expansion 4.
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> i64 {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// torchvision's `resnet18`: BasicBlock, layers [2, 2, 2, 2], 512 features.
pub const RESNET18: (BlockKind, [usize; 4]) = (BlockKind::Basic, [2, 2, 2, 2]);
/// torchvision's `resnet50`: Bottleneck, layers [3, 4, 6, 3], 2048 features.
pub const RESNET50: (BlockKind, [usize; 4]) = (BlockKind::Bottleneck, [3, 4, 6, 3]);

/// One residual block: `convs` in order, ReLU after all but the last, plus the shortcut.
#[derive(Debug)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn new(p: &nn::Path, kind: BlockKind, c_in: i64, width: i64, stride: i64) -> Self {
        let out = width * kind.expansion();
        let downsample = (stride != 1 || c_in != out)
            .then(|| ConvBn::new(p / "downsample" / 0, p / "downsample" / 1, spec(c_in, out, 1, stride, Act::None)));
        let convs = match kind {
            BlockKind::Basic => vec![
                ConvBn::new(p / "conv1", p / "bn1", spec(c_in, width, 3, stride, Act::Relu)),
                ConvBn::new(p / "conv2", p / "bn2", spec(width, out, 3, 1, Act::None)),
            ],
            BlockKind::Bottleneck => vec![
                ConvBn::new(p / "conv1", p / "bn1", spec(c_in, width, 1, 1, Act::Relu)),
                ConvBn::new(p / "conv2", p / "bn2", spec(width, width, 3, stride, Act::Relu)),
                ConvBn::new(p / "conv3", p / "bn3", spec(width, out, 1, 1, Act::None)),
            ],
        };
        Block { convs, downsample }
    }
}

impl Module for Block {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let ys = self.convs.iter().fold(xs.shallow_clone(), |h, c| c.forward(&h));
        let skip = match &self.downsample {
            Some(d) => d.forward(xs),
            None => xs.shallow_clone(),
        };
        (ys + skip).relu()
    }
}

/// A ResNet backbone (512 x expansion features).
#[derive(Debug)]
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<(String, Block)>,
    fc: Option<nn::Linear>,
}

impl ResNet {
    /// `arch`: [`RESNET18`] or [`RESNET50`].
    pub fn new(p: &nn::Path, arch: (BlockKind, [usize; 4]), imagenet_head: bool) -> Self {
        let (kind, layers) = arch;
        let stem = ConvBn::new(p / "conv1", p / "bn1", spec(3, 64, 7, 2, Act::Relu));
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (li, (&n, width)) in layers.iter().zip([64, 128, 256, 512]).enumerate() {
            let stride = if li == 0 { 1 } else { 2 };
            for b in 0..n {
                let name = format!("layer{}.{b}.", li + 1);
                let bp = p / format!("layer{}", li + 1) / b;
                blocks.push((name, Block::new(&bp, kind, c_in, width, if b == 0 { stride } else { 1 })));
                c_in = width * kind.expansion();
            }
        }
        let fc = imagenet_head.then(|| nn::linear(p / "fc", c_in, 1000, Default::default()));
        ResNet { stem, blocks, fc }
    }
}

impl ResNet {
    /// The output of `layer4`, `[N, C, h, w]`.
    fn map(&self, xs: &Tensor) -> Tensor {
        let mut h = self.stem.forward(xs).max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for (_, b) in &self.blocks {
            h = b.forward(&h);
        }
        h
    }
}

impl BackboneNet for ResNet {
    fn feature_map(&self, xs: &Tensor) -> Option<Tensor> {
        Some(self.map(xs))
    }

    fn imagenet_classifier(&self) -> Option<&dyn Module> {
        self.fc.as_ref().map(|l| l as &dyn Module)
    }

    fn block_prefixes(&self) -> Vec<String> {
        self.blocks.iter().map(|(n, _)| n.clone()).collect()
    }

    fn conv_bns(&self) -> Vec<&ConvBn> {
        let blocks = self.blocks.iter().flat_map(|(_, b)| b.convs.iter().chain(b.downsample.iter()));
        std::iter::once(&self.stem).chain(blocks).collect()
    }
}
