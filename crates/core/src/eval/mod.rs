//! Scoring models: metrics of predictions against labels, the evaluation of runs on a
//! split, and the comparison of runs.

pub mod comparison;
pub mod evaluate;
pub mod metrics;
pub mod validation;
