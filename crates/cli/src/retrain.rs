//! `retrain`: incremental learning from user corrections into a new versioned run.

use anyhow::Result;
use clap::{CommandFactory, Parser};
use std::path::PathBuf;
use std::process::ExitCode;
use vocml::{args_with_config, interrupt_flag, progress_bar, usage, ComputeArgs, DecodeArgs, TrackingArgs};
use vocml_core::retrain::{retrain, RetrainConfig};
use vocml_core::run::options::RetrainOptions;
use vocml_core::run::RunTarget;

/// Retrain a model from user corrections, as a new versioned run.
///
/// corrections.csv has a header `path,labels` (or `path,labels,source`, `source` naming the
/// correction in the store) and one image per line, labels separated by `;` (an empty field
/// means "none of the classes"). For a multiclass run a line names
/// exactly one class; for a multihead run one class per head (`color/red;shape/circle`, or
/// `red;circle` when the names are unambiguous). Every accepted correction is added to
/// the feedback store (runs/feedback/), so each retrain learns from all corrections so
/// far. The corrected images are replicated with augmentation (--replicate), mixed with a
/// replay sample of the parent's training data so the model does not forget (--replay-all:
/// the whole training split), and the parent's head is fine-tuned for --epochs. The new run
/// is compared with its parent on the data's test split, which neither was selected on, by
/// mAP (accuracy for multiclass and multihead runs), scored as the run scores (flip TTA when
/// it has it) and without test images that are also corrections; it becomes runs/best only
/// if its change is at least -tolerance (or with --force), and a paired bootstrap interval
/// says how sure that is. The decision and its figures are in the run's retrain.json; with
/// few corrections, or when refused, the output names the next step (the corrections added
/// to the training data, and a full train). The switch is atomic, so a running `predict`
/// sees the old model or the new one.
///
/// Examples:
///   retrain --corrections corrections.csv
///   retrain --config configs/retrain-gentle.toml --corrections corrections.csv
///   retrain --from runs/20261123-101500_efficientnet_lite0 --corrections fixes.csv --force
#[derive(Parser, Debug)]
#[command(name = "retrain", version, long_about, verbatim_doc_comment, args_override_self = true)]
struct Cli {
    /// Recipe file (TOML; keys are long flag names), or a retrained run's config.json to make
    /// that retrain again; command-line flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: RetrainOptions,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    tracking: TrackingArgs,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Write the new run to exactly DIR instead of a new <runs-dir>/<timestamp>_<model>_retrain/
    /// (for pipeline tools): a run or an empty directory already there is replaced atomically.
    /// runs/best is left alone; the gate's verdict is `promoted` in DIR/retrain.json.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    vocml::tool_main_with_args("retrain", args_with_config(&Cli::command(), std::env::args_os().collect()), run)
}

fn run(cli: Cli) -> Result<()> {
    let mut cfg = RetrainConfig::new(cli.options, cli.decode.max_image_pixels).map_err(usage)?;
    cfg.target = RunTarget::new(cli.run_dir.as_deref(), &cfg.runs_dir);
    let mut inputs = vec![(cfg.from.as_path(), "--from")];
    inputs.extend(cfg.data.as_deref().map(|d| (d, "--data")));
    cfg.target.check(&inputs).map_err(usage)?;
    let device = cli.compute.resolve()?;
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
    println!(
        "  {} on validation (where the parent was early-stopped, not decided on): parent {:.4} -> new {:.4}",
        o.monitor, o.validation.before, o.validation.after
    );
    println!(
        "  new run {} {} ({}) in {:.1}s",
        o.run_dir.display(),
        match (o.promoted, cli.run_dir.is_some()) {
            (true, false) => "promoted to runs/best",
            (true, true) => "passed the gate",
            (false, _) => "NOT promoted",
        },
        o.reason,
        o.seconds
    );
    if let Some(next) = &o.next_step {
        println!("  next: {next}");
    }
    if let Some(t) = &tracker {
        if let Some(r) = t.settle("the run", t.log_run(&o.run_dir))? {
            println!(
                "  logged to MLflow run {} (model {} version {})",
                r.run_id,
                r.registered_model.unwrap_or_default(),
                r.model_version.unwrap_or_default()
            );
        }
        // With --run-dir the pipeline decides what to deploy, as runs/best is left alone.
        if o.promoted && cli.run_dir.is_none() {
            if let Some(alias) = t.settle("the champion alias", t.promote(&o.run_dir))? {
                println!("  {alias}");
            }
        }
    }
    Ok(())
}
