//! `export`: a trained run as an ONNX file.

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use vocml::{interrupt_flag, TtaArgs};
use vocml_core::export::{export_onnx, ExportOptions, InputKind, Int8Options, INT8_FILE, PARITY_TOLERANCE};
use vocml_core::infer::{LoadOptions, Predictor};

/// Export a trained run (or a saved ensemble) to ONNX, for ONNX Runtime, OpenVINO, TensorRT,
/// Triton's ONNX backend or onnxruntime-web.
///
/// The graph is the forward `predict` runs: backbone, head and its activation (sigmoid per
/// class for multilabel, softmax per head for multiclass/multihead), ensemble members
/// averaged, flip TTA when the run uses it. Input `images`, output `probabilities`
/// [batch, classes], a dynamic batch axis, opset 17 (18 for multi-scale runs), standard
/// operators only. The run's contract is in the file's metadata (vocml.classes, vocml.task,
/// vocml.label_groups, vocml.thresholds, vocml.image_size, vocml.resize, vocml.mean,
/// vocml.std, vocml.input, ...).
/// Default input: float32 [batch, 3, H, W] normalised with vocml.mean / vocml.std;
/// --preprocess takes uint8 [batch, H, W, 3] RGB pixels and normalises inside the graph.
///
/// Needs the project's Python with torch and onnx (`make setup` installs them; VOCML_PYTHON
/// names another). The file passes onnx.checker's full check, and ONNX Runtime (when
/// installed) must reproduce libtorch's probabilities to 1e-4 on check images, or nothing is
/// written. The file appears complete or not at all.
///
/// --int8 then quantises that file with ONNX Runtime's static quantiser (QDQ, int8 weights
/// per channel, uint8 activations calibrated on 200 of the run's training images) and scores
/// the validation split with both files: it is written (default RUN/model.int8.onnx; predict,
/// evaluate and serve keep running the fp32 model.onnx) only when it loses at most
/// --max-map-drop mAP.
///
/// Examples:
///   export --run runs/best --out model.onnx
///   export --run runs/20261123-101500_efficientnet_lite0 --preprocess --out lite0-uint8.onnx
///   export --run models:/vocml-multilabel-person-chair-dog-sofa@champion --out champion.onnx
///   export --run runs/best --int8
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
    /// serve then run with ONNX Runtime; model.int8.onnx with --int8].
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Take uint8 [batch, H, W, 3] RGB pixels and scale and normalise them inside the graph.
    #[arg(long)]
    preprocess: bool,
    /// Quantise to int8 (static, calibrated on the run's training images) and check its
    /// validation mAP against fp32.
    #[arg(long)]
    int8: bool,
    /// Prepared data for --int8: training images to calibrate on, the validation split to
    /// check [default: the run's own data, as its config records it].
    #[arg(long, value_name = "DIR", requires = "int8")]
    data: Option<PathBuf>,
    /// Largest validation mAP --int8 may lose against fp32, or nothing is written.
    #[arg(long, value_name = "MAP", default_value_t = 0.005, requires = "int8", value_parser = map_drop)]
    max_map_drop: f64,
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

fn map_drop(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s} is not an mAP difference between 0 and 1")),
    }
}

fn main() -> ExitCode {
    vocml::tool_main("export", run)
}

fn run(cli: Cli) -> Result<()> {
    let FormatArg::Onnx = cli.format;
    tch::set_num_threads(cli.threads as i32);
    let cancel = interrupt_flag();
    let run_dir = vocml::resolve_run(&cli.run, cli.mlflow.as_deref())?;
    // What is exported is the libtorch model, whatever the run already holds.
    let load = LoadOptions { tta: cli.tta.choice(), ..LoadOptions::torch(tch::Device::Cpu) };
    let predictor = Predictor::load(&run_dir, &load)?;
    let int8 = cli.int8.then(|| Int8Options {
        data: cli.data.clone().unwrap_or_else(|| predictor.data_dir().to_path_buf()),
        max_map_drop: cli.max_map_drop,
    });
    let default_name = if cli.int8 { INT8_FILE } else { vocml_core::run::ONNX_FILE };
    let out = cli.out.clone().unwrap_or_else(|| predictor.run_dir.join(default_name));
    let opts = ExportOptions {
        input: if cli.preprocess { InputKind::Pixels } else { InputKind::Normalized },
        threads: cli.threads as usize,
        int8,
    };
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
        report.opset,
        opts.input.describe()
    );
    println!("operators: {}", report.operators.join(" "));
    match (report.max_abs_diff, &report.onnxruntime) {
        (Some(d), Some(v)) => {
            println!("checked: onnx.checker (full); ONNX Runtime {v} matches libtorch, max |diff| {d:.1e} (<= {PARITY_TOLERANCE:.0e})")
        }
        _ => println!("checked: onnx.checker (full); ONNX Runtime parity skipped (onnxruntime not installed)"),
    }
    if let Some(q) = &report.int8 {
        println!(
            "int8: validation mAP {:.4} (fp32 {:.4}, {:+.4}) on {} images, max |p - p_fp32| {:.3}; {:.2} ms/image vs {:.2} fp32 ({:.2}x); calibrated on {} training images",
            q.map_int8,
            q.map_fp32,
            q.map_int8 - q.map_fp32,
            q.val_images,
            q.max_abs_diff,
            q.ms_int8,
            q.ms_fp32,
            q.ms_fp32 / q.ms_int8,
            q.calibration_images
        );
    }
    Ok(())
}
