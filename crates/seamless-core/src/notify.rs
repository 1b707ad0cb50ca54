//! Telling systemd what the service is doing (`sd_notify(3)`).
//!
//! Every call is fire-and-forget: without `NOTIFY_SOCKET` (not under systemd) it does nothing,
//! and a failed send is logged once as a warning. The service never stops because its manager
//! could not be told something — and never waits for it either: the datagram is sent without
//! blocking, because a full receive queue (a manager that does not read, the kernel allows ten
//! datagrams by default) would otherwise stall whichever runtime thread sent it.

use std::io;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends state changes to the service manager.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    /// Set after the first failed send, so a broken `NOTIFY_SOCKET` is reported once, not on
    /// every watchdog ping.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for this process's `NOTIFY_SOCKET` (if any).
    pub(crate) fn new() -> Self {
        Notifier::default()
    }

    /// `READY=1` with a status line: startup finished, or a reload finished (well or not).
    pub(crate) fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, which systemd 253+ uses to match the reload to the
    /// signal it sent. Must be followed by [`Notifier::ready`].
    pub(crate) fn reloading(&self) {
        let now = monotonic_usec();
        let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
        if let Some(now) = now {
            states.push(NotifyState::MonotonicUsec(now.into()));
        }
        self.send(&states);
    }

    /// `STOPPING=1` with a status line. Sent once, when the drain starts.
    pub(crate) fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// `STATUS=`: one line for `systemctl status`.
    pub(crate) fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `EXTEND_TIMEOUT_USEC=`: asks for at least `by` more time in the current phase (used when
    /// a drain may outlast `TimeoutStopSec=`).
    pub(crate) fn extend_timeout(&self, by: Duration) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
    }

    /// `MAINPID=` then `BARRIER=1`: hands the unit to a successor, and returns once systemd has
    /// processed the handover, so our own exit afterwards is not taken for the main process
    /// dying. Needs `NotifyAccess=all` (the successor speaks for itself from then on).
    pub(crate) async fn main_pid(&self, pid: i32, status: &str) {
        let Ok(pid) = u32::try_from(pid) else { return };
        self.send(&[NotifyState::MainPid(pid), NotifyState::Status(status)]);
        if std::env::var_os(NOTIFY_SOCKET).is_none() {
            return;
        }
        if let Err(error) = barrier(BARRIER_TIMEOUT).await {
            tracing::warn!(%error, "systemd did not confirm the MAINPID handover");
        }
    }

    /// `FDSTOREREMOVE=1` for every fd stored under `name`: this process has taken them over.
    pub(crate) fn fd_store_remove(&self, name: &str) {
        self.send(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]);
    }

    /// `WATCHDOG=1`: the serving runtime is alive.
    pub(crate) fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
            return;
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Err(error) = send_nonblocking(&socket.to_string_lossy(), message.as_bytes()) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, notify_socket = %socket.to_string_lossy(), "cannot notify the service manager");
            }
        }
    }
}

/// How long to wait for systemd to confirm it has read our messages.
pub(crate) const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// `sd_notify_barrier(3)`: sends `BARRIER=1` with the write end of a pipe; systemd closes it
/// once it has processed every message before it, which we see as end-of-file.
pub(crate) async fn barrier(timeout: Duration) -> io::Result<()> {
    let (read, write) = std::io::pipe()?;
    sd_notify::notify_with_fds(&[NotifyState::Custom("BARRIER=1")], &[write.as_fd()])?;
    drop(write);
    let mut read = tokio::net::unix::pipe::Receiver::from_owned_fd(read.into())?;
    let mut buf = [0u8; 8];
    match tokio::time::timeout(timeout, tokio::io::AsyncReadExt::read(&mut read, &mut buf)).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no barrier reply")),
    }
}

/// Path of the manager's datagram socket; `@name` is in the abstract namespace.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

fn send_nonblocking(socket: &str, message: &[u8]) -> io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let sender = UnixDatagram::unbound()?;
    sender.set_nonblocking(true)?;
    let sent = sender.send_to_addr(message, &addr)?;
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification truncated",
        ))
    }
}

/// `CLOCK_MONOTONIC` in microseconds: the clock systemd and `NAME reload` compare against.
pub(crate) fn monotonic_usec() -> Option<u64> {
    match NotifyState::monotonic_usec_now() {
        Ok(NotifyState::MonotonicUsec(usec)) => u64::try_from(usec).ok(),
        _ => None,
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or
/// ours), or `None`.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pings the watchdog at half the interval, forever. Spawn it on the serving runtime: if that
/// runtime stalls, the pings stop and systemd restarts the service, which is the point.
pub(crate) async fn watchdog(notifier: std::sync::Arc<Notifier>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        notifier.watchdog();
    }
}
