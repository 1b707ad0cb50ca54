//! Listening sockets: taken from systemd (socket activation) or bound by ourselves.
//!
//! systemd passes sockets as fds `3..3+LISTEN_FDS`, for the process whose PID is `LISTEN_PID`,
//! named by `LISTEN_FDNAMES`. We read these variables strictly (garbage is an error naming the
//! variable, not "no sockets"), unset them so children do not inherit them, check each fd really
//! is a listening stream socket, and make it non-blocking before tokio sees it.
//!
//! Reading happens in two steps because of threads: [`take_from_env`] must run before the tokio
//! runtime starts (it changes the environment and takes ownership of fds), while turning the
//! sockets into tokio listeners ([`Passed::into_listeners`], [`bind`]) needs the runtime.
//!
//! We do this ourselves rather than with `listenfd`, which neither reads `LISTEN_FDNAMES` nor
//! treats a wrong `LISTEN_PID` as "not for us".

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Socket, Type};

/// First fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;
/// Number of passed fds.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// PID the passed fds are meant for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// Colon-separated names of the passed fds (`FileDescriptorName=`).
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The name of the socket that serves the application.
pub const HTTP_NAME: &str = "http";
/// More fds than this is certainly garbage (systemd's own limit on fd stores is far lower).
const MAX_LISTEN_FDS: usize = 1024;

/// Why sockets could not be taken or bound. Each variant names the variable, fd or address.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// A `LISTEN_*` variable holds something systemd would never write.
    #[error("invalid {var}={value:?}: {reason}")]
    BadVariable {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A passed fd is closed, or not a listening stream socket.
    #[error("fd {fd} ({name}) passed in {LISTEN_FDS} is not usable: {reason}")]
    BadFd {
        /// The fd number.
        fd: RawFd,
        /// Its name from `LISTEN_FDNAMES`.
        name: String,
        /// What it is instead.
        reason: String,
    },
    /// Sockets were passed, but none for the application.
    #[error("none of the sockets passed by systemd is named `{HTTP_NAME}` (names: {names})")]
    NoHttpSocket {
        /// The names that were passed.
        names: String,
    },
    /// Binding the self-bound address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address from `http.listen`.
        addr: SocketAddr,
        /// What the operating system said (printed here, so not a `source`).
        reason: std::io::Error,
    },
    /// Handing a socket to tokio failed.
    #[error("cannot register socket {name} with the runtime: {reason}")]
    Register {
        /// The socket's name.
        name: String,
        /// What went wrong (printed here, so not a `source`).
        reason: std::io::Error,
    },
}

/// Sockets systemd passed in, owned and checked, not yet registered with tokio.
#[derive(Debug)]
pub struct Passed {
    /// The sockets, in fd order, with their names.
    sockets: Vec<(String, Socket)>,
}

/// A listening socket the server accepts on.
#[derive(Debug)]
pub enum Listener {
    /// TCP, IPv4 or IPv6.
    Tcp(tokio::net::TcpListener),
    /// A unix stream socket.
    Unix(tokio::net::UnixListener),
}

/// A listener with its name (from `LISTEN_FDNAMES`, or `http` when self-bound).
#[derive(Debug)]
pub struct Named {
    /// The fd name; `http` serves the application.
    pub name: String,
    /// The socket.
    pub listener: Listener,
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => write!(f, "{addr}"),
                Err(_) => f.write_str("tcp:?"),
            },
            Listener::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            {
                Some(path) => write!(f, "unix:{path}"),
                None => f.write_str("unix:(unnamed)"),
            },
        }
    }
}

/// The `LISTEN_*` variables as read from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivationEnv {
    /// `LISTEN_PID`.
    pub pid: Option<String>,
    /// `LISTEN_FDS`.
    pub fds: Option<String>,
    /// `LISTEN_FDNAMES`.
    pub names: Option<String>,
}

impl ActivationEnv {
    /// Reads the variables without changing anything.
    pub fn read() -> Self {
        ActivationEnv {
            pid: std::env::var(LISTEN_PID).ok(),
            fds: std::env::var(LISTEN_FDS).ok(),
            names: std::env::var(LISTEN_FDNAMES).ok(),
        }
    }

    /// Which fds are ours and what they are called; `Ok(None)` when nothing was passed to us.
    ///
    /// Pure, so the rules are tested without touching the process: no `LISTEN_PID` or one that
    /// is not `our_pid` means the fds belong to someone else (an ancestor that forgot to unset
    /// them); a missing `LISTEN_FDNAMES` names every socket `unknown`, as `sd_listen_fds_with_names`
    /// does.
    pub fn parse(&self, our_pid: u32) -> Result<Option<Vec<(RawFd, String)>>, ListenerError> {
        let Some(pid) = &self.pid else {
            return Ok(None);
        };
        let pid: u32 = pid.trim().parse().map_err(|e| ListenerError::BadVariable {
            var: LISTEN_PID,
            value: pid.clone(),
            reason: format!("not a process ID ({e})"),
        })?;
        if pid != our_pid {
            return Ok(None);
        }
        let Some(fds) = &self.fds else {
            return Err(ListenerError::BadVariable {
                var: LISTEN_FDS,
                value: String::new(),
                reason: format!("missing although {LISTEN_PID} is ours"),
            });
        };
        let count: usize = fds.trim().parse().map_err(|e| ListenerError::BadVariable {
            var: LISTEN_FDS,
            value: fds.clone(),
            reason: format!("not a count ({e})"),
        })?;
        if count > MAX_LISTEN_FDS {
            return Err(ListenerError::BadVariable {
                var: LISTEN_FDS,
                value: fds.clone(),
                reason: format!("more than {MAX_LISTEN_FDS} sockets"),
            });
        }
        let names: Vec<String> = match &self.names {
            Some(names) => names.split(':').map(str::to_owned).collect(),
            None => vec!["unknown".to_owned(); count],
        };
        if names.len() != count {
            return Err(ListenerError::BadVariable {
                var: LISTEN_FDNAMES,
                value: self.names.clone().unwrap_or_default(),
                reason: format!("{} names for {count} sockets", names.len()),
            });
        }
        // `count <= MAX_LISTEN_FDS`, so the conversion cannot fail.
        let fds = (0..count).map(|i| LISTEN_FDS_START + RawFd::try_from(i).unwrap_or(RawFd::MAX));
        Ok(Some(fds.zip(names).collect()))
    }
}

/// Whether a socket of this name serves the application: `http`, or unnamed (`unknown`, or the
/// socket unit's name, which is systemd's default when `FileDescriptorName=` is not set).
pub fn serves_http(name: &str) -> bool {
    name == HTTP_NAME || name == "unknown" || name.ends_with(".socket")
}

/// Takes the sockets systemd passed to this process, if any, and unsets `LISTEN_*`.
///
/// Call it before any thread is started: it changes the environment. Returns `Ok(None)` when
/// no sockets were passed to this process.
pub fn take_from_env() -> Result<Option<Passed>, ListenerError> {
    let env = ActivationEnv::read();
    let parsed = env.parse(std::process::id());
    // Unset even when parsing failed: a child must never mistake these for its own.
    unset_env();
    // LISTEN_FDS=0 passes nothing: bind ourselves, as without socket activation.
    let Some(fds) = parsed?.filter(|fds| !fds.is_empty()) else {
        return Ok(None);
    };
    let mut sockets = Vec::with_capacity(fds.len());
    for (fd, name) in fds {
        sockets.push((name.clone(), adopt(fd, &name)?));
    }
    Ok(Some(Passed { sockets }))
}

#[allow(unsafe_code)]
fn unset_env() {
    for var in [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES] {
        // SAFETY: called from `take_from_env`, which runs before the runtime or any other thread
        // starts, so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(var) };
    }
}

/// Takes ownership of `fd` after checking it is an open, listening stream socket.
fn adopt(fd: RawFd, name: &str) -> Result<Socket, ListenerError> {
    let bad = |reason: String| ListenerError::BadFd {
        fd,
        name: name.to_owned(),
        reason,
    };
    // Owning a closed fd number would later close whatever reuses it, so look before taking:
    // /proc/self/fd/N links to `socket:[inode]` for sockets and does not exist for closed fds.
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map_err(|e| bad(format!("not an open fd ({e})")))?;
    if !target.to_string_lossy().starts_with("socket:") {
        return Err(bad(format!("not a socket but {}", target.display())));
    }
    #[allow(unsafe_code)]
    // SAFETY: the fd is open (checked above), systemd handed it to this process, and nothing
    // else in the process owns it: `take_from_env` unset LISTEN_FDS, so it is taken only once.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });

    match socket.r#type() {
        Ok(t) if t == Type::STREAM => {}
        Ok(t) => return Err(bad(format!("not a stream socket ({t:?})"))),
        Err(e) => return Err(bad(format!("cannot read its type ({e})"))),
    }
    match socket.is_listener() {
        Ok(true) => {}
        Ok(false) => return Err(bad("not listening (listen(2) was not called)".to_owned())),
        Err(e) => return Err(bad(format!("cannot tell whether it listens ({e})"))),
    }
    match socket.domain() {
        Ok(d) if d == Domain::IPV4 || d == Domain::IPV6 || d == Domain::UNIX => {}
        Ok(d) => return Err(bad(format!("unsupported address family {d:?}"))),
        Err(e) => return Err(bad(format!("cannot read its address family ({e})"))),
    }
    // Inherited sockets may be blocking; tokio needs them non-blocking. Close-on-exec keeps
    // them out of any program we start unless we pass them on purpose.
    socket
        .set_nonblocking(true)
        .and_then(|()| socket.set_cloexec(true))
        .map_err(|e| bad(format!("cannot make it non-blocking ({e})")))?;
    Ok(socket)
}

impl Passed {
    /// Number of sockets passed.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether no sockets were passed (`LISTEN_FDS=0`).
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Registers the sockets with the current tokio runtime. Fails when none serves `http`.
    pub fn into_listeners(self) -> Result<Vec<Named>, ListenerError> {
        if !self.sockets.iter().any(|(name, _)| serves_http(name)) {
            let names: Vec<&str> = self.sockets.iter().map(|(n, _)| n.as_str()).collect();
            return Err(ListenerError::NoHttpSocket {
                names: names.join(", "),
            });
        }
        self.sockets
            .into_iter()
            .map(|(name, socket)| {
                let register = |reason| ListenerError::Register {
                    name: name.clone(),
                    reason,
                };
                let listener = if socket.domain().map_err(register)? == Domain::UNIX {
                    let std = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
                    Listener::Unix(tokio::net::UnixListener::from_std(std).map_err(register)?)
                } else {
                    let std = std::net::TcpListener::from(socket);
                    Listener::Tcp(tokio::net::TcpListener::from_std(std).map_err(register)?)
                };
                Ok(Named { name, listener })
            })
            .collect()
    }
}

/// Binds `addr` ourselves (no socket activation): the `cargo run` and container path.
pub async fn bind(addr: SocketAddr) -> Result<Vec<Named>, ListenerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|reason| ListenerError::Bind { addr, reason })?;
    Ok(vec![Named {
        name: HTTP_NAME.to_owned(),
        listener: Listener::Tcp(listener),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> ActivationEnv {
        ActivationEnv {
            pid: pid.map(str::to_owned),
            fds: fds.map(str::to_owned),
            names: names.map(str::to_owned),
        }
    }

    #[test]
    fn nothing_passed() {
        assert_eq!(env(None, None, None).parse(42).expect("ok"), None);
        assert_eq!(env(None, Some("2"), None).parse(42).expect("ok"), None);
    }

    #[test]
    fn other_pid_means_not_ours() {
        assert_eq!(
            env(Some("41"), Some("1"), None).parse(42).expect("ok"),
            None
        );
    }

    #[test]
    fn names_are_paired_with_fds() {
        let parsed = env(Some("42"), Some("2"), Some("http:admin")).parse(42);
        assert_eq!(
            parsed.expect("ok"),
            Some(vec![(3, "http".to_owned()), (4, "admin".to_owned())])
        );
    }

    #[test]
    fn missing_names_are_unknown() {
        let parsed = env(Some("42"), Some("1"), None).parse(42).expect("ok");
        assert_eq!(parsed, Some(vec![(3, "unknown".to_owned())]));
    }

    #[test]
    fn zero_fds_is_empty_not_an_error() {
        let parsed = env(Some("42"), Some("0"), None).parse(42).expect("ok");
        assert_eq!(parsed, Some(vec![]));
    }

    #[test]
    fn garbage_is_an_error_naming_the_variable() {
        let cases = [
            (env(Some("x"), Some("1"), None), LISTEN_PID),
            (env(Some("42"), Some(""), None), LISTEN_FDS),
            (env(Some("42"), Some("-1"), None), LISTEN_FDS),
            (env(Some("42"), Some("one"), None), LISTEN_FDS),
            (
                env(Some("42"), Some("99999999999999999999"), None),
                LISTEN_FDS,
            ),
            (env(Some("42"), Some("5000"), None), LISTEN_FDS),
            (env(Some("42"), None, None), LISTEN_FDS),
            (env(Some("42"), Some("2"), Some("http")), LISTEN_FDNAMES),
            (
                env(Some("42"), Some("1"), Some("http:extra")),
                LISTEN_FDNAMES,
            ),
        ];
        for (case, var) in cases {
            match case.parse(42) {
                Err(e @ ListenerError::BadVariable { .. }) => {
                    assert!(e.to_string().contains(var), "{case:?}: {e}");
                }
                other => panic!("{case:?}: expected an error naming {var}, got {other:?}"),
            }
        }
    }

    #[test]
    fn which_names_serve_http() {
        assert!(serves_http("http"));
        assert!(serves_http("unknown"));
        assert!(serves_http("seamless.socket"));
        assert!(!serves_http("metrics"));
    }

    #[test]
    fn adopt_rejects_what_is_not_a_listening_stream_socket() {
        use std::os::fd::IntoRawFd;
        let file = std::fs::File::open("/proc/self/status").expect("open");
        let fd = file.into_raw_fd();
        let err = adopt(fd, "http").expect_err("a file is not a socket");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(err.to_string().contains(&format!("fd {fd}")), "{err}");
        // `adopt` did not take the fd; close it ourselves.
        #[allow(unsafe_code)]
        // SAFETY: we own `fd` (from `into_raw_fd`) and nothing else uses it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let err = adopt(udp.into_raw_fd(), "http").expect_err("datagram");
        assert!(err.to_string().contains("not a stream socket"), "{err}");

        let tcp = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let err = adopt(OwnedFd::from(tcp).into_raw_fd(), "http").expect_err("not listening");
        assert!(err.to_string().contains("not listening"), "{err}");

        let err = adopt(987_654, "http").expect_err("closed fd");
        assert!(err.to_string().contains("not an open fd"), "{err}");
    }
}
