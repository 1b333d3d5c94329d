//! Retrain jobs: the corrections of a request run through the existing `retrain` (feedback
//! store, replay, tolerance gate, atomic promotion) on a worker thread, one at a time; the
//! job's state, progress and outcome are kept for `GET /jobs/{id}`, and its record in the
//! runs directory's journal (`journal`), so it is answered after a restart and by replicas.

pub use crate::journal::JobStatus;
use crate::journal::{Claim, Journal};
use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vocml_core::io::csv_line::quote;
use vocml_core::progress::Progress;
use vocml_core::retrain::{retrain, RetrainConfig};
use vocml_core::run::options::RetrainOptions;
use vocml_core::train::history::TrainObserver;

/// One correction of a job: the image bytes, a file name, the true labels, and the name the
/// feedback store records it under (the upload's file name, or the Label Studio annotation).
#[derive(Clone)]
pub struct Correction {
    pub filename: String,
    pub bytes: Arc<Vec<u8>>,
    pub labels: Vec<String>,
    pub source: String,
}

/// The jobs of this service.
pub struct Jobs {
    map: Mutex<BTreeMap<String, JobStatus>>,
    busy: AtomicBool,
    journal: Journal,
    /// Set at shutdown: a running retrain stops at its next step and writes nothing.
    pub cancel: Arc<AtomicBool>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Where a job retrains from and writes to.
pub struct JobTarget {
    pub from: PathBuf,
    pub runs_dir: PathBuf,
    pub device: tch::Device,
    pub options: RetrainOptions,
    pub force: bool,
    /// Largest image decoded (width x height).
    pub max_image_pixels: u64,
    /// Told whether the job succeeded, once its outcome is recorded (a failed job's
    /// corrections can then wait for the next one).
    pub on_finish: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl Jobs {
    /// The jobs of the runs directory `runs_dir`, those recorded before included: a job whose
    /// server stopped while it ran is reported lost (and said so on stderr).
    pub fn open(runs_dir: &Path) -> Jobs {
        let journal = Journal::new(runs_dir);
        let map = journal.recover().into_iter().map(|j| (j.id.clone(), j)).collect();
        Jobs { map: Mutex::new(map), busy: AtomicBool::new(false), journal, cancel: Arc::default(), worker: Mutex::new(None) }
    }

    /// A job of this server, or one recorded in the runs directory (another replica's).
    pub fn get(&self, id: &str) -> Option<JobStatus> {
        let mine = self.map.lock().unwrap().get(id).cloned();
        mine.or_else(|| self.journal.read(id))
    }

    /// The newest `limit` jobs, this server's and the runs directory's (other replicas' and
    /// earlier servers'), newest first.
    pub fn list(&self, limit: usize) -> Vec<JobStatus> {
        self.journal.newest_first().iter().take(limit).filter_map(|id| self.get(id)).collect()
    }

    /// Starts a retrain job, or says why not (one runs at a time).
    pub fn start(self: &Arc<Self>, corrections: Vec<Correction>, target: JobTarget) -> Result<JobStatus, String> {
        if self.busy.swap(true, Ordering::SeqCst) {
            let running = self.map.lock().unwrap().values().find(|j| j.state == "running").map(|j| j.id.clone()).unwrap_or_default();
            return Err(format!("a retrain job is already running ({running}); wait for it (GET /jobs/{running}) and send again"));
        }
        let claim = match self.journal.claim() {
            Ok(c) => c,
            Err(e) => {
                self.busy.store(false, Ordering::SeqCst);
                return Err(format!("cannot record a retrain job: {e:#}"));
            }
        };
        let id = claim.id.clone();
        let status = JobStatus {
            id: id.clone(),
            state: "running".into(),
            corrections: corrections.len(),
            phase: "starting".into(),
            epoch: 0,
            epochs: target.options.epochs,
            created: chrono::Local::now().to_rfc3339(),
            finished: None,
            outcome: None,
            error: None,
        };
        if let Err(e) = self.journal.write(&status) {
            self.journal.release(claim);
            self.busy.store(false, Ordering::SeqCst);
            return Err(format!("cannot record a retrain job: {e:#}"));
        }
        self.map.lock().unwrap().insert(id.clone(), status.clone());
        let jobs = self.clone();
        let handle = std::thread::Builder::new()
            .name(id.clone())
            .spawn(move || {
                let mut target = target;
                let result = jobs.run(&id, &corrections, &target);
                let ok = result.is_ok();
                jobs.finish(claim, result);
                if let Some(tell) = target.on_finish.take() {
                    tell(ok);
                }
            })
            .map_err(|e| format!("cannot start a retrain job: {e}"))?;
        *self.worker.lock().unwrap() = Some(handle);
        Ok(status)
    }

    /// Records a job's outcome (in memory and in the journal) and frees the worker.
    fn finish(&self, claim: Claim, result: anyhow::Result<serde_json::Value>) {
        let final_status = {
            let mut map = self.map.lock().unwrap();
            let s = map.get_mut(&claim.id).expect("job recorded");
            s.finished = Some(chrono::Local::now().to_rfc3339());
            match result {
                Ok(outcome) => {
                    s.state = "succeeded".into();
                    s.outcome = Some(outcome);
                }
                Err(e) => {
                    s.state = "failed".into();
                    s.error = Some(format!("{e:#}"));
                }
            }
            s.clone()
        };
        if let Err(e) = self.journal.write(&final_status) {
            eprintln!("serve: cannot record the outcome of {}: {e:#}", final_status.id);
        }
        self.journal.release(claim);
        eprintln!("serve: {} {}", final_status.id, final_status.state);
        self.busy.store(false, Ordering::SeqCst);
    }

    /// Cancels a running job and waits for it (at shutdown).
    pub fn stop(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(h) = self.worker.lock().unwrap().take() {
            let _ = h.join();
        }
    }

    fn run(&self, id: &str, corrections: &[Correction], target: &JobTarget) -> anyhow::Result<serde_json::Value> {
        let dir = tempfile::Builder::new().prefix("vocml-serve-").tempdir()?;
        let mut csv = String::from("path,labels,source\n");
        for (i, c) in corrections.iter().enumerate() {
            // The file name is the client's: only its first 64 safe characters reach the disk.
            let name: String =
                c.filename.chars().map(|ch| if ch.is_ascii_alphanumeric() || ".-_".contains(ch) { ch } else { '_' }).take(64).collect();
            let path = dir.path().join(format!("{i:04}_{name}"));
            std::fs::write(&path, c.bytes.as_slice())?;
            let source: String = c.source.chars().map(|ch| if ch.is_control() { '_' } else { ch }).take(200).collect();
            let source = if source.is_empty() { format!("upload-{i}") } else { source };
            csv += &format!("{},{},{}\n", quote(&path.to_string_lossy()), c.labels.join(";"), quote(&source));
        }
        let csv_path = dir.path().join("corrections.csv");
        std::fs::write(&csv_path, csv)?;
        let cfg = RetrainConfig::new(
            RetrainOptions {
                from: Some(target.from.clone()),
                corrections: csv_path,
                force: target.force,
                runs_dir: target.runs_dir.clone(),
                ..target.options.clone()
            },
            target.max_image_pixels,
        )?;
        let observer = JobProgress { jobs: self, id };
        let outcome = retrain(&cfg, target.device, &observer, &self.cancel)?;
        Ok(serde_json::json!({
            "run": outcome.run_dir.file_name().map(|n| n.to_string_lossy().into_owned()),
            "parent": outcome.parent.file_name().map(|n| n.to_string_lossy().into_owned()),
            "promoted": outcome.promoted,
            "reason": outcome.reason,
            "metric": outcome.monitor,
            "before": outcome.gate.before,
            "after": outcome.gate.after,
            "interval": [outcome.gate.low, outcome.gate.high],
            "judged_on": outcome.gate.split,
            "images": outcome.gate.images,
            "next_step": outcome.next_step,
            "corrected_right_before": outcome.corrected_right_before,
            "corrected_right_after": outcome.corrected_right_after,
            "corrections_used": outcome.corrections_used,
            "corrections_new": outcome.corrections_new,
            "seconds": outcome.seconds,
        }))
    }
}

/// Records a running job's phase and epoch.
struct JobProgress<'a> {
    jobs: &'a Jobs,
    id: &'a str,
}

impl TrainObserver for JobProgress<'_> {}

impl Progress for JobProgress<'_> {
    fn phase(&self, what: &str, _total: u64) {
        if let Some(s) = self.jobs.map.lock().unwrap().get_mut(self.id) {
            s.phase = what.to_string();
            if let Some(epoch) = what.strip_prefix("retrain ").and_then(|r| r.split('/').next()).and_then(|e| e.parse().ok()) {
                s.epoch = epoch;
            }
        }
    }
}
