//! The server: accept loops, connections, reloads, upgrades and the zero-drop drain.
//!
//! [`run`] is the one entry point for every way the service starts — sockets from systemd,
//! self-bound sockets, tests: the caller brings listeners and a stream of [`Request`]s and
//! decides where they come from. Inside, a `Service` turns each event into one method call:
//! a reload, an upgrade started or finished, the hand-over to a successor, the drain.
//!
//! ## Why the drain drops nothing
//!
//! The usual graceful shutdown (hyper's `graceful_shutdown` on every connection at once) closes
//! idle keep-alive connections immediately, racing the client's next request, which then fails.
//! Here, when the drain starts:
//!
//! 1. accept loops stop and drop their listeners — under systemd the socket stays open in the
//!    socket unit, so new connections wait in the kernel backlog for the next process;
//! 2. under systemd with an fd store (`FileDescriptorStoreMax=`), every HTTP/1 connection is
//!    *kept*: once it is between two requests, it goes to systemd's fd store instead of being
//!    closed, and the next process serves it — the client never notices the restart; after a
//!    binary upgrade it goes to the successor instead (see `keep` and `connection`);
//! 3. a connection that cannot be kept (no store, the store is full, bytes read ahead) closes
//!    gently: every response from now on carries `Connection: close`, so a busy
//!    HTTP/1 connection ends cleanly right after its next response, and an idle one keeps
//!    reading for `shutdown.linger`, so a request already on its way is answered rather than
//!    cut; only connections still idle after that are closed;
//! 4. HTTP/2 connections get GOAWAY at once: the protocol tells clients which streams were
//!    processed, so nothing is lost;
//! 5. `shutdown.drain_timeout` bounds it all.
//!
//! ## Announcing the stop first
//!
//! Behind a load balancer, an instance that stops accepting at once still gets the traffic the
//! balancer sends until its health checks notice. With `shutdown.announce` set, a stop first
//! makes `/readyz` answer 503 for that long while everything else is served as usual (accepting,
//! keep-alive, no `Connection: close`), so the balancer takes the instance out of rotation
//! before the drain begins. A second stop request skips the rest of the wait; an exit request
//! exits. A reload during the announce is applied as usual (requests are still served), but the
//! announce keeps the length it started with.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::connection::{self, Peer, Serving, Stream};
use crate::drain::{Drain, Watch};
use crate::keep::{CONNECTION_NAME, Handover, Inbound, Store};
use crate::listeners::{Listener, Named, Sockets, serves_http};
use crate::notify::{self, Notifier};
use crate::reload::{Outcome, Reloader};
use crate::routes::Shared;
use crate::signals::Request;
use crate::tls::{self, HTTPS_NAME};
use crate::upgrade::{self, Successor, UpgradeError};
use crate::verdict::Verdict;

/// Extra stop time asked of systemd beyond the drain deadline, for logging and exit.
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of fds) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How [`run`] ended.
///
/// The binary exits 0 after [`Stopped::Drained`] and [`Stopped::DeadlineReached`], 1 after
/// [`Stopped::Exited`]; [`run`]'s example shows a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished before the deadline.
    Drained,
    /// The deadline passed; this many connections were cut.
    DeadlineReached {
        /// Connections still open at the deadline.
        cut: usize,
    },
    /// An immediate exit was requested.
    Exited,
}

/// How this process takes part in binary upgrades (`SIGUSR2`, `NAME upgrade`): the installed
/// binary is started with the listening sockets, and this process drains once it serves.
///
/// ```
/// // Upgrades to the binary this process was started from.
/// let upgrades = seamless_core::server::Upgrades::default();
/// # let _ = upgrades;
/// ```
#[derive(Debug)]
pub struct Upgrades {
    /// What to start on `SIGUSR2`.
    successor: Successor,
    /// Where the outcome is written for `NAME upgrade`.
    verdict_file: Option<PathBuf>,
    /// When this process is itself a successor: the pipe to tell its parent it serves.
    parent: Option<upgrade::Parent>,
}

impl Upgrades {
    /// Upgrades to the binary at this process's install path, reporting to
    /// `$RUNTIME_DIRECTORY/upgrade-verdict`; `parent` is the process that started this one by
    /// an upgrade, if any.
    pub(crate) fn of_this_process(parent: Option<upgrade::Parent>) -> Self {
        Upgrades {
            successor: Successor::of_this_process(),
            verdict_file: crate::verdict::default_path(upgrade::VERDICT_FILE),
            parent,
        }
    }
}

impl Default for Upgrades {
    /// Upgrades to the binary at this process's install path; this process was not started by
    /// an upgrade.
    fn default() -> Self {
        Upgrades::of_this_process(None)
    }
}

/// Serves `sockets` (listeners, and connections kept by the previous process) until a
/// [`Request::Drain`] (or the end of `requests`) has been carried
/// out, a successor has taken over after [`Request::Upgrade`], or a [`Request::Exit`] arrives.
///
/// Sends `READY=1` once every listener is being served, `RELOADING=1`/`READY=1` around each
/// reload, and `STOPPING=1` when the drain starts (or `MAINPID=` when a successor took over).
///
/// [`main`](crate::main) calls it with systemd's sockets (or self-bound ones) and signals;
/// tests call it with their own:
///
/// ```
/// use std::io::{Read as _, Write as _};
/// use std::sync::Arc;
///
/// use axum::{Router, routing::get};
/// use seamless_core::listeners::{Listener, Named};
/// use seamless_core::{App, BoxError, Identity, Loader, Metrics, NoConfig, Stopped};
/// use seamless_core::{reload::Reloader, routes::Shared, server::Upgrades, signals::Request};
///
/// struct Hello;
///
/// impl App for Hello {
///     const IDENTITY: Identity = seamless_core::identity!();
///     type Config = NoConfig;
///     type State = ();
///     async fn state(_: &NoConfig, _: &mut Metrics) -> Result<(), BoxError> { Ok(()) }
///     fn router(_: &Arc<()>, _: &NoConfig) -> Router {
///         Router::new().route("/", get(|| async { "hello\n" }))
///     }
/// }
///
/// let runtime = tokio::runtime::Runtime::new()?;
/// runtime.block_on(async {
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
///     let addr = listener.local_addr()?;
///     let listeners = vec![Named { name: "http".into(), listener: Listener::Tcp(listener) }];
///     let loader = Loader::new(&Hello::IDENTITY, Some("/dev/null".into()));
///     let loaded = loader.load::<NoConfig>()?;
///     let shared = Arc::new(Shared::new(&Hello::IDENTITY, Metrics::new("hello")));
///     let reloader = Reloader::<Hello>::new(loader, loaded, Arc::new(()), shared);
///     let (requests_tx, requests_rx) = tokio::sync::mpsc::channel(1);
///     let upgrades = Upgrades::default();
///     let serving = tokio::spawn(seamless_core::run(listeners, reloader, requests_rx, upgrades));
///
///     let answer = tokio::task::spawn_blocking(move || {
///         let mut stream = std::net::TcpStream::connect(addr)?;
///         stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
///         let mut answer = String::new();
///         stream.read_to_string(&mut answer)?;
///         std::io::Result::Ok(answer)
///     })
///     .await??;
///     assert!(answer.ends_with("\r\n\r\nhello\n"), "{answer}");
///
///     requests_tx.send(Request::Drain).await?;
///     assert_eq!(serving.await?, Stopped::Drained);
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub async fn run<A: App>(
    sockets: impl Into<Sockets>,
    reloader: Reloader<A>,
    mut requests: mpsc::Receiver<Request>,
    upgrades: Upgrades,
) -> Stopped {
    let mut service = Service::start(sockets.into(), reloader, upgrades);
    let mut deferred = None;
    loop {
        let event = match deferred.take() {
            Some(request) => Event::Requested(Some(request)),
            None => service.next_event(&mut requests).await,
        };
        match event {
            Event::Requested(Some(Request::Reload)) => deferred = service.reload(&mut requests),
            #[cfg(feature = "stall-hook")]
            Event::Requested(Some(Request::Stall)) => stall_runtime(),
            Event::Requested(Some(Request::Upgrade)) => service.start_upgrade(),
            Event::Requested(Some(Request::Exit)) => return service.exit(),
            Event::Requested(Some(Request::Drain) | None) => {
                if service.announce(&mut requests).await == Request::Exit {
                    return service.exit();
                }
                return service.drain(&mut requests).await;
            }
            Event::UpgradeFinished(Ok((pid, handover))) => {
                return service.hand_over(pid, handover, &mut requests).await;
            }
            Event::UpgradeFinished(Err(error)) => service.upgrade_failed(&error),
        }
    }
}

/// What the serving process waits for.
enum Event {
    /// A request from a signal (or the caller); `None` when the request stream ended.
    Requested(Option<Request>),
    /// The upgrade under way ended: the successor's PID, or why it did not take over.
    UpgradeFinished(Result<(i32, Handover), UpgradeError>),
}

/// An upgrade under way.
struct Upgrading {
    /// Starts the successor and waits until it serves.
    task: JoinHandle<Result<(i32, Handover), UpgradeError>>,
    /// When it was requested (`CLOCK_MONOTONIC` µs), matching the verdict to the request.
    started_usec: u64,
}

/// The serving process between `READY=1` and the end of the drain.
struct Service<A: App> {
    /// The live configuration and how to replace it.
    reloader: Reloader<A>,
    /// Metrics and the draining flag.
    shared: Arc<Shared>,
    /// Talks to systemd.
    notifier: Arc<Notifier>,
    /// Tells accept loops and connections that the drain began; knows when they ended.
    drain: Drain,
    /// Copies of every listening socket, for a successor; the originals go to accept loops.
    inherit: Arc<[(String, OwnedFd)]>,
    /// `http (127.0.0.1:8080), …`, for `STATUS=`.
    serving: String,
    /// Pings systemd's watchdog, when it asked for that.
    watchdog: Option<JoinHandle<()>>,
    /// How upgrades are done and reported.
    upgrades: Upgrades,
    /// The upgrade under way, if any.
    upgrading: Option<Upgrading>,
    /// Whether `STOPPING=1` went out with an announce, so the drain does not send it again.
    announced: bool,
    /// Where the drain keeps connections: systemd's fd store, or an upgrade's successor.
    store: Arc<Store>,
}

impl<A: App> Service<A> {
    /// Serves the connections the previous process kept, starts an accept loop per listener
    /// and the watchdog, and tells systemd (and a parent process after an upgrade) that the
    /// service is ready.
    fn start(sockets: Sockets, mut reloader: Reloader<A>, mut upgrades: Upgrades) -> Self {
        let notifier = Arc::new(Notifier::new());
        let shared = reloader.shared();
        let drain = Drain::new();
        let store = Arc::new(Store::from_env());
        let connections = Arc::new(Serving {
            live: reloader.live(),
            shared: shared.clone(),
            store: store.clone(),
        });
        // Kept connections first: a request their client sent while no process ran is waiting.
        let kept = sockets.connections.len();
        for fd in sockets.connections {
            if let Some(watch) = drain.watch() {
                adopt(fd, &connections, watch);
            }
        }
        if kept > 0 {
            // They are ours now; a copy left in the store would hold them open for ever.
            notifier.fd_store_remove(CONNECTION_NAME);
            tracing::info!(
                connections = kept,
                "serving connections kept by the previous process"
            );
        }
        let mut serving = Vec::new();
        let mut inherit = Vec::new();
        for Named { name, listener } in sockets.listeners {
            match listener.as_fd().try_clone_to_owned() {
                Ok(fd) => inherit.push((name.clone(), fd)),
                Err(error) => {
                    tracing::warn!(%error, socket = %name, "cannot keep a copy for upgrades");
                }
            }
            let security = if serves_http(&name) {
                Security::Plain
            } else if name == HTTPS_NAME {
                if let Err(error) = reloader.serve_https() {
                    tracing::error!(socket = %name, address = %listener, %error, "not serving the socket");
                    continue;
                }
                Security::Tls
            } else {
                tracing::warn!(socket = %name, address = %listener, "ignoring socket: only `http` and `https` are served");
                continue;
            };
            tracing::info!(socket = %name, address = %listener, "listening");
            serving.push(format!("{name} ({listener})"));
            let (watch, connections) = (drain.watch(), connections.clone());
            tokio::spawn(async move {
                if let Some(watch) = watch {
                    accept_loop(listener, security, connections, watch).await;
                }
            });
        }
        let serving = serving.join(", ");
        let watchdog = notify::watchdog_interval().map(|interval| {
            tracing::info!(interval_ms = millis(interval), "watchdog enabled");
            tokio::spawn(notify::watchdog(notifier.clone(), interval))
        });
        let generation = reloader.live().load().number;
        notifier.ready(&format!(
            "serving on {serving}; config generation {generation}"
        ));
        tracing::info!(generation, pid = std::process::id(), "ready");
        if let Some(parent) = upgrades.parent.take() {
            if let Some(inbound) = parent.report_ready() {
                if let Some(watch) = drain.watch() {
                    tokio::spawn(receive_handed(inbound, connections.clone(), watch));
                }
            }
            tracing::info!("took over from the previous process");
        }
        Service {
            reloader,
            shared,
            notifier,
            drain,
            inherit: inherit.into(),
            serving,
            watchdog,
            upgrades,
            upgrading: None,
            announced: false,
            store,
        }
    }

    /// The next request, or the end of the upgrade under way.
    async fn next_event(&mut self, requests: &mut mpsc::Receiver<Request>) -> Event {
        let upgrade_finished = async {
            match &mut self.upgrading {
                Some(upgrading) => (&mut upgrading.task)
                    .await
                    .unwrap_or_else(|e| Err(UpgradeError::Aborted(e.to_string()))),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            request = requests.recv() => Event::Requested(request),
            finished = upgrade_finished => Event::UpgradeFinished(finished),
        }
    }

    /// Carries out one reload, then one more if more were requested meanwhile (any number of
    /// `SIGHUP`s during a reload coalesce into one). Returns a non-reload request it came
    /// across, for the caller to handle next.
    fn reload(&mut self, requests: &mut mpsc::Receiver<Request>) -> Option<Request> {
        let serving = &self.serving;
        let mut deferred = None;
        loop {
            self.notifier.reloading();
            let status = match self.reloader.reload() {
                Outcome::Applied {
                    generation,
                    on_restart,
                } if on_restart.is_empty() => {
                    format!("serving on {serving}; config generation {generation}")
                }
                Outcome::Applied {
                    generation,
                    on_restart,
                } => format!(
                    "serving on {serving}; config generation {generation}; takes effect on restart: {}",
                    on_restart.join(", ")
                ),
                Outcome::Failed { generation, error } => format!(
                    "serving on {serving}; config generation {generation}; reload failed: {error}"
                ),
            };
            // READY=1 ends the reload in systemd's eyes, also after a failure.
            self.notifier.ready(&status);

            // A reload requested before another request is still carried out first: the
            // operator's `NAME reload` waits for it.
            let mut again = false;
            while deferred.is_none() {
                match requests.try_recv() {
                    Ok(Request::Reload) => again = true,
                    Ok(other) => deferred = Some(other),
                    Err(_) => break,
                }
            }
            if !again {
                return deferred;
            }
        }
    }

    /// Starts the installed binary as a successor, handing it copies of the listeners.
    fn start_upgrade(&mut self) {
        if self.upgrading.is_some() {
            tracing::warn!("upgrade requested while one is in progress; ignored");
            return;
        }
        let started_usec = notify::monotonic_usec().unwrap_or(0);
        let exe = self.upgrades.successor.exe().display().to_string();
        tracing::info!(exe, "upgrade requested; starting the new binary");
        Verdict::pending(started_usec, format!("an upgrade to {exe} is in progress"))
            .publish(self.upgrades.verdict_file.as_deref());
        let timeout = self.reloader.live().load().config.upgrade.ready_timeout;
        let (successor, inherit) = (self.upgrades.successor.clone(), self.inherit.clone());
        let task = tokio::spawn(async move { successor.start(&inherit, timeout).await });
        self.upgrading = Some(Upgrading { task, started_usec });
    }

    /// The successor did not take over: report why and serve on.
    fn upgrade_failed(&mut self, error: &UpgradeError) {
        let started_usec = self.upgrading.take().map_or(0, |u| u.started_usec);
        tracing::error!(%error, "upgrade failed; serving on");
        let pid = std::process::id();
        Verdict::new(
            started_usec,
            false,
            format!("upgrade failed, PID {pid} serves on: {error}"),
        )
        .publish(self.upgrades.verdict_file.as_deref());
        self.notifier.status(&format!(
            "serving on {}; upgrade failed: {error}",
            self.serving
        ));
    }

    /// Exits at once, cutting open connections.
    fn exit(mut self) -> Stopped {
        self.cancel_upgrade();
        let open = self.shared.metrics.open_connections();
        tracing::warn!(open_connections = open, "exiting at once on request");
        Stopped::Exited
    }

    /// The successor `pid` serves: make it the unit's main process, then drain.
    async fn hand_over(
        mut self,
        pid: i32,
        handover: Handover,
        requests: &mut mpsc::Receiver<Request>,
    ) -> Stopped {
        let started_usec = self.upgrading.take().map_or(0, |u| u.started_usec);
        // The successor runs already: what systemd's store holds would reach only the next
        // restart, so connections go to the successor instead.
        self.store.hand_to(handover);
        self.shared.set_draining();
        let open = self.shared.metrics.open_connections();
        // From here on the successor speaks for the unit: no STOPPING=1, no STATUS, no
        // watchdog pings from us.
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        self.notifier
            .main_pid(
                pid,
                &format!("serving on {}; upgraded to PID {pid}", self.serving),
            )
            .await;
        Verdict::new(
            started_usec,
            true,
            format!(
                "PID {pid} serves now; PID {} drains {open} connections",
                std::process::id()
            ),
        )
        .publish(self.upgrades.verdict_file.as_deref());
        tracing::info!(
            successor = pid,
            open_connections = open,
            "handed over; draining"
        );
        self.finish_drain(requests).await
    }

    /// Stops accepting and drains, telling systemd how long it may take.
    async fn drain(mut self, requests: &mut mpsc::Receiver<Request>) -> Stopped {
        self.cancel_upgrade();
        self.shared.set_draining();
        let open = self.shared.metrics.open_connections();
        let deadline = self.reloader.live().load().config.shutdown.drain_timeout;
        let status = format!("draining {open} connections");
        if self.announced {
            self.notifier.status(&status);
        } else {
            self.notifier.stopping(&status);
        }
        self.notifier
            .extend_timeout(deadline.saturating_add(STOP_MARGIN));
        tracing::info!(
            open_connections = open,
            deadline_ms = millis(deadline),
            "draining"
        );
        self.finish_drain(requests).await
    }

    /// Announces the stop for `shutdown.announce` before the drain: `/readyz` answers 503, and
    /// everything else is served as usual. Returns what to do next: [`Request::Drain`] when
    /// the time is up or a stop was requested again, [`Request::Exit`] on an exit request.
    async fn announce(&mut self, requests: &mut mpsc::Receiver<Request>) -> Request {
        let config = self.reloader.live().load().config.shutdown.clone();
        if config.announce.is_zero() {
            return Request::Drain;
        }
        self.cancel_upgrade();
        self.shared.set_announcing(true);
        self.announced = true;
        let status = format!(
            "announcing shutdown: not ready, draining in {}",
            humantime::format_duration(config.announce)
        );
        self.notifier.stopping(&status);
        // systemd's stop timeout must cover the announce and the drain after it.
        let stop_time = config.announce.saturating_add(config.drain_timeout);
        self.notifier
            .extend_timeout(stop_time.saturating_add(STOP_MARGIN));
        tracing::info!(
            announce_ms = millis(config.announce),
            "announcing shutdown: /readyz answers 503"
        );
        let elapsed = tokio::time::sleep(config.announce);
        tokio::pin!(elapsed);
        let (mut deferred, mut open) = (None, true);
        loop {
            let request = match deferred.take() {
                Some(request) => Some(request),
                None => tokio::select! {
                    () = &mut elapsed => return Request::Drain,
                    request = requests.recv(), if open => request,
                },
            };
            match request {
                // No one can ask for anything any more: wait out the announce.
                None => open = false,
                Some(Request::Reload) => {
                    // Applied: requests are still served. A unit already stopping stays so
                    // whatever RELOADING=1/READY=1 say; `NAME reload` gets its verdict.
                    deferred = self.reload(requests);
                    self.notifier.status(&status);
                }
                Some(Request::Upgrade) => {
                    tracing::warn!("upgrade requested while stopping; ignored");
                }
                Some(Request::Drain) => {
                    tracing::info!("stop requested again; draining now");
                    return Request::Drain;
                }
                Some(Request::Exit) => return Request::Exit,
                #[cfg(feature = "stall-hook")]
                Some(Request::Stall) => stall_runtime(),
            }
        }
    }

    /// A stop during an upgrade kills the starting successor: it must not outlive the stop.
    fn cancel_upgrade(&mut self) {
        if let Some(upgrading) = self.upgrading.take() {
            upgrading.task.abort();
            tracing::warn!("upgrade cancelled by the stop request");
        }
    }

    /// Waits for every connection to finish, at most `shutdown.drain_timeout`, or until an
    /// exit is requested.
    async fn finish_drain(mut self, requests: &mut mpsc::Receiver<Request>) -> Stopped {
        let deadline = self.reloader.live().load().config.shutdown.drain_timeout;
        let stopped = finish_drain(&mut self.drain, deadline, &self.shared, requests).await;
        let handed = self.store.handed();
        if handed > 0 {
            tracing::info!(
                connections = handed,
                "handed connections to the new process"
            );
        }
        let kept = self.store.stored();
        if kept > 0 {
            // systemd must have taken every stored connection before we exit: a message read
            // after the process is gone is dropped, with the connection in it.
            if let Err(error) = notify::barrier(notify::BARRIER_TIMEOUT).await {
                tracing::warn!(%error, "systemd did not confirm the connections kept in its fd store");
            }
            tracing::info!(
                connections = kept,
                "kept connections in systemd's fd store for the next process"
            );
        }
        stopped
    }
}

/// Waits for every connection to finish, at most `deadline`, or until an exit is requested.
async fn finish_drain(
    drain: &mut Drain,
    deadline: Duration,
    shared: &Shared,
    requests: &mut mpsc::Receiver<Request>,
) -> Stopped {
    let started = tokio::time::Instant::now();
    let exit_requested = async {
        while let Some(request) = requests.recv().await {
            if request == Request::Exit {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        finished = drain.finish(deadline) => match finished {
            Ok(()) => {
                tracing::info!(elapsed_ms = millis(started.elapsed()), "drained");
                Stopped::Drained
            }
            Err(_) => {
                let cut = shared.metrics.open_connections();
                tracing::warn!(open_connections = cut, "drain deadline reached; closing the remaining connections");
                Stopped::DeadlineReached { cut }
            }
        },
        () = exit_requested => {
            tracing::warn!(open_connections = shared.metrics.open_connections(), "exiting at once on request during the drain");
            Stopped::Exited
        }
    }
}

/// Blocks every runtime thread for an hour, as a deadlocked service would: nothing is served
/// and the watchdog stops being pinged. Test builds only (`stall-hook`).
#[cfg(feature = "stall-hook")]
fn stall_runtime() {
    tracing::warn!("stalling the runtime on request (stall-hook)");
    let threads = std::thread::available_parallelism().map_or(4, usize::from);
    // More tasks than threads: idle workers steal them until every one is stuck.
    for _ in 0..threads * 2 {
        tokio::spawn(async { std::thread::sleep(Duration::from_secs(3600)) });
    }
}

/// Whole milliseconds, saturating, for log fields.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a listener's connections speak TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// Plain HTTP: the `http` (or unnamed) socket, and connections kept or handed over.
    Plain,
    /// HTTPS: the `https` socket.
    Tls,
}

/// Accepts connections until the drain starts, then drops the listener.
async fn accept_loop(listener: Listener, security: Security, serving: Arc<Serving>, watch: Watch) {
    // One wait for the whole loop: made anew for every accept, it would join and leave the
    // drain's waiter list (under its lock) once per connection.
    let mut started = watch.started();
    loop {
        let accepted = tokio::select! {
            () = &mut started => return,
            accepted = accept(&listener) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE or a connection reset before accept: neither is fatal.
                tracing::warn!(%error, address = %listener, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let limit = serving.live.load().config.http.max_connections;
        if serving.shared.metrics.open_connections() >= limit {
            serving.shared.metrics.rejected();
            tracing::debug!(
                peer = &*peer.0,
                limit,
                "over http.max_connections; answering 503"
            );
            // A plain `503` means nothing to a TLS client: it is just closed.
            if security == Security::Plain {
                tokio::spawn(connection::reject(stream));
            }
            continue;
        }
        spawn(stream, security, peer, serving.clone(), watch.clone());
    }
}

/// In a successor: serves the connections the previous process hands over during its drain,
/// until it has exited.
async fn receive_handed(inbound: Inbound, serving: Arc<Serving>, watch: Watch) {
    let mut handed = 0usize;
    loop {
        match inbound.next().await {
            Ok(fds) if fds.is_empty() => break,
            Ok(fds) => {
                handed += fds.len();
                for fd in fds {
                    adopt(fd, &serving, watch.clone());
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot receive connections from the previous process");
                break;
            }
        }
    }
    if handed > 0 {
        tracing::info!(
            connections = handed,
            "serving connections handed over by the previous process"
        );
    }
}

/// Serves a connection the previous process kept or handed over, as if just accepted.
fn adopt(fd: OwnedFd, serving: &Arc<Serving>, watch: Watch) {
    match Stream::adopt(fd) {
        Ok((stream, peer)) => spawn(stream, Security::Plain, peer, serving.clone(), watch),
        Err(error) => tracing::warn!(%error, "cannot serve a passed connection; closing it"),
    }
}

/// Serves a connection in a task of its own, counted in the open connections; a TLS one after
/// its handshake.
fn spawn(stream: Stream, security: Security, peer: Peer, serving: Arc<Serving>, watch: Watch) {
    serving.shared.metrics.connection_opened();
    tokio::spawn(async move {
        let shared = serving.shared.clone();
        let stream = match security {
            Security::Plain => Some(stream),
            Security::Tls => handshake(stream, &peer, &serving).await,
        };
        if let Some(stream) = stream {
            connection::serve(stream, peer, serving, watch).await;
        }
        shared.metrics.connection_closed();
    });
}

/// The TLS handshake of a connection on the `https` socket, with the certificate of the
/// generation current now, bounded by its `http.header_read_timeout`.
async fn handshake(stream: Stream, peer: &Peer, serving: &Serving) -> Option<Stream> {
    let generation = serving.live.load_full();
    // A reload never drops the certificate while `https` is served (`Reloader::serve_https`).
    let tls = generation.tls.as_ref()?;
    let limit = generation.config.http.header_read_timeout;
    tls::accept(stream, tls, limit, &serving.shared.metrics, &peer.0).await
}

async fn accept(listener: &Listener) -> std::io::Result<(Stream, Peer)> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            // Small responses must not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            Ok((Stream::Tcp(stream), Peer(addr.to_string().into())))
        }
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            Ok((Stream::Unix(stream), Peer("unix".into())))
        }
    }
}
