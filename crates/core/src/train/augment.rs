//! Seeded augmentation of `[B, 3, H, W]` images in [0, 1], per image on the device, the knobs
//! of Keras' ImageDataGenerator and torchvision's RandomAffine / ColorJitter: one affine warp
//! (rotation, shear, zoom, width and height shift, horizontal flip; bilinear, border
//! padding like Keras' `fill_mode='nearest'`), then brightness, contrast and saturation
//! factors. The same function makes the cached feature views and the on-the-fly batches.

use crate::run::options::TrainOptions;
use crate::tensor::upload;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// Augmentation ranges (the reference: +-15 degrees, flips, brightness +-0.2; the others
/// off), checked as [`TrainOptions`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentConfig {
    /// Rotation drawn from [-r, r] degrees.
    pub rotation_degrees: f64,
    pub hflip: bool,
    /// Brightness factor drawn from [1 - b, 1 + b].
    pub brightness: f64,
    /// Horizontal shift drawn from [-w, w] times the width.
    pub width_shift: f64,
    /// Vertical shift drawn from [-h, h] times the height.
    pub height_shift: f64,
    /// Zoom factor drawn from [1 - z, 1 + z] (above 1 magnifies).
    pub zoom: f64,
    /// Shear angle drawn from [-s, s] degrees (Keras' `shear_range` is in degrees too).
    pub shear_degrees: f64,
    /// Contrast factor drawn from [1 - c, 1 + c] (blend with the image's mean grey).
    pub contrast: f64,
    /// Saturation factor drawn from [1 - s, 1 + s] (blend with the image's greyscale).
    pub saturation: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            rotation_degrees: 15.0,
            hflip: true,
            brightness: 0.2,
            width_shift: 0.0,
            height_shift: 0.0,
            zoom: 0.0,
            shear_degrees: 0.0,
            contrast: 0.0,
            saturation: 0.0,
        }
    }
}

impl AugmentConfig {
    /// The ranges `options` ask for; `None` with `no_augment`.
    pub fn of(options: &TrainOptions) -> Option<Self> {
        (!options.no_augment).then_some(AugmentConfig {
            rotation_degrees: options.rotation,
            hflip: !options.no_flip,
            brightness: options.brightness,
            width_shift: options.width_shift,
            height_shift: options.height_shift,
            zoom: options.zoom,
            shear_degrees: options.shear,
            contrast: options.contrast,
            saturation: options.saturation,
        })
    }
}

/// A factor drawn from [1 - r, 1 + r]; no draw (1) when `r` is 0, so the random sequence of
/// a configuration without this knob is unchanged.
fn factor(rng: &mut ChaCha8Rng, r: f64) -> f64 {
    if r > 0.0 {
        rng.gen_range(1.0 - r..=1.0 + r)
    } else {
        1.0
    }
}

/// A value drawn from [-r, r]; 0 without a draw when `r` is 0.
fn symmetric(rng: &mut ChaCha8Rng, r: f64) -> f64 {
    if r > 0.0 {
        rng.gen_range(-r..=r)
    } else {
        0.0
    }
}

/// Returns an augmented copy of `xs`; the random draws come from `rng` (so runs repeat).
pub fn augment(xs: &Tensor, cfg: &AugmentConfig, rng: &mut ChaCha8Rng) -> Tensor {
    let b = xs.size()[0];
    let dev = xs.device();
    let mut theta = Vec::with_capacity(b as usize * 6);
    let mut gains = Vec::with_capacity(b as usize);
    let (mut contrast, mut saturation) = (Vec::with_capacity(b as usize), Vec::with_capacity(b as usize));
    for _ in 0..b {
        let angle = rng.gen_range(-cfg.rotation_degrees..=cfg.rotation_degrees).to_radians();
        let flip = if cfg.hflip && rng.gen_bool(0.5) { -1.0 } else { 1.0 };
        gains.push(rng.gen_range(1.0 - cfg.brightness..=1.0 + cfg.brightness) as f32);
        let zoom = factor(rng, cfg.zoom);
        let shear = symmetric(rng, cfg.shear_degrees).to_radians().tan();
        let (tx, ty) = (2.0 * symmetric(rng, cfg.width_shift), 2.0 * symmetric(rng, cfg.height_shift));
        contrast.push(factor(rng, cfg.contrast) as f32);
        saturation.push(factor(rng, cfg.saturation) as f32);
        // Output -> input coordinates: rotation * shear * flip / zoom, then the shift.
        let (s, c) = angle.sin_cos();
        let a = [[c * flip / zoom, (c * shear - s) / zoom], [s * flip / zoom, (s * shear + c) / zoom]];
        theta.extend([a[0][0], a[0][1], tx, a[1][0], a[1][1], ty].map(|v| v as f32));
    }
    let theta = upload(&Tensor::from_slice(&theta).view([b, 2, 3]), dev);
    let grid = Tensor::affine_grid_generator(&theta, xs.size(), false);
    // bilinear, border padding (like Keras' fill_mode='nearest').
    let warped = xs.to_kind(Kind::Float).grid_sampler_2d(&grid, 0, 1, false);
    let per_image = |v: &[f32]| upload(&Tensor::from_slice(v).view([b, 1, 1, 1]), dev);
    let mut ys = (warped * per_image(&gains)).clamp(0.0, 1.0);
    if cfg.contrast > 0.0 {
        let mean = grey(&ys).mean_dim(&[1i64, 2, 3][..], true, Kind::Float);
        ys = (((ys - &mean) * per_image(&contrast)) + mean).clamp(0.0, 1.0);
    }
    if cfg.saturation > 0.0 {
        let g = grey(&ys);
        ys = (((ys - &g) * per_image(&saturation)) + g).clamp(0.0, 1.0);
    }
    ys
}

/// Luma `[B, 1, H, W]` of RGB `[B, 3, H, W]` (ITU-R 601 weights, as torchvision's rgb_to_grayscale).
fn grey(xs: &Tensor) -> Tensor {
    let w = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]).to_device(xs.device());
    (xs * w).sum_dim_intlist(&[1i64][..], true, Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn identity_when_ranges_are_zero_and_seeded_otherwise() {
        let xs = Tensor::rand([2, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let none = AugmentConfig { rotation_degrees: 0.0, hflip: false, brightness: 0.0, ..AugmentConfig::default() };
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
        let flip = AugmentConfig { rotation_degrees: 0.0, hflip: true, brightness: 0.0, ..AugmentConfig::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..8 {
            let ys = augment(&xs, &flip, &mut rng);
            let d_same = (&ys - &xs).abs().max().double_value(&[]);
            let d_flip = (&ys - xs.flip([3])).abs().max().double_value(&[]);
            assert!(d_same < 1e-5 || d_flip < 1e-5);
        }
    }

    fn only(f: impl FnOnce(&mut AugmentConfig)) -> AugmentConfig {
        let mut cfg = AugmentConfig { rotation_degrees: 0.0, hflip: false, brightness: 0.0, ..AugmentConfig::default() };
        f(&mut cfg);
        cfg
    }

    #[test]
    fn shift_moves_the_image_and_zoom_keeps_the_centre() {
        // A bright column in the middle: a shift moves it, a zoom widens it about the centre.
        let xs = Tensor::zeros([1, 3, 9, 9], (Kind::Float, tch::Device::Cpu));
        let _ = xs.narrow(3, 4, 1).fill_(1.0);
        let column = |t: &Tensor| t.get(0).get(0).get(4).argmax(0, false).int64_value(&[]);
        let shifted = augment(&xs, &only(|c| c.width_shift = 0.3), &mut ChaCha8Rng::seed_from_u64(5));
        assert_ne!(column(&shifted), 4, "the column moved");
        let zoomed = augment(&xs, &only(|c| c.zoom = 0.5), &mut ChaCha8Rng::seed_from_u64(5));
        let mass = |t: &Tensor| t.get(0).get(0).get(4).sum(Kind::Float).double_value(&[]);
        assert!((mass(&zoomed) - 1.0).abs() > 0.05, "the column's width changed: {}", mass(&zoomed));
        assert!(zoomed.get(0).get(0).get(4).double_value(&[4]) > 0.3, "centre kept");
    }

    #[test]
    fn colour_factors_change_contrast_and_saturation_only() {
        let xs = Tensor::rand([2, 3, 6, 6], (Kind::Float, tch::Device::Cpu)) * 0.5 + 0.25;
        let grey_in = grey(&xs).mean(Kind::Float).double_value(&[]);
        let c = augment(&xs, &only(|c| c.contrast = 0.5), &mut ChaCha8Rng::seed_from_u64(1));
        assert!((&c - &xs).abs().max().double_value(&[]) > 1e-3);
        assert!((grey(&c).mean(Kind::Float).double_value(&[]) - grey_in).abs() < 1e-3, "contrast keeps the mean grey");
        let s = augment(&xs, &only(|c| c.saturation = 0.5), &mut ChaCha8Rng::seed_from_u64(1));
        assert!((grey(&s) - grey(&xs)).abs().max().double_value(&[]) < 1e-5, "saturation keeps the luma");
        assert!((&s - &xs).abs().max().double_value(&[]) > 1e-3);
    }

    #[test]
    fn default_draws_are_unchanged_by_the_new_knobs() {
        // The reference's three draws per image, nothing more: the sequence after one image.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let _ = augment(&Tensor::rand([1, 3, 4, 4], (Kind::Float, tch::Device::Cpu)), &AugmentConfig::default(), &mut rng);
        let mut expected = ChaCha8Rng::seed_from_u64(9);
        let _ = (expected.gen_range(-15.0..=15.0f64), expected.gen_bool(0.5), expected.gen_range(0.8..=1.2f64));
        assert_eq!(rng.gen::<u64>(), expected.gen::<u64>());
    }

    #[test]
    fn the_default_options_give_the_default_ranges() {
        assert_eq!(AugmentConfig::of(&TrainOptions::default()), Some(AugmentConfig::default()));
        assert_eq!(AugmentConfig::of(&TrainOptions { no_augment: true, ..Default::default() }), None);
        let no_flip = AugmentConfig::of(&TrainOptions { no_flip: true, zoom: 0.1, ..Default::default() }).unwrap();
        assert_eq!((no_flip.hflip, no_flip.zoom), (false, 0.1));
    }
}
