//! Seeded on-the-fly augmentation of `[B, 3, H, W]` images in [0, 1]: random rotation,
//! horizontal flip and brightness, applied per image on the device.

use crate::tensor::upload;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Augmentation ranges (the reference: +-15 degrees, flips, brightness +-0.2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    pub rotation_degrees: f64,
    pub hflip: bool,
    /// Brightness factor drawn from [1 - b, 1 + b].
    pub brightness: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig { rotation_degrees: 15.0, hflip: true, brightness: 0.2 }
    }
}

/// Returns an augmented copy of `xs`; the random draws come from `rng` (so runs repeat).
pub fn augment(xs: &Tensor, cfg: &AugmentConfig, rng: &mut ChaCha8Rng) -> Tensor {
    let b = xs.size()[0];
    let dev = xs.device();
    let mut theta = Vec::with_capacity(b as usize * 6);
    let mut gains = Vec::with_capacity(b as usize);
    for _ in 0..b {
        let angle = rng.gen_range(-cfg.rotation_degrees..=cfg.rotation_degrees).to_radians();
        let flip = if cfg.hflip && rng.gen_bool(0.5) { -1.0 } else { 1.0 };
        let (s, c) = angle.sin_cos();
        theta.extend_from_slice(&[(c * flip) as f32, -s as f32, 0.0, (s * flip) as f32, c as f32, 0.0]);
        gains.push(rng.gen_range(1.0 - cfg.brightness..=1.0 + cfg.brightness) as f32);
    }
    let theta = upload(&Tensor::from_slice(&theta).view([b, 2, 3]), dev);
    let grid = Tensor::affine_grid_generator(&theta, xs.size(), false);
    // bilinear, border padding (like Keras' fill_mode='nearest').
    let rotated = xs.to_kind(Kind::Float).grid_sampler_2d(&grid, 0, 1, false);
    let gains = upload(&Tensor::from_slice(&gains).view([b, 1, 1, 1]), dev);
    (rotated * gains).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn identity_when_ranges_are_zero_and_seeded_otherwise() {
        let xs = Tensor::rand([2, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let none = AugmentConfig { rotation_degrees: 0.0, hflip: false, brightness: 0.0 };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let same = augment(&xs, &none, &mut rng);
        assert!((same - &xs).abs().max().double_value(&[]) < 1e-5);
        let a = augment(&xs, &AugmentConfig::default(), &mut ChaCha8Rng::seed_from_u64(3));
        let b = augment(&xs, &AugmentConfig::default(), &mut ChaCha8Rng::seed_from_u64(3));
        assert!((&a - &b).abs().max().double_value(&[]) == 0.0);
        assert!((a - &xs).abs().max().double_value(&[]) > 1e-3);
    }

    #[test]
    fn flip_only_mirrors() {
        let xs = Tensor::arange(16, (Kind::Float, tch::Device::Cpu)).view([1, 1, 4, 4]).repeat([1, 3, 1, 1]) / 16.0;
        let flip = AugmentConfig { rotation_degrees: 0.0, hflip: true, brightness: 0.0 };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..8 {
            let ys = augment(&xs, &flip, &mut rng);
            let d_same = (&ys - &xs).abs().max().double_value(&[]);
            let d_flip = (&ys - xs.flip([3])).abs().max().double_value(&[]);
            assert!(d_same < 1e-5 || d_flip < 1e-5);
        }
    }
}
