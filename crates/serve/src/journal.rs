//! The retrain jobs' records on disk (`RUNS/jobs/<id>.json`), so that a job outlives the
//! process that ran it: replicas sharing a runs directory answer `GET /jobs/{id}` for each
//! other's jobs, and a job whose server was killed or crashed is reported `lost` rather than
//! vanishing. A running job holds an exclusive lock on `<id>.lock`; the operating system drops
//! it when the process dies, so a record that says `running` with its lock free was lost.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// What `GET /jobs/{id}` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: String,
    /// running, succeeded, failed, or lost (its server stopped while it ran).
    pub state: String,
    pub corrections: usize,
    /// What the retrain is doing (features, retrain E/N), once running.
    pub phase: String,
    /// The epoch running and the epochs planned.
    pub epoch: usize,
    pub epochs: usize,
    pub created: String,
    pub finished: Option<String>,
    /// The retrain's outcome: scores before and after, promoted or not and why, the new run.
    pub outcome: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// What a lost job's record says.
pub const LOST: &str = "serve stopped while this job ran (killed or crashed): its outcome was not recorded; \
runs/best and the feedback store are as the retrain left them (it promotes atomically)";

/// The journal directory of a runs directory.
pub struct Journal {
    dir: PathBuf,
}

/// A claimed job id and the lock held while it runs.
pub struct Claim {
    pub id: String,
    lock: File,
}

impl Journal {
    pub fn new(runs_dir: &Path) -> Journal {
        Journal { dir: runs_dir.join("jobs") }
    }

    /// Claims the next free id (`job-N`, unique across restarts and replicas) and locks it.
    pub fn claim(&self) -> Result<Claim> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        let mut n = self.ids()?.iter().filter_map(|id| id.strip_prefix("job-")?.parse::<u64>().ok()).max().unwrap_or(0);
        loop {
            n += 1;
            let id = format!("job-{n}");
            match OpenOptions::new().write(true).create_new(true).open(self.dir.join(format!("{id}.lock"))) {
                Ok(lock) => {
                    lock.lock().with_context(|| format!("cannot lock the record of {id}"))?;
                    return Ok(Claim { id, lock });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot create a job record in {}", self.dir.display())),
            }
        }
    }

    /// Writes a job's record (atomically: readers see the old or the new one).
    pub fn write(&self, status: &JobStatus) -> Result<()> {
        let text = serde_json::to_string_pretty(status)? + "\n";
        vocml_core::io::staging::write_atomic(&self.dir, &format!("{}.json", status.id), text.as_bytes())
    }

    /// Ends a claim once its final record is written: the lock file goes, the lock with it.
    pub fn release(&self, claim: Claim) {
        let _ = std::fs::remove_file(self.dir.join(format!("{}.lock", claim.id)));
        drop(claim.lock);
    }

    /// A job's record, if one exists; a `running` one whose lock is free is recorded as lost.
    pub fn read(&self, id: &str) -> Option<JobStatus> {
        if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return None;
        }
        let text = std::fs::read_to_string(self.dir.join(format!("{id}.json"))).ok()?;
        let mut status: JobStatus = serde_json::from_str(&text).ok()?;
        if status.state == "running" && !self.held(id) {
            status.state = "lost".into();
            status.error = Some(LOST.into());
            status.finished = Some(chrono::Local::now().to_rfc3339());
            eprintln!("serve: {id} was lost: {LOST}");
            let _ = self.write(&status);
            let _ = std::fs::remove_file(self.dir.join(format!("{id}.lock")));
        }
        Some(status)
    }

    /// The ids of the recorded jobs, newest first.
    pub fn newest_first(&self) -> Vec<String> {
        let mut ids = self.ids().unwrap_or_default();
        ids.sort_by_key(|id| std::cmp::Reverse(id.strip_prefix("job-").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)));
        ids
    }

    /// Every recorded job, lost ones marked as such (at start-up).
    pub fn recover(&self) -> Vec<JobStatus> {
        self.ids().unwrap_or_default().iter().filter_map(|id| self.read(id)).collect()
    }

    /// Whether a live process holds the lock of `id`.
    fn held(&self, id: &str) -> bool {
        match File::open(self.dir.join(format!("{id}.lock"))) {
            Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    fn ids(&self) -> Result<Vec<String>> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Ok(Vec::new()) };
        let mut ids = Vec::new();
        for e in entries {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json").or_else(|| name.strip_suffix(".lock")) {
                if !ids.iter().any(|i| i == id) {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, state: &str) -> JobStatus {
        JobStatus {
            id: id.into(),
            state: state.into(),
            corrections: 1,
            phase: String::new(),
            epoch: 0,
            epochs: 3,
            created: "now".into(),
            finished: None,
            outcome: None,
            error: None,
        }
    }

    #[test]
    fn ids_are_unique_and_a_running_record_without_its_lock_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        let a = j.claim().unwrap();
        let b = j.claim().unwrap();
        assert_eq!((a.id.as_str(), b.id.as_str()), ("job-1", "job-2"));
        j.write(&status(&a.id, "running")).unwrap();
        j.write(&status(&b.id, "running")).unwrap();
        // a's lock is held by this process: still running. b's holder "dies".
        drop(b.lock);
        assert_eq!(j.read("job-1").unwrap().state, "running");
        let lost = j.read("job-2").unwrap();
        assert_eq!(lost.state, "lost");
        assert!(lost.error.unwrap().contains("killed or crashed"));
        assert_eq!(j.read("job-2").unwrap().state, "lost", "the verdict is written back");
        let mut done = status(&a.id, "succeeded");
        done.finished = Some("then".into());
        j.write(&done).unwrap();
        j.release(a);
        assert_eq!(j.read("job-1").unwrap().state, "succeeded");
        assert_eq!(j.claim().unwrap().id, "job-3");
        assert!(j.read("../job-1").is_none());
        assert_eq!(j.recover().len(), 2, "job-3 is claimed, with no record yet");
    }
}
