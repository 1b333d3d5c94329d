//! Learning-rate schedules: constant, reduced on a plateau of the validation loss, or cosine
//! decay over the phase's epochs.

pub use crate::run::options::Scheduler;

/// The rate of epoch `epoch` (0-based) of `epochs` under cosine decay from `lr`.
pub fn cosine(lr: f64, epoch: usize, epochs: usize) -> f64 {
    lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs.max(1) as f64).cos())
}

/// Reduce-on-plateau as in `torch.optim.lr_scheduler.ReduceLROnPlateau` (mode `min`,
/// relative threshold 1e-4, no cooldown) and Keras' `ReduceLROnPlateau`: after `patience`
/// epochs in a row without the monitored value improving, the rate is multiplied by
/// `factor`, never below `min_lr`.
#[derive(Debug, Clone)]
pub struct Plateau {
    pub factor: f64,
    pub patience: usize,
    pub min_lr: f64,
    best: f64,
    bad_epochs: usize,
}

impl Plateau {
    pub fn new(factor: f64, patience: usize, min_lr: f64) -> Self {
        Plateau { factor, patience, min_lr, best: f64::INFINITY, bad_epochs: 0 }
    }

    /// Records an epoch's monitored value and returns the rate for the next epoch.
    pub fn step(&mut self, value: f64, lr: f64) -> f64 {
        if value < self.best * (1.0 - 1e-4) {
            self.best = value;
            self.bad_epochs = 0;
            return lr;
        }
        self.bad_epochs += 1;
        if self.bad_epochs > self.patience {
            self.bad_epochs = 0;
            return (lr * self.factor).max(self.min_lr);
        }
        lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_after_patience_bad_epochs_like_torch() {
        // torch: ReduceLROnPlateau(opt, factor=0.1, patience=2) with lr 1.0 and losses
        // 1, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95 gives lrs 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01.
        let mut p = Plateau::new(0.1, 2, 0.0);
        let mut lr = 1.0;
        let mut lrs = Vec::new();
        for v in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95] {
            lr = p.step(v, lr);
            lrs.push(lr);
        }
        let want = [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01];
        for (a, b) in lrs.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{lrs:?}");
        }
    }

    #[test]
    fn never_below_min_lr_and_parses() {
        let mut p = Plateau::new(0.5, 0, 0.3);
        assert_eq!(p.step(1.0, 1.0), 1.0);
        assert_eq!(p.step(1.0, 1.0), 0.5);
        assert_eq!(p.step(1.0, 0.5), 0.3);
    }

    #[test]
    fn cosine_starts_at_the_rate_and_halves_midway() {
        assert_eq!(cosine(0.1, 0, 10), 0.1);
        assert!((cosine(0.1, 5, 10) - 0.05).abs() < 1e-12);
        assert!(cosine(0.1, 9, 10) < 0.003 && cosine(0.1, 9, 10) > 0.0);
    }
}
