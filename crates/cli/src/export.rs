//! `export`: a trained run as an ONNX file.

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use vocml::{interrupt_flag, TtaArgs};
use vocml_core::export::{export_onnx, ExportOptions, InputKind, PARITY_TOLERANCE};
use vocml_core::run::predictor::Predictor;

/// Export a trained run (or a saved ensemble) to ONNX, for ONNX Runtime, OpenVINO, TensorRT,
/// Triton's ONNX backend or onnxruntime-web.
///
/// The graph is the forward `predict` runs: backbone, head and its activation (sigmoid per
/// class for multilabel, softmax per head for multiclass/multihead), ensemble members
/// averaged, flip TTA when the run uses it. Input `images`, output `probabilities`
/// [batch, classes], a dynamic batch axis, opset 17, standard operators only. The run's
/// contract is in the file's metadata (vocml.classes, vocml.task, vocml.label_groups,
/// vocml.thresholds, vocml.image_size, vocml.resize, vocml.mean, vocml.std, vocml.input, ...).
/// Default input: float32 [batch, 3, H, W] normalised with vocml.mean / vocml.std;
/// --preprocess takes uint8 [batch, H, W, 3] RGB pixels and normalises inside the graph.
///
/// Needs the project's Python with torch and onnx (`make setup` installs them; VOCML_PYTHON
/// names another). The file passes onnx.checker's full check, and ONNX Runtime (when
/// installed) must reproduce libtorch's probabilities to 1e-4 on check images, or nothing is
/// written. The file appears complete or not at all.
///
/// Examples:
///   export --run runs/best --out model.onnx
///   export --run runs/20261123-101500_efficientnet_lite0 --preprocess --out lite0-uint8.onnx
///   export --run models:/vocml-multilabel-person-chair-dog-sofa@champion --out champion.onnx
#[derive(Parser, Debug)]
#[command(name = "export", version, long_about, verbatim_doc_comment, args_override_self = true)]
struct Cli {
    /// Run directory (or saved ensemble, or `models:/NAME@ALIAS` / `models:/NAME/N` with
    /// --mlflow).
    #[arg(long, value_name = "DIR", default_value = "runs/best")]
    run: PathBuf,
    /// MLflow tracking server that resolves `--run models:/...`.
    #[arg(long = "mlflow", value_name = "URI", env = "MLFLOW_TRACKING_URI")]
    mlflow: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Onnx)]
    format: FormatArg,
    /// File to write [default: model.onnx in the run directory, which predict, evaluate and
    /// serve then run with ONNX Runtime].
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Take uint8 [batch, H, W, 3] RGB pixels and scale and normalise them inside the graph.
    #[arg(long)]
    preprocess: bool,
    #[command(flatten)]
    tta: TtaArgs,
    /// CPU threads for tracing and the ONNX Runtime check.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Print only the written path.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Onnx,
}

fn main() -> ExitCode {
    vocml::tool_main("export", run)
}

fn run(cli: Cli) -> Result<()> {
    let FormatArg::Onnx = cli.format;
    tch::set_num_threads(cli.threads as i32);
    let cancel = interrupt_flag();
    let run_dir = vocml::resolve_run(&cli.run, cli.mlflow.as_deref())?;
    let predictor = Predictor::load(&run_dir, tch::Device::Cpu, cli.tta.choice())?;
    let out = cli.out.clone().unwrap_or_else(|| predictor.run_dir.join(vocml_core::run::ONNX_FILE));
    let opts =
        ExportOptions { input: if cli.preprocess { InputKind::Pixels } else { InputKind::Normalized }, threads: cli.threads as usize };
    let report = export_onnx(&predictor, &out, &opts, &cancel).with_context(|| format!("exporting {}", cli.run.display()))?;
    if cli.quiet {
        println!("{}", report.path.display());
        return Ok(());
    }
    println!(
        "export: {} -> {} ({:.1} MB, {} nodes, opset {}; input {})",
        predictor.name,
        report.path.display(),
        report.bytes as f64 / 1e6,
        report.nodes,
        vocml_core::export::OPSET,
        opts.input.describe()
    );
    println!("operators: {}", report.operators.join(" "));
    match (report.max_abs_diff, &report.onnxruntime) {
        (Some(d), Some(v)) => {
            println!("checked: onnx.checker (full); ONNX Runtime {v} matches libtorch, max |diff| {d:.1e} (<= {PARITY_TOLERANCE:.0e})")
        }
        _ => println!("checked: onnx.checker (full); ONNX Runtime parity skipped (onnxruntime not installed)"),
    }
    Ok(())
}
