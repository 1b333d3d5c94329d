//! `train`: transfer learning from ImageNet backbones on a voc-prep output; writes a
//! versioned run directory per model.

use anyhow::{bail, Result};
use clap::{CommandFactory, Parser};
use std::path::PathBuf;
use std::process::ExitCode;
use vocml::{args_with_config, interrupt_flag, progress_bar, usage, Bar, ComputeArgs, TrackingArgs};
use vocml_core::model::BackboneKind;
use vocml_core::progress::Progress;
use vocml_core::run::options::TrainOptions;
use vocml_core::run::RunTarget;
use vocml_core::train::history::{EpochRecord, TrainObserver};
use vocml_core::train::{train, TrainConfig, TrainOutcome};

/// Train an image classifier by transfer learning or from scratch.
///
/// Transfer learning: frozen ImageNet backbone (BatchNorm in eval mode) -> global average
/// pool -> Linear(128) -> ReLU -> Dropout(0.2) -> Linear(C); backbone features are computed
/// once and cached (with augmented views), so epochs train only the head; --fine-tune-blocks
/// then trains the last blocks too. From-scratch models (small_cnn, alexnet_like,
/// smaller_vggnet) train every layer, at any input size. Adam; early stopping on the
/// validation metric (best epoch restored). The task comes from the data (voc-prep):
/// multilabel (sigmoid, binary cross-entropy, early stopping on macro-F1), multiclass
/// (softmax, cross-entropy) or multihead (a softmax per head, cross-entropy summed over heads;
/// both stop early on accuracy). Each model's run
/// is written to runs/<YYYYmmdd-HHMMSS>_<model>/ (config.json, history.csv, metrics.json,
/// classes.json, model.safetensors, training_curves.png), renamed into place only when
/// complete; --run-dir DIR writes it to exactly DIR instead (for DVC or Make).
///
/// A recipe file (`--config configs/voc4-reference.toml`: TOML keys are these long flags)
/// sets options; flags given on the command line override it. A run records its options
/// under the same names, so `--config runs/<run>/config.json` trains that run again.
///
/// Examples:
///   train --data processed_data
///   train --config configs/voc4-reference.toml --epochs 20
///   train --data processed_data --models efficientnet_lite0,mobilenet_v2 --weights-dir weights/
///   train --data processed_data --model mobilenet_v2 --weights mnv2.safetensors --fine-tune-blocks 3
///   train --data processed_shapes --models small_cnn,alexnet_like --epochs 30 --scheduler plateau
#[derive(Parser, Debug)]
#[command(name = "train", version, long_about, verbatim_doc_comment, args_override_self = true)]
struct Cli {
    /// Recipe file (TOML; keys are long flag names), or a run's config.json to train that run
    /// again; command-line flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: TrainOptions,
    /// Several backbones, trained one after another, with a comparison table.
    #[arg(long, value_enum, value_name = "A,B,..", value_delimiter = ',', num_args = 1.., hide_possible_values = true)]
    models: Option<Vec<BackboneKind>>,
    /// With --models: a directory holding <model>.safetensors for each model.
    #[arg(long, value_name = "DIR")]
    weights_dir: Option<PathBuf>,
    /// Write the run to exactly DIR instead of a new <runs-dir>/<timestamp>_<model>/ (for
    /// pipeline tools that declare outputs in advance): a run or an empty directory already
    /// there is replaced atomically, anything else is refused.
    #[arg(long, value_name = "DIR", conflicts_with = "models")]
    run_dir: Option<PathBuf>,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    tracking: TrackingArgs,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    quiet: bool,
}

/// Progress bar plus one line per epoch on stderr.
struct Observer {
    pb: Bar,
    quiet: bool,
}

impl Progress for Observer {
    fn phase(&self, what: &str, total: u64) {
        self.pb.phase(what, total);
    }
    fn done(&self, n: u64, loss: Option<f64>) {
        self.pb.done(n, loss);
    }
    fn note(&self, line: &str) {
        if !self.quiet {
            self.pb.note(line);
        }
    }
}

impl TrainObserver for Observer {
    fn epoch(&self, r: &EpochRecord) {
        self.note(&format!(
            "epoch {:>2} {:<9} train_loss {:.4}  val_loss {:.4}  val_macro_f1 {:.4}  val_micro_f1 {:.4}  val_acc {:.4}  {:.1}s",
            r.epoch, r.phase, r.train_loss, r.val_loss, r.val_macro_f1, r.val_micro_f1, r.val_accuracy, r.seconds
        ));
    }
}

/// The options of each model of the command line: one per --models entry (with its
/// checkpoint from --weights-dir and its --label-smoothing value), or the one --model.
fn per_model_options(cli: &Cli) -> Result<Vec<TrainOptions>> {
    let Some(models) = &cli.models else { return Ok(vec![cli.options.clone()]) };
    if let Some(w) = &cli.options.weights {
        bail!("--weights {} names one checkpoint; with --models use --weights-dir DIR (DIR/<model>.safetensors)", w.display());
    }
    let smoothing = match cli.options.label_smoothing.len() {
        0 => vec![Vec::new(); models.len()],
        1 => vec![cli.options.label_smoothing.clone(); models.len()],
        n if n == models.len() => cli.options.label_smoothing.iter().map(|e| vec![*e]).collect(),
        n => bail!("--label-smoothing: {n} values for {} model(s); give one value, or one per --models entry", models.len()),
    };
    Ok(models
        .iter()
        .zip(smoothing)
        .map(|(&model, label_smoothing)| TrainOptions {
            model,
            weights: cli.weights_dir.as_ref().map(|d| d.join(format!("{}.safetensors", model.name()))).filter(|p| p.exists()),
            label_smoothing,
            ..cli.options.clone()
        })
        .collect())
}

fn main() -> ExitCode {
    vocml::tool_main_with_args("train", args_with_config(&Cli::command(), std::env::args_os().collect()), run)
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.compute.resolve()?;
    if let Some(dir) = cli.weights_dir.as_ref().filter(|d| !d.is_dir()) {
        bail!("--weights-dir {}: no such directory", dir.display());
    }
    // Every model's options are checked before anything else happens.
    let options = per_model_options(&cli).map_err(usage)?;
    let mut configs = options.into_iter().map(|o| TrainConfig::new(o, device).map_err(usage)).collect::<Result<Vec<_>>>()?;
    for cfg in &mut configs {
        cfg.target = RunTarget::new(cli.run_dir.as_deref(), &cfg.runs_dir);
        cfg.target.check(&[(&cfg.data, "--data")]).map_err(usage)?;
    }
    if !cli.quiet {
        eprintln!("train: device {}", if device == tch::Device::Cpu { "cpu".to_string() } else { format!("{device:?}") });
    }
    let tracker = cli.tracking.tracker("train")?;
    let cancel = interrupt_flag();
    let mut outcomes: Vec<(BackboneKind, TrainOutcome)> = Vec::new();
    for cfg in &configs {
        let kind = cfg.model;
        let observer = Observer { pb: progress_bar(kind.name(), cli.quiet), quiet: cli.quiet };
        let out = train(cfg, device, &observer, &cancel)?;
        observer.pb.finish_and_clear();
        println!(
            "train: {} -> {}  best epoch {}  val macro-F1 {:.4}  micro-F1 {:.4}  accuracy {:.4}  ({}, {:.1}s)",
            kind.name(),
            out.run_dir.display(),
            out.best_epoch,
            out.metrics.macro_f1,
            out.metrics.micro_f1,
            out.metrics.subset_accuracy,
            out.device,
            out.seconds
        );
        if let Some(t) = &tracker {
            if let Some(r) = t.settle("the run", t.log_run(&out.run_dir))? {
                println!(
                    "train: logged to MLflow run {} (model {} version {})",
                    r.run_id,
                    r.registered_model.unwrap_or_default(),
                    r.model_version.unwrap_or_default()
                );
            }
        }
        outcomes.push((kind, out));
    }
    if outcomes.len() > 1 {
        println!("\n| model | val macro-F1 | val micro-F1 | accuracy (exact match) | best epoch | seconds | run |");
        println!("|---|---|---|---|---|---|---|");
        for (k, o) in &outcomes {
            println!(
                "| {} | {:.4} | {:.4} | {:.4} | {} | {:.1} | {} |",
                k.name(),
                o.metrics.macro_f1,
                o.metrics.micro_f1,
                o.metrics.subset_accuracy,
                o.best_epoch,
                o.seconds,
                o.run_dir.display()
            );
        }
    }
    Ok(())
}
