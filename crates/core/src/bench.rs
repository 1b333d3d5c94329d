//! Training-throughput benchmark: one epoch of the real training step (input preparation,
//! augmentation, backbone, head, BCE, multi-tensor Adam) on random images, so it can be
//! compared with a PyTorch script doing the same work (`benches/peer/train_step_torch.py`).

use crate::model::head::Head;
use crate::model::BackboneKind;
use crate::train::augment::AugmentConfig;
use crate::train::optim::Adam;
use crate::train::step::{backbone_features, head_step, model_input, SpeedOptions};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;
use tch::{nn, Device, Kind, Reduction, Tensor};

/// One benchmark case.
#[derive(Debug, Clone, Serialize)]
pub struct EpochCase {
    pub model: BackboneKind,
    /// Train every backbone parameter (BatchNorm statistics stay frozen) instead of the head only.
    pub fine_tune: bool,
    pub batch_size: usize,
    /// Images in the timed epoch.
    pub images: usize,
    /// Untimed steps first (allocator warm-up, cuDNN autotuning).
    pub warmup_steps: usize,
    pub image_size: i64,
    pub classes: i64,
    pub speed: SpeedOptions,
}

/// What one case measured.
#[derive(Debug, Clone, Serialize)]
pub struct EpochTiming {
    pub seconds: f64,
    pub images_per_s: f64,
    pub steps: usize,
    pub trainable_parameters: i64,
    pub final_loss: f64,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs `case` on `device` and times the epoch (the warm-up steps excluded).
pub fn train_epoch(case: &EpochCase, device: Device) -> Result<EpochTiming> {
    if case.batch_size == 0 || case.images < case.batch_size {
        bail!("--images must be at least --batch-size (and the batch size at least 1)");
    }
    tch::manual_seed(0);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let s = case.image_size;
    let pixels = Tensor::randint(256, [case.images as i64, s, s, 3], (Kind::Uint8, device));
    let labels = Tensor::randint(2, [case.images as i64, case.classes], (Kind::Float, device));
    let mut bvs = nn::VarStore::new(device);
    let net = case.model.build(&bvs.root(), false);
    let hvs = nn::VarStore::new(device);
    let head = Head::new(&(hvs.root() / "head"), case.model.feature_dim(), case.classes, &case.model.default_head());
    bvs.freeze();
    if case.speed.channels_last {
        crate::model::to_channels_last(&bvs);
    }
    let mut params = hvs.trainable_variables();
    if case.fine_tune {
        for (name, var) in bvs.variables() {
            if !name.contains("running_") {
                params.push(var.set_requires_grad(true));
            }
        }
    }
    crate::model::fold_frozen_batchnorm(net.as_ref());
    let mut opt = Adam::new(params, 1e-4);
    let aug = AugmentConfig::default();
    let norm = case.model.normalization();

    let mut step = |idx: &[i64], rng: &mut ChaCha8Rng| -> Result<Tensor> {
        let rows = crate::tensor::upload(&Tensor::from_slice(idx), device);
        let xs = model_input(&pixels.index_select(0, &rows), Some((&aug, rng)), &norm, case.speed);
        let y = labels.index_select(0, &rows);
        let feats = backbone_features(net.as_ref(), &xs, case.fine_tune, case.speed.bf16, device)?;
        let bce = |logits: &Tensor, y: &Tensor| logits.binary_cross_entropy_with_logits(y, None::<Tensor>, None::<Tensor>, Reduction::Mean);
        let loss = head_step(&head, &feats, &y, bce, &mut opt, case.speed.bf16, device)?;
        Ok(loss.detach())
    };

    let mut order: Vec<i64> = (0..case.images as i64).collect();
    for w in 0..case.warmup_steps {
        let start = (w * case.batch_size) % (case.images - case.batch_size + 1);
        let _ = step(&order[start..start + case.batch_size], &mut rng)?;
    }
    sync(device);
    let t0 = Instant::now();
    order.shuffle(&mut rng);
    let mut last = Tensor::zeros([], (Kind::Float, device));
    let mut steps = 0;
    for chunk in order.chunks(case.batch_size) {
        last = step(chunk, &mut rng)?;
        steps += 1;
    }
    let final_loss = last.double_value(&[]);
    sync(device);
    let seconds = t0.elapsed().as_secs_f64();
    Ok(EpochTiming { seconds, images_per_s: case.images as f64 / seconds, steps, trainable_parameters: opt.numel(), final_loss })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_fine_tune_epoch_runs_and_counts_parameters() {
        let case = EpochCase {
            model: BackboneKind::MobilenetV2,
            fine_tune: true,
            batch_size: 2,
            images: 4,
            warmup_steps: 1,
            image_size: 32,
            classes: 4,
            speed: SpeedOptions { channels_last: true, bf16: false },
        };
        let t = train_epoch(&case, Device::Cpu).unwrap();
        assert_eq!(t.steps, 2);
        // torchvision's mobilenet_v2 features (2,223,872) + head 1280*128+128 + 128*4+4.
        assert_eq!(t.trainable_parameters, 2_223_872 + 163_968 + 516);
        assert!(t.final_loss.is_finite() && t.images_per_s > 0.0);
    }
}
