//! A minimal `nn.Sequential` for the from-scratch models: layers are numbered like
//! PyTorch's (every layer, activations and pools included, takes an index), so variable names
//! read `features.0.weight`, `features.1.running_mean`, ... BatchNorm and dropout follow the
//! `train` flag (unlike the frozen ImageNet backbones, these models train every layer).

use super::net::BackboneNet;
use tch::{nn, nn::Module, nn::ModuleT, Tensor};

#[derive(Debug)]
enum Layer {
    Conv(nn::Conv2D),
    BatchNorm(nn::BatchNorm),
    Linear(nn::Linear),
    Relu,
    MaxPool { kernel: i64, stride: i64, padding: i64 },
    Dropout(f64),
    AdaptiveAvgPool([i64; 2]),
    Flatten,
}

/// Layers applied in order.
#[derive(Debug)]
pub struct Sequential {
    path: String,
    layers: Vec<Layer>,
}

/// Builds a [`Sequential`]; each method adds one layer under the next index.
pub struct SequentialBuilder<'a> {
    p: nn::Path<'a>,
    seq: Sequential,
}

impl Sequential {
    /// Starts a sequence whose variables live under `p`.
    pub fn build(p: nn::Path) -> SequentialBuilder {
        let path = p.components().collect::<Vec<_>>().join(".");
        SequentialBuilder { p, seq: Sequential { path, layers: Vec::new() } }
    }
}

impl<'a> SequentialBuilder<'a> {
    fn at(&self) -> nn::Path<'a> {
        &self.p / self.seq.layers.len()
    }

    fn push(mut self, l: Layer) -> Self {
        self.seq.layers.push(l);
        self
    }

    /// The finished sequence.
    pub fn done(self) -> Sequential {
        self.seq
    }

    /// `Conv2d(c_in, c_out, kernel, stride, padding)` with bias.
    pub fn conv(self, c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64) -> Self {
        let cfg = nn::ConvConfig { stride, padding, ..Default::default() };
        let conv = nn::conv2d(self.at(), c_in, c_out, kernel, cfg);
        self.push(Layer::Conv(conv))
    }

    /// `BatchNorm2d(c)`, after a convolution.
    pub fn batch_norm2d(self, c: i64) -> Self {
        let bn = nn::batch_norm2d(self.at(), c, Default::default());
        self.push(Layer::BatchNorm(bn))
    }

    /// `BatchNorm1d(c)`, after a `Linear`.
    pub fn batch_norm1d(self, c: i64) -> Self {
        let bn = nn::batch_norm1d(self.at(), c, Default::default());
        self.push(Layer::BatchNorm(bn))
    }

    pub fn linear(self, c_in: i64, c_out: i64) -> Self {
        let l = nn::linear(self.at(), c_in, c_out, Default::default());
        self.push(Layer::Linear(l))
    }

    pub fn relu(self) -> Self {
        self.push(Layer::Relu)
    }

    /// Max pooling (ceil mode, so small inputs keep at least one cell).
    pub fn max_pool(self, kernel: i64, stride: i64, padding: i64) -> Self {
        self.push(Layer::MaxPool { kernel, stride, padding })
    }

    pub fn dropout(self, p: f64) -> Self {
        self.push(Layer::Dropout(p))
    }

    pub fn adaptive_avg_pool(self, size: [i64; 2]) -> Self {
        self.push(Layer::AdaptiveAvgPool(size))
    }

    pub fn flatten(self) -> Self {
        self.push(Layer::Flatten)
    }
}

impl Sequential {
    /// Variable-name prefixes of the layers that hold parameters, input to output.
    pub fn prefixes(&self) -> Vec<String> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l, Layer::Conv(_) | Layer::BatchNorm(_) | Layer::Linear(_)))
            .map(|(i, _)| format!("{}.{i}.", self.path))
            .collect()
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.layers.iter().fold(xs.shallow_clone(), |h, l| match l {
            Layer::Conv(c) => c.forward(&h),
            Layer::BatchNorm(bn) => bn.forward_t(&h, train),
            Layer::Linear(lin) => lin.forward(&h),
            Layer::Relu => h.relu(),
            Layer::MaxPool { kernel, stride, padding } => h.max_pool2d([*kernel; 2], [*stride; 2], [*padding; 2], [1, 1], true),
            Layer::Dropout(p) => h.dropout(*p, train),
            Layer::AdaptiveAvgPool(s) => super::layers::adaptive_avg_pool(&h, *s),
            Layer::Flatten => h.flatten(1, -1),
        })
    }
}

/// A network trained from scratch: `features` (convolutions), then optionally a
/// `classifier` of dense layers; its output is the feature vector the head's output layer
/// reads.
#[derive(Debug)]
pub struct ScratchNet {
    features: Sequential,
    classifier: Option<Sequential>,
}

impl ScratchNet {
    pub fn new(features: Sequential, classifier: Option<Sequential>) -> Self {
        ScratchNet { features, classifier }
    }
}

impl BackboneNet for ScratchNet {
    fn features(&self, xs: &Tensor) -> Tensor {
        self.features_t(xs, false)
    }
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = self.features.forward_t(xs, train);
        match &self.classifier {
            Some(c) => c.forward_t(&h, train),
            None => h,
        }
    }
    fn imagenet_logits(&self, _xs: &Tensor) -> Tensor {
        panic!("a model trained from scratch has no ImageNet classifier")
    }
    fn block_prefixes(&self) -> Vec<String> {
        let mut v = self.features.prefixes();
        v.extend(self.classifier.iter().flat_map(Sequential::prefixes));
        v
    }
}

#[cfg(test)]
mod tests {
    use crate::model::BackboneKind;
    use tch::{nn, Device, Kind, Tensor};

    #[test]
    fn from_scratch_models_take_any_input_size() {
        for kind in BackboneKind::ALL.into_iter().filter(|k| k.from_scratch()) {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = kind.build(&vs.root(), false);
            for size in [16, 37, 96] {
                let xs = Tensor::rand([2, 3, size, size], (Kind::Float, Device::Cpu));
                let eval = tch::no_grad(|| net.features(&xs));
                assert_eq!(eval.size(), [2, kind.feature_dim()], "{} at {size} px", kind.name());
                let train = tch::no_grad(|| net.features_t(&xs, true));
                assert_eq!(train.size(), eval.size());
                assert!((train - &eval).abs().max().double_value(&[]) > 0.0, "{}: training mode differs (BatchNorm, dropout)", kind.name());
            }
        }
    }

    #[test]
    fn smaller_vggnet_is_named_like_its_pytorch_sequential() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = BackboneKind::SmallerVggnet.build(&vs.root(), false);
        let vars = vs.variables();
        // Conv 32 -> ReLU -> BN -> pool -> dropout -> Conv 64 ...; Dense(1024) -> ReLU -> BN.
        for (name, shape) in [
            ("features.0.weight", vec![32, 3, 3, 3]),
            ("features.2.running_mean", vec![32]),
            ("features.5.weight", vec![64, 32, 3, 3]),
            ("features.16.weight", vec![128, 128, 3, 3]),
            ("classifier.0.weight", vec![1024, 128 * 8 * 8]),
            ("classifier.2.running_var", vec![1024]),
        ] {
            assert_eq!(vars.get(name).map(|t| t.size()), Some(shape), "{name}");
        }
        let params: i64 = vars.iter().filter(|(k, _)| !k.contains("running_")).map(|(_, v)| v.numel() as i64).sum();
        // Convolutions 896 + 18_496 + 36_928 + 73_856 + 147_584, dense 8_389_632, BatchNorm
        // scales and shifts 2 x (32 + 64 + 64 + 128 + 128 + 1024): Keras' SmallerVGGNet
        // trainable parameters without its output layer.
        assert_eq!(params, 8_670_272);
    }
}
