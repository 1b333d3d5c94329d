//! GoogLeNet (Inception v1) as in torchvision's `googlenet.py`, with its parameter names
//! (`conv1..3`, `inceptionNx.branchK`, `fc`; every convolution is a `BasicConv2d`: conv
//! without bias, BatchNorm eps 1e-3, ReLU). The auxiliary classifiers only exist in training
//! mode upstream and are left out; so is `transform_input`: torchvision's ImageNet weights
//! expect (x - 0.5) / 0.5 input, which is this backbone's normalisation. 1024 features.

use super::layers::{Act, ConvBn, ConvBnSpec};
use super::net::BackboneNet;
use tch::{nn, nn::Module, Tensor};

fn basic_conv(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64) -> ConvBn {
    let spec = ConvBnSpec { c_in, c_out, kernel, stride, groups: 1, eps: 1e-3, act: Act::Relu };
    ConvBn::new(&p / "conv", &p / "bn", spec)
}

fn max_pool(xs: &Tensor, kernel: i64, stride: i64, padding: i64) -> Tensor {
    xs.max_pool2d([kernel; 2], [stride; 2], [padding; 2], [1, 1], true)
}

/// An Inception module: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | 3x3 max pool -> 1x1, concatenated.
#[derive(Debug)]
struct Inception {
    branch1: ConvBn,
    branch2: [ConvBn; 2],
    branch3: [ConvBn; 2],
    branch4: ConvBn,
}

impl Inception {
    /// torchvision's `Inception(in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`.
    fn new(p: &nn::Path, c: [i64; 7]) -> Self {
        let [c_in, ch1, ch3red, ch3, ch5red, ch5, pool] = c;
        Inception {
            branch1: basic_conv(p / "branch1", c_in, ch1, 1, 1),
            branch2: [basic_conv(p / "branch2" / 0, c_in, ch3red, 1, 1), basic_conv(p / "branch2" / 1, ch3red, ch3, 3, 1)],
            // torchvision uses a 3x3 convolution here (not 5x5), matching its weights.
            branch3: [basic_conv(p / "branch3" / 0, c_in, ch5red, 1, 1), basic_conv(p / "branch3" / 1, ch5red, ch5, 3, 1)],
            branch4: basic_conv(p / "branch4" / 1, c_in, pool, 1, 1),
        }
    }

    fn conv_bns(&self) -> Vec<&ConvBn> {
        vec![&self.branch1, &self.branch2[0], &self.branch2[1], &self.branch3[0], &self.branch3[1], &self.branch4]
    }
}

impl Module for Inception {
    fn forward(&self, xs: &Tensor) -> Tensor {
        Tensor::cat(
            &[
                self.branch1.forward(xs),
                self.branch2[1].forward(&self.branch2[0].forward(xs)),
                self.branch3[1].forward(&self.branch3[0].forward(xs)),
                self.branch4.forward(&max_pool(xs, 3, 1, 1)),
            ],
            1,
        )
    }
}

/// Inception modules by name with their channel settings, in order; `None` marks a max pool.
const MODULES: [(&str, Option<[i64; 7]>); 11] = [
    ("inception3a", Some([192, 64, 96, 128, 16, 32, 32])),
    ("inception3b", Some([256, 128, 128, 192, 32, 96, 64])),
    ("maxpool3", None),
    ("inception4a", Some([480, 192, 96, 208, 16, 48, 64])),
    ("inception4b", Some([512, 160, 112, 224, 24, 64, 64])),
    ("inception4c", Some([512, 128, 128, 256, 24, 64, 64])),
    ("inception4d", Some([512, 112, 144, 288, 32, 64, 64])),
    ("inception4e", Some([528, 256, 160, 320, 32, 128, 128])),
    ("maxpool4", None),
    ("inception5a", Some([832, 256, 160, 320, 32, 128, 128])),
    ("inception5b", Some([832, 384, 192, 384, 48, 128, 128])),
];

/// GoogLeNet backbone.
#[derive(Debug)]
pub struct GoogLeNet {
    stem: [ConvBn; 3],
    modules: Vec<(String, Option<Inception>)>,
    fc: Option<nn::Linear>,
}

impl GoogLeNet {
    pub fn new(p: &nn::Path, imagenet_head: bool) -> Self {
        let stem = [basic_conv(p / "conv1", 3, 64, 7, 2), basic_conv(p / "conv2", 64, 64, 1, 1), basic_conv(p / "conv3", 64, 192, 3, 1)];
        let modules = MODULES.iter().map(|(name, c)| (format!("{name}."), c.map(|c| Inception::new(&(p / *name), c)))).collect();
        let fc = imagenet_head.then(|| nn::linear(p / "fc", 1024, 1000, Default::default()));
        GoogLeNet { stem, modules, fc }
    }
}

impl GoogLeNet {
    /// The output of `inception5b`, `[N, 1024, h, w]`.
    fn map(&self, xs: &Tensor) -> Tensor {
        let h = max_pool(&self.stem[0].forward(xs), 3, 2, 0);
        let mut h = max_pool(&self.stem[2].forward(&self.stem[1].forward(&h)), 3, 2, 0);
        for (name, module) in &self.modules {
            h = match module {
                Some(m) => m.forward(&h),
                None if name == "maxpool4." => max_pool(&h, 2, 2, 0),
                None => max_pool(&h, 3, 2, 0),
            };
        }
        h
    }
}

impl BackboneNet for GoogLeNet {
    fn feature_map(&self, xs: &Tensor) -> Option<Tensor> {
        Some(self.map(xs))
    }

    fn imagenet_classifier(&self) -> Option<&dyn Module> {
        self.fc.as_ref().map(|l| l as &dyn Module)
    }

    fn block_prefixes(&self) -> Vec<String> {
        self.modules.iter().filter(|(_, m)| m.is_some()).map(|(n, _)| n.clone()).collect()
    }

    fn conv_bns(&self) -> Vec<&ConvBn> {
        self.stem.iter().chain(self.modules.iter().filter_map(|(_, m)| m.as_ref()).flat_map(|m| m.conv_bns())).collect()
    }
}
