//! The integration tests: one test binary that runs the real binaries on small generated
//! data through one harness (`util`). Modules by stage; `cli` holds the command-line contract
//! (usage errors, exit codes, generated completions and man pages). The real-data tier
//! (`shared_data`, and tests marked so) runs when `../shared` exists and is reported as
//! ignored otherwise.

mod util;

mod batch;
mod browser;
mod cli;
mod deploy;
mod evaluate_predict;
mod explain;
mod export;
mod faults;
mod hostile;
mod hostile_clients;
mod imports;
mod label_studio;
mod mlflow;
mod parity;
mod pipelines;
mod protocols;
mod reproduce;
mod retrain;
mod serve;
mod shared_data;
mod tasks;
mod train;
mod voc_prep;
