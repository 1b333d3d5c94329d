//! Adam as a multi-tensor step: the parameters are re-homed as views of one flat buffer, the
//! gradients come from a functional backward pass (nothing accumulates, nothing to zero), and
//! the update is a handful of kernels over the flat buffer instead of several per parameter.
//! The moments are ours (so they can be saved).

use tch::{Kind, Tensor};

/// Adam (Kingma & Ba), PyTorch's defaults: betas (0.9, 0.999), eps 1e-8; weight decay as
/// PyTorch's `Adam(weight_decay=...)`, an L2 penalty (`wd * p` added to the gradient), none
/// by default.
pub struct Adam {
    params: Vec<Tensor>,
    /// How each parameter is laid out in the flat buffer.
    layouts: Vec<Layout>,
    flat: Tensor,
    m: Tensor,
    v: Tensor,
    step: i32,
    pub lr: f64,
    weight_decay: f64,
    /// Per-element multipliers of the rate (discriminative rates), if any.
    lr_scales: Option<Tensor>,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

/// Memory order of a parameter's segment: row-major, or channels-last for 4-D tensors
/// (so convolution weights keep the layout [`crate::model::to_channels_last`] gave them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    RowMajor,
    ChannelsLast,
}

impl Layout {
    fn of(t: &Tensor) -> Self {
        let (size, stride) = (t.size(), t.stride());
        if size.len() == 4 && !t.is_contiguous() && stride[1] == 1 && stride[3] == size[1] {
            Layout::ChannelsLast
        } else {
            Layout::RowMajor
        }
    }

    /// `t` flattened in this layout's memory order (a view when the strides already match).
    fn flatten(self, t: &Tensor) -> Tensor {
        match self {
            Layout::RowMajor => t.reshape([-1]),
            Layout::ChannelsLast => t.permute([0, 2, 3, 1]).reshape([-1]),
        }
    }

    /// A flat segment seen as a tensor of `size` in this layout.
    fn view(self, segment: &Tensor, size: &[i64]) -> Tensor {
        match self {
            Layout::RowMajor => segment.view(size),
            Layout::ChannelsLast => segment.view([size[0], size[2], size[3], size[1]]).permute([0, 3, 1, 2]),
        }
    }
}

impl Adam {
    /// Takes over `params` (all float32, on one device): their data moves into a flat buffer
    /// that the returned optimizer updates in place. Values and layouts are kept.
    pub fn new(params: Vec<Tensor>, lr: f64) -> Self {
        let layouts: Vec<Layout> = params.iter().map(Layout::of).collect();
        let total: i64 = params.iter().map(|p| p.numel() as i64).sum();
        let device = params.first().map_or(tch::Device::Cpu, |p| p.device());
        let flat = Tensor::zeros([total], (Kind::Float, device));
        let mut offset = 0;
        tch::no_grad(|| {
            for (p, layout) in params.iter().zip(&layouts) {
                let n = p.numel() as i64;
                let mut view = layout.view(&flat.narrow(0, offset, n), &p.size());
                view.copy_(p);
                p.shallow_clone().set_data(&view);
                offset += n;
            }
        });
        let m = flat.zeros_like();
        let v = flat.zeros_like();
        Adam { params, layouts, flat, m, v, step: 0, lr, weight_decay: 0.0, lr_scales: None, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }

    /// With an L2 penalty of `weight_decay` on every parameter.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// With the rate of each parameter multiplied by its entry of `scales` (one per
    /// parameter, in order).
    pub fn with_lr_scales(mut self, scales: &[f64]) -> Self {
        let parts: Vec<Tensor> =
            self.params.iter().zip(scales).map(|(p, &s)| Tensor::full([p.numel() as i64], s, (Kind::Float, self.flat.device()))).collect();
        self.lr_scales = Some(Tensor::cat(&parts, 0));
        self
    }

    /// Backpropagates `loss` to the parameters and applies one update.
    pub fn backward_step(&mut self, loss: &Tensor) {
        let grads = Tensor::run_backward(&[loss], &self.params, false, false);
        self.step_with(&grads);
    }

    /// One update from gradients given in parameter order.
    pub fn step_with(&mut self, grads: &[Tensor]) {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step);
        let bc2 = 1.0 - self.beta2.powi(self.step);
        tch::no_grad(|| {
            let parts: Vec<Tensor> = grads.iter().zip(&self.layouts).map(|(g, l)| l.flatten(&g.to_kind(Kind::Float))).collect();
            let mut g = Tensor::cat(&parts, 0);
            if self.weight_decay > 0.0 {
                g += &self.flat * self.weight_decay;
            }
            let _ = self.m.lerp_(&g, 1.0 - self.beta1);
            let _ = self.v.lerp_(&g.square(), 1.0 - self.beta2);
            // p -= lr / bc1 * m / (sqrt(v / bc2) + eps), as p += m / denom with a negative denom.
            let scale = -bc1 / self.lr;
            let denom = self.v.sqrt().g_mul_scalar_(scale / bc2.sqrt()).g_add_scalar_(scale * self.eps);
            let _ = match &self.lr_scales {
                Some(scales) => self.flat.addcdiv_(&(&self.m * scales), &denom),
                None => self.flat.addcdiv_(&self.m, &denom),
            };
        });
    }

    /// Number of optimised values.
    pub fn numel(&self) -> i64 {
        self.flat.numel() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn matches_pytorch_first_steps() {
        // torch: p = tensor([1., -2.], requires_grad=True); opt = Adam([p], lr=0.1)
        // for _ in range(3): opt.zero_grad(); (p**2).sum().backward(); opt.step()
        // print(p.tolist()) -> [0.7015863060951233, -1.7006233930587769]
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = Adam::new(vec![p.shallow_clone()], 0.1);
        for _ in 0..3 {
            opt.backward_step(&p.square().sum(Kind::Float));
        }
        let got: Vec<f32> = Vec::try_from(&p.detach().to_device(Device::Cpu)).unwrap();
        assert!((got[0] - 0.701_586_3).abs() < 1e-6 && (got[1] + 1.700_623_4).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn weight_decay_matches_pytorch() {
        // PyTorch's Adam with weight_decay: g = grad + wd * p, then the Adam update (torch.optim.Adam
        // docs); the reference trajectory is that rule in f64.
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = Adam::new(vec![p.shallow_clone()], 0.1).with_weight_decay(0.5);
        let (mut m, mut v, mut q) = ([0.0f64; 2], [0.0f64; 2], [1.0f64, -2.0]);
        for t in 1..=3 {
            opt.backward_step(&p.pow_tensor_scalar(3).sum(Kind::Float));
            for i in 0..2 {
                let g = 3.0 * q[i] * q[i] + 0.5 * q[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let (mh, vh) = (m[i] / (1.0 - 0.9f64.powi(t)), v[i] / (1.0 - 0.999f64.powi(t)));
                q[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        assert!((got[0] as f64 - q[0]).abs() < 1e-5 && (got[1] as f64 - q[1]).abs() < 1e-5, "{got:?} vs {q:?}");
        // The penalty alone (a loss without gradient) shrinks the parameter: its gradient is
        // 0.01 p, and Adam is scale-invariant, so the path is that of p^2 in the first test.
        let p = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let mut opt = Adam::new(vec![p.shallow_clone()], 0.1).with_weight_decay(0.01);
        for _ in 0..3 {
            opt.backward_step(&(p.sum(Kind::Float) * 0.0));
        }
        assert!((p.double_value(&[0]) - 0.701_586_3).abs() < 1e-5, "{}", p.double_value(&[0]));
    }

    #[test]
    fn rate_scales_apply_per_parameter() {
        // Scale 0.5 on the second parameter: its first step is half the first's (Adam's first
        // step is lr * sign(grad)).
        let a = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let b = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let mut opt = Adam::new(vec![a.shallow_clone(), b.shallow_clone()], 0.1).with_lr_scales(&[1.0, 0.5]);
        opt.backward_step(&(a.square().sum(Kind::Float) + b.square().sum(Kind::Float)));
        assert!((a.double_value(&[0]) - 0.9).abs() < 1e-6 && (b.double_value(&[0]) - 0.95).abs() < 1e-6);
    }

    #[test]
    fn several_parameters_and_layouts_update_like_one_at_a_time() {
        // Each parameter alone (one optimizer each) vs all together in one flat buffer,
        // one of them a channels-last 4-D tensor: identical trajectories.
        tch::manual_seed(0);
        let init = [Tensor::randn([2, 3, 3, 3], (Kind::Float, Device::Cpu)), Tensor::randn([5], (Kind::Float, Device::Cpu))];
        let channels_last = init[0].permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        let joint = [channels_last.set_requires_grad(true), init[1].copy().set_requires_grad(true)];
        let alone = [init[0].copy().set_requires_grad(true), init[1].copy().set_requires_grad(true)];
        let loss = |a: &Tensor, b: &Tensor| (a.sin().sum(Kind::Float) * b.sum(Kind::Float)) + b.square().sum(Kind::Float);
        let mut opt = Adam::new(joint.iter().map(|t| t.shallow_clone()).collect(), 0.05);
        assert_eq!(joint[0].stride()[1], 1, "the layout is kept");
        let mut opts: Vec<Adam> = alone.iter().map(|t| Adam::new(vec![t.shallow_clone()], 0.05)).collect();
        for _ in 0..5 {
            opt.backward_step(&loss(&joint[0], &joint[1]));
            let l = loss(&alone[0], &alone[1]);
            let g = Tensor::run_backward(&[&l], &alone, false, false);
            opts[0].step_with(&g[..1]);
            opts[1].step_with(&g[1..]);
        }
        for (a, b) in joint.iter().zip(&alone) {
            assert!((a - b).abs().max().double_value(&[]) < 1e-6);
        }
        assert_eq!(opt.numel(), 59);
    }
}
