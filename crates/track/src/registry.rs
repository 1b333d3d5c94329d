//! `models:/NAME@ALIAS` and `models:/NAME/VERSION`: a registered model version fetched from
//! the tracking server into a local cache (`<cache>/models/<name>/<version>/<run name>/`) (`$VOCML_CACHE_DIR`, else `$XDG_CACHE_HOME/vocml`,
//! else `~/.cache/vocml`), as a run directory the tools load like any other. A version never
//! changes, so a cached one is used as it is; the download is staged and renamed into place.

use crate::client::{MlflowClient, VersionRef};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A parsed `models:/` URI.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelUri {
    pub name: String,
    pub version: VersionRef,
}

impl ModelUri {
    /// `Some` when `s` is a `models:/` URI (an error when it is a malformed one).
    pub fn parse(s: &str) -> Result<Option<ModelUri>> {
        let Some(rest) = s.strip_prefix("models:/") else { return Ok(None) };
        let (name, version) = if let Some((n, a)) = rest.split_once('@') {
            (n, VersionRef::Alias(a.to_string()))
        } else if let Some((n, v)) = rest.rsplit_once('/') {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                bail!("{s}: expected models:/NAME@ALIAS or models:/NAME/VERSION (a number)");
            }
            (n, VersionRef::Number(v.to_string()))
        } else {
            bail!("{s}: expected models:/NAME@ALIAS or models:/NAME/VERSION");
        };
        if name.is_empty() || matches!(&version, VersionRef::Alias(a) if a.is_empty()) {
            bail!("{s}: expected models:/NAME@ALIAS or models:/NAME/VERSION");
        }
        Ok(Some(ModelUri { name: name.to_string(), version }))
    }
}

/// The cache of fetched model versions.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VOCML_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vocml")
}

/// Resolves `uri` on the server at `tracking_uri` and returns the local run directory of that
/// version (and its number), downloading it into `cache` unless it is there.
pub fn fetch(tracking_uri: &str, uri: &ModelUri, cache: &Path) -> Result<(PathBuf, String)> {
    let client = MlflowClient::new(tracking_uri)?;
    let (version, run_id, source) =
        client.model_version(&uri.name, &uri.version).with_context(|| format!("cannot resolve {}", display(uri)))?;
    let safe = |s: &str| -> String { s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect() };
    // Named like the run it came from, so the service and `predict` report that name.
    let run_name = client.run_name(&run_id).unwrap_or_else(|_| format!("v{version}"));
    let dest = cache.join("models").join(safe(&uri.name)).join(&version).join(safe(&run_name));
    if dest.join(vocml_core::run::CONFIG_FILE).is_file() {
        return Ok((dest, version));
    }
    let parent = dest.parent().expect("under the cache");
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = parent.join(format!(".{}.tmp-{}", safe(&run_name), std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let result = (|| -> Result<()> {
        let prefix = source.rsplit('/').next().unwrap_or("run").to_string();
        let files = client.list_artifacts(&run_id, &prefix)?;
        if files.is_empty() {
            bail!("{} (version {version}) has no files under {source}", display(uri));
        }
        for f in files {
            let rel = f.strip_prefix(&format!("{prefix}/")).unwrap_or(&f).to_string();
            if rel.contains('/') || rel.starts_with('.') {
                continue;
            }
            let bytes = client.download_artifact(&source, &rel)?;
            std::fs::write(staging.join(&rel), bytes).with_context(|| format!("cannot write {}", staging.join(&rel).display()))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e.context(format!("cannot fetch {}", display(uri))));
    }
    match std::fs::rename(&staging, &dest) {
        Ok(()) => {}
        // Fetched meanwhile by another process: theirs is the same version.
        Err(_) if dest.join(vocml_core::run::CONFIG_FILE).is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot move the download to {}", dest.display())),
    }
    Ok((dest, version))
}

fn display(uri: &ModelUri) -> String {
    match &uri.version {
        VersionRef::Alias(a) => format!("models:/{}@{a}", uri.name),
        VersionRef::Number(n) => format!("models:/{}/{n}", uri.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_uris_parse_or_name_the_problem() {
        assert_eq!(ModelUri::parse("runs/best").unwrap(), None);
        let u = ModelUri::parse("models:/vocml-x@champion").unwrap().unwrap();
        assert_eq!((u.name.as_str(), u.version), ("vocml-x", VersionRef::Alias("champion".into())));
        let u = ModelUri::parse("models:/m/12").unwrap().unwrap();
        assert_eq!(u.version, VersionRef::Number("12".into()));
        for bad in ["models:/m", "models:/m/x", "models:/@a", "models:/m@"] {
            assert!(ModelUri::parse(bad).is_err(), "{bad}");
        }
    }
}
