//! MobileNetV2 with torchvision's parameter names (`features.0.0`, `features.N.conv.M`,
//! `features.18`, `classifier.1`), BatchNorm eps 1e-5, ReLU6.

use super::layers::{Act, ConvBn, ConvBnSpec};
use super::net::BackboneNet;
use tch::{nn, nn::Module, Tensor};

const EPS: f64 = 1e-5;

/// torchvision's inverted-residual settings: (t, c, n, s).
const SETTINGS: [(i64, i64, usize, i64); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

fn spec(c_in: i64, c_out: i64, kernel: i64, stride: i64, groups: i64, relu6: bool) -> ConvBnSpec {
    ConvBnSpec { c_in, c_out, kernel, stride, groups, eps: EPS, act: if relu6 { Act::Relu6 } else { Act::None } }
}

#[derive(Debug)]
struct InvertedResidual {
    layers: Vec<ConvBn>,
    residual: bool,
}

impl InvertedResidual {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, stride: i64, t: i64) -> Self {
        let hidden = c_in * t;
        let c = p / "conv";
        let mut layers = Vec::new();
        let mut i = 0;
        if t != 1 {
            layers.push(ConvBn::new(&c / 0 / 0, &c / 0 / 1, spec(c_in, hidden, 1, 1, 1, true)));
            i = 1;
        }
        layers.push(ConvBn::new(&c / i / 0, &c / i / 1, spec(hidden, hidden, 3, stride, hidden, true)));
        layers.push(ConvBn::new(&c / (i + 1), &c / (i + 2), spec(hidden, c_out, 1, 1, 1, false)));
        InvertedResidual { layers, residual: stride == 1 && c_in == c_out }
    }
}

impl Module for InvertedResidual {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let mut h = xs.shallow_clone();
        for l in &self.layers {
            h = l.forward(&h);
        }
        if self.residual {
            h + xs
        } else {
            h
        }
    }
}

/// MobileNetV2 backbone (1280 features).
#[derive(Debug)]
pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    last: ConvBn,
    classifier: Option<nn::Linear>,
}

impl MobileNetV2 {
    pub fn new(p: &nn::Path, imagenet_head: bool) -> Self {
        let f = p / "features";
        let stem = ConvBn::new(&f / 0 / 0, &f / 0 / 1, spec(3, 32, 3, 2, 1, true));
        let mut blocks = Vec::new();
        let mut c_in = 32;
        for &(t, c, n, s) in &SETTINGS {
            for r in 0..n {
                let idx = blocks.len() + 1;
                blocks.push(InvertedResidual::new(&(&f / idx), c_in, c, if r == 0 { s } else { 1 }, t));
                c_in = c;
            }
        }
        let last = ConvBn::new(&f / 18 / 0, &f / 18 / 1, spec(320, 1280, 1, 1, 1, true));
        let classifier = imagenet_head.then(|| nn::linear(p / "classifier" / 1, 1280, 1000, Default::default()));
        MobileNetV2 { stem, blocks, last, classifier }
    }
}

impl MobileNetV2 {
    /// The output of the last 1x1 convolution (`features[-1]`), `[N, 1280, h, w]`.
    fn map(&self, xs: &Tensor) -> Tensor {
        let mut h = self.stem.forward(xs);
        for b in &self.blocks {
            h = b.forward(&h);
        }
        self.last.forward(&h)
    }
}

impl BackboneNet for MobileNetV2 {
    fn feature_map(&self, xs: &Tensor) -> Option<Tensor> {
        Some(self.map(xs))
    }

    fn imagenet_classifier(&self) -> Option<&dyn Module> {
        self.classifier.as_ref().map(|l| l as &dyn Module)
    }

    fn block_prefixes(&self) -> Vec<String> {
        (1..=18).map(|i| format!("features.{i}.")).collect()
    }

    fn conv_bns(&self) -> Vec<&ConvBn> {
        let blocks = self.blocks.iter().flat_map(|b| b.layers.iter());
        std::iter::once(&self.stem).chain(blocks).chain(std::iter::once(&self.last)).collect()
    }
}
