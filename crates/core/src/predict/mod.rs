//! Batch scoring of image files and folders: sharding, and a pipeline that decodes the next
//! batch in parallel while the current one runs through the model; the rows are written by
//! [`output`] as they come; [`merge`] joins the outputs of shards.

pub mod merge;
pub mod output;

use crate::infer::{Predictor, Rows};
use crate::io::image::SquareResizer;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A `--shard K/N` selection (K in 1..=N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub fn parse(spec: &str) -> Result<Self> {
        let (k, n) = spec.split_once('/').with_context(|| format!("--shard {spec:?}: expected K/N, e.g. 1/4"))?;
        let (k, n): (u64, u64) = (
            k.trim().parse().with_context(|| format!("--shard {spec:?}: K is not a number"))?,
            n.trim().parse().with_context(|| format!("--shard {spec:?}: N is not a number"))?,
        );
        if n == 0 || k == 0 || k > n {
            bail!("--shard {spec:?}: need 1 <= K <= N");
        }
        Ok(Shard { index: k, count: n })
    }

    /// Whether `path` belongs to this shard: a stable hash (FNV-1a) of the path text.
    pub fn contains(&self, path: &Path) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in path.to_string_lossy().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % self.count == self.index - 1
    }
}

/// The outcome for one input file: probabilities per class, or why it failed.
pub struct Scored {
    pub path: PathBuf,
    pub result: Result<Vec<f32>, String>,
}

/// Scores `files` in batches (images over `max_pixels` are per-file errors), calling `sink` for each file in input order as soon as its
/// batch is done, with the image's features when `features` (what
/// [`Predictor::probabilities_and_features`] gives, from the same forward pass). Decoding of
/// the next batch overlaps inference of the current one.
pub fn score_files(
    model: &Predictor,
    files: &[PathBuf],
    batch: usize,
    max_pixels: u64,
    cancel: &AtomicBool,
    features: bool,
    mut sink: impl FnMut(Scored, Option<Vec<f32>>) -> Result<()>,
) -> Result<()> {
    let size = model.image_size();
    let mode = model.resize();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(PathBuf, Result<Vec<u8>, String>)>>(2);
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(move || {
            for chunk in files.chunks(batch.max(1)) {
                if cancel.load(Ordering::SeqCst) {
                    break;
                }
                let decoded: Vec<_> =
                    chunk.par_iter().map_init(|| SquareResizer::new(size, mode, max_pixels), |r, p| (p.clone(), r.load(p))).collect();
                if tx.send(decoded).is_err() {
                    break;
                }
            }
        });
        for decoded in rx {
            if cancel.load(Ordering::SeqCst) {
                bail!(crate::Interrupted);
            }
            let good: Vec<&[u8]> = decoded.iter().filter_map(|(_, r)| r.as_deref().ok()).collect();
            let (probs, described) =
                if features { model.score_images_with_features(&good)? } else { (model.score_images(&good)?, Rows::default()) };
            let mut next = 0;
            for (path, r) in decoded {
                let (result, row_features) = match r {
                    Ok(_) => {
                        let p = probs.row(next).to_vec();
                        let d = features.then(|| described.row(next).to_vec());
                        next += 1;
                        (Ok(p), d)
                    }
                    Err(e) => (Err(e), None),
                };
                sink(Scored { path, result }, row_features)?;
            }
        }
        if cancel.load(Ordering::SeqCst) {
            bail!(crate::Interrupted);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_inputs() {
        let paths: Vec<PathBuf> = (0..500).map(|i| PathBuf::from(format!("dir/img_{i}.jpg"))).collect();
        let shards: Vec<Shard> = (1..=4).map(|k| Shard::parse(&format!("{k}/4")).unwrap()).collect();
        for p in &paths {
            assert_eq!(shards.iter().filter(|s| s.contains(p)).count(), 1);
        }
        assert!(shards.iter().all(|s| paths.iter().filter(|p| s.contains(p)).count() > 80));
        assert!(Shard::parse("0/4").is_err() && Shard::parse("5/4").is_err() && Shard::parse("x").is_err());
    }
}
