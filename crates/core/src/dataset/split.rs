//! Deterministic, disjoint, stratified train/val/test split of multi-label data, or one fold
//! of a stratified k-fold cross-validation.
//!
//! Each image is put in the stratum of its rarest positive class (images with none form
//! their own stratum); each stratum is shuffled with its own seeded ChaCha8 generator and cut
//! by the fractions, so every class with at least three images reaches every non-empty split,
//! and adding or removing images of one stratum (e.g. keeping images without any target
//! class) leaves the other strata's assignment unchanged.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Train/val/test fractions; they sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitFractions {
    pub train: f64,
    pub val: f64,
    pub test: f64,
}

impl Default for SplitFractions {
    fn default() -> Self {
        SplitFractions { train: 0.7, val: 0.15, test: 0.15 }
    }
}

impl SplitFractions {
    /// Parses `train,val,test`, e.g. `0.7,0.15,0.15` or `0,0,1`.
    pub fn parse(spec: &str) -> Result<Self> {
        let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
        if parts.len() != 3 {
            bail!("--split {spec:?}: expected three fractions train,val,test (e.g. 0.7,0.15,0.15)");
        }
        let mut v = [0.0f64; 3];
        for (slot, p) in v.iter_mut().zip(&parts) {
            *slot = p
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| anyhow::anyhow!("--split {spec:?}: {p:?} is not a fraction >= 0"))?;
        }
        let sum: f64 = v.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            bail!("--split {spec:?}: fractions sum to {sum}, expected 1");
        }
        Ok(SplitFractions { train: v[0], val: v[1], test: v[2] })
    }

    fn as_array(&self) -> [f64; 3] {
        [self.train, self.val, self.test]
    }
}

/// Row indices by stratum: the image's rarest positive class (by count, then index), the
/// images without any positive last.
fn strata(labels: &[Vec<bool>]) -> Vec<Vec<usize>> {
    let classes = labels.first().map_or(0, Vec::len);
    let mut freq = vec![0usize; classes];
    for row in labels {
        for (c, &on) in row.iter().enumerate() {
            freq[c] += on as usize;
        }
    }
    let mut strata: Vec<Vec<usize>> = vec![Vec::new(); classes + 1];
    for (i, row) in labels.iter().enumerate() {
        let key = (0..classes).filter(|&c| row[c]).min_by_key(|&c| (freq[c], c)).unwrap_or(classes);
        strata[key].push(i);
    }
    strata
}

/// One fold of a k-fold cross-validation: `index` (1-based) of `of` folds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    pub index: usize,
    pub of: usize,
}

/// Most folds `--fold` takes.
pub const MAX_FOLDS: usize = 50;

impl Fold {
    /// Parses `I/K`, e.g. `2/5` (fold 2 of 5).
    pub fn parse(spec: &str) -> Result<Self> {
        let parsed = spec.split_once('/').and_then(|(i, k)| Some((i.trim().parse::<usize>().ok()?, k.trim().parse::<usize>().ok()?)));
        match parsed {
            Some((index, of)) if (2..=MAX_FOLDS).contains(&of) && (1..=of).contains(&index) => Ok(Fold { index, of }),
            _ => bail!("--fold {spec:?}: expected I/K with 2 <= K <= {MAX_FOLDS} and 1 <= I <= K (e.g. 2/5)"),
        }
    }
}

/// How many of `n` items go to each split: cumulative rounding, then at least one item in
/// every split whose fraction is positive when `n` allows it.
fn allocate(n: usize, f: [f64; 3]) -> [usize; 3] {
    let a = ((n as f64) * f[0]).round() as usize;
    let b = (((n as f64) * (f[0] + f[1])).round() as usize).max(a).min(n);
    let mut c = [a.min(n), b - a.min(n), n - b];
    let wanted = f.iter().filter(|x| **x > 0.0).count();
    if n >= wanted {
        for k in 0..3 {
            if f[k] > 0.0 && c[k] == 0 {
                let donor = (0..3).filter(|&j| c[j] > 1).max_by_key(|&j| c[j]);
                if let Some(j) = donor {
                    c[j] -= 1;
                    c[k] += 1;
                }
            }
        }
    }
    c
}

/// Splits rows of a multi-hot label matrix (`labels[i][c]`) into train/val/test index lists,
/// each sorted ascending. Same inputs and seed give the same split.
pub fn stratified_split(labels: &[Vec<bool>], fractions: SplitFractions, seed: u64) -> [Vec<usize>; 3] {
    let mut out: [Vec<usize>; 3] = Default::default();
    for (key, mut members) in strata(labels).into_iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (key as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        members.shuffle(&mut rng);
        let [a, b, _] = allocate(members.len(), fractions.as_array());
        out[0].extend_from_slice(&members[..a]);
        out[1].extend_from_slice(&members[a..a + b]);
        out[2].extend_from_slice(&members[a + b..]);
    }
    for part in &mut out {
        part.sort_unstable();
    }
    out
}

/// Splits like [`stratified_split`] for k-fold cross-validation: each stratum (shuffled as
/// there) is dealt to the `fold.of` folds in turn, continuing where the previous stratum
/// stopped, so fold sizes differ by at most one and every class with at least K images is in
/// every fold; fold `fold.index` is the test split, the others are cut into train and val by
/// the ratio of `fractions.train` to `fractions.val` (stratified as well). Over the K folds
/// every image is in test exactly once.
pub fn stratified_fold_split(labels: &[Vec<bool>], fold: Fold, fractions: SplitFractions, seed: u64) -> Result<[Vec<usize>; 3]> {
    let kept = fractions.train + fractions.val;
    if kept <= 0.0 {
        bail!("--fold needs train and val fractions in --split (the test split is the fold)");
    }
    let train_val = [fractions.train / kept, fractions.val / kept, 0.0];
    let mut out: [Vec<usize>; 3] = Default::default();
    let mut next = 0;
    for (key, mut members) in strata(labels).into_iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (key as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        members.shuffle(&mut rng);
        let (test, rest): (Vec<(usize, usize)>, Vec<(usize, usize)>) =
            members.iter().enumerate().map(|(j, &m)| ((next + j) % fold.of, m)).partition(|(f, _)| *f == fold.index - 1);
        next = (next + members.len()) % fold.of;
        out[2].extend(test.into_iter().map(|(_, m)| m));
        let [a, _, _] = allocate(rest.len(), train_val);
        out[0].extend(rest[..a].iter().map(|(_, m)| *m));
        out[1].extend(rest[a..].iter().map(|(_, m)| *m));
    }
    for part in &mut out {
        part.sort_unstable();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(n: usize) -> Vec<Vec<bool>> {
        // class 0 common, class 1 rare (every 20th), class 2 medium.
        (0..n).map(|i| vec![i % 2 == 0, i % 20 == 3, i % 5 == 1]).collect()
    }

    #[test]
    fn parse_fractions() {
        assert_eq!(SplitFractions::parse("0,0,1").unwrap().test, 1.0);
        assert!(SplitFractions::parse("0.5,0.5").is_err());
        assert!(SplitFractions::parse("0.5,0.6,0.1").is_err());
        assert!(SplitFractions::parse("-0.1,0.6,0.5").is_err());
    }

    #[test]
    fn disjoint_complete_and_deterministic() {
        let y = synthetic(200);
        let f = SplitFractions::default();
        let s1 = stratified_split(&y, f, 7);
        let s2 = stratified_split(&y, f, 7);
        assert_eq!(s1, s2);
        let mut all: Vec<usize> = s1.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<_>>());
        assert_ne!(s1, stratified_split(&y, f, 8));
        assert!((s1[0].len() as i64 - 140).abs() <= 3, "{}", s1[0].len());
    }

    #[test]
    fn rare_class_reaches_every_split() {
        let y = synthetic(200); // class 1 has 10 positives
        let s = stratified_split(&y, SplitFractions::default(), 1);
        for part in &s {
            assert!(part.iter().any(|&i| y[i][1]), "rare class missing in a split");
        }
    }

    #[test]
    fn images_without_targets_do_not_move_the_others() {
        let y = synthetic(200);
        let labelled: Vec<usize> = (0..200).filter(|&i| y[i].iter().any(|&b| b)).collect();
        let only: Vec<Vec<bool>> = labelled.iter().map(|&i| y[i].clone()).collect();
        let with_empty = stratified_split(&y, SplitFractions::default(), 5);
        let without = stratified_split(&only, SplitFractions::default(), 5);
        for (a, b) in with_empty.iter().zip(&without) {
            let mapped: Vec<usize> = b.iter().map(|&j| labelled[j]).collect();
            let kept: Vec<usize> = a.iter().copied().filter(|i| labelled.contains(i)).collect();
            assert_eq!(kept, mapped);
        }
        assert!(with_empty[2].iter().any(|&i| !labelled.contains(&i)), "empties reach the test split too");
    }

    #[test]
    fn all_to_test() {
        let y = synthetic(50);
        let s = stratified_split(&y, SplitFractions::parse("0,0,1").unwrap(), 3);
        assert!(s[0].is_empty() && s[1].is_empty());
        assert_eq!(s[2].len(), 50);
    }

    #[test]
    fn folds_put_every_image_in_test_once_and_balance_the_folds() {
        let y = synthetic(203);
        let k = 5;
        let mut tested = vec![0; y.len()];
        for i in 1..=k {
            let [train, val, test] = stratified_fold_split(&y, Fold { index: i, of: k }, SplitFractions::default(), 9).unwrap();
            let mut all: Vec<usize> = train.iter().chain(&val).chain(&test).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..203).collect::<Vec<_>>(), "fold {i}: disjoint and complete");
            assert!((40..=41).contains(&test.len()), "fold {i}: {} test images", test.len());
            assert!(test.iter().any(|&j| y[j][1]), "fold {i}: the rare class (10 images) is tested");
            let ratio = val.len() as f64 / (train.len() + val.len()) as f64;
            assert!((ratio - 0.15 / 0.85).abs() < 0.03, "fold {i}: val share {ratio}");
            for j in test {
                tested[j] += 1;
            }
        }
        assert!(tested.iter().all(|&n| n == 1), "each image in exactly one test fold");
        let again = stratified_fold_split(&y, Fold { index: 2, of: k }, SplitFractions::default(), 9).unwrap();
        assert_eq!(again, stratified_fold_split(&y, Fold { index: 2, of: k }, SplitFractions::default(), 9).unwrap());
    }

    #[test]
    fn fold_specs_are_checked() {
        assert_eq!(Fold::parse("2/5").unwrap(), Fold { index: 2, of: 5 });
        for bad in ["0/5", "6/5", "1/1", "x/5", "3", "1/51"] {
            assert!(Fold::parse(bad).unwrap_err().to_string().contains("expected I/K"), "{bad}");
        }
        let y = synthetic(20);
        assert!(stratified_fold_split(&y, Fold { index: 1, of: 2 }, SplitFractions::parse("0,0,1").unwrap(), 1).is_err());
    }

    #[test]
    fn allocate_gives_small_strata_to_every_split() {
        assert_eq!(allocate(3, [0.7, 0.15, 0.15]), [1, 1, 1]);
        assert_eq!(allocate(10, [0.7, 0.15, 0.15]).iter().sum::<usize>(), 10);
        assert_eq!(allocate(1, [0.7, 0.15, 0.15]), [1, 0, 0]);
    }
}
