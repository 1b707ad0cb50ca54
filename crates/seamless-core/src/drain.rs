//! Coordinating a drain: telling every task it has begun, and knowing when they have all ended.
//!
//! The [`Drain`] hands a [`Watch`] to every accept loop and connection task. Starting the drain
//! flips a watch channel each of them observes; each task holds a clone of an mpsc sender, and
//! when the last one is dropped the receiver sees the channel close: everyone is done. No
//! counting, no polling, and a task that panics still drops its sender.
//!
//! What a connection does once the drain begins lives in `server`; this module only coordinates.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
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
    /// Resolves once the drain has started (at once if it already has), or the coordinator
    /// is gone, which also means "stop". Made once and polled on every wake-up of its task
    /// (see [`Started`]).
    pub(crate) fn started(&self) -> Started<'_> {
        let mut rx = self.started_rx.clone();
        Started {
            version: &self.started_rx,
            // Outside tokio's cooperative budget: a task that spent its budget (a busy
            // connection can) would otherwise get `Pending` from the wait without its waker
            // registered, and `Started` would then never poll the wait again.
            wait: Box::pin(tokio::task::coop::unconstrained(async move {
                let _ = rx.wait_for(|started| *started).await;
            })),
            registered: None,
            done: false,
        }
    }

    /// Whether the drain has started, without waiting.
    #[cfg(test)]
    fn is_started(&self) -> bool {
        *self.started_rx.borrow()
    }
}

/// The future of [`Watch::started`].
///
/// A connection task polls it every time the task wakes up, which for a keep-alive connection
/// is once per request. tokio's wait takes the channel's lock on every poll (to compare
/// wakers), and that lock is shared by every connection: on a machine with several cores its
/// cache line then moves between them on every request. So this polls tokio's wait only when
/// it must — on the first poll, when the task's waker changed, or once the channel's version
/// moved — and otherwise only reads the version, one atomic load of a line nobody writes until
/// the drain starts.
///
/// That rests on two facts. When the wait returns `Pending`, it holds the waker: true because
/// it runs outside tokio's cooperative budget (see [`Watch::started`]). And the version moves
/// when the drain starts: true because nothing marks the watch's own receiver as seen.
pub(crate) struct Started<'a> {
    /// Where the version is read; the receiver the wait uses is a clone.
    version: &'a watch::Receiver<bool>,
    /// tokio's wait for `true`.
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The waker `wait` was last polled with: the one the drain will wake.
    registered: Option<Waker>,
    /// Set once `wait` is ready: it must not be polled again.
    done: bool,
}

impl Future for Started<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(());
        }
        // Changed, or closed (an error): either way, the wait has news.
        let quiet = matches!(this.version.has_changed(), Ok(false));
        if quiet
            && this
                .registered
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            // The wait holds a waker for this task already: the drain will wake it.
            return Poll::Pending;
        }
        this.registered = Some(cx.waker().clone());
        let polled = this.wait.as_mut().poll(cx);
        this.done = polled.is_ready();
        polled
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
        let watch = drain.watch().expect("before finish");
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
        let late = drain.watch().expect("before finish");
        assert!(poll_once(pin!(late.started())).is_ready());
    }

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn the_start_wakes_the_task_that_polled_last() {
        let drain = Drain::new();
        let watch = drain.watch().expect("before finish");
        let mut started = watch.started();
        let (first, second) = (
            std::sync::Arc::new(Counting::default()),
            std::sync::Arc::new(Counting::default()),
        );
        let (first_waker, second_waker) = (Waker::from(first.clone()), Waker::from(second.clone()));
        for _ in 0..3 {
            let polled = Pin::new(&mut started).poll(&mut Context::from_waker(&first_waker));
            assert!(polled.is_pending());
        }
        // Moved to another task: that one must be woken, not the first.
        let polled = Pin::new(&mut started).poll(&mut Context::from_waker(&second_waker));
        assert!(polled.is_pending());
        drain.start();
        assert_eq!(second.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(first.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        let polled = Pin::new(&mut started).poll(&mut Context::from_waker(&second_waker));
        assert!(polled.is_ready());
        // Ready for good, however often it is asked.
        assert!(poll_once(Pin::new(&mut started)).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_spent_its_budget_still_sees_the_start() {
        let drain = Drain::new();
        let watch = drain.watch().expect("before finish");
        let waiter = tokio::spawn(async move {
            let mut started = pin!(watch.started());
            let mut first = true;
            std::future::poll_fn(|cx| {
                // A busy connection may reach its first wait with tokio's budget spent.
                while first {
                    match tokio::task::coop::poll_proceed(cx) {
                        Poll::Ready(restore) => restore.made_progress(),
                        Poll::Pending => first = false,
                    }
                }
                started.as_mut().poll(cx)
            })
            .await;
        });
        // Let the waiter poll until it waits for good.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        drain.start();
        // Time is paused: with nobody left to wake the waiter, the clock jumps to the limit.
        tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .expect("the start woke the waiter")
            .expect("the waiter did not panic");
    }

    #[test]
    fn a_gone_coordinator_means_stop() {
        let drain = Drain::new();
        let watch = drain.watch().expect("before finish");
        let mut started = watch.started();
        assert!(poll_once(Pin::new(&mut started)).is_pending());
        drop(drain);
        assert!(poll_once(Pin::new(&mut started)).is_ready());
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
