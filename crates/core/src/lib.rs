//! vocml-core: the engine behind the `voc-prep`, `train`, `evaluate`, `predict` and `retrain`
//! binaries. Data flows prep -> data -> model -> train -> metrics -> runs; every module owns
//! one step. Library code returns errors and never prints; the binaries report.

pub mod augment;
pub mod bench;
pub mod classes;
pub mod csv_line;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod feedback;
pub mod imageio;
pub mod import;
pub mod inference;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod npy;
pub mod optim;
pub mod plot;
pub mod predict;
pub mod predictor;
pub mod prep;
pub mod retrain;
pub mod runs;
pub mod schedule;
pub mod shapes;
pub mod split;
pub mod staging;
pub mod task;
pub mod train;
pub mod train_step;
pub mod voc;

/// Version of the tool, recorded in every manifest and run.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The error returned when the user interrupted a long operation (Ctrl-C).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;
