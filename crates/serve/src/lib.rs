//! `serve`: the prediction service on the same core as the batch tools. An axum server
//! (tokio) answers on the async threads; images are decoded on the blocking pool and scored
//! by one inference thread that batches concurrent requests (`engine`); a follower thread
//! loads `runs/best` whenever it moves and swaps it in between batches (`follow`); retrain
//! jobs run the existing `retrain` on a worker thread (`jobs`).

pub mod decode_gate;
pub mod engine;
pub mod error;
pub mod follow;
pub mod inbox;
pub mod jobs;
pub mod journal;
pub mod label_studio;
pub mod labelling;
pub mod metrics;
pub mod oip;
pub mod routes;
pub mod scoring;
pub mod state;
pub mod uploads;

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Everything `serve` is told.
pub struct ServeConfig {
    pub runs_dir: PathBuf,
    /// What to serve: `runs_dir/best` (followed), a fixed run, or a registry version.
    pub target: follow::Target,
    pub addr: SocketAddr,
    /// Where the Open Inference Protocol's gRPC service listens, if anywhere.
    pub grpc_addr: Option<SocketAddr>,
    /// The name the model answers to on the inference protocols (besides its run's name).
    pub model_name: String,
    /// Bearer token required by `/retrain` and `/jobs`.
    pub token: Option<String>,
    pub max_batch: usize,
    pub max_wait: Duration,
    pub max_body_bytes: usize,
    pub max_files: usize,
    /// Most pixels one request's images may hold (read from their headers).
    pub max_request_pixels: u64,
    /// Largest image decoded (width x height, read from its header).
    pub max_image_pixels: u64,
    pub queue: usize,
    pub device: tch::Device,
    /// What scores: libtorch, or ONNX Runtime on the run's exported file (`--engine`).
    pub runtime: vocml_core::infer::Engine,
    /// How often `runs/best` is checked.
    pub poll: Duration,
    pub retrain: vocml_core::run::options::RetrainOptions,
    /// A folder whose images `GET /queue` ranks for review.
    pub inbox: Option<PathBuf>,
    /// The Label Studio ML backend's options.
    pub label_studio: label_studio::LabelStudioOptions,
}

/// Runs the service until SIGTERM or Ctrl-C, then drains in-flight requests, stops a running
/// retrain job (it writes nothing) and returns.
pub fn run(cfg: ServeConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(serve(cfg))
}

async fn serve(cfg: ServeConfig) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.addr).await.with_context(|| format!("cannot listen on {}", cfg.addr))?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(metrics::Metrics::default());
    let engine = engine::Engine::start(cfg.max_batch, cfg.max_wait, cfg.queue, cfg.max_image_pixels, metrics.clone());
    let follow_state = Arc::new(follow::FollowState::default());
    let stop = Arc::new(AtomicBool::new(false));
    let follower = follow::Follower { target: cfg.target, device: cfg.device, runtime: cfg.runtime, poll: cfg.poll }.spawn(
        engine.clone(),
        follow_state.clone(),
        stop.clone(),
    );
    let state = Arc::new(state::AppState {
        engine,
        follow: follow_state,
        jobs: Arc::new(jobs::Jobs::open(&cfg.runs_dir)),
        uploads: uploads::Uploads::new(1024, 512 << 20),
        metrics,
        token: cfg.token.clone(),
        max_files: cfg.max_files,
        runs_dir: cfg.runs_dir.clone(),
        retrain: cfg.retrain.clone(),
        device: cfg.device,
        decoders: decode_gate::DecodeGate::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        max_request_pixels: cfg.max_request_pixels,
        max_image_pixels: cfg.max_image_pixels,
        fetchers: Arc::new(tokio::sync::Semaphore::new(labelling::MAX_FETCHES)),
        inbox: cfg.inbox.clone().map(inbox::Inbox::new),
        model_name: cfg.model_name.clone(),
        background_batch: 1,
        label_studio: label_studio::LabelStudio::new(cfg.label_studio.clone(), &cfg.runs_dir),
    });
    labelling::sync::spawn(state.clone());
    let app = routes::router(state.clone(), cfg.max_body_bytes);
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let grpc = match cfg.grpc_addr {
        Some(grpc_addr) => {
            let listener =
                tokio::net::TcpListener::bind(grpc_addr).await.with_context(|| format!("cannot listen on {grpc_addr} (--grpc-addr)"))?;
            eprintln!("serve: gRPC listening on {}", listener.local_addr()?);
            let service = oip::grpc::Service::server(state.clone(), cfg.max_body_bytes);
            // No Nagle: a reply's HEADERS, DATA and trailer frames go out at once instead of
            // waiting for the client's delayed ACK (40 ms stalls at concurrency 1).
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let mut stopped = stopped.clone();
            let server = tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            Some(tokio::spawn(server))
        }
        None => None,
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stopping.send(true);
    });
    eprintln!("serve: listening on http://{addr}");
    let mut http_stopped = stopped.clone();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = http_stopped.wait_for(|s| *s).await;
        })
        .await
        .context("server failed")?;
    if let Some(grpc) = grpc {
        grpc.await.context("the gRPC server panicked")?.context("the gRPC server failed")?;
    }
    eprintln!("serve: stopping");
    stop.store(true, Ordering::SeqCst);
    state.jobs.stop();
    let _ = follower.join();
    Ok(())
}

/// Resolves at the first SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
