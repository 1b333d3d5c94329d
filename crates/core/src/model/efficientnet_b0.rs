//! EfficientNet-B0 with torchvision's parameter names (`features.0.0`,
//! `features.S.I.block.K`, squeeze-excite `fc1`/`fc2`, `features.8`, `classifier.1`),
//! SiLU, BatchNorm eps 1e-5 (torchvision uses 1e-3 only for the V2 family).

use super::layers::{Act, ConvBn, ConvBnSpec};
use super::net::BackboneNet;
use tch::{nn, nn::Module, Tensor};

const EPS: f64 = 1e-5;

/// (expand ratio, kernel, stride, c_in, c_out, repeats) per stage (`features.1` .. `features.7`).
const STAGES: [(i64, i64, i64, i64, i64, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

fn spec(c_in: i64, c_out: i64, kernel: i64, stride: i64, groups: i64, act: Act) -> ConvBnSpec {
    ConvBnSpec { c_in, c_out, kernel, stride, groups, eps: EPS, act }
}

#[derive(Debug)]
struct SqueezeExcite {
    fc1: nn::Conv2D,
    fc2: nn::Conv2D,
}

impl Module for SqueezeExcite {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let s = xs.adaptive_avg_pool2d([1, 1]);
        let s = self.fc2.forward(&self.fc1.forward(&s).silu()).sigmoid();
        xs * s
    }
}

#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    se: SqueezeExcite,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn new(p: &nn::Path, e: i64, k: i64, stride: i64, c_in: i64, c_out: i64) -> Self {
        let b = p / "block";
        let hidden = c_in * e;
        let squeeze = (c_in / 4).max(1);
        let mut i = 0;
        let expand = (e != 1).then(|| {
            i = 1;
            ConvBn::new(&b / 0 / 0, &b / 0 / 1, spec(c_in, hidden, 1, 1, 1, Act::Silu))
        });
        let depthwise = ConvBn::new(&b / i / 0, &b / i / 1, spec(hidden, hidden, k, stride, hidden, Act::Silu));
        let sp = &b / (i + 1);
        let se = SqueezeExcite {
            fc1: nn::conv2d(&sp / "fc1", hidden, squeeze, 1, Default::default()),
            fc2: nn::conv2d(&sp / "fc2", squeeze, hidden, 1, Default::default()),
        };
        let project = ConvBn::new(&b / (i + 2) / 0, &b / (i + 2) / 1, spec(hidden, c_out, 1, 1, 1, Act::None));
        MbConv { expand, depthwise, se, project, residual: stride == 1 && c_in == c_out }
    }
}

impl Module for MbConv {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let h = match &self.expand {
            Some(e) => e.forward(xs),
            None => xs.shallow_clone(),
        };
        let ys = self.project.forward(&self.se.forward(&self.depthwise.forward(&h)));
        if self.residual {
            ys + xs
        } else {
            ys
        }
    }
}

/// EfficientNet-B0 backbone (1280 features).
#[derive(Debug)]
pub struct EfficientNetB0 {
    stem: ConvBn,
    blocks: Vec<(String, MbConv)>,
    last: ConvBn,
    classifier: Option<nn::Linear>,
}

impl EfficientNetB0 {
    pub fn new(p: &nn::Path, imagenet_head: bool) -> Self {
        let f = p / "features";
        let stem = ConvBn::new(&f / 0 / 0, &f / 0 / 1, spec(3, 32, 3, 2, 1, Act::Silu));
        let mut blocks = Vec::new();
        for (si, &(e, k, s, c_in, c_out, n)) in STAGES.iter().enumerate() {
            for r in 0..n {
                let bp = &f / (si + 1) / r;
                let (ci, st) = if r == 0 { (c_in, s) } else { (c_out, 1) };
                blocks.push((format!("features.{}.{r}.", si + 1), MbConv::new(&bp, e, k, st, ci, c_out)));
            }
        }
        let last = ConvBn::new(&f / 8 / 0, &f / 8 / 1, spec(320, 1280, 1, 1, 1, Act::Silu));
        let classifier = imagenet_head.then(|| nn::linear(p / "classifier" / 1, 1280, 1000, Default::default()));
        EfficientNetB0 { stem, blocks, last, classifier }
    }
}

impl EfficientNetB0 {
    /// The output of the last 1x1 convolution (`features[8]`), `[N, 1280, h, w]`.
    fn map(&self, xs: &Tensor) -> Tensor {
        let mut h = self.stem.forward(xs);
        for (_, b) in &self.blocks {
            h = b.forward(&h);
        }
        self.last.forward(&h)
    }
}

impl BackboneNet for EfficientNetB0 {
    fn feature_map(&self, xs: &Tensor) -> Option<Tensor> {
        Some(self.map(xs))
    }

    fn imagenet_classifier(&self) -> Option<&dyn Module> {
        self.classifier.as_ref().map(|l| l as &dyn Module)
    }

    fn block_prefixes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.blocks.iter().map(|(n, _)| n.clone()).collect();
        v.push("features.8.".into());
        v
    }

    fn conv_bns(&self) -> Vec<&ConvBn> {
        let blocks = self.blocks.iter().flat_map(|(_, b)| b.expand.iter().chain([&b.depthwise, &b.project]));
        std::iter::once(&self.stem).chain(blocks).chain(std::iter::once(&self.last)).collect()
    }
}
