//! `serve`: the prediction service and web page.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vocml::{ComputeArgs, DecodeArgs};
use vocml_core::run::options::RetrainOptions;
use vocml_serve::follow::Target;
use vocml_serve::ServeConfig;
use vocml_track::registry::ModelUri;

/// Serve a trained model over HTTP, with a web page to try it, correct it and retrain it.
///
/// Serves runs/best (or --run) and follows it: when a retrain promotes a run, or `evaluate`
/// or `retrain` in a shell moves runs/best, the new model is loaded beside the old one and
/// swapped in between batches; requests never fail during a swap, and a run that fails to
/// load is refused (the old one keeps serving). Concurrent requests share forward passes
/// (--max-batch, --max-wait-ms). SIGTERM or Ctrl-C drains in-flight requests and exits 0.
///
/// Endpoints: GET / (the page), GET /health, GET /ready, GET /model, GET /metrics,
/// POST /predict (multipart `files`), POST /retrain, GET /jobs/{id}, and the Open Inference
/// Protocol v2 under /v2 (model name `vocml` unless --model-name; JSON and binary tensor
/// data, classification), also over gRPC with --grpc-addr (Triton's and KServe's clients).
///
/// Examples:
///   serve                                   # runs/best on http://127.0.0.1:8000
///   serve --addr 0.0.0.0:8080 --token-file /run/secrets/vocml-token
///   serve --grpc-addr 127.0.0.1:8001        # also the OIP gRPC service
///   serve --addr 0.0.0.0:8080 --grpc-port 8081 --model_dir /mnt/models --model_name voc   # KServe
///   curl -F files=@photo.jpg http://127.0.0.1:8000/predict
#[derive(Parser, Debug)]
#[command(name = "serve", version, long_about, verbatim_doc_comment, args_override_self = true)]
struct Cli {
    /// Runs directory: its `best` is served and followed; retrain jobs write here.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    runs: PathBuf,
    /// Serve this run only (not followed); or a registered model version in MLflow:
    /// `models:/NAME@ALIAS` (followed: a moved alias is swapped in) or `models:/NAME/N`.
    #[arg(long, value_name = "DIR")]
    run: Option<PathBuf>,
    /// MLflow tracking server that resolves `--run models:/...`.
    #[arg(long = "mlflow", value_name = "URI", env = "MLFLOW_TRACKING_URI")]
    mlflow: Option<String>,
    /// Address to listen on (loopback by default; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Listen on this port of --addr's host instead (KServe's --http_port).
    #[arg(long, alias = "http_port", value_name = "PORT")]
    http_port: Option<u16>,
    /// Also serve the Open Inference Protocol over gRPC at this address.
    #[arg(long, value_name = "ADDR")]
    grpc_addr: Option<SocketAddr>,
    /// Serve gRPC on this port of --addr's host (KServe's --grpc_port; --grpc-addr's port if
    /// both are given).
    #[arg(long, alias = "grpc_port", value_name = "PORT")]
    grpc_port: Option<u16>,
    /// The name the model answers to on the inference protocols (KServe's --model_name),
    /// besides its run's name.
    #[arg(long, alias = "model_name", value_name = "NAME", default_value = "vocml", value_parser = model_name)]
    model_name: String,
    /// What KServe mounts (--model_dir, e.g. /mnt/models): a run directory (served as
    /// --run), a runs directory with a `best` link (served and followed as --runs), or a
    /// `models:/` URI.
    #[arg(long, alias = "model_dir", value_name = "DIR", conflicts_with = "run")]
    model_dir: Option<PathBuf>,
    /// File holding the bearer token that /retrain and /jobs require.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Most images in one forward pass.
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_batch: u64,
    /// Longest wait for more requests to fill a batch, in milliseconds.
    #[arg(long, default_value_t = 5, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=10_000))]
    max_wait_ms: u64,
    /// Largest request body, in MB.
    #[arg(long, default_value_t = 32, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_body_mb: u64,
    /// Most images in one request.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_files: u64,
    /// Requests waiting for inference; beyond it the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    queue: u64,
    /// How often runs/best is checked for a new model, in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=600_000))]
    poll_ms: u64,
    /// Retrain jobs: epochs (as `retrain --epochs`).
    #[arg(long, default_value_t = RetrainOptions::default().epochs as u64, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    retrain_epochs: u64,
    /// Retrain jobs: copies of each corrected image per epoch (as `retrain --replicate`).
    #[arg(long, default_value_t = RetrainOptions::default().replicate as u64, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    retrain_replicate: u64,
    /// Retrain jobs: promote the new run unless the 95% interval of its validation mAP change
    /// reaches below minus this (as `retrain --tolerance`).
    #[arg(long, default_value_t = RetrainOptions::default().tolerance, value_name = "D")]
    retrain_tolerance: f64,
    /// A folder of images to label: GET /queue (and the page's "Review these") lists the ones
    /// the served model is least sure about and nobody has corrected yet.
    #[arg(long, value_name = "DIR")]
    inbox: Option<PathBuf>,
    #[command(flatten)]
    decode: DecodeArgs,
    #[command(flatten)]
    compute: ComputeArgs,
}

/// A model name as it appears in a URL path: not empty, no '/'.
fn model_name(s: &str) -> Result<String, String> {
    match s.is_empty() || s.contains(['/', '?', '#']) {
        true => Err("expected a name without '/', '?' or '#'".into()),
        false => Ok(s.to_string()),
    }
}

fn main() -> ExitCode {
    vocml::tool_main("serve", run)
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.compute.resolve()?;
    cli.decode.apply();
    let token = match &cli.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f).with_context(|| format!("--token-file {}", f.display()))?.trim().to_string();
            if t.is_empty() {
                bail!("--token-file {}: the file is empty", f.display());
            }
            Some(t)
        }
        None => None,
    };
    let (runs, run) = match cli.model_dir {
        None => (cli.runs, cli.run),
        Some(d) if d.join(vocml_core::run::BEST_LINK).exists() => (d, None),
        Some(d) if d.join("config.json").is_file() || d.to_string_lossy().starts_with("models:/") => (cli.runs, Some(d)),
        Some(d) => bail!("--model-dir {}: neither a run directory (config.json) nor a runs directory (best)", d.display()),
    };
    let mut addr = cli.addr;
    if let Some(port) = cli.http_port {
        addr.set_port(port);
    }
    let grpc_addr = match (cli.grpc_addr, cli.grpc_port) {
        (Some(mut a), Some(port)) => {
            a.set_port(port);
            Some(a)
        }
        (None, Some(port)) => Some(SocketAddr::new(addr.ip(), port)),
        (a, None) => a,
    };
    let target = match &run {
        None => Target::Local { path: runs.join(vocml_core::run::BEST_LINK), follow: true },
        Some(r) => match ModelUri::parse(&r.to_string_lossy())? {
            Some(model) => {
                let tracking_uri =
                    cli.mlflow.clone().with_context(|| format!("--run {}: name the MLflow server with --mlflow URI", r.display()))?;
                Target::Registry { tracking_uri, model }
            }
            None => {
                vocml_core::run::config::RunConfig::read(r).with_context(|| format!("--run {}", r.display()))?;
                Target::Local { path: r.clone(), follow: false }
            }
        },
    };
    if let Some(dir) = cli.inbox.as_ref().filter(|d| !d.is_dir()) {
        bail!("--inbox {}: no such directory", dir.display());
    }
    let retrain = RetrainOptions {
        epochs: cli.retrain_epochs as usize,
        replicate: cli.retrain_replicate as usize,
        tolerance: cli.retrain_tolerance,
        ..RetrainOptions::default()
    };
    retrain.validate().map_err(|e| vocml::usage(anyhow::anyhow!("--retrain-{e}")))?;
    vocml_serve::run(ServeConfig {
        runs_dir: runs,
        target,
        addr,
        grpc_addr,
        model_name: cli.model_name,
        token,
        max_batch: cli.max_batch as usize,
        max_wait: Duration::from_millis(cli.max_wait_ms),
        max_body_bytes: (cli.max_body_mb as usize) << 20,
        max_files: cli.max_files as usize,
        queue: cli.queue as usize,
        device,
        poll: Duration::from_millis(cli.poll_ms),
        retrain,
        inbox: cli.inbox,
    })
}
