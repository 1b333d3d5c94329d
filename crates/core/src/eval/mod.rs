//! Scoring models: metrics of predictions against labels, the evaluation of runs on a
//! split (into the run, or a fixed directory for pipeline tools), and the comparison of runs.

pub mod comparison;
pub mod evaluate;
pub mod metrics;
pub mod pipeline;
pub mod validation;
