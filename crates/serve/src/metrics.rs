//! Service metrics in the Prometheus text format: requests by route and status, request
//! latency and batch size histograms, images scored, and the model version.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A cumulative histogram with fixed upper bounds.
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum: Mutex<f64>,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Histogram { bounds: bounds.to_vec(), counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: Mutex::new(0.0) }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        *self.sum.lock().unwrap() += v;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self.bounds.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {cumulative}", *self.sum.lock().unwrap());
    }
}

/// Everything `/metrics` reports.
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub latency: Histogram,
    pub batch_size: Histogram,
    pub images: AtomicU64,
    pub model_version: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            latency: Histogram::new(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            batch_size: Histogram::new(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            images: AtomicU64::new(0),
            model_version: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        *self.requests.lock().unwrap().entry((route.to_string(), status)).or_default() += 1;
        self.latency.observe(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP vocml_requests_total Requests answered, by route and status.\n# TYPE vocml_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(out, "vocml_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        self.latency.render("vocml_request_duration_seconds", "Request latency in seconds.", &mut out);
        self.batch_size.render("vocml_batch_size", "Images per forward pass.", &mut out);
        let _ = writeln!(
            out,
            "# HELP vocml_images_scored_total Images scored.\n# TYPE vocml_images_scored_total counter\nvocml_images_scored_total {}",
            self.images.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP vocml_model_version Version of the model served (1 = the first loaded).\n# TYPE vocml_model_version gauge\nvocml_model_version {}",
            self.model_version.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.batch_size.observe(1.0);
        m.batch_size.observe(3.0);
        m.batch_size.observe(100.0);
        m.request("/predict", 200, 0.02);
        let text = m.render();
        assert!(text.contains("vocml_batch_size_bucket{le=\"1\"} 1\n"), "{text}");
        assert!(text.contains("vocml_batch_size_bucket{le=\"4\"} 2\n"), "{text}");
        assert!(text.contains("vocml_batch_size_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("vocml_batch_size_count 3\n"), "{text}");
        assert!(text.contains("vocml_requests_total{route=\"/predict\",status=\"200\"} 1\n"), "{text}");
    }
}
