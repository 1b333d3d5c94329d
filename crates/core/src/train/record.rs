//! Writing a trained run's record files, shared by `train` and `retrain`: the typed
//! `config.json`, `classes.json`, `metrics.json`, `history.csv` and the training curves.

use crate::run::config::RunConfig;
use crate::run::{RunWriter, CLASSES_FILE, CONFIG_FILE, CURVES_FILE, HISTORY_FILE, METRICS_FILE};
use crate::train::history::{history_csv, write_training_curves, EpochRecord};
use anyhow::Result;

/// Writes the record files of a run being staged in `run` (the model is written apart).
pub fn write_run_files(run: &RunWriter, config: &RunConfig, metrics: &serde_json::Value, history: &[EpochRecord]) -> Result<()> {
    run.write_json(CONFIG_FILE, config)?;
    run.write_json(CLASSES_FILE, &config.classes())?;
    run.write_json(METRICS_FILE, metrics)?;
    run.write_text(HISTORY_FILE, &history_csv(history))?;
    write_training_curves(history, &run.dir().join(CURVES_FILE))
}
