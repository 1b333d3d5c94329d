//! `serve`: the prediction service and web page.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vocml::{ComputeArgs, DecodeArgs};
use vocml_core::run::options::RetrainOptions;
use vocml_core::run::recipe::Recipe;
use vocml_serve::follow::Target;
use vocml_serve::label_studio::config::ClassMap;
use vocml_serve::label_studio::fetch::ImageSource;
use vocml_serve::label_studio::LabelStudioOptions;
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
/// POST /predict (multipart `files`), POST /retrain, GET /jobs, GET /jobs/{id}, the Label
/// Studio ML backend under /label-studio, and the Open Inference
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
    /// Runs directory: its `best` is served and followed; retrain jobs write here (`--runs` is
    /// the same flag).
    #[arg(long = "runs-dir", visible_alias = "runs", value_name = "DIR", default_value = "runs")]
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
    /// Most pixels (width x height, read from the headers before decoding) the images of one
    /// request may hold together.
    #[arg(long, default_value_t = 1_000_000_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_request_pixels: u64,
    /// Requests waiting for inference; beyond it the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    queue: u64,
    /// How often runs/best is checked for a new model, in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=600_000))]
    poll_ms: u64,
    /// Retrain jobs: a retrain recipe (TOML keyed by retrain's long flags) [default: the
    /// small-update recipe shipped as configs/retrain-gentle.toml]; the parent, the
    /// corrections and the folders stay the service's.
    #[arg(long, value_name = "FILE")]
    retrain_config: Option<PathBuf>,
    /// Retrain jobs: epochs (as `retrain --epochs`), over the recipe's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    retrain_epochs: Option<u64>,
    /// Retrain jobs: copies of each corrected image per epoch (as `retrain --replicate`),
    /// over the recipe's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    retrain_replicate: Option<u64>,
    /// Retrain jobs: promote the new run when its test-split mAP change is at least minus
    /// this (as `retrain --tolerance`), over the recipe's.
    #[arg(long, value_name = "D")]
    retrain_tolerance: Option<f64>,
    /// A folder of images to label: GET /queue (and the page's "Review these") lists the ones
    /// the served model is least sure about and nobody has corrected yet.
    #[arg(long, value_name = "DIR")]
    inbox: Option<PathBuf>,
    /// Label Studio's base URL (e.g. http://127.0.0.1:8080): task images on its paths and
    /// host are fetched from it with the API key. Point Label Studio's ML backend at
    /// http://HOST:PORT/label-studio.
    #[arg(long, value_name = "URL")]
    label_studio_url: Option<String>,
    /// File holding Label Studio's API key (legacy token), sent only to --label-studio-url;
    /// default: the LABEL_STUDIO_API_KEY environment variable.
    #[arg(long, value_name = "FILE")]
    label_studio_api_key_file: Option<PathBuf>,
    /// Read Label Studio local files (/data/local-files/?d=PATH) from this folder (its
    /// LOCAL_FILES_DOCUMENT_ROOT) instead of fetching them.
    #[arg(long, value_name = "DIR")]
    label_studio_files_root: Option<PathBuf>,
    /// Also fetch task images from hosts other than Label Studio's (without the key).
    #[arg(long)]
    label_studio_allow_urls: bool,
    /// A Label Studio choice that names a model class differently, CHOICE=CLASS (repeatable).
    #[arg(long, value_name = "CHOICE=CLASS", value_parser = choice_map)]
    label_studio_map: Vec<(String, String)>,
    /// Annotations (webhook events) that start a retrain job; START_TRAINING starts one
    /// with fewer.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    label_studio_train_after: u64,
    #[command(flatten)]
    decode: DecodeArgs,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    engine: vocml::EngineArgs,
}

/// `CHOICE=CLASS`.
fn choice_map(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((choice, class)) if !choice.is_empty() && !class.is_empty() => Ok((choice.to_string(), class.to_string())),
        _ => Err("expected CHOICE=CLASS, e.g. couch=sofa".into()),
    }
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

/// The recipe retrain jobs follow unless --retrain-config names another: the small update
/// that `make loop` measured learning from corrections (docs/loop.md).
const DEFAULT_RETRAIN_RECIPE: &str = include_str!("../../../configs/retrain-gentle.toml");

/// Retrain jobs' options: the --retrain-config recipe (default: the shipped small-update
/// recipe) with the --retrain-* flags over it; checked before the service starts (bad values
/// exit 2).
fn retrain_options(cli: &Cli) -> Result<RetrainOptions> {
    let recipe = match &cli.retrain_config {
        Some(path) => Recipe::read(path, "retrain").map_err(|e| vocml::usage(e.context("--retrain-config")))?,
        None => Recipe::parse_toml(DEFAULT_RETRAIN_RECIPE, "the shipped configs/retrain-gentle.toml")?,
    };
    if let Some(note) = recipe.note() {
        eprintln!("serve: note: {note}");
    }
    let mut options = recipe.retrain_options(JOB_KEYS).map_err(|e| vocml::usage(e.context("--retrain-config")))?;
    if let Some(n) = cli.retrain_epochs {
        options.epochs = n as usize;
    }
    if let Some(n) = cli.retrain_replicate {
        options.replicate = n as usize;
    }
    if let Some(d) = cli.retrain_tolerance {
        options.tolerance = d;
    }
    options.validate().map_err(|e| vocml::usage(anyhow::anyhow!("--retrain-{e}")))?;
    Ok(options)
}

/// The retrain options serve sets for each job: a recipe may not.
const JOB_KEYS: &[&str] = &["from", "corrections", "data", "runs_dir", "feedback_dir", "force"];

fn run(cli: Cli) -> Result<()> {
    let retrain = retrain_options(&cli)?;
    let device = cli.compute.resolve()?;
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
    let api_key = match &cli.label_studio_api_key_file {
        Some(f) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("--label-studio-api-key-file {}", f.display()))?.trim().to_string())
        }
        None => std::env::var("LABEL_STUDIO_API_KEY").ok(),
    }
    .filter(|k| !k.is_empty());
    if let Some(url) = cli.label_studio_url.as_ref().filter(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
        return Err(vocml::usage(anyhow::anyhow!("--label-studio-url {url}: expected http://HOST:PORT or https://HOST")));
    }
    if let Some(dir) = cli.label_studio_files_root.as_ref().filter(|d| !d.is_dir()) {
        bail!("--label-studio-files-root {}: no such directory", dir.display());
    }
    let label_studio = LabelStudioOptions {
        images: ImageSource {
            host: cli.label_studio_url,
            api_key,
            files_root: cli.label_studio_files_root,
            allow_urls: cli.label_studio_allow_urls,
            max_bytes: (cli.max_body_mb as usize) << 20,
        },
        map: ClassMap(cli.label_studio_map.into_iter().collect()),
        train_after: cli.label_studio_train_after as usize,
    };
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
        max_request_pixels: cli.max_request_pixels,
        max_image_pixels: cli.decode.max_image_pixels,
        queue: cli.queue as usize,
        device,
        runtime: cli.engine.engine,
        poll: Duration::from_millis(cli.poll_ms),
        retrain,
        inbox: cli.inbox,
        label_studio,
    })
}
