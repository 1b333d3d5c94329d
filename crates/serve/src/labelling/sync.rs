//! Label Studio kept in step with the served model, through its API, on a task of its own:
//! - at start, the served projects' annotations made while serve was down are caught up
//!   (a retrain job starts when enough wait);
//! - when a project is first seen and after each promotion, Label Studio is asked for the
//!   unlabelled tasks' predictions from the served model (it asks the backend's `/predict`);
//! - then the project's `model_version` is set to the served run's, so its data manager scores
//!   and sorts by those predictions (Label Studio sets it to the backend's title, whose
//!   predictions do not exist, and accepts only a version it holds predictions of);
//! - with `--token-file`, the webhook Label Studio made for the backend carries the token.
//!
//! A failure is said once on stderr and retried after [`RETRY`].

use super::{api_for, catch_up, model_version, start_job};
use crate::error::shown;
use crate::label_studio::api::PAGE;
use crate::state::AppState;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the projects are checked.
pub const TICK: Duration = Duration::from_secs(1);
/// Wait after a failed call before the next.
pub const RETRY: Duration = Duration::from_secs(30);
/// Wait before looking again for a webhook Label Studio has not made yet.
pub const WEBHOOK_WAIT: Duration = Duration::from_secs(3);
/// Most unlabelled tasks whose predictions are refreshed after a promotion.
pub const MAX_REFRESH: usize = 10_000;

/// Starts the task; it ends with the runtime.
pub fn spawn(state: Arc<AppState>) {
    tokio::spawn(async move {
        let info = loop {
            if let Some(info) = state.engine.info() {
                break info;
            }
            tokio::time::sleep(TICK).await;
        };
        for project in state.label_studio.project_ids() {
            if api_for(&state, project).is_none() {
                continue;
            }
            match catch_up(&state, &info, project).await {
                Ok(c) if c.added > 0 => {
                    eprintln!("serve: label-studio: project {project}: {} annotations made while serve was away", c.added)
                }
                Ok(_) => {}
                Err(e) => eprintln!("serve: label-studio: project {project}: cannot catch up with its annotations: {}", shown(&e, 300)),
            }
        }
        let waiting = state.label_studio.pending.lock().unwrap().len();
        if waiting > 0 && waiting >= state.label_studio.options.train_after {
            start_job(&state, &info);
        }
        loop {
            keep_in_step(&state).await;
            tokio::time::sleep(TICK).await;
        }
    });
}

/// One round over the known projects.
async fn keep_in_step(state: &Arc<AppState>) {
    let Some(info) = state.engine.info() else { return };
    let version = model_version(&info);
    let bearer = state.token.as_ref().map(|t| format!("Bearer {t}"));
    for project in state.label_studio.project_ids() {
        let Some(p) = state.label_studio.project(project) else { continue };
        if p.retry_at.is_some_and(|t| t > Instant::now()) {
            continue;
        }
        let set_version = p.version_set.as_deref() != Some(version.as_str());
        let authenticate = bearer.is_some() && !p.webhook_authenticated;
        let refresh = p.predicted_for.as_ref() != Some(&version);
        if !(set_version || authenticate || refresh) {
            continue;
        }
        let Some(api) = api_for(state, project) else { continue };
        let (version_c, bearer_c) = (version.clone(), bearer.clone());
        let done = tokio::task::spawn_blocking(move || -> Result<bool, String> {
            // First the webhook's token: the calls below make Label Studio send events.
            let authenticated = match (authenticate, &bearer_c) {
                (true, Some(b)) => api.authenticate_webhook(project, b)? > 0,
                _ => false,
            };
            if refresh {
                for tasks in api.unlabelled_tasks(project, MAX_REFRESH)?.chunks(PAGE) {
                    api.retrieve_predictions(project, tasks)?;
                }
            }
            // Without a prediction of this version (no unlabelled task) Label Studio keeps the old one.
            if (set_version || refresh) && api.project(project)?.1 != version_c {
                api.set_model_version(project, &version_c)?;
            }
            Ok(authenticated)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        state.label_studio.update(project, |p| match done {
            Ok(authenticated) => {
                p.version_set = Some(version.clone());
                p.predicted_for = Some(version.clone());
                p.webhook_authenticated |= authenticated;
                // Label Studio makes the webhook once the backend is saved: look again soon.
                p.retry_at = (authenticate && !authenticated).then(|| Instant::now() + WEBHOOK_WAIT);
                p.last_error = None;
            }
            Err(e) => {
                if p.last_error.as_ref() != Some(&e) {
                    eprintln!("serve: label-studio: project {project}: {}; retrying every {} s", shown(&e, 300), RETRY.as_secs());
                }
                p.last_error = Some(e);
                p.retry_at = Some(Instant::now() + RETRY);
            }
        });
    }
}
