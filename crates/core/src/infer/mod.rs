//! Inference: a run or an ensemble loaded for scoring ([`predictor::Predictor`], over the
//! members' [`loaded::LoadedModel`]s) and run by the engine the caller passes in
//! ([`Engine`]: libtorch, or ONNX Runtime on the run's exported file, [`onnx`]). `predict`,
//! `evaluate`, `serve`, `export` and the retrain gate all score through it.

pub mod loaded;
pub mod onnx;
pub mod predictor;
pub mod rows;

pub use onnx::Engine;
pub use predictor::{LoadOptions, Predictor};
pub use rows::Rows;
