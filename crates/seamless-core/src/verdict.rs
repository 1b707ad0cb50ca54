//! Verdicts: how the service answers a command-line tool that signalled it.
//!
//! A signal carries no reply. So after acting on `SIGHUP` (reload) or `SIGUSR2` (upgrade) the
//! service writes a small [`Verdict`] file into `$RUNTIME_DIRECTORY`, and the tool that sent the
//! signal ([`request`]) waits for a verdict about an attempt that *started after* its signal —
//! both sides read `CLOCK_MONOTONIC`, which is the same clock for every process on the machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::notify::monotonic_usec;

/// Set by systemd for units with `RuntimeDirectory=`.
pub(crate) const RUNTIME_DIRECTORY: &str = "RUNTIME_DIRECTORY";

/// What the service tells the waiting tool about one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// `CLOCK_MONOTONIC` µs when the attempt started.
    pub(crate) started_usec: u64,
    /// Whether the attempt succeeded.
    pub(crate) ok: bool,
    /// Whether the attempt is still under way (an upgrade waiting for its successor).
    pub(crate) pending: bool,
    /// One line for the operator: what is live now, or why the attempt failed.
    pub(crate) message: String,
}

impl Verdict {
    /// A verdict for an attempt that started at `started_usec`.
    pub(crate) fn new(started_usec: u64, ok: bool, message: impl Into<String>) -> Self {
        Verdict {
            started_usec,
            ok,
            pending: false,
            message: message.into(),
        }
    }

    /// A marker for an attempt still under way: waiting tools keep waiting, and a second
    /// request is refused before it is even sent.
    pub(crate) fn pending(started_usec: u64, message: impl Into<String>) -> Self {
        Verdict {
            pending: true,
            ..Verdict::new(started_usec, false, message)
        }
    }

    /// `key=value` lines; the message may contain anything but a newline (folded to a space).
    fn encode(&self) -> String {
        format!(
            "started_usec={}\nok={}\npending={}\nmessage={}\n",
            self.started_usec,
            self.ok,
            self.pending,
            self.message.replace('\n', " ")
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut verdict = Verdict::new(0, false, "");
        let mut seen = 0;
        for line in text.lines() {
            let (key, value) = line.split_once('=')?;
            match key {
                "started_usec" => verdict.started_usec = value.parse().ok()?,
                "ok" => verdict.ok = value.parse().ok()?,
                "pending" => verdict.pending = value.parse().ok()?,
                "message" => verdict.message = value.to_owned(),
                _ => continue,
            }
            seen += 1;
        }
        (seen == 4).then_some(verdict)
    }

    /// Writes atomically (temp file + rename), so a reader never sees half a verdict.
    pub(crate) fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.encode())?;
        std::fs::rename(&tmp, path)
    }

    /// Writes the verdict if there is somewhere to write it; failure is logged, not fatal.
    pub(crate) fn publish(&self, path: Option<&Path>) {
        if let Some(path) = path {
            if let Err(error) = self.write(path) {
                tracing::warn!(%error, path = %path.display(), "cannot write the verdict file");
            }
        }
    }

    /// Reads a complete verdict, or `None` (absent, partial or garbage).
    pub(crate) fn read(path: &Path) -> Option<Self> {
        Verdict::decode(&std::fs::read_to_string(path).ok()?)
    }
}

/// `$RUNTIME_DIRECTORY/NAME`, when systemd (or the operator) set the variable.
pub(crate) fn default_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(RUNTIME_DIRECTORY).map(|dir| Path::new(&dir).join(name))
}

/// Why a signalled attempt did not report success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// Nowhere to read the verdict from.
    #[error(
        "cannot wait for the verdict in {}: no such directory (is the service running? set ${RUNTIME_DIRECTORY} as the service has it, or pass --verdict-file)", .0.display()
    )]
    NoRuntimeDirectory(PathBuf),
    /// The signal could not be sent.
    #[error("cannot send {signal} to PID {pid}: {reason}")]
    Signal {
        /// The signal.
        signal: Signal,
        /// The target.
        pid: i32,
        /// What the kernel said (printed here, so not a `source`).
        reason: nix::Error,
    },
    /// No verdict in time.
    #[error("PID {pid} did not report a result within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The target.
        pid: i32,
        /// How long we waited.
        timeout: Duration,
    },
    /// The service tried and failed; it keeps running as before.
    #[error("{0}")]
    Refused(String),
    /// An earlier attempt is still under way.
    #[error("not sent: {0}")]
    Busy(String),
}

/// A pending marker older than this is left over from a process that died mid-attempt.
const STALE_PENDING: Duration = Duration::from_secs(600);

/// Sends `signal` to `pid` and waits for the verdict in `path` (default
/// `$RUNTIME_DIRECTORY/default_name`, else `packaged_dir/default_name`, where `packaged_dir`
/// is the packaged unit's `RuntimeDirectory=`: what an operator's shell, without
/// `$RUNTIME_DIRECTORY`, means) of an attempt that started afterwards.
pub(crate) fn request(
    pid: i32,
    signal: Signal,
    path: Option<PathBuf>,
    default_name: &str,
    packaged_dir: &str,
    timeout: Duration,
) -> Result<Verdict, RequestError> {
    let path = path
        .or_else(|| default_path(default_name))
        .unwrap_or_else(|| Path::new(packaged_dir).join(default_name));
    if !path.parent().is_some_and(Path::is_dir) {
        return Err(RequestError::NoRuntimeDirectory(path));
    }
    let sent_usec = monotonic_usec().unwrap_or(0);
    if let Some(current) = Verdict::read(&path).filter(|v| v.pending) {
        let age = Duration::from_micros(sent_usec.saturating_sub(current.started_usec));
        if age < STALE_PENDING {
            return Err(RequestError::Busy(current.message));
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|reason| {
        RequestError::Signal {
            signal,
            pid,
            reason,
        }
    })?;
    // An absurd --timeout means "wait as long as it takes", not a panic.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let current = Verdict::read(&path);
        if let Some(verdict) = current.filter(|v| v.started_usec >= sent_usec && !v.pending) {
            return if verdict.ok {
                Ok(verdict)
            } else {
                Err(RequestError::Refused(verdict.message))
            };
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(RequestError::Timeout { pid, timeout });
        }
        // Reloads take well under a millisecond; polling briefly keeps `systemctl reload`
        // fast without inotify machinery.
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_round_trips() {
        let verdict = Verdict::new(123, false, "example.toml: key `x`: unknown\nsecond line");
        let decoded = Verdict::decode(&verdict.encode()).expect("decodes");
        assert_eq!(
            decoded.message,
            "example.toml: key `x`: unknown second line"
        );
        assert_eq!((decoded.started_usec, decoded.ok), (123, false));
        assert_eq!(
            Verdict::decode("started_usec=1\nok=true\n"),
            None,
            "incomplete"
        );
        let pending = Verdict::pending(7, "upgrading");
        assert_eq!(Verdict::decode(&pending.encode()), Some(pending));
        assert_eq!(Verdict::decode("garbage"), None);
    }

    #[test]
    fn verdicts_are_replaced_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("verdict");
        assert_eq!(Verdict::read(&path), None);
        Verdict::new(1, true, "one").write(&path).expect("write");
        Verdict::new(2, false, "two").write(&path).expect("write");
        assert_eq!(Verdict::read(&path), Some(Verdict::new(2, false, "two")));
    }
}
