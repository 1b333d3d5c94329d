//! `vocml-bench`: training throughput of one epoch on random images, for `make bench`.

use anyhow::Result;
use clap::Parser;
use std::process::ExitCode;
use vocml::ComputeArgs;
use vocml_core::bench::{train_epoch, EpochCase};
use vocml_core::model::BackboneKind;
use vocml_core::train::step::SpeedOptions;

/// Time one training epoch of the real training step on random images.
///
/// The step is the one `train` runs: uint8 pixels -> [0, 1] -> augmentation (rotation,
/// flip, brightness) -> normalisation -> backbone (BatchNorm frozen) -> head -> BCE ->
/// multi-tensor Adam. `frozen` trains the head only (backbone forward without gradients);
/// `fine-tune` trains every backbone parameter too. Weights are random (speed does not
/// depend on them). Prints one JSON object; `benches/peer/train_step_torch.py` is the
/// PyTorch counterpart with the same flags.
///
/// Example:
///   vocml-bench --model mobilenet_v2,resnet50 --mode frozen,fine-tune --batch-size 16,64 --images 512 --device cuda --channels-last
#[derive(Parser, Debug)]
#[command(name = "vocml-bench", version, long_about, verbatim_doc_comment)]
struct Cli {
    /// Backbones (comma-separated list: every combination of the lists is run).
    #[arg(
        long,
        value_enum,
        default_value = "efficientnet_lite0",
        value_name = "A,B,..",
        value_delimiter = ',',
        hide_possible_values = true
    )]
    model: Vec<BackboneKind>,
    #[arg(long, value_enum, default_value = "frozen", value_delimiter = ',')]
    mode: Vec<Mode>,
    #[arg(long, default_value = "16", value_name = "N,..", value_delimiter = ',')]
    batch_size: Vec<usize>,
    /// Images in each timed epoch, times the batch size / 16 (so larger batches run as many
    /// steps).
    #[arg(long, default_value_t = 256, value_name = "N")]
    images: usize,
    /// Untimed steps before the epoch.
    #[arg(long, default_value_t = 3, value_name = "N")]
    warmup: usize,
    /// Square input size in pixels (32 to 1024).
    #[arg(long, default_value_t = 224, value_name = "PX", value_parser = clap::value_parser!(i64).range(32..=1024))]
    image_size: i64,
    #[arg(long)]
    channels_last: bool,
    #[arg(long)]
    bf16: bool,
    #[command(flatten)]
    compute: ComputeArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Frozen,
    FineTune,
}

fn main() -> ExitCode {
    vocml::tool_main("vocml-bench", run)
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.compute.resolve()?;
    for &model in &cli.model {
        for &mode in &cli.mode {
            for &batch_size in &cli.batch_size {
                let case = EpochCase {
                    model,
                    fine_tune: mode == Mode::FineTune,
                    batch_size,
                    images: cli.images * batch_size.max(16) / 16,
                    warmup_steps: cli.warmup,
                    image_size: cli.image_size,
                    classes: 4,
                    speed: SpeedOptions { channels_last: cli.channels_last, bf16: cli.bf16 },
                };
                let t = train_epoch(&case, device)?;
                let out = serde_json::json!({"tool": "vocml", "case": case, "device": format!("{device:?}"), "timing": t});
                println!("{out}");
            }
        }
    }
    Ok(())
}
