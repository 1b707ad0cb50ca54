//! Starting, observing and stopping a run.
//!
//! [`start`] spawns the workers on the current tokio runtime and returns a
//! [`Running`] handle: tests use it to wait until load flows, mark events
//! ("restart"), and finally stop the run and collect the [`Report`]. [`run`]
//! wraps that for the common "run until this future resolves" case.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use crate::Load;
use crate::report::Report;
use crate::worker::{Plan, Shared, WorkerResult, run_worker};

/// Live counters of a run in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Requests completed so far (any outcome).
    pub total: u64,
    /// Requests completed with a 2xx response.
    pub ok: u64,
    /// `total - ok`.
    pub failed: u64,
    /// Time since the run started.
    pub elapsed: Duration,
}

/// A cloneable handle that observes and stops a run from anywhere (a signal
/// handler, a progress printer, a test helper). Stopping is graceful:
/// requests in flight complete.
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
    started: Instant,
}

impl Handle {
    /// Tells all workers to start no new request. Idempotent.
    pub fn stop(&self) {
        self.shared.stop.stop();
    }

    /// Whether [`Handle::stop`] was called or the duration elapsed.
    pub fn is_stopped(&self) -> bool {
        self.shared.stop.is_stopped()
    }

    /// Live totals. Cheap enough to poll every few milliseconds.
    pub fn progress(&self) -> Progress {
        let (mut total, mut ok) = (0, 0);
        for c in self.shared.live.iter() {
            total += c.total.load(Ordering::Relaxed);
            ok += c.ok.load(Ordering::Relaxed);
        }
        Progress {
            total,
            ok,
            failed: total - ok,
            elapsed: self.started.elapsed(),
        }
    }
}

/// A run in progress. Dropping it without [`Running::stop`] or
/// [`Running::finish`] stops the workers and discards their results.
#[derive(Debug)]
pub struct Running {
    load: Load,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<WorkerResult>>,
    started: Instant,
    started_at: SystemTime,
    marks: Mutex<Vec<(String, Instant)>>,
}

/// Starts the workers on the current tokio runtime and returns at once.
///
/// With a multi-threaded runtime the workers spread across its threads.
///
/// # Panics
///
/// If `load` fails [`Load::validate`], or when called outside a tokio
/// runtime.
pub fn start(load: Load) -> Running {
    if let Err(e) = load.validate() {
        panic!("invalid load: {e}");
    }
    let started_at = SystemTime::now();
    let started = Instant::now();
    let plan = Arc::new(Plan::new(&load, started));
    let shared = Arc::new(Shared::new(load.connections, load.max_records));
    let workers = (0..load.connections)
        .map(|i| tokio::spawn(run_worker(plan.clone(), shared.clone(), i)))
        .collect();
    if let Some(duration) = load.duration {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep_until((started + duration).into()) => shared.stop.stop(),
                _ = shared.stop.wait() => {}
            }
        });
    }
    Running {
        load,
        shared,
        workers,
        started,
        started_at,
        marks: Mutex::new(Vec::new()),
    }
}

/// Runs `load` until `stop` resolves (or [`Load::duration`] elapses, if set)
/// and returns the report.
///
/// # Panics
///
/// As [`start`].
pub async fn run(load: Load, stop: impl Future<Output = ()>) -> Report {
    let running = start(load);
    let shared = running.shared.clone();
    tokio::select! {
        _ = stop => {}
        _ = shared.stop.wait() => {}
    }
    running.stop().await
}

impl Running {
    /// Live totals. Cheap enough to poll every few milliseconds.
    pub fn progress(&self) -> Progress {
        self.handle().progress()
    }

    /// Waits until at least `n` requests have succeeded, polling every
    /// 5 ms. Returns `false` if that did not happen within `within` or the
    /// run stopped first.
    pub async fn wait_for_ok(&self, n: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.progress().ok >= n {
                return true;
            }
            if Instant::now() >= deadline || self.shared.stop.is_stopped() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Records an event at the current instant; the report analyses the
    /// window around it.
    pub fn mark(&self, label: impl Into<String>) {
        let now = Instant::now();
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((label.into(), now));
    }

    /// A cloneable handle that can observe and stop the run from elsewhere.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
            started: self.started,
        }
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops the run gracefully and returns the report: requests in flight
    /// complete (bounded by the request timeout), no new ones start.
    pub async fn stop(self) -> Report {
        self.shared.stop.stop();
        self.finish().await
    }

    /// Waits for the run to end by itself (its duration elapses or a
    /// [`Handle`] stops it) and returns the report.
    pub async fn finish(mut self) -> Report {
        let mut results = Vec::with_capacity(self.workers.len());
        for handle in std::mem::take(&mut self.workers) {
            match handle.await {
                Ok(r) => results.push(r),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("load worker did not finish: {e}"),
            }
        }
        let elapsed = self.started.elapsed();
        let truncated = self.shared.records_truncated.load(Ordering::Relaxed);
        let marks = std::mem::take(&mut *self.marks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut report = Report::build(
            &self.load,
            self.started,
            self.started_at,
            elapsed,
            results,
            truncated,
        );
        for (label, at) in marks {
            report.add_event(label, at);
        }
        report
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Abandoned runs must not keep loading the server.
        self.shared.stop.stop();
    }
}
