//! Progress reporting, the one mechanism of the library: long operations call an observer;
//! the binaries draw it (bars, lines), the service records it (a retrain job's phase).

/// What a long operation reports as it goes (from any thread). Every method defaults to
/// nothing.
pub trait Progress: Sync {
    /// A new phase named `what` of `total` units (batches, images).
    fn phase(&self, _what: &str, _total: u64) {}
    /// `n` more units of the phase are done; `loss` when one was read back (not every step on
    /// a GPU).
    fn done(&self, _n: u64, _loss: Option<f64>) {}
    /// A line worth showing beside the progress (e.g. which candidate setting is trained).
    fn note(&self, _line: &str) {}
}

/// Reports nothing (tests, benchmarks, library callers that do not show progress).
pub struct Silent;

impl Progress for Silent {}
