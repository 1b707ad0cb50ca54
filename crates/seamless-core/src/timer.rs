//! hyper's HTTP/1 header-read timer, backed by one tokio timer per connection.
//!
//! hyper arms a new timer for every request head it reads and drops it once the head is in:
//! a boxed tokio `Sleep`, inserted into the runtime's timer wheel while the connection waits
//! for the next request and removed again, on every request of every keep-alive connection.
//! Hello-world throughput notices (about a microsecond per request here, most of the gap to
//! bare axum, which runs without a header timeout).
//!
//! [`ConnectionTimer`] gives hyper cheap stand-ins instead. Every deadline it hands out is
//! served by the same tokio timer of that connection; moving a registered timer to a later
//! deadline — the usual case, one request after another — is an atomic update in tokio, not a
//! trip through the wheel. hyper's behaviour is unchanged: the same deadlines, the same
//! errors. Written here because no crate offers such a timer for hyper.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The timer of one connection, for hyper's `http1::Builder::timer`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionTimer {
    /// Created on first use: many connections never wait for a second head.
    shared: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl hyper::rt::Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    /// tokio's clock, as hyper-util's timer has it: the one the deadlines run on (and the one
    /// tests can pause).
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline {
            deadline: tokio::time::Instant::from_std(deadline),
            shared: self.shared.clone(),
        })
    }
}

/// One deadline handed to hyper; polling it moves the connection's timer there.
struct Deadline {
    deadline: tokio::time::Instant,
    shared: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A poisoned lock only means another deadline panicked mid-poll; the timer is fine.
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let sleep = shared.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(self.deadline)));
        if sleep.deadline() != self.deadline {
            sleep.as_mut().reset(self.deadline);
        }
        sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Deadline {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer as _;

    /// Whether `elapsed` is `want`, give or take tokio's millisecond granularity.
    fn about(elapsed: Duration, want: Duration) -> bool {
        elapsed >= want && elapsed <= want + Duration::from_millis(5)
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_fire_when_due_one_after_another() {
        let timer = ConnectionTimer::default();
        let start = tokio::time::Instant::now();
        timer.sleep(Duration::from_secs(1)).await;
        assert!(
            about(start.elapsed(), Duration::from_secs(1)),
            "{:?}",
            start.elapsed()
        );
        // A later deadline on the same connection: the one timer moves.
        let start = tokio::time::Instant::now();
        timer.sleep(Duration::from_secs(2)).await;
        assert!(
            about(start.elapsed(), Duration::from_secs(2)),
            "{:?}",
            start.elapsed()
        );
        // One earlier than the timer holds works as well.
        let start = tokio::time::Instant::now();
        let mut later = timer.sleep(Duration::from_secs(5));
        assert!(futures_poll_once(&mut later).is_pending());
        timer.sleep(Duration::from_millis(10)).await;
        assert!(
            about(start.elapsed(), Duration::from_millis(10)),
            "{:?}",
            start.elapsed()
        );
    }

    /// Polls once with a no-op waker.
    fn futures_poll_once(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> Poll<()> {
        sleep
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_deadline_does_not_fire_early() {
        let timer = ConnectionTimer::default();
        let mut sleep = timer.sleep(Duration::from_secs(10));
        let polled = tokio::time::timeout(Duration::from_secs(9), &mut sleep).await;
        assert!(polled.is_err(), "not yet due");
        sleep.await;
    }
}
