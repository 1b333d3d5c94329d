//! ResNet-50 (v1.5: stride in the 3x3 convolution) with torchvision's parameter names
//! (`conv1`, `bn1`, `layerN.M.conv1..3`, `bnN`, `downsample.0/1`, `fc`), BatchNorm eps 1e-5.

use super::backbone::BackboneNet;
use super::layers::{Act, ConvBn, ConvBnSpec};
use tch::{nn, nn::Module, Tensor};

const EPS: f64 = 1e-5;
const LAYERS: [(i64, usize, i64); 4] = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)];

fn spec(c_in: i64, c_out: i64, kernel: i64, stride: i64, act: Act) -> ConvBnSpec {
    ConvBnSpec { c_in, c_out, kernel, stride, groups: 1, eps: EPS, act }
}

#[derive(Debug)]
struct Bottleneck {
    c1: ConvBn,
    c2: ConvBn,
    c3: ConvBn,
    downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn new(p: &nn::Path, c_in: i64, width: i64, stride: i64) -> Self {
        let out = width * 4;
        let downsample = (stride != 1 || c_in != out)
            .then(|| ConvBn::new(p / "downsample" / 0, p / "downsample" / 1, spec(c_in, out, 1, stride, Act::None)));
        Bottleneck {
            c1: ConvBn::new(p / "conv1", p / "bn1", spec(c_in, width, 1, 1, Act::Relu)),
            c2: ConvBn::new(p / "conv2", p / "bn2", spec(width, width, 3, stride, Act::Relu)),
            c3: ConvBn::new(p / "conv3", p / "bn3", spec(width, out, 1, 1, Act::None)),
            downsample,
        }
    }
}

impl Module for Bottleneck {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let ys = self.c3.forward(&self.c2.forward(&self.c1.forward(xs)));
        let skip = match &self.downsample {
            Some(d) => d.forward(xs),
            None => xs.shallow_clone(),
        };
        (ys + skip).relu()
    }
}

/// ResNet-50 backbone (2048 features).
#[derive(Debug)]
pub struct ResNet50 {
    stem: ConvBn,
    blocks: Vec<(String, Bottleneck)>,
    fc: Option<nn::Linear>,
}

impl ResNet50 {
    pub fn new(p: &nn::Path, imagenet_head: bool) -> Self {
        let stem = ConvBn::new(p / "conv1", p / "bn1", spec(3, 64, 7, 2, Act::Relu));
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (li, &(width, n, stride)) in LAYERS.iter().enumerate() {
            for b in 0..n {
                let name = format!("layer{}.{b}.", li + 1);
                let bp = p / format!("layer{}", li + 1) / b;
                blocks.push((name, Bottleneck::new(&bp, c_in, width, if b == 0 { stride } else { 1 })));
                c_in = width * 4;
            }
        }
        let fc = imagenet_head.then(|| nn::linear(p / "fc", 2048, 1000, Default::default()));
        ResNet50 { stem, blocks, fc }
    }
}

impl BackboneNet for ResNet50 {
    fn features(&self, xs: &Tensor) -> Tensor {
        let mut h = self.stem.forward(xs).max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for (_, b) in &self.blocks {
            h = b.forward(&h);
        }
        h.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    fn imagenet_logits(&self, xs: &Tensor) -> Tensor {
        self.fc.as_ref().expect("built without the ImageNet classifier").forward(&self.features(xs))
    }

    fn block_prefixes(&self) -> Vec<String> {
        self.blocks.iter().map(|(n, _)| n.clone()).collect()
    }

    fn conv_bns(&self) -> Vec<&ConvBn> {
        let blocks = self.blocks.iter().flat_map(|(_, b)| [&b.c1, &b.c2, &b.c3].into_iter().chain(b.downsample.iter()));
        std::iter::once(&self.stem).chain(blocks).collect()
    }
}
