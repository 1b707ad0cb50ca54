//! Coordinating a drain: telling every task it has begun, and knowing when they have all ended.
//!
//! The [`Drain`] hands a [`Watch`] to every accept loop and connection task. Starting the drain
//! flips a watch channel each of them observes; each task holds a clone of an mpsc sender, and
//! when the last one is dropped the receiver sees the channel close: everyone is done. No
//! counting, no polling, and a task that panics still drops its sender.
//!
//! What a connection does once the drain begins lives in `server`; this module only coordinates.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// The coordinator, owned by the server.
#[derive(Debug)]
pub(crate) struct Drain {
    /// Flipped to `true` when the drain starts.
    started_tx: watch::Sender<bool>,
    /// Cloned into every [`Watch`]; dropped by [`Drain::finish`] so only tasks hold senders.
    done_tx: Option<mpsc::Sender<()>>,
    /// Closes when every sender is gone. Nothing is ever sent on it.
    done_rx: mpsc::Receiver<()>,
}

/// A task's view of the drain. Dropping it says "this task is done".
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    /// Observes the start of the drain.
    started_rx: watch::Receiver<bool>,
    /// Held only to be dropped.
    _done_tx: mpsc::Sender<()>,
}

/// The deadline passed before every task finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("drain deadline reached with tasks still running")]
pub(crate) struct DeadlineReached;

impl Drain {
    /// A coordinator with no tasks yet.
    pub(crate) fn new() -> Self {
        let (started_tx, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Drain {
            started_tx,
            done_tx: Some(done_tx),
            done_rx,
        }
    }

    /// A handle for one more task. Call before [`Drain::finish`].
    pub(crate) fn watch(&self) -> Option<Watch> {
        Some(Watch {
            started_rx: self.started_tx.subscribe(),
            _done_tx: self.done_tx.clone()?,
        })
    }

    /// Tells every task the drain has begun.
    pub(crate) fn start(&self) {
        self.started_tx.send_replace(true);
    }

    /// Waits until every task has dropped its [`Watch`], at most `deadline`.
    pub(crate) async fn finish(&mut self, deadline: Duration) -> Result<(), DeadlineReached> {
        self.start();
        self.done_tx = None;
        tokio::time::timeout(deadline, self.done_rx.recv())
            .await
            .map(|_| ())
            .map_err(|_| DeadlineReached)
    }
}

impl Default for Drain {
    fn default() -> Self {
        Drain::new()
    }
}

impl Watch {
    /// Resolves once the drain has started (at once if it already has).
    pub(crate) async fn started(&mut self) {
        // An error means the coordinator is gone, which also means "stop".
        let _ = self.started_rx.wait_for(|started| *started).await;
    }

    /// Whether the drain has started, without waiting.
    #[cfg(test)]
    fn is_started(&self) -> bool {
        *self.started_rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Polls once without a runtime: the coordination is deterministic, no sleeps needed.
    fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn watchers_see_the_start() {
        let drain = Drain::new();
        let mut watch = drain.watch().expect("before finish");
        assert!(!watch.is_started());
        {
            let started = pin!(watch.started());
            let mut started = started;
            assert!(poll_once(started.as_mut()).is_pending());
            drain.start();
            assert!(poll_once(started.as_mut()).is_ready());
        }
        assert!(watch.is_started());
        // Once started, it stays started for late observers too.
        let mut late = drain.watch().expect("before finish");
        assert!(poll_once(pin!(late.started())).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn finish_waits_for_every_watch() {
        let mut drain = Drain::new();
        let first = drain.watch().expect("watch");
        let second = drain.watch().expect("watch");
        {
            let mut finished = pin!(drain.finish(Duration::from_secs(5)));
            assert!(poll_once(finished.as_mut()).is_pending());
            drop(first);
            assert!(
                poll_once(finished.as_mut()).is_pending(),
                "one task still running"
            );
            drop(second);
            assert_eq!(finished.await, Ok(()));
        }
        assert!(drain.watch().is_none(), "no new tasks after finish");
    }

    #[tokio::test(start_paused = true)]
    async fn finish_gives_up_at_the_deadline() {
        let mut drain = Drain::new();
        let _stuck = drain.watch().expect("watch");
        assert_eq!(
            drain.finish(Duration::from_secs(5)).await,
            Err(DeadlineReached)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn finish_with_no_tasks_is_immediate() {
        let mut drain = Drain::new();
        let mut finished = pin!(drain.finish(Duration::from_secs(5)));
        assert_eq!(poll_once(finished.as_mut()), Poll::Ready(Ok(())));
    }
}
