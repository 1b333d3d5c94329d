//! Loading checkpoints into a VarStore by name, with clear errors for missing keys,
//! unexpected keys and shape mismatches.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use tch::{nn::VarStore, Tensor};

/// Reads all tensors of a checkpoint: `.safetensors`, or a `.pth`/`.pt` that libtorch can
/// read directly (torch.save'd OrderedDicts usually cannot: convert them once).
pub fn read_checkpoint(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        bail!("weights file {} not found", path.display());
    }
    let is_st = path.extension().is_some_and(|e| e == "safetensors");
    if is_st {
        return Tensor::read_safetensors(path).map_err(|e| anyhow::anyhow!("{}: not a readable safetensors file: {e}", path.display()));
    }
    Tensor::loadz_multi(path).map_err(|_| {
        anyhow::anyhow!(
            "{}: cannot read this torch.save checkpoint directly; convert it once with \
             `.venv/bin/python scripts/convert_weights.py {} {}` and pass the .safetensors file",
            path.display(),
            path.display(),
            path.with_extension("safetensors").display()
        )
    })
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub loaded: usize,
    /// Checkpoint keys that were deliberately not used (e.g. the ImageNet classifier).
    pub ignored: Vec<String>,
}

/// Copies checkpoint tensors into `vs` by name. Every variable of `vs` outside
/// `optional_prefixes` must be present with the same shape; checkpoint keys that `vs` lacks
/// are errors unless they start with one of `ignore_prefixes` (or are BatchNorm's
/// `num_batches_tracked`).
pub fn load_into(
    vs: &VarStore,
    tensors: Vec<(String, Tensor)>,
    source: &Path,
    ignore_prefixes: &[&str],
    optional_prefixes: &[&str],
) -> Result<LoadReport> {
    let vars = vs.variables();
    let given: HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut report = LoadReport::default();
    let mut unexpected = BTreeSet::new();
    for key in given.keys() {
        if vars.contains_key(key) {
            continue;
        }
        if key.ends_with("num_batches_tracked") || ignore_prefixes.iter().any(|p| key.starts_with(p)) {
            report.ignored.push(key.clone());
        } else {
            unexpected.insert(key.clone());
        }
    }
    let mut missing = BTreeSet::new();
    let mut mismatched = Vec::new();
    for (name, var) in &vars {
        match given.get(name) {
            None if optional_prefixes.iter().any(|p| name.starts_with(p)) => {}
            None => {
                missing.insert(name.clone());
            }
            Some(t) if t.size() != var.size() => mismatched.push(format!("{name}: checkpoint {:?}, model {:?}", t.size(), var.size())),
            Some(_) => {}
        }
    }
    if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
        let show = |set: &BTreeSet<String>| set.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("{} missing keys ({})", missing.len(), show(&missing)));
        }
        if !unexpected.is_empty() {
            parts.push(format!("{} unexpected keys ({})", unexpected.len(), show(&unexpected)));
        }
        if !mismatched.is_empty() {
            parts.push(format!("{} shape mismatches ({})", mismatched.len(), mismatched[..mismatched.len().min(3)].join("; ")));
        }
        let hint = if missing.len() * 2 > vars.len() { " — these look like weights for another model" } else { "" };
        bail!("{}: weights do not fit the model: {}{hint}", source.display(), parts.join("; "));
    }
    tch::no_grad(|| -> Result<()> {
        for (name, var) in &vars {
            if let Some(t) = given.get(name) {
                let mut v = var.shallow_clone();
                v.f_copy_(&t.to_kind(v.kind()).to_device(v.device())).with_context(|| format!("copying {name}"))?;
                report.loaded += 1;
            }
        }
        Ok(())
    })?;
    Ok(report)
}
