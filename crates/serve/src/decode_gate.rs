//! Who decodes next. One permit per core; bulk requests (many images or many pixels) may hold
//! all but one of them, one image at a time, so an interactive request never waits behind a
//! bulk request's decoding: it takes the permit bulk work cannot hold, or the next one freed
//! (waiting interactive requests go first).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Whether a request decodes as interactive or bulk work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Interactive,
    Bulk,
}

struct State {
    free: usize,
    bulk_held: usize,
    interactive: VecDeque<oneshot::Sender<Permit>>,
    bulk: VecDeque<oneshot::Sender<Permit>>,
}

/// The decoders' permits (see the module docs).
pub struct DecodeGate {
    state: Arc<Mutex<State>>,
    bulk_max: usize,
}

/// A held permit; dropping it hands it on.
pub struct Permit {
    lane: Lane,
    /// The gate's state and its bulk limit (`None`: a permit never handed over).
    gate: Option<(Arc<Mutex<State>>, usize)>,
}

impl DecodeGate {
    /// A gate of `permits` permits (at least 2: one is kept from bulk work).
    pub fn new(permits: usize) -> DecodeGate {
        let permits = permits.max(2);
        let state = State { free: permits, bulk_held: 0, interactive: VecDeque::new(), bulk: VecDeque::new() };
        DecodeGate { state: Arc::new(Mutex::new(state)), bulk_max: permits - 1 }
    }

    /// Waits for a permit of `lane`.
    pub async fn acquire(&self, lane: Lane) -> Permit {
        let rx = {
            let mut s = self.state.lock().unwrap();
            let open = match lane {
                Lane::Interactive => s.free > 0,
                Lane::Bulk => s.free > 0 && s.bulk_held < self.bulk_max && s.interactive.is_empty(),
            };
            if open {
                s.free -= 1;
                if lane == Lane::Bulk {
                    s.bulk_held += 1;
                }
                return Permit { lane, gate: Some((self.state.clone(), self.bulk_max)) };
            }
            let (tx, rx) = oneshot::channel();
            match lane {
                Lane::Interactive => s.interactive.push_back(tx),
                Lane::Bulk => s.bulk.push_back(tx),
            }
            rx
        };
        // The sender is dropped only with the gate, which outlives every request.
        rx.await.expect("the decode gate outlives its waiters")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some((state, bulk_max)) = self.gate.take() else { return };
        let mut s = state.lock().unwrap();
        if self.lane == Lane::Bulk {
            s.bulk_held -= 1;
        }
        // Hand the permit to the next waiter that can take it (interactive first); a waiter
        // that gave up (its request ended) is skipped.
        loop {
            let lane = if !s.interactive.is_empty() {
                Lane::Interactive
            } else if s.bulk_held < bulk_max && !s.bulk.is_empty() {
                Lane::Bulk
            } else {
                s.free += 1;
                return;
            };
            let tx = match lane {
                Lane::Interactive => s.interactive.pop_front(),
                Lane::Bulk => s.bulk.pop_front(),
            }
            .expect("not empty");
            if lane == Lane::Bulk {
                s.bulk_held += 1;
            }
            match tx.send(Permit { lane, gate: Some((state.clone(), bulk_max)) }) {
                Ok(()) => return,
                Err(mut unused) => {
                    // Its receiver is gone: take the count back here, under the lock.
                    unused.gate = None;
                    if lane == Lane::Bulk {
                        s.bulk_held -= 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn interactive_work_never_waits_behind_bulk_work() {
        let gate = Arc::new(DecodeGate::new(2));
        let b1 = gate.acquire(Lane::Bulk).await;
        // Bulk work holds at most one of two permits: a second bulk image waits...
        let g = gate.clone();
        let waiting_bulk = tokio::spawn(async move { g.acquire(Lane::Bulk).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting_bulk.is_finished());
        // ...while an interactive request takes the other at once.
        let i1 = tokio::time::timeout(Duration::from_millis(100), gate.acquire(Lane::Interactive)).await.expect("interactive goes ahead");
        // Freed permits go to a waiting interactive request before bulk work.
        let g = gate.clone();
        let waiting_interactive = tokio::spawn(async move { g.acquire(Lane::Interactive).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(b1);
        let i2 = tokio::time::timeout(Duration::from_millis(100), waiting_interactive).await.unwrap().unwrap();
        assert!(!waiting_bulk.is_finished());
        drop(i1);
        drop(i2);
        let b2 = tokio::time::timeout(Duration::from_millis(100), waiting_bulk).await.unwrap().unwrap();
        drop(b2);
        assert_eq!(gate.state.lock().unwrap().free, 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_that_gave_up_does_not_lose_the_permit() {
        let gate = Arc::new(DecodeGate::new(2));
        let a = gate.acquire(Lane::Interactive).await;
        let b = gate.acquire(Lane::Interactive).await;
        let g = gate.clone();
        let abandoned = tokio::spawn(async move { g.acquire(Lane::Interactive).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        abandoned.abort();
        let _ = abandoned.await;
        drop(a);
        drop(b);
        let s = gate.state.lock().unwrap();
        assert_eq!((s.free, s.bulk_held), (2, 0));
    }
}
