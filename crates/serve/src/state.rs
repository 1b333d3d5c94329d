//! The state every handler (HTTP and gRPC) shares.

use crate::engine::Engine;
use crate::follow::FollowState;
use crate::inbox::Inbox;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::uploads::Uploads;
use std::path::PathBuf;
use std::sync::Arc;
use vocml_core::run::options::RetrainOptions;

/// Everything the handlers share.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub follow: Arc<FollowState>,
    pub jobs: Arc<Jobs>,
    pub uploads: Uploads,
    pub metrics: Arc<Metrics>,
    pub token: Option<String>,
    pub max_files: usize,
    pub runs_dir: PathBuf,
    pub retrain: RetrainOptions,
    pub device: tch::Device,
    /// The decoders' permits: one per core, one of them kept from bulk requests.
    pub decoders: crate::decode_gate::DecodeGate,
    /// Most pixels (from the images' headers) one request may carry.
    pub max_request_pixels: u64,
    /// Largest image decoded (width x height, from its header).
    pub max_image_pixels: u64,
    /// Label Studio image fetches at once, across the service (each holds a blocking thread).
    pub fetchers: Arc<tokio::sync::Semaphore>,
    /// `--inbox`: the folder `GET /queue` ranks.
    pub inbox: Option<Inbox>,
    /// The name the model answers to on the inference protocols (besides its run's name).
    pub model_name: String,
    /// Images per background job (`/queue` scoring): one, so that an interactive request
    /// waits for at most one image's forward pass (measured: `make bench-deploy`).
    pub background_batch: usize,
    /// The Label Studio ML backend (`/label-studio/...`).
    pub label_studio: crate::label_studio::LabelStudio,
}

impl AppState {
    /// A retrain job from the run `from` with the service's recipe, device and decode limit;
    /// `on_finish` is told whether it succeeded.
    pub fn job_target(&self, from: PathBuf, force: bool, on_finish: Option<Box<dyn FnOnce(bool) + Send>>) -> crate::jobs::JobTarget {
        crate::jobs::JobTarget {
            from,
            runs_dir: self.runs_dir.clone(),
            device: self.device,
            options: self.retrain.clone(),
            max_image_pixels: self.max_image_pixels,
            force,
            on_finish,
        }
    }
}
