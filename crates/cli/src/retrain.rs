//! `retrain`: incremental learning from user corrections into a new versioned run.

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use vocml::{interrupt_flag, progress_bar, ComputeArgs, DecodeArgs, TrackingArgs};
use vocml_core::retrain::{default_feedback_dir, retrain, RetrainConfig};

/// Retrain a model from user corrections, as a new versioned run.
///
/// corrections.csv has a header `path,labels` and one image per line, labels separated by
/// `;` (an empty field means "none of the classes"). For a multiclass run a line names
/// exactly one class; for a multihead run one class per head (`color/red;shape/circle`, or
/// `red;circle` when the names are unambiguous). Every accepted correction is added to
/// the feedback store (runs/feedback/), so each retrain learns from all corrections so
/// far. The corrected images are replicated with augmentation (--replicate), mixed with a
/// replay sample of the parent's training data so the model does not forget, and the
/// parent's head is fine-tuned for --epochs. The new run is compared with its parent on the
/// validation split and becomes runs/best only if its macro-F1 (accuracy for multiclass and
/// multihead runs) is not lower by more than
/// --tolerance (or with --force); the switch is atomic, so a running `predict` sees the old
/// model or the new one.
///
/// Examples:
///   retrain --corrections corrections.csv
///   retrain --from runs/20261123-101500_efficientnet_lite0 --corrections fixes.csv --force
#[derive(Parser, Debug)]
#[command(name = "retrain", version, long_about, verbatim_doc_comment, args_override_self = true)]
struct Cli {
    /// Run to start from (default: <runs-dir>/best).
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// CSV of corrections (`path,labels`).
    #[arg(long, value_name = "FILE")]
    corrections: PathBuf,
    /// Prepared data for replay and validation (default: the parent run's).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 30, value_name = "N")]
    epochs: usize,
    /// Augmented copies of each corrected image per epoch.
    #[arg(long, default_value_t = 10, value_name = "N")]
    replicate: usize,
    /// Learning rate of the head fine-tuning (low: the parent's head is the start).
    #[arg(long, default_value_t = 3e-4, value_name = "LR")]
    lr: f64,
    #[arg(long, default_value_t = 16, value_name = "N")]
    batch_size: usize,
    /// Do not mix original training data into each epoch (not recommended: the model forgets).
    #[arg(long)]
    no_replay: bool,
    /// Replay images per corrected sample in each epoch.
    #[arg(long, default_value_t = 3.0, value_name = "R")]
    replay_ratio: f64,
    /// Largest drop of validation macro-F1 that still promotes the new run.
    #[arg(long, default_value_t = 0.01, value_name = "F1")]
    tolerance: f64,
    /// Promote the new run to runs/best whatever its validation score.
    #[arg(long)]
    force: bool,
    /// Where the new run is created and runs/best lives.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    runs_dir: PathBuf,
    /// Feedback store (default: <runs-dir>/feedback).
    #[arg(long, value_name = "DIR")]
    feedback_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 42, value_name = "S")]
    seed: u64,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    tracking: TrackingArgs,
    #[command(flatten)]
    decode: DecodeArgs,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    vocml::tool_main("retrain", run)
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.compute.resolve()?;
    cli.decode.apply();
    let cfg = RetrainConfig {
        feedback_dir: cli.feedback_dir.clone().unwrap_or_else(|| default_feedback_dir(&cli.runs_dir)),
        from: cli.from.unwrap_or_else(|| cli.runs_dir.join(vocml_core::run::BEST_LINK)),
        corrections: cli.corrections,
        data: cli.data,
        epochs: cli.epochs,
        replicate: cli.replicate,
        lr: cli.lr,
        batch_size: cli.batch_size,
        replay: !cli.no_replay,
        replay_ratio: cli.replay_ratio,
        tolerance: cli.tolerance,
        force: cli.force,
        runs_dir: cli.runs_dir,
        seed: cli.seed,
    };
    let tracker = cli.tracking.tracker("retrain")?;
    let pb = progress_bar("retrain", cli.quiet);
    let cancel = interrupt_flag();
    let o = retrain(&cfg, device, &pb, &cancel)?;
    pb.finish_and_clear();
    if o.store_torn_tail {
        eprintln!(
            "retrain: warning: the feedback store's last record was cut short by an earlier crash (never acknowledged); it was dropped"
        );
    }
    println!("retrain: {} corrections ({} new), parent {}", o.corrections_used, o.corrections_new, o.parent.display());
    println!(
        "  corrected images predicted right: {}/{} before -> {}/{} after",
        o.corrected_right_before, o.corrections_used, o.corrected_right_after, o.corrections_used
    );
    println!("  validation {}: parent {:.4} -> new {:.4}", o.monitor, o.parent_val_score, o.new_val_score);
    println!(
        "  new run {} {} ({}) in {:.1}s",
        o.run_dir.display(),
        if o.promoted { "promoted to runs/best" } else { "NOT promoted" },
        o.reason,
        o.seconds
    );
    if let Some(t) = &tracker {
        if let Some(r) = t.settle("the run", t.log_run(&o.run_dir))? {
            println!(
                "  logged to MLflow run {} (model {} version {})",
                r.run_id,
                r.registered_model.unwrap_or_default(),
                r.model_version.unwrap_or_default()
            );
        }
        if o.promoted {
            if let Some(alias) = t.settle("the champion alias", t.promote(&o.run_dir))? {
                println!("  {alias}");
            }
        }
    }
    Ok(())
}
