//! vocml-core: the library behind vocml's tools. Data flows `dataset` (prepare, read back) ->
//! `train` (a `model` on the prepared splits) -> `run` (a directory with the typed contract) ->
//! `infer` (a run loaded for scoring) -> `eval`, `predict`, `retrain`, `export` (and serve);
//! `thresholds` decides; `io` holds the file formats they share. See docs/architecture.md.
//! Library code returns errors and never prints; the binaries report.

pub mod bench;
pub mod dataset;
pub mod device;
pub mod eval;
pub mod explain;
pub mod export;
pub mod infer;
pub mod io;
pub mod model;
pub mod predict;
pub mod progress;
pub mod retrain;
pub mod run;
pub mod select;
pub mod task;
pub mod tensor;
pub mod thresholds;
pub mod train;
pub mod venv;

/// Version of the tool, recorded in every manifest and run.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The error returned when the user interrupted a long operation (Ctrl-C).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;
