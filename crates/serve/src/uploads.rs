//! Recent uploads by SHA-256, so an image predicted once can be corrected by its `id` without
//! a second upload. Bounded by count and bytes; the oldest are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// An uploaded image as received.
#[derive(Clone)]
pub struct Upload {
    pub filename: String,
    pub bytes: Arc<Vec<u8>>,
}

/// The store of recent uploads.
pub struct Uploads {
    inner: Mutex<Inner>,
    max_items: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Upload>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Uploads {
    pub fn new(max_items: usize, max_bytes: usize) -> Self {
        Uploads { inner: Mutex::default(), max_items, max_bytes }
    }

    /// Keeps `upload` under `id` (its SHA-256), forgetting the oldest beyond the bounds.
    pub fn keep(&self, id: &str, upload: Upload) {
        let mut g = self.inner.lock().unwrap();
        if g.by_id.contains_key(id) {
            return;
        }
        g.bytes += upload.bytes.len();
        g.by_id.insert(id.to_string(), upload);
        g.order.push_back(id.to_string());
        while g.order.len() > self.max_items || (g.bytes > self.max_bytes && g.order.len() > 1) {
            let old = g.order.pop_front().expect("non-empty");
            if let Some(u) = g.by_id.remove(&old) {
                g.bytes -= u.bytes.len();
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<Upload> {
        self.inner.lock().unwrap().by_id.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_beyond_its_bounds() {
        let u = Uploads::new(2, 10);
        let up = |n: usize| Upload { filename: "x".into(), bytes: Arc::new(vec![0; n]) };
        u.keep("a", up(4));
        u.keep("b", up(4));
        u.keep("c", up(4));
        assert!(u.get("a").is_none() && u.get("b").is_some() && u.get("c").is_some());
        u.keep("d", up(9));
        assert!(u.get("b").is_none() && u.get("c").is_none() && u.get("d").is_some());
    }
}
