//! The `--inbox` folder `GET /queue` ranks, and its score cache (per file and model version).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// A scored inbox file, valid while its size, mtime and the model version are unchanged.
#[derive(Clone)]
pub struct Scored {
    pub len: u64,
    pub modified: Option<SystemTime>,
    pub version: u64,
    pub id: String,
    pub result: Result<Vec<f32>, String>,
    pub features: Option<Vec<f32>>,
}

/// The inbox folder and its score cache.
pub struct Inbox {
    pub dir: PathBuf,
    pub cache: Mutex<HashMap<PathBuf, Scored>>,
}

impl Inbox {
    pub fn new(dir: PathBuf) -> Self {
        Inbox { dir, cache: Mutex::default() }
    }
}
