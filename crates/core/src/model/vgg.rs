//! VGG-16 (configuration "D", no BatchNorm) as in torchvision's `vgg.py`, with its parameter
//! names: `features.N` for the 13 convolutions (N counts every layer of torchvision's
//! `nn.Sequential`, ReLUs and pools included) and `classifier.0/3/6`. Transfer learning uses
//! the global average of the last feature map (512 features), like Keras' VGG16 with
//! `pooling="avg"`.

use super::net::BackboneNet;
use tch::{nn, nn::Module, Tensor};

/// Output channels of each convolution; 0 is a 2x2 max pool.
const CFG_D: [i64; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];

#[derive(Debug)]
enum Layer {
    Conv(String, nn::Conv2D),
    Pool,
}

/// VGG-16 backbone.
#[derive(Debug)]
pub struct Vgg16 {
    layers: Vec<Layer>,
    classifier: Option<[nn::Linear; 3]>,
}

impl Vgg16 {
    pub fn new(p: &nn::Path, imagenet_head: bool) -> Self {
        let mut layers = Vec::new();
        let (mut index, mut c_in) = (0, 3);
        let cfg = nn::ConvConfig { padding: 1, ..Default::default() };
        for &c in &CFG_D {
            if c == 0 {
                layers.push(Layer::Pool);
                index += 1;
            } else {
                layers.push(Layer::Conv(format!("features.{index}."), nn::conv2d(p / "features" / index, c_in, c, 3, cfg)));
                c_in = c;
                index += 2;
            }
        }
        let classifier = imagenet_head.then(|| {
            let c = p / "classifier";
            [
                nn::linear(&c / 0, 512 * 7 * 7, 4096, Default::default()),
                nn::linear(&c / 3, 4096, 4096, Default::default()),
                nn::linear(&c / 6, 4096, 1000, Default::default()),
            ]
        });
        Vgg16 { layers, classifier }
    }

    fn feature_map(&self, xs: &Tensor) -> Tensor {
        self.layers.iter().fold(xs.shallow_clone(), |h, l| match l {
            Layer::Conv(_, conv) => conv.forward(&h).relu(),
            Layer::Pool => h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
        })
    }
}

impl BackboneNet for Vgg16 {
    /// The output of `features` (the last convolution block, after its pooling), the layer
    /// pytorch-grad-cam takes for VGG.
    fn feature_map(&self, xs: &Tensor) -> Option<Tensor> {
        Some(Vgg16::feature_map(self, xs))
    }

    fn imagenet_logits(&self, xs: &Tensor) -> Tensor {
        let [fc0, fc3, fc6] = self.classifier.as_ref().expect("built without the ImageNet classifier");
        let h = super::layers::adaptive_avg_pool(&self.feature_map(xs), [7, 7]).flatten(1, -1);
        fc6.forward(&fc3.forward(&fc0.forward(&h).relu()).relu())
    }

    fn block_prefixes(&self) -> Vec<String> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                Layer::Conv(name, _) => Some(name.clone()),
                Layer::Pool => None,
            })
            .collect()
    }
}
