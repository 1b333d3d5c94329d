//! Adam over an explicit list of parameters, with moments we own (so they can be saved)
//! and gradients zeroed in place.

use tch::Tensor;

/// Adam (Kingma & Ba), PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
pub struct Adam {
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: i32,
    pub lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    pub fn new(params: Vec<Tensor>, lr: f64) -> Self {
        let m = params.iter().map(|p| p.zeros_like()).collect();
        let v = params.iter().map(|p| p.zeros_like()).collect();
        Adam { params, m, v, step: 0, lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }

    /// Sets every parameter's gradient to zero.
    pub fn zero_grad(&mut self) {
        for p in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// One update from the current gradients.
    pub fn step(&mut self) {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step);
        let bc2 = 1.0 - self.beta2.powi(self.step);
        tch::no_grad(|| {
            for ((p, m), v) in self.params.iter().zip(&mut self.m).zip(&mut self.v) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = m.g_mul_scalar_(self.beta1).g_add_(&(&g * (1.0 - self.beta1)));
                let _ = v.g_mul_scalar_(self.beta2).g_add_(&(g.square() * (1.0 - self.beta2)));
                let denom = (&*v / bc2).sqrt() + self.eps;
                let update = &*m / denom * (self.lr / bc1);
                let mut p = p.shallow_clone();
                let _ = p.g_sub_(&update);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn matches_pytorch_first_steps() {
        // torch: p = tensor([1., -2.], requires_grad=True); opt = Adam([p], lr=0.1)
        // for _ in range(3): opt.zero_grad(); (p**2).sum().backward(); opt.step()
        // print(p.tolist()) -> [0.7015863060951233, -1.7006233930587769]
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = Adam::new(vec![p.shallow_clone()], 0.1);
        for _ in 0..3 {
            opt.zero_grad();
            p.square().sum(Kind::Float).backward();
            opt.step();
        }
        let got: Vec<f32> = Vec::try_from(&p.detach().to_device(Device::Cpu)).unwrap();
        assert!((got[0] - 0.701_586_3).abs() < 1e-6 && (got[1] + 1.700_623_4).abs() < 1e-6, "{got:?}");
    }
}
