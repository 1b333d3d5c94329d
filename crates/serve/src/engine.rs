//! The inference thread: it owns the model, gathers concurrent requests into one forward
//! pass (up to `max_batch` images or `max_wait`), and swaps in a new model between batches,
//! so every request is answered whole by one model and none fails during a swap. Background
//! jobs (`/queue` scoring an inbox) run alone, one at a time, and only when no interactive
//! request waits: a request waits for at most one background forward pass.

use crate::metrics::Metrics;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use vocml_core::infer::predictor::Predictor;
use vocml_core::infer::Rows;
use vocml_core::io::image::{ResizeMode, SquareResizer};
use vocml_core::task::Task;

/// Interactive batches that may go ahead of a waiting background job before it runs anyway.
const BACKGROUND_PATIENCE: usize = 8;

/// A registered model version in MLflow (`serve --run models:/NAME@ALIAS`).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryVersion {
    pub model: String,
    pub version: String,
}

/// What the service says about the model it serves.
#[derive(Debug)]
pub struct ModelInfo {
    /// This server's count of models served: 1 for the first model loaded, +1 at each swap.
    pub version: u64,
    /// The registry's version of the served model, when it came from the registry.
    pub registry: Option<RegistryVersion>,
    /// The run directory's name.
    pub run: String,
    pub run_dir: PathBuf,
    /// Architecture (or ensemble) name.
    pub model: String,
    pub task: Task,
    pub thresholds: Vec<f32>,
    pub thresholds_tuned: bool,
    pub image_size: u32,
    pub resize: ResizeMode,
    pub tta: bool,
    /// The run's `metrics.json` (validation metrics), or null.
    pub metrics: serde_json::Value,
    /// The run it was retrained from, if any.
    pub parent: Option<String>,
    pub loaded_at: String,
}

impl ModelInfo {
    /// Describes `p`, loaded from its run directory, as version `version`.
    pub fn of(p: &Predictor, version: u64, registry: Option<RegistryVersion>) -> ModelInfo {
        let dir = &p.run_dir;
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let parent = p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned());
        ModelInfo {
            version,
            registry,
            run: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            run_dir: dir.clone(),
            model: p.name.clone(),
            task: p.task().clone(),
            thresholds: p.thresholds.clone(),
            thresholds_tuned: p.thresholds_tuned,
            image_size: p.image_size(),
            resize: p.resize(),
            tta: p.tta,
            metrics: read("metrics.json").unwrap_or(serde_json::Value::Null),
            parent,
            loaded_at: chrono::Local::now().to_rfc3339(),
        }
    }

    /// The `/model` answer.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "run": self.run,
            "run_dir": self.run_dir,
            "version": self.version,
            "registered_model": self.registry.as_ref().map(|r| r.model.clone()),
            "registry_version": self.registry.as_ref().map(|r| r.version.clone()),
            "model": self.model,
            "task": self.task.kind.name(),
            "classes": self.task.classes,
            "heads": self.task.groups.iter().map(|g| serde_json::json!({"name": g.name, "classes": g.classes})).collect::<Vec<_>>(),
            "thresholds": self.thresholds,
            "thresholds_tuned": self.thresholds_tuned,
            "image_size": self.image_size,
            "resize": self.resize.name(),
            "tta": self.tta,
            "metrics": self.metrics,
            "parent": self.parent,
            "loaded_at": self.loaded_at,
        })
    }
}

/// A model ready to serve.
pub struct Served {
    pub predictor: Predictor,
    pub info: Arc<ModelInfo>,
}

/// One image of a request: its encoded bytes and, when decoding succeeded, its pixels at the
/// size and resize mode it was decoded for.
pub struct Input {
    pub bytes: Arc<Vec<u8>>,
    pub pixels: Vec<u8>,
    pub size: u32,
    pub mode: ResizeMode,
}

/// Probabilities per image of a request and the model that gave them.
pub struct Answer {
    pub probabilities: Vec<Vec<f32>>,
    /// Each image's features (`Predictor::probabilities_and_features`) when the job asked.
    pub features: Option<Vec<Vec<f32>>>,
    pub model: Arc<ModelInfo>,
}

/// A request's images, answered together on `reply`.
pub struct Job {
    pub images: Vec<Input>,
    /// Also answer each image's features (for a diverse selection).
    pub features: bool,
    /// Bulk work (`/queue`) that must not delay interactive requests: never batched with them,
    /// run when none waits.
    pub background: bool,
    pub reply: tokio::sync::oneshot::Sender<Result<Answer, EngineError>>,
}

/// One image to explain with Grad-CAM: the columns to explain (`None`: the decided labels, or
/// the most probable class).
pub struct ExplainJob {
    pub input: Input,
    pub classes: Option<Vec<usize>>,
    pub reply: tokio::sync::oneshot::Sender<Result<Explained, EngineError>>,
}

/// An explained image: its probabilities, a `size`² heat map per explained column, the model.
pub struct Explained {
    pub probabilities: Vec<f32>,
    pub maps: Vec<(usize, Vec<f32>)>,
    pub model: Arc<ModelInfo>,
}

/// What the inference thread is asked to do.
enum Work {
    Score(Job),
    Explain(ExplainJob),
}

/// Why the engine did not answer a job; [`crate::error`] maps each to one HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// No model is loaded yet.
    NoModel,
    /// The queue is full (answer 503 and let the client retry).
    Busy,
    /// The inference thread is gone (shutdown).
    ShuttingDown,
    /// The image cannot be used by the served model (it could not be decoded again for a
    /// model swapped in meanwhile).
    BadImage(String),
    /// The served model cannot do what was asked (e.g. Grad-CAM on a backbone without a
    /// convolutional map).
    Unsupported(String),
    /// The forward pass failed.
    Inference(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::NoModel => f.write_str("no model loaded yet (see GET /ready)"),
            EngineError::Busy => f.write_str("the server is busy (its queue is full); retry shortly"),
            EngineError::ShuttingDown => f.write_str("the server is shutting down"),
            EngineError::BadImage(m) | EngineError::Unsupported(m) => f.write_str(m),
            EngineError::Inference(m) => write!(f, "inference failed: {m}"),
        }
    }
}

/// The handle the request handlers and the model follower share.
pub struct Engine {
    tx: SyncSender<Work>,
    /// Largest image decoded again when a swap came between decoding and scoring.
    max_image_pixels: u64,
    pending: Mutex<Option<Served>>,
    current: RwLock<Option<Arc<ModelInfo>>>,
}

impl Engine {
    /// Starts the inference thread; `queue` jobs may wait for it; images are decoded up to
    /// `max_image_pixels`.
    pub fn start(max_batch: usize, max_wait: Duration, queue: usize, max_image_pixels: u64, metrics: Arc<Metrics>) -> Arc<Engine> {
        let (tx, rx) = sync_channel(queue);
        let engine = Arc::new(Engine { tx, max_image_pixels, pending: Mutex::new(None), current: RwLock::new(None) });
        let e = engine.clone();
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || e.run(rx, max_batch.max(1), max_wait, &metrics))
            .expect("spawn the inference thread");
        engine
    }

    /// The model being served, if one is loaded.
    pub fn info(&self) -> Option<Arc<ModelInfo>> {
        self.current.read().unwrap().clone()
    }

    /// Hands over a new model; the inference thread takes it before its next batch.
    pub fn install(&self, served: Served) {
        *self.pending.lock().unwrap() = Some(served);
    }

    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) -> Result<(), EngineError> {
        self.send(Work::Score(job))
    }

    /// Queues an explanation without waiting.
    pub fn submit_explain(&self, job: ExplainJob) -> Result<(), EngineError> {
        self.send(Work::Explain(job))
    }

    fn send(&self, work: Work) -> Result<(), EngineError> {
        if self.info().is_none() {
            return Err(EngineError::NoModel);
        }
        self.tx.try_send(work).map_err(|e| match e {
            TrySendError::Full(_) => EngineError::Busy,
            TrySendError::Disconnected(_) => EngineError::ShuttingDown,
        })
    }

    fn take_pending(&self, served: &mut Option<Served>, metrics: &Metrics) {
        if let Some(s) = self.pending.lock().unwrap().take() {
            metrics.model_version.store(s.info.version, Ordering::Relaxed);
            *self.current.write().unwrap() = Some(s.info.clone());
            *served = Some(s);
        }
    }

    fn run(&self, rx: Receiver<Work>, max_batch: usize, max_wait: Duration, metrics: &Metrics) {
        let _no_grad = tch::no_grad_guard();
        let mut served: Option<Served> = None;
        // Background jobs set aside while interactive work came first, and how many batches
        // went ahead of the oldest (at most BACKGROUND_PATIENCE, so it is never starved).
        let mut deferred: VecDeque<Job> = VecDeque::new();
        let mut passed_over = 0;
        loop {
            let first = match deferred.pop_front() {
                Some(job) if passed_over >= BACKGROUND_PATIENCE => {
                    passed_over = 0;
                    Some(Work::Score(job))
                }
                Some(job) => match rx.try_recv() {
                    Ok(work) => {
                        deferred.push_front(job);
                        passed_over += 1;
                        Some(work)
                    }
                    Err(TryRecvError::Empty) => {
                        passed_over = 0;
                        Some(Work::Score(job))
                    }
                    Err(TryRecvError::Disconnected) => return,
                },
                None => match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(work) => Some(work),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            };
            self.take_pending(&mut served, metrics);
            let mut explains = Vec::new();
            let mut batch = Vec::new();
            match first {
                None => continue,
                Some(Work::Explain(e)) => explains.push(e),
                Some(Work::Score(job)) if job.background && !deferred.is_empty() => {
                    deferred.push_back(job);
                    continue;
                }
                Some(Work::Score(job)) => batch.push(job),
            }
            let mut images: usize = batch.iter().map(|j| j.images.len()).sum();
            let deadline = Instant::now() + max_wait;
            let interactive = batch.first().is_some_and(|j| !j.background);
            while interactive && images < max_batch {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(Work::Score(job)) if job.background => deferred.push_back(job),
                    Ok(Work::Score(job)) => {
                        images += job.images.len();
                        batch.push(job);
                    }
                    Ok(Work::Explain(e)) => explains.push(e),
                    Err(_) => break,
                }
            }
            let Some(s) = &served else {
                batch.into_iter().for_each(|j| drop(j.reply.send(Err(EngineError::NoModel))));
                explains.into_iter().for_each(|e| drop(e.reply.send(Err(EngineError::NoModel))));
                continue;
            };
            if !batch.is_empty() {
                metrics.batch_size.observe(images as f64);
                metrics.images.fetch_add(images as u64, Ordering::Relaxed);
                answer(s, batch, self.max_image_pixels);
            }
            for e in explains {
                let reply = explain(s, &e, self.max_image_pixels);
                let _ = e.reply.send(reply);
            }
        }
    }
}

/// Grad-CAM maps of one image by the served model.
fn explain(s: &Served, job: &ExplainJob, max_pixels: u64) -> Result<Explained, EngineError> {
    let info = &s.info;
    let i = &job.input;
    let pixels = match i.size == info.image_size && i.mode == info.resize {
        true => i.pixels.clone(),
        false => SquareResizer::new(info.image_size, info.resize, max_pixels).load_bytes(&i.bytes).map_err(EngineError::BadImage)?,
    };
    let rows = s.predictor.score_images(&[&pixels]).map_err(|e| EngineError::Inference(format!("{e:#}")))?;
    let p = rows.row(0).to_vec();
    let cols = job.classes.clone().unwrap_or_else(|| vocml_core::explain::explained_columns(&info.task, &p, &info.thresholds));
    let side = info.image_size as i64;
    let t = tch::Tensor::from_slice(&pixels).view([1, side, side, 3]);
    let cams = s
        .predictor
        .grad_cam(&t, &cols.iter().map(|&c| c as i64).collect::<Vec<_>>())
        .map_err(|e| EngineError::Unsupported(format!("{e:#}")))?;
    let maps = cols
        .iter()
        .enumerate()
        .map(|(k, &c)| Ok((c, Vec::<f32>::try_from(cams.get(k as i64).flatten(0, -1)).map_err(|e| EngineError::Inference(e.to_string()))?)))
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(Explained { probabilities: p, maps, model: info.clone() })
}

/// Scores every image of `batch` in one forward pass and answers each job.
fn answer(s: &Served, batch: Vec<Job>, max_pixels: u64) {
    let info = &s.info;
    let mut resizer = SquareResizer::new(info.image_size, info.resize, max_pixels);
    // Images decoded for another model (a swap came between decoding and now) are resized
    // again from their bytes.
    let per_job: Vec<Result<Vec<Cow<[u8]>>, EngineError>> = batch
        .iter()
        .map(|job| {
            job.images
                .iter()
                .map(|i| match i.size == info.image_size && i.mode == info.resize {
                    true => Ok(Cow::Borrowed(i.pixels.as_slice())),
                    false => resizer.load_bytes(&i.bytes).map(Cow::Owned).map_err(EngineError::BadImage),
                })
                .collect()
        })
        .collect();
    let pixels: Vec<&[u8]> = per_job.iter().filter_map(|r| r.as_ref().ok()).flatten().map(|c| c.as_ref()).collect();
    let with_features = batch.iter().any(|j| j.features);
    let scored = match with_features {
        true => s.predictor.score_images_with_features(&pixels),
        false => s.predictor.score_images(&pixels).map(|p| (p, Rows::default())),
    };
    let counts: Vec<Result<usize, EngineError>> = per_job.iter().map(|r| r.as_ref().map(Vec::len).map_err(Clone::clone)).collect();
    drop(pixels);
    drop(per_job);
    let (probs, features) = match scored {
        Ok(p) => p,
        Err(e) => {
            let err = EngineError::Inference(format!("{e:#}"));
            batch.into_iter().for_each(|j| drop(j.reply.send(Err(err.clone()))));
            return;
        }
    };
    let (mut rows, mut described) = (probs.iter(), features.iter());
    for (job, count) in batch.into_iter().zip(counts) {
        let reply = count.map(|n| {
            let features: Vec<Vec<f32>> = described.by_ref().take(n).map(<[f32]>::to_vec).collect();
            Answer {
                probabilities: rows.by_ref().take(n).map(<[f32]>::to_vec).collect(),
                features: job.features.then_some(features),
                model: info.clone(),
            }
        });
        let _ = job.reply.send(reply);
    }
}
