//! Building blocks shared by the backbones: convolution + BatchNorm (+ activation).

use tch::{nn, nn::Module, nn::ModuleT, Tensor};

/// Activation after a convolution block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Relu6,
    Silu,
}

impl Act {
    /// The activation of a freshly computed `xs`. ReLU and ReLU6 work in place, as
    /// torchvision's `inplace=True` (their gradients need only the output): one allocation
    /// and one memory pass less per block, which counts at inference on a CPU.
    pub fn apply(self, mut xs: Tensor) -> Tensor {
        match self {
            Act::None => xs,
            Act::Relu => xs.relu_(),
            Act::Relu6 => xs.relu6_(),
            Act::Silu => xs.silu(),
        }
    }
}

/// Conv2d without bias followed by BatchNorm and an activation. BatchNorm always runs in
/// eval mode (running statistics): the backbones are frozen or lightly fine-tuned feature
/// extractors, and re-estimating statistics on small batches destroys their features.
#[derive(Debug)]
pub struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    act: Act,
    spec: ConvBnSpec,
    /// Convolution weight and bias with the BatchNorm folded in (see [`ConvBn::fold`]).
    folded: std::cell::RefCell<Option<(Tensor, Tensor)>>,
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
    pub act: Act,
}

impl ConvBn {
    /// `conv_path` holds `weight`; `bn_path` holds `weight`, `bias`, `running_mean`,
    /// `running_var`. Padding is `kernel / 2` on every side.
    pub fn new(conv_path: nn::Path, bn_path: nn::Path, s: ConvBnSpec) -> Self {
        let cfg = nn::ConvConfig { stride: s.stride, padding: s.kernel / 2, groups: s.groups, bias: false, ..Default::default() };
        let conv = nn::conv2d(conv_path, s.c_in, s.c_out, s.kernel, cfg);
        let bn = nn::batch_norm2d(bn_path, s.c_out, nn::BatchNormConfig { eps: s.eps, ..Default::default() });
        ConvBn { conv, bn, act: s.act, spec: s, folded: Default::default() }
    }

    /// Whether any of its parameters is being trained.
    pub fn is_trainable(&self) -> bool {
        self.conv.ws.requires_grad() || self.bn.ws.as_ref().is_some_and(|w| w.requires_grad())
    }

    /// Folds the eval-mode BatchNorm into the convolution (weight * s, bias beta - mean * s,
    /// s = gamma / sqrt(var + eps)): one kernel instead of two, same output up to rounding.
    /// Only valid while the parameters do not change; [`ConvBn::unfold`] undoes it.
    pub fn fold(&self) {
        let (Some(gamma), Some(beta)) = (&self.bn.ws, &self.bn.bs) else {
            return;
        };
        let folded = tch::no_grad(|| {
            let s = gamma / (&self.bn.running_var + self.spec.eps).sqrt();
            let w = &self.conv.ws * s.view([-1, 1, 1, 1]);
            let b = beta - &self.bn.running_mean * &s;
            (w, b)
        });
        *self.folded.borrow_mut() = Some(folded);
    }

    /// Back to separate convolution and BatchNorm (needed while training them).
    pub fn unfold(&self) {
        *self.folded.borrow_mut() = None;
    }
}

impl Module for ConvBn {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let ys = match &*self.folded.borrow() {
            Some((w, b)) => {
                let pad = self.spec.kernel / 2;
                xs.conv2d(w, Some(b), [self.spec.stride; 2], [pad; 2], [1, 1], self.spec.groups)
            }
            None => self.bn.forward_t(&self.conv.forward(xs), false),
        };
        self.act.apply(ys)
    }
}

/// Adaptive average pooling of `[N, C, H, W]` to `size`, exactly as libtorch's (each output
/// cell averages input rows `floor(i H / h)..ceil((i + 1) H / h)`, and so on for columns).
/// When `size` does not divide the map, it is written as two products with averaging
/// matrices, which ONNX expresses (its pooling operators cannot) and which the trace of
/// `export` keeps as constants.
pub fn adaptive_avg_pool(xs: &Tensor, size: [i64; 2]) -> Tensor {
    let (h, w) = (xs.size()[2], xs.size()[3]);
    if (h, w) == (size[0], size[1]) {
        return xs.shallow_clone();
    }
    if h % size[0] == 0 && w % size[1] == 0 {
        return xs.adaptive_avg_pool2d(size);
    }
    let rows = averaging_matrix(size[0], h, xs);
    let cols = averaging_matrix(size[1], w, xs).transpose(0, 1);
    rows.matmul(xs).matmul(&cols)
}

/// `[out, len]`: row i averages the inputs adaptive pooling gives output i. Built from
/// operators (not host data), so a traced graph records the matrix itself.
fn averaging_matrix(out: i64, len: i64, like: &Tensor) -> Tensor {
    let opts = (tch::Kind::Int64, like.device());
    let i = Tensor::arange(out, opts).view([out, 1]);
    let start = (&i * len).floor_divide_scalar(out);
    let end = ((&i + 1) * len + out - 1).floor_divide_scalar(out);
    let j = Tensor::arange(len, opts).view([1, len]);
    let inside = j.ge_tensor(&start).logical_and(&j.lt_tensor(&end)).to_kind(like.kind());
    inside / (end - start).to_kind(like.kind())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn folded_batchnorm_gives_the_same_output() {
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = ConvBnSpec { c_in: 4, c_out: 6, kernel: 3, stride: 2, groups: 2, eps: 1e-3, act: Act::Relu6 };
        let cb = ConvBn::new(vs.root() / "c", vs.root() / "b", spec);
        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                let r = Tensor::rand(v.size(), (Kind::Float, Device::Cpu));
                v.copy_(&if name.ends_with("running_var") { r + 0.5 } else { r * 2.0 - 1.0 });
            }
        });
        let xs = Tensor::randn([2, 4, 9, 9], (Kind::Float, Device::Cpu));
        let plain = tch::no_grad(|| cb.forward(&xs));
        assert!(cb.is_trainable(), "variables require grad by default: nothing to fold");
        cb.fold();
        let folded = tch::no_grad(|| cb.forward(&xs));
        assert!((&plain - &folded).abs().max().double_value(&[]) < 1e-5);
        assert!(plain.abs().max().double_value(&[]) > 0.1);
        cb.unfold();
        assert!((&plain - tch::no_grad(|| cb.forward(&xs))).abs().max().double_value(&[]) == 0.0);
    }

    #[test]
    fn adaptive_pooling_by_matrices_equals_libtorchs() {
        for (h, w, size) in [(2, 3, [8, 8]), (10, 13, [8, 8]), (16, 16, [8, 8]), (7, 5, [3, 2])] {
            let xs = Tensor::randn([2, 3, h, w], (tch::Kind::Float, tch::Device::Cpu));
            let want = xs.adaptive_avg_pool2d(size);
            let got = adaptive_avg_pool(&xs, size);
            assert!(got.allclose(&want, 1e-5, 1e-6, false), "{h}x{w} -> {size:?}");
        }
    }
}
