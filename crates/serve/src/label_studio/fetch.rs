//! Task images fetched the way Label Studio serves them: its paths (`/data/upload/...`,
//! `/data/local-files/?d=...`) and URLs on its host with `Authorization: Token <key>` (the key
//! goes to that host only and is never logged), local files from a configured root without
//! the network, and URLs on other hosts only when allowed (without the key).

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use vocml_core::dataset::import_label_studio::percent_decode;

/// Where task images come from.
#[derive(Clone, Default)]
pub struct ImageSource {
    /// Label Studio's base URL (`http://host:port`).
    pub host: Option<String>,
    /// Its API key (legacy token).
    pub api_key: Option<String>,
    /// Local files (`/data/local-files/?d=PATH`) read from this folder instead of the host.
    pub files_root: Option<PathBuf>,
    /// Fetch URLs on other hosts (without the key).
    pub allow_urls: bool,
    /// Largest image accepted, in bytes.
    pub max_bytes: usize,
}

impl std::fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSource")
            .field("host", &self.host)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("files_root", &self.files_root)
            .field("allow_urls", &self.allow_urls)
            .finish()
    }
}

/// `scheme://authority` of a URL (lowercased), if it is one.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()))
}

/// How one reference is read.
#[derive(Debug, PartialEq)]
enum Plan {
    File(PathBuf),
    /// A URL, and whether the key goes with it.
    Get(String, bool),
}

impl ImageSource {
    fn plan(&self, reference: &str) -> Result<Plan, String> {
        if let (Some(rest), Some(root)) = (reference.strip_prefix("/data/local-files/?d="), &self.files_root) {
            let rel = percent_decode(rest.split('&').next().unwrap_or(""));
            let p = Path::new(&rel);
            if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(format!("local file {rel:?} is not a path under the files root"));
            }
            return Ok(Plan::File(root.join(p)));
        }
        if reference.starts_with('/') {
            let host = self.host.as_ref().ok_or("the image is a Label Studio path; start serve with --label-studio-url to fetch it")?;
            return Ok(Plan::Get(format!("{}{reference}", host.trim_end_matches('/')), true));
        }
        let Some(o) = origin(reference) else {
            return Err(format!("{reference:?} is neither a Label Studio path nor a URL"));
        };
        if !(o.starts_with("http://") || o.starts_with("https://")) {
            return Err(format!("{o}: only http(s) URLs are fetched (cloud storage URIs need Label Studio's presigned URLs)"));
        }
        if self.host.as_deref().and_then(origin) == Some(o.clone()) {
            return Ok(Plan::Get(reference.to_string(), true));
        }
        if self.allow_urls {
            return Ok(Plan::Get(reference.to_string(), false));
        }
        Err(format!("{o} is not the Label Studio host; images on other hosts are fetched only with serve --label-studio-allow-urls"))
    }

    /// The bytes of the image `reference` names (blocking), or a one-line reason.
    pub fn fetch(&self, reference: &str) -> Result<Vec<u8>, String> {
        let limit = self.max_bytes as u64;
        let mut bytes = Vec::new();
        match self.plan(reference)? {
            Plan::File(p) => {
                let f = std::fs::File::open(&p).map_err(|e| format!("cannot read local file {}: {e}", p.display()))?;
                f.take(limit + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read local file {}: {e}", p.display()))?;
            }
            Plan::Get(url, with_key) => {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).redirects(0).build();
                let mut req = agent.get(&url);
                if let (true, Some(key)) = (with_key, &self.api_key) {
                    req = req.set("Authorization", &format!("Token {key}"));
                }
                let shown = url.split(['?', '#']).next().unwrap_or(&url).to_string();
                let res = req.call().map_err(|e| match e {
                    ureq::Error::Status(401 | 403, _) => {
                        format!("{shown}: {} refused the API key (check --label-studio-api-key-file)", origin(&url).unwrap_or_default())
                    }
                    ureq::Error::Status(code, _) => format!("{shown}: HTTP {code}"),
                    ureq::Error::Transport(t) => format!("{shown}: {}", t.kind()),
                })?;
                res.into_reader().take(limit + 1).read_to_end(&mut bytes).map_err(|e| format!("{shown}: {e}"))?;
            }
        }
        if bytes.len() as u64 > limit {
            return Err(format!("the image is larger than {} bytes", self.max_bytes));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_goes_to_the_label_studio_host_only() {
        let s = ImageSource { host: Some("http://127.0.0.1:8080".into()), api_key: Some("k".into()), max_bytes: 10, ..Default::default() };
        assert_eq!(s.plan("/data/upload/1/a.jpg"), Ok(Plan::Get("http://127.0.0.1:8080/data/upload/1/a.jpg".into(), true)));
        assert_eq!(s.plan("http://127.0.0.1:8080/data/x.jpg"), Ok(Plan::Get("http://127.0.0.1:8080/data/x.jpg".into(), true)));
        assert!(s.plan("http://127.0.0.1:9999/x.jpg").unwrap_err().contains("--label-studio-allow-urls"));
        assert!(s.plan("file:///etc/passwd").unwrap_err().contains("only http(s)"));
        let open = ImageSource { allow_urls: true, ..s.clone() };
        assert_eq!(open.plan("http://elsewhere.test/x.jpg"), Ok(Plan::Get("http://elsewhere.test/x.jpg".into(), false)));
        assert!(!format!("{open:?}").contains("\"k\""));
    }

    #[test]
    fn local_files_stay_under_their_root() {
        let s = ImageSource { files_root: Some("/photos".into()), max_bytes: 10, ..Default::default() };
        assert_eq!(s.plan("/data/local-files/?d=a/b%20c.jpg"), Ok(Plan::File("/photos/a/b c.jpg".into())));
        assert!(s.plan("/data/local-files/?d=../etc/passwd").is_err());
        assert!(s.plan("/data/upload/1/a.jpg").unwrap_err().contains("--label-studio-url"));
    }
}
