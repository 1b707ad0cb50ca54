//! Binary hot upgrade: start the installed binary as a successor, hand it every listening
//! socket, and drain only once it serves.
//!
//! `systemctl restart` keeps the socket but leaves a gap in which nobody accepts; an upgrade has
//! no gap. On `SIGUSR2` (or `NAME upgrade`) the running process:
//!
//! 1. starts the file at its install path — the new binary a package just put there, not the
//!    deleted inode it runs from — with the same arguments, passing every listening socket the
//!    way systemd does (fds from 3, `LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID` = the child's
//!    PID) plus one end of a socket pair, [`READY_FD`]. It forks twice: the successor must not be our child,
//!    because systemd only supervises (waits for, drains on stop) a main process that is its
//!    own child — one it merely adopted through `MAINPID=` it kills outright on stop. With the
//!    middle process gone at once, the successor is re-parented to systemd before the handover;
//! 2. the successor reports over the socket, one line each: its PID (before `exec`), then
//!    `ready` once it has sent `READY=1` — or `error …` with the reason it could not start;
//! 3. the old process tells systemd the successor is the main process now (`MAINPID=`, then
//!    `BARRIER=1` so systemd has read it before the old process exits), stops accepting, runs
//!    the same zero-drop drain as on `SIGTERM` — except that the HTTP/1 connections it would
//!    keep in systemd's fd store go to the successor over the same socket (see `keep`) — and
//!    exits 0.
//!
//! If the successor cannot start, exits, or is not ready within `upgrade.ready_timeout`, it is
//! killed and reaped, the reason is logged and reported, and the old process serves on.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use tokio::io::AsyncBufReadExt;

use crate::keep::{Handover, Inbound};
use crate::listeners::{LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_START, LISTEN_PID};

/// Names the fd on which a successor reports that it serves. The library's own protocol
/// between two processes of one binary, so named after the library, not the service.
pub(crate) const READY_FD: &str = "SEAMLESS_CORE_UPGRADE_READY_FD";
/// `WATCHDOG_PID` names the old process; the successor must ping for itself.
const WATCHDOG_PID: &str = "WATCHDOG_PID";
/// Width of the `LISTEN_PID` value, filled in after `fork` without allocating.
const PID_DIGITS: usize = 10;
/// Verdict file name in `$RUNTIME_DIRECTORY`, read by `NAME upgrade`.
pub(crate) const VERDICT_FILE: &str = "upgrade-verdict";

/// Why a successor did not take over.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// The binary's path could not be determined or used.
    #[error("cannot use {path} as the new binary: {reason}")]
    Binary {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Preparing or starting the successor failed.
    #[error("cannot start {path}: {reason}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// What the kernel said (printed here, so not a `source`).
        reason: io::Error,
    },
    /// The successor said why it could not start (e.g. its configuration is invalid).
    #[error("the new process (PID {pid}) could not start: {reason}")]
    Failed {
        /// Its PID.
        pid: i32,
        /// What it reported.
        reason: String,
    },
    /// The successor ended before it was ready without saying why (it crashed, or is not
    /// this service at all).
    #[error("the new process (PID {pid}) exited before it was ready")]
    Exited {
        /// Its PID.
        pid: i32,
    },
    /// The task starting the successor ended abnormally.
    #[error("the upgrade was aborted: {0}")]
    Aborted(String),
    /// The successor did not report ready in time and was killed.
    #[error("the new process (PID {pid}) was not ready within {}; killed it", humantime::format_duration(*.timeout))]
    NotReady {
        /// Its PID.
        pid: i32,
        /// The limit (`upgrade.ready_timeout`).
        timeout: Duration,
    },
}

/// What a successor is started from: our own binary path and arguments.
#[derive(Debug, Clone)]
pub(crate) struct Successor {
    /// The install path of the binary.
    exe: PathBuf,
    /// Arguments after `argv[0]`.
    args: Vec<OsString>,
}

impl Successor {
    /// The binary this process was started from, by path, and our own arguments.
    pub(crate) fn of_this_process() -> Self {
        Successor {
            exe: install_path(),
            args: std::env::args_os().skip(1).collect(),
        }
    }

    /// The install path the successor is started from.
    pub(crate) fn exe(&self) -> &Path {
        &self.exe
    }

    /// Starts the successor with `sockets` and waits until it serves; returns its PID and the
    /// channel to hand it connections.
    /// On failure the successor is gone (killed if need be).
    pub(crate) async fn start(
        &self,
        sockets: &[(String, OwnedFd)],
        ready_timeout: Duration,
    ) -> Result<(i32, Handover), UpgradeError> {
        // A socket pair rather than a pipe: after `ready`, the same channel carries the
        // connections handed over during the drain.
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| self.spawn_error(e))?;
        self.spawn(sockets, OwnedFd::from(theirs))?;
        let ours = ours
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(ours))
            .map_err(|e| self.spawn_error(e))?;
        let mut reports = tokio::io::BufReader::new(ours);
        let deadline = tokio::time::Instant::now() + ready_timeout;

        // The PID comes first, written by the successor itself just before `exec`.
        let pid = match next_report(&mut reports, deadline).await {
            Some(Report::Pid(pid)) => pid,
            Some(Report::ExecFailed(errno)) => {
                return Err(UpgradeError::Binary {
                    path: self.exe.clone(),
                    reason: io::Error::from_raw_os_error(errno).to_string(),
                });
            }
            _ => {
                let reason = io::Error::other("the new process did not start");
                return Err(self.spawn_error(reason));
            }
        };
        tracing::info!(pid, "the new process is starting");
        // Should this future be dropped (the upgrade cancelled by a stop), the successor dies
        // with it rather than serve on beside whatever starts next.
        let guard = KillOnDrop(Some(Pid::from_raw(pid)));
        let outcome = match next_report(&mut reports, deadline).await {
            // Nothing follows `ready` from the successor: the reader holds no buffered bytes.
            Some(Report::Ready) => Ok((pid, Handover::new(reports.into_inner()))),
            Some(Report::ExecFailed(errno)) => Err(UpgradeError::Binary {
                path: self.exe.clone(),
                reason: io::Error::from_raw_os_error(errno).to_string(),
            }),
            Some(Report::Failed(reason)) => Err(UpgradeError::Failed { pid, reason }),
            Some(Report::Pid(_)) | None => Err(UpgradeError::Exited { pid }),
            Some(Report::TimedOut) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                Err(UpgradeError::NotReady {
                    pid,
                    timeout: ready_timeout,
                })
            }
        };
        guard.disarm();
        outcome
    }

    fn spawn_error(&self, reason: io::Error) -> UpgradeError {
        UpgradeError::Spawn {
            path: self.exe.clone(),
            reason,
        }
    }

    /// Forks and executes the successor with the sockets at fds `3..`, the ready pipe after
    /// them, and the environment systemd would give it.
    fn spawn(&self, sockets: &[(String, OwnedFd)], ready_tx: OwnedFd) -> Result<(), UpgradeError> {
        let exe =
            CString::new(self.exe.as_os_str().as_bytes()).map_err(|_| UpgradeError::Binary {
                path: self.exe.clone(),
                reason: "the path contains a NUL byte".to_owned(),
            })?;
        let count = sockets.len();
        let ready_target = LISTEN_FDS_START + fd_number(count);
        // Everything the child needs is prepared here: between fork and exec only
        // async-signal-safe calls are allowed, so no allocation happens there.
        //
        // Source fds are first duplicated above every target number, so placing them with
        // dup2 can never overwrite a source not yet placed.
        let above = ready_target + 1;
        let mut sources = Vec::with_capacity(count + 1);
        for fd in sockets
            .iter()
            .map(|(_, fd)| fd.as_fd())
            .chain([ready_tx.as_fd()])
        {
            let high = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(above))
                .map_err(|e| self.spawn_error(e.into()))?;
            #[allow(unsafe_code)]
            // SAFETY: `high` was just returned by F_DUPFD_CLOEXEC and is owned by nobody else.
            sources.push(unsafe { OwnedFd::from_raw_fd(high) });
        }
        let names: Vec<&str> = sockets.iter().map(|(name, _)| name.as_str()).collect();

        let mut env: Vec<Vec<u8>> = std::env::vars_os()
            .filter(|(key, _)| {
                ![
                    LISTEN_PID,
                    LISTEN_FDS,
                    LISTEN_FDNAMES,
                    WATCHDOG_PID,
                    READY_FD,
                ]
                .iter()
                .any(|k| key.as_bytes() == k.as_bytes())
            })
            .map(|(key, value)| [key.as_bytes(), b"=", value.as_bytes(), b"\0"].concat())
            .collect();
        env.push(format!("{LISTEN_FDS}={count}\0").into_bytes());
        env.push(format!("{LISTEN_FDNAMES}={}\0", names.join(":")).into_bytes());
        env.push(format!("{READY_FD}={ready_target}\0").into_bytes());
        env.push(format!("{LISTEN_PID}={}\0", "0".repeat(PID_DIGITS)).into_bytes());
        let pid_digits_at = env.len() - 1;

        let argv: Vec<CString> = std::iter::once(Ok(exe.clone()))
            .chain(self.args.iter().map(|a| CString::new(a.as_bytes())))
            .collect::<Result<_, _>>()
            .map_err(|_| UpgradeError::Binary {
                path: self.exe.clone(),
                reason: "an argument contains a NUL byte".to_owned(),
            })?;
        let argv_ptrs: Vec<*const libc::c_char> = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        // One pointer per variable; the LISTEN_PID buffer is written through its own
        // pointer in the child, so take every pointer mutably from the start.
        let env_ptrs: Vec<*mut u8> = env.iter_mut().map(Vec::as_mut_ptr).collect();
        let envp: Vec<*const libc::c_char> = env_ptrs
            .iter()
            .map(|p| p.cast_const().cast())
            .chain([std::ptr::null()])
            .collect();
        let pid_value = env_ptrs[pid_digits_at].wrapping_add(LISTEN_PID.len() + 1);
        let raw_sources: Vec<RawFd> = sources.iter().map(AsRawFd::as_raw_fd).collect();

        #[allow(unsafe_code)]
        // SAFETY: the children only call async-signal-safe functions (fork, getpid, write,
        // dup2, execve, _exit) and write into buffers allocated before the fork, which stay
        // alive because `env`, `argv` and the pointer vectors are not touched until after the
        // fork returns.
        let forked = unsafe { fork() };
        match forked.map_err(|e| self.spawn_error(e.into()))? {
            ForkResult::Child => {
                #[allow(unsafe_code)]
                // SAFETY: see above; this never returns.
                unsafe {
                    middle_child(&exe, &argv_ptrs, &envp, pid_value, &raw_sources)
                }
            }
            ForkResult::Parent { child } => {
                // The middle process exits as soon as it has forked; reap it at once.
                let _ = waitpid(child, None);
                // Our copies of the sockets and of the successor's end of the socket pair
                // close here: its exit then shows up as end-of-file.
                drop(sources);
                drop(ready_tx);
                tracing::info!(exe = %self.exe.display(), "started the new process");
                Ok(())
            }
        }
    }
}

/// One line from the successor.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// `pid N`: its PID, written before `exec`.
    Pid(i32),
    /// `exec-failed ERRNO`: the binary could not be executed.
    ExecFailed(i32),
    /// `ready`: it serves.
    Ready,
    /// `error REASON`: it could not start.
    Failed(String),
    /// The deadline passed first.
    TimedOut,
}

impl Report {
    fn parse(line: &str) -> Option<Self> {
        let line = line.trim_end();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "pid" => rest.parse().ok().map(Report::Pid),
            "exec-failed" => rest.parse().ok().map(Report::ExecFailed),
            "ready" => Some(Report::Ready),
            "error" => Some(Report::Failed(rest.to_owned())),
            _ => None,
        }
    }
}

/// The next report, `None` at end-of-file (or an unreadable line).
async fn next_report(
    reports: &mut tokio::io::BufReader<tokio::net::UnixStream>,
    deadline: tokio::time::Instant,
) -> Option<Report> {
    let mut line = String::new();
    match tokio::time::timeout_at(deadline, reports.read_line(&mut line)).await {
        Err(_) => Some(Report::TimedOut),
        Ok(Ok(0) | Err(_)) => None,
        Ok(Ok(_)) => Report::parse(&line),
    }
}

/// Kills a successor that is still starting when its start is abandoned.
struct KillOnDrop(Option<Pid>);

impl KillOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(pid, Signal::SIGKILL);
            tracing::warn!(
                pid = pid.as_raw(),
                "killed the new process: its upgrade was cancelled"
            );
        }
    }
}

/// The middle process of [`Successor::spawn`]: forks the successor and exits, so that the
/// successor is re-parented to systemd (or whichever process reaps orphans here).
///
/// # Safety
///
/// Call only in a freshly forked child; the contract of [`exec_successor`] applies.
#[allow(unsafe_code)]
unsafe fn middle_child(
    exe: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    pid_value: *mut u8,
    sources: &[RawFd],
) -> ! {
    // SAFETY: fork and _exit are async-signal-safe; the rest is `exec_successor`'s contract.
    unsafe {
        match libc::fork() {
            0 => exec_successor(exe, argv, envp, pid_value, sources),
            // Failure to fork shows up in the parent as end-of-file before any PID.
            _ => libc::_exit(0),
        }
    }
}

/// The successor side of [`Successor::spawn`]: reports its PID, places the fds, executes.
///
/// # Safety
///
/// Call only in a freshly forked child. `pid_value` must point at `PID_DIGITS` writable bytes;
/// the pointer arrays must be NULL-terminated and point at NUL-terminated strings; the last of
/// `sources` is the report socket.
#[allow(unsafe_code)]
unsafe fn exec_successor(
    exe: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    pid_value: *mut u8,
    sources: &[RawFd],
) -> ! {
    // SAFETY: all calls below are async-signal-safe; pointers are valid per the contract.
    unsafe {
        let report = sources.last().copied().unwrap_or(-1);
        let pid = u32::try_from(libc::getpid()).unwrap_or(0);
        let mut digits = [0u8; PID_DIGITS];
        write_digits(&mut digits, pid);
        std::ptr::copy_nonoverlapping(digits.as_ptr(), pid_value, PID_DIGITS);
        write_line(report, b"pid ", &digits);
        for (i, fd) in sources.iter().enumerate() {
            // dup2 leaves the copy without close-on-exec: exactly these fds are inherited.
            if libc::dup2(*fd, LISTEN_FDS_START + fd_number(i)) < 0 {
                libc::_exit(126);
            }
        }
        libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        let errno = u32::try_from(*libc::__errno_location()).unwrap_or(0);
        write_digits(&mut digits, errno);
        write_line(report, b"exec-failed ", &digits);
        // 127, like a shell, for "could not execute".
        libc::_exit(127)
    }
}

/// `value` as zero-padded decimal digits, without allocating.
fn write_digits(out: &mut [u8; PID_DIGITS], mut value: u32) {
    for digit in out.iter_mut().rev() {
        // `value % 10 < 10`, so the cast cannot truncate.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `prefix`, `digits`, newline, in one `write(2)`, without allocating.
#[allow(unsafe_code)]
fn write_line(fd: RawFd, prefix: &[u8], digits: &[u8; PID_DIGITS]) {
    let mut line = [0u8; 32];
    let len = prefix.len() + PID_DIGITS + 1;
    if len > line.len() {
        return;
    }
    line[..prefix.len()].copy_from_slice(prefix);
    line[prefix.len()..prefix.len() + PID_DIGITS].copy_from_slice(digits);
    line[len - 1] = b'\n';
    // SAFETY: `line` is valid for `len` bytes; write(2) is async-signal-safe.
    unsafe {
        libc::write(fd, line.as_ptr().cast(), len);
    }
}

/// An fd number from a small count (at most a few thousand sockets).
fn fd_number(n: usize) -> RawFd {
    RawFd::try_from(n).unwrap_or(RawFd::MAX)
}

/// The path this binary was started from. After a package replaced the file,
/// `/proc/self/exe` reads `/usr/bin/NAME (deleted)`: the path is what we want, the deleted
/// inode is exactly what we must not run.
pub(crate) fn install_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let text = exe.as_os_str().as_bytes();
    match text.strip_suffix(b" (deleted)") {
        Some(path) => PathBuf::from(std::ffi::OsStr::from_bytes(path)),
        None => exe,
    }
}

/// In a successor: takes the socket named by [`READY_FD`], if any, and unsets the variable.
/// Call before any thread starts.
pub(crate) fn take_parent() -> Option<Parent> {
    let value = std::env::var(READY_FD).ok();
    #[allow(unsafe_code)]
    // SAFETY: called before the runtime or any other thread starts.
    unsafe {
        std::env::remove_var(READY_FD);
    }
    let fd: RawFd = value?.parse().ok()?;
    // Only take an fd that is open and a socket; anything else is not from our parent.
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    if !target.to_string_lossy().starts_with("socket:") {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: the fd is open (checked above), our parent passed it for this purpose alone, and
    // the variable naming it is unset, so it is taken only once.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Kept until the parent has exited: no program we start may inherit it.
    let _ = fcntl(&fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    Some(Parent(std::os::unix::net::UnixStream::from(fd)))
}

/// In a successor: the socket to the process that started us.
#[derive(Debug)]
pub(crate) struct Parent(std::os::unix::net::UnixStream);

impl Parent {
    /// Tells the parent we serve, and returns the socket on which it hands over its
    /// connections next. `None` means the parent is gone; nothing to do then.
    pub(crate) fn report_ready(mut self) -> Option<Inbound> {
        std::io::Write::write_all(&mut self.0, b"ready\n").ok()?;
        self.0.set_nonblocking(true).ok()?;
        let stream = tokio::net::UnixStream::from_std(self.0).ok()?;
        Some(Inbound::new(stream))
    }

    /// Tells the parent why we could not start (it reports this to `NAME upgrade`).
    pub(crate) fn report_failure(mut self, reason: &str) {
        let line = format!("error {}\n", reason.replace('\n', " "));
        let _ = std::io::Write::write_all(&mut self.0, line.as_bytes());
    }
}

/// `NAME upgrade`: sends `SIGUSR2` and waits for the outcome.
pub(crate) fn request(
    identity: &crate::Identity,
    pid: i32,
    verdict_file: Option<PathBuf>,
    timeout: Duration,
) -> Result<crate::verdict::Verdict, crate::verdict::RequestError> {
    let packaged = identity.runtime_dir();
    crate::verdict::request(
        pid,
        Signal::SIGUSR2,
        verdict_file,
        VERDICT_FILE,
        &packaged,
        timeout,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse() {
        assert_eq!(Report::parse("pid 0000012345\n"), Some(Report::Pid(12345)));
        assert_eq!(
            Report::parse("exec-failed 0000000002\n"),
            Some(Report::ExecFailed(2))
        );
        assert_eq!(Report::parse("ready\n"), Some(Report::Ready));
        assert_eq!(
            Report::parse("error key `x`: unknown field\n"),
            Some(Report::Failed("key `x`: unknown field".to_owned()))
        );
        assert_eq!(Report::parse("pid nope\n"), None);
        assert_eq!(Report::parse("garbage\n"), None);
    }

    #[test]
    fn digits_are_zero_padded() {
        let mut digits = [0u8; PID_DIGITS];
        write_digits(&mut digits, 4_194_304);
        assert_eq!(&digits, b"0004194304");
    }

    #[test]
    fn install_path_strips_deleted_marker() {
        let path = install_path();
        assert!(!path.to_string_lossy().ends_with(" (deleted)"));
        assert!(path.is_absolute());
    }
}
