//! ConvNeXt-Tiny as in torchvision's `convnext.py`, with its parameter names: the stem
//! `features.0` (4x4 stride-4 convolution, LayerNorm2d), stages `features.1/3/5/7` of CNBlocks
//! (`block.0` 7x7 depthwise convolution, `block.2` LayerNorm, `block.3` / `block.5` the MLP
//! with GELU, `layer_scale`), downsampling `features.2/4/6` (LayerNorm2d, 2x2 stride-2
//! convolution) and `classifier` (`classifier.0` LayerNorm2d, `classifier.2` Linear).
//! Features: the pooled map after the classifier's LayerNorm (768); stochastic depth is an
//! identity at inference, as in eval mode.

use super::net::BackboneNet;
use tch::{nn, nn::Module, Tensor};

const EPS: f64 = 1e-6;
/// (channels, blocks) of the four stages.
const STAGES: [(i64, usize); 4] = [(96, 3), (192, 3), (384, 9), (768, 3)];
/// Width of the pooled features.
pub const FEATURES: i64 = 768;

fn layer_norm(p: nn::Path, dim: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![dim], nn::LayerNormConfig { eps: EPS, ..Default::default() })
}

/// LayerNorm over the channels of an NCHW map (torchvision's `LayerNorm2d`).
fn layer_norm_2d(ln: &nn::LayerNorm, xs: &Tensor) -> Tensor {
    ln.forward(&xs.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
}

fn conv(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64, groups: i64) -> nn::Conv2D {
    nn::conv2d(p, c_in, c_out, kernel, nn::ConvConfig { stride, padding, groups, ..Default::default() })
}

/// torchvision's `CNBlock`: x + layer_scale * MLP(LayerNorm(depthwise(x))).
#[derive(Debug)]
struct CnBlock {
    depthwise: nn::Conv2D,
    norm: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    layer_scale: Tensor,
}

impl CnBlock {
    fn new(p: nn::Path, dim: i64) -> Self {
        let b = &p / "block";
        CnBlock {
            depthwise: conv(&b / 0, dim, dim, 7, 1, 3, dim),
            norm: layer_norm(&b / 2, dim),
            fc1: nn::linear(&b / 3, dim, 4 * dim, Default::default()),
            fc2: nn::linear(&b / 5, 4 * dim, dim, Default::default()),
            layer_scale: p.var("layer_scale", &[dim, 1, 1], nn::Init::Const(1e-6)),
        }
    }
}

impl Module for CnBlock {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let h = self.depthwise.forward(xs).permute([0, 2, 3, 1]);
        let h = self.fc2.forward(&self.fc1.forward(&self.norm.forward(&h)).gelu("none"));
        h.permute([0, 3, 1, 2]) * &self.layer_scale + xs
    }
}

/// One step of `features`: the stem, a downsampling layer or a stage of blocks.
#[derive(Debug)]
enum Step {
    /// Convolution then LayerNorm2d (the stem).
    Stem(nn::Conv2D, nn::LayerNorm),
    /// LayerNorm2d then convolution (downsampling).
    Down(nn::LayerNorm, nn::Conv2D),
    Blocks(Vec<CnBlock>),
}

impl Module for Step {
    fn forward(&self, xs: &Tensor) -> Tensor {
        match self {
            Step::Stem(c, ln) => layer_norm_2d(ln, &c.forward(xs)),
            Step::Down(ln, c) => c.forward(&layer_norm_2d(ln, xs)),
            Step::Blocks(blocks) => blocks.iter().fold(xs.shallow_clone(), |h, b| b.forward(&h)),
        }
    }
}

/// ConvNeXt-Tiny backbone (768 features).
#[derive(Debug)]
pub struct ConvNextTiny {
    features: Vec<Step>,
    norm: nn::LayerNorm,
    fc: Option<nn::Linear>,
}

impl ConvNextTiny {
    /// Builds the network under `p`, with the 1000-class classifier when `imagenet_head`.
    pub fn new(p: &nn::Path, imagenet_head: bool) -> Self {
        let f = p / "features";
        let mut features = vec![Step::Stem(conv(&f / 0 / 0, 3, STAGES[0].0, 4, 4, 0, 1), layer_norm(&f / 0 / 1, STAGES[0].0))];
        for (i, &(dim, n)) in STAGES.iter().enumerate() {
            if i > 0 {
                let prev = STAGES[i - 1].0;
                let d = &f / (2 * i);
                features.push(Step::Down(layer_norm(&d / 0, prev), conv(&d / 1, prev, dim, 2, 2, 0, 1)));
            }
            let s = &f / (2 * i + 1);
            features.push(Step::Blocks((0..n).map(|j| CnBlock::new(&s / j, dim)).collect()));
        }
        let c = p / "classifier";
        let norm = layer_norm(&c / 0, FEATURES);
        let fc = imagenet_head.then(|| nn::linear(&c / 2, FEATURES, 1000, Default::default()));
        ConvNextTiny { features, norm, fc }
    }
}

impl BackboneNet for ConvNextTiny {
    fn features(&self, xs: &Tensor) -> Tensor {
        let map = self.features.iter().fold(xs.shallow_clone(), |h, s| s.forward(&h));
        self.norm.forward(&map.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
    }

    fn imagenet_classifier(&self) -> Option<&dyn Module> {
        self.fc.as_ref().map(|l| l as &dyn Module)
    }

    fn block_prefixes(&self) -> Vec<String> {
        let mut v = vec!["features.0.".to_string()];
        for (i, &(_, n)) in STAGES.iter().enumerate() {
            if i > 0 {
                v.push(format!("features.{}.", 2 * i));
            }
            v.extend((0..n).map(|j| format!("features.{}.{j}.", 2 * i + 1)));
        }
        v.push("classifier.0.".into());
        v
    }
}
