//! Listening sockets: taken from systemd (socket activation) or bound by ourselves.
//!
//! systemd passes sockets as fds `3..3+LISTEN_FDS`, for the process whose PID is `LISTEN_PID`,
//! named by `LISTEN_FDNAMES`. Dev tools (`systemfd --no-pid`, read by the `listenfd` crate) pass
//! them without `LISTEN_PID`, because the process that ends up serving (`cargo watch` → `cargo
//! run` → us) is not theirs to know, and may say where they start with `LISTEN_FDS_FIRST_FD`.
//! So: no `LISTEN_PID` means ours, a `LISTEN_PID` naming another process means not ours.
//!
//! We read these variables strictly (garbage is an error naming the variable, not "no
//! sockets"), unset them so children do not inherit them, check each fd really is a listening
//! stream socket, and make it non-blocking before tokio sees it.
//!
//! Reading happens in two steps because of threads: `take_from_env` must run before the tokio
//! runtime starts (it changes the environment and takes ownership of fds), while turning the
//! sockets into tokio listeners (`Passed::into_sockets`, [`bind`]) needs the runtime.
//!
//! Besides listeners, systemd passes the connections a previous process kept in its fd store
//! (named `connection`, see `keep`): those are connected sockets, checked as such.
//!
//! We follow `listenfd`'s convention but do not use the crate, because no part of it fits:
//! - Reading the variables: `ListenFd::from_env` turns an unparsable `LISTEN_FDS` into "no
//!   sockets" (we would silently bind ourselves instead of saying what is wrong), an
//!   unparsable `LISTEN_FDS_FIRST_FD` into fd 3 and a malformed `LISTEN_PID` into "not ours";
//!   it has no upper bound on the count, does not read `LISTEN_FDNAMES` (so no `http` /
//!   `metrics` roles) and leaves `LISTEN_FDNAMES` and `LISTEN_FDS_FIRST_FD` set for children.
//!   It reads the process environment itself, so its rules cannot be tested as a pure function
//!   like [`ActivationEnv::parse`], and we would have to parse strictly first anyway.
//! - Taking the fds: `take_tcp_listener` / `take_unix_listener` need the address family known
//!   beforehand (we learn it from the socket), check neither that the socket listens nor set
//!   `O_NONBLOCK`, which tokio needs; `take_raw_fd` checks nothing, i.e. it is `first + i`.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Socket, Type};

use crate::keep::CONNECTION_NAME;

/// First fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;
/// Number of passed fds.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// PID the passed fds are meant for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// Colon-separated names of the passed fds (`FileDescriptorName=`).
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// First passed fd, when not [`LISTEN_FDS_START`]: set by `systemfd`, never by systemd, so it
/// is read only without `LISTEN_PID`.
pub const LISTEN_FDS_FIRST_FD: &str = "LISTEN_FDS_FIRST_FD";
/// The name of the socket that serves the application.
pub const HTTP_NAME: &str = "http";
/// More fds than this is certainly garbage: it is the most systemd lets a unit store
/// (`FileDescriptorStoreMax=`), which stored connections count against, plus the listeners.
const MAX_LISTEN_FDS: usize = 65536 + 1024;

/// Why sockets could not be taken or bound. Each variant names the variable, fd or address.
///
/// ```
/// use seamless_core::listeners::ActivationEnv;
///
/// let garbage = ActivationEnv { pid: Some("1".into()), fds: Some("two".into()), names: None, first_fd: None };
/// let error = garbage.parse(1).unwrap_err();
/// assert!(error.to_string().contains("LISTEN_FDS"), "{error}");
/// ```
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
pub(crate) struct Passed {
    /// The listening sockets, in fd order, with their names.
    sockets: Vec<(String, Socket)>,
    /// Connections the previous process kept in systemd's fd store.
    connections: Vec<OwnedFd>,
    /// Who passed them, logged once logging is up (`take_from_env` runs before it is).
    convention: Convention,
}

/// Who passed the sockets, as told by `LISTEN_PID`.
///
/// ```
/// use seamless_core::listeners::{ActivationEnv, Convention};
///
/// let dev_tool = ActivationEnv { pid: None, fds: Some("1".into()), names: None, first_fd: None };
/// assert_eq!(dev_tool.convention(), Convention::NoPid);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// `LISTEN_PID` is ours: systemd, `systemd-socket-activate`, or our own hot upgrade.
    Systemd,
    /// No `LISTEN_PID`: a dev tool such as `systemfd --no-pid`, the `listenfd` convention.
    NoPid,
}

/// A listening socket the server accepts on.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use seamless_core::listeners::{Listener, Named};
///
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let named = Named { name: "http".into(), listener: Listener::Tcp(tcp) };
/// assert!(named.listener.to_string().starts_with("127.0.0.1:"));
/// # });
/// ```
#[derive(Debug)]
pub enum Listener {
    /// TCP, IPv4 or IPv6.
    Tcp(tokio::net::TcpListener),
    /// A unix stream socket.
    Unix(tokio::net::UnixListener),
}

/// What a serving process starts with: its listening sockets and, after a restart, the
/// connections the previous process kept in systemd's fd store.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use seamless_core::listeners::{Listener, Named, Sockets};
///
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let sockets = Sockets::from(vec![Named { name: "http".into(), listener: Listener::Tcp(tcp) }]);
/// assert!(sockets.connections.is_empty());
/// # });
/// ```
#[derive(Debug, Default)]
pub struct Sockets {
    /// The listeners; those named `http` (or unnamed) serve the application.
    pub listeners: Vec<Named>,
    /// Connected HTTP sockets to serve from the start, passed with `FDNAME=connection`.
    pub connections: Vec<OwnedFd>,
}

impl From<Vec<Named>> for Sockets {
    /// Listeners only, as when self-bound or started without kept connections.
    fn from(listeners: Vec<Named>) -> Self {
        Sockets {
            listeners,
            connections: Vec::new(),
        }
    }
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
    /// `LISTEN_FDS_FIRST_FD`.
    pub first_fd: Option<String>,
}

impl ActivationEnv {
    /// Reads the variables without changing anything.
    pub fn read() -> Self {
        ActivationEnv {
            pid: std::env::var(LISTEN_PID).ok(),
            fds: std::env::var(LISTEN_FDS).ok(),
            names: std::env::var(LISTEN_FDNAMES).ok(),
            first_fd: std::env::var(LISTEN_FDS_FIRST_FD).ok(),
        }
    }

    /// Who passed the fds, if [`parse`](Self::parse) finds any: decided by `LISTEN_PID` alone.
    pub fn convention(&self) -> Convention {
        if self.pid.is_some() {
            Convention::Systemd
        } else {
            Convention::NoPid
        }
    }

    /// Which fds are ours and what they are called; `Ok(None)` when nothing was passed to us.
    ///
    /// Pure, so the rules are tested without touching the process: a `LISTEN_PID` that is not
    /// `our_pid` means the fds belong to someone else (an ancestor that forgot to unset them);
    /// no `LISTEN_PID` with a `LISTEN_FDS` means a dev tool passed them to whoever ends up
    /// running, which is us. A missing `LISTEN_FDNAMES` names every socket `unknown`, as
    /// `sd_listen_fds_with_names` does. Fds start at 3, or at `LISTEN_FDS_FIRST_FD` without
    /// `LISTEN_PID`.
    ///
    /// ```
    /// use seamless_core::listeners::ActivationEnv;
    ///
    /// let systemd = ActivationEnv {
    ///     pid: Some("42".into()),
    ///     fds: Some("2".into()),
    ///     names: Some("http:metrics".into()),
    ///     first_fd: None,
    /// };
    /// let fds = systemd.parse(42).unwrap().unwrap();
    /// assert_eq!(fds, [(3, "http".to_string()), (4, "metrics".to_string())]);
    /// assert_eq!(systemd.parse(7).unwrap(), None, "meant for PID 42");
    /// ```
    pub fn parse(&self, our_pid: u32) -> Result<Option<Vec<(RawFd, String)>>, ListenerError> {
        match &self.pid {
            // Nothing passed, or only leftovers without a count: as without socket activation.
            None if self.fds.is_none() => return Ok(None),
            None => {}
            Some(pid) => {
                let pid: u32 = pid.trim().parse().map_err(|e| ListenerError::BadVariable {
                    var: LISTEN_PID,
                    value: pid.clone(),
                    reason: format!("not a process ID ({e})"),
                })?;
                if pid != our_pid {
                    return Ok(None);
                }
            }
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
        let first = match self.convention() {
            Convention::Systemd => LISTEN_FDS_START,
            Convention::NoPid => self.first_fd(count)?,
        };
        // `count <= MAX_LISTEN_FDS` and `first_fd` checked that the last fd fits.
        let fds = (0..count).map(|i| first + RawFd::try_from(i).unwrap_or(RawFd::MAX));
        Ok(Some(fds.zip(names).collect()))
    }

    /// `LISTEN_FDS_FIRST_FD`, or 3 when unset; `count` fds from it must be valid fd numbers.
    fn first_fd(&self, count: usize) -> Result<RawFd, ListenerError> {
        let Some(text) = &self.first_fd else {
            return Ok(LISTEN_FDS_START);
        };
        let bad = |reason: String| ListenerError::BadVariable {
            var: LISTEN_FDS_FIRST_FD,
            value: text.clone(),
            reason,
        };
        let first: RawFd = text
            .trim()
            .parse()
            .map_err(|e| bad(format!("not an fd number ({e})")))?;
        if first < LISTEN_FDS_START {
            return Err(bad(format!(
                "below {LISTEN_FDS_START}: fds 0 to 2 are stdin, stdout and stderr"
            )));
        }
        // `count <= MAX_LISTEN_FDS`, so the conversion cannot fail.
        let count = RawFd::try_from(count).unwrap_or(RawFd::MAX);
        if first.checked_add(count).is_none() {
            return Err(bad(format!(
                "{count} fds from it exceed the largest fd number"
            )));
        }
        Ok(first)
    }
}

/// Whether a socket of this name serves the application: `http`, or unnamed (`unknown`, or the
/// socket unit's name, which is systemd's default when `FileDescriptorName=` is not set).
pub(crate) fn serves_http(name: &str) -> bool {
    name == HTTP_NAME || name == "unknown" || name.ends_with(".socket")
}

/// Takes the sockets systemd (or a dev tool) passed to this process, if any, and unsets
/// `LISTEN_*`.
///
/// Call it before any thread is started: it changes the environment. Returns `Ok(None)` when
/// no sockets were passed to this process.
pub(crate) fn take_from_env() -> Result<Option<Passed>, ListenerError> {
    let env = ActivationEnv::read();
    let parsed = env.parse(std::process::id());
    // Unset even when parsing failed: a child must never mistake these for its own.
    unset_env();
    // LISTEN_FDS=0 passes nothing: bind ourselves, as without socket activation.
    let Some(fds) = parsed?.filter(|fds| !fds.is_empty()) else {
        return Ok(None);
    };
    let (mut sockets, mut connections) = (Vec::with_capacity(fds.len()), Vec::new());
    for (fd, name) in fds {
        if name == CONNECTION_NAME {
            connections.push(adopt(fd, &name, Role::Connection)?.into());
        } else {
            sockets.push((name.clone(), adopt(fd, &name, Role::Listener)?));
        }
    }
    Ok(Some(Passed {
        sockets,
        connections,
        convention: env.convention(),
    }))
}

#[allow(unsafe_code)]
fn unset_env() {
    for var in [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_FDS_FIRST_FD] {
        // SAFETY: called from `take_from_env`, which runs before the runtime or any other thread
        // starts, so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(var) };
    }
}

/// Takes ownership of `fd` after checking it is an open, listening stream socket.
/// What a passed fd must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A listening socket, from the socket unit (or our own upgrade).
    Listener,
    /// A connection the previous process kept in the fd store.
    Connection,
}

fn adopt(fd: RawFd, name: &str, role: Role) -> Result<Socket, ListenerError> {
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
    // SAFETY: the fd is open (checked above), systemd or a dev tool handed it to this process,
    // and nothing else in the process owns it: `take_from_env` unset LISTEN_FDS, so it is taken
    // only once.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });

    match socket.r#type() {
        Ok(t) if t == Type::STREAM => {}
        Ok(t) => return Err(bad(format!("not a stream socket ({t:?})"))),
        Err(e) => return Err(bad(format!("cannot read its type ({e})"))),
    }
    match (socket.is_listener(), role) {
        (Ok(true), Role::Listener) | (Ok(false), Role::Connection) => {}
        (Ok(false), Role::Listener) => {
            return Err(bad("not listening (listen(2) was not called)".to_owned()));
        }
        (Ok(true), Role::Connection) => {
            return Err(bad("a listening socket, not a connection".to_owned()));
        }
        (Err(e), _) => return Err(bad(format!("cannot tell whether it listens ({e})"))),
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
    /// Registers the sockets with the current tokio runtime. Fails when none serves `http`.
    pub(crate) fn into_sockets(self) -> Result<Sockets, ListenerError> {
        if !self.sockets.iter().any(|(name, _)| serves_http(name)) {
            let names: Vec<&str> = self.sockets.iter().map(|(n, _)| n.as_str()).collect();
            return Err(ListenerError::NoHttpSocket {
                names: names.join(", "),
            });
        }
        // Here rather than in `take_from_env`, which runs before logging is set up.
        let sockets = self.sockets.len();
        let connections = self.connections.len();
        match self.convention {
            Convention::Systemd => tracing::info!(
                convention = "systemd",
                sockets,
                connections,
                "using sockets passed with our LISTEN_PID"
            ),
            Convention::NoPid => tracing::info!(
                convention = "no-pid",
                sockets,
                connections,
                "using sockets passed without LISTEN_PID, as dev tools like `systemfd --no-pid` do"
            ),
        }
        let listeners = self
            .sockets
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
            .collect::<Result<_, _>>()?;
        Ok(Sockets {
            listeners,
            connections: self.connections,
        })
    }
}

/// Binds `addr` ourselves (no socket activation): the `cargo run` and container path.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let bound = seamless_core::listeners::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
/// assert_eq!(bound[0].name, "http");
/// assert!(bound[0].listener.to_string().starts_with("127.0.0.1:"));
/// # });
/// ```
pub async fn bind(addr: SocketAddr) -> Result<Vec<Named>, ListenerError> {
    Ok(vec![bind_as(HTTP_NAME, addr).await?])
}

/// Binds `addr` ourselves as the socket `name`: `https` for `tls.listen`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let bound = seamless_core::listeners::bind_as("https", "127.0.0.1:0".parse().unwrap()).await;
/// assert_eq!(bound.unwrap().name, "https");
/// # });
/// ```
pub async fn bind_as(name: &str, addr: SocketAddr) -> Result<Named, ListenerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|reason| ListenerError::Bind { addr, reason })?;
    Ok(Named {
        name: name.to_owned(),
        listener: Listener::Tcp(listener),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> ActivationEnv {
        ActivationEnv {
            pid: pid.map(str::to_owned),
            fds: fds.map(str::to_owned),
            names: names.map(str::to_owned),
            first_fd: None,
        }
    }

    /// As `systemfd --no-pid` passes them: no `LISTEN_PID`, no names, the first fd given.
    fn systemfd(fds: &str, first_fd: &str) -> ActivationEnv {
        ActivationEnv {
            first_fd: Some(first_fd.to_owned()),
            ..env(None, Some(fds), None)
        }
    }

    #[test]
    fn nothing_passed() {
        assert_eq!(env(None, None, None).parse(42).expect("ok"), None);
        // Names or a first fd without a count pass nothing.
        assert_eq!(env(None, None, Some("http")).parse(42).expect("ok"), None);
        let leftover = ActivationEnv {
            first_fd: Some("3".to_owned()),
            ..Default::default()
        };
        assert_eq!(leftover.parse(42).expect("ok"), None);
    }

    #[test]
    fn no_pid_means_ours() {
        let parsed = env(None, Some("2"), None).parse(42).expect("ok");
        assert_eq!(
            parsed,
            Some(vec![(3, "unknown".to_owned()), (4, "unknown".to_owned())])
        );
        assert!(parsed.iter().flatten().all(|(_, name)| serves_http(name)));
        assert_eq!(env(None, Some("2"), None).convention(), Convention::NoPid);
        // Names are honoured the same way when a tool passes them.
        let parsed = env(None, Some("2"), Some("http:metrics")).parse(42);
        assert_eq!(
            parsed.expect("ok"),
            Some(vec![(3, "http".to_owned()), (4, "metrics".to_owned())])
        );
    }

    #[test]
    fn our_pid_means_ours() {
        let ours = env(Some("42"), Some("1"), Some("http"));
        assert_eq!(
            ours.parse(42).expect("ok"),
            Some(vec![(3, "http".to_owned())])
        );
        assert_eq!(ours.convention(), Convention::Systemd);
        // Padding as a shell may leave it.
        let padded = env(Some(" 42\n"), Some("1"), None).parse(42).expect("ok");
        assert_eq!(padded, Some(vec![(3, "unknown".to_owned())]));
    }

    #[test]
    fn other_pid_means_not_ours() {
        assert_eq!(
            env(Some("41"), Some("1"), None).parse(42).expect("ok"),
            None
        );
        // Not ours, so not ours to judge either: nothing else is read.
        assert_eq!(
            env(Some("41"), Some("junk"), Some("a:b:c"))
                .parse(42)
                .expect("ok"),
            None
        );
    }

    #[test]
    fn first_fd_is_where_systemfd_says() {
        let parsed = systemfd("2", "5").parse(42).expect("ok");
        assert_eq!(
            parsed,
            Some(vec![(5, "unknown".to_owned()), (6, "unknown".to_owned())])
        );
        assert_eq!(
            systemfd("1", " 3 ").parse(42).expect("ok"),
            Some(vec![(3, "unknown".to_owned())])
        );
        // systemd never sets it, and fds from systemd start at 3: a leftover is not followed.
        let systemd = ActivationEnv {
            first_fd: Some("7".to_owned()),
            ..env(Some("42"), Some("1"), None)
        };
        assert_eq!(
            systemd.parse(42).expect("ok"),
            Some(vec![(3, "unknown".to_owned())])
        );
    }

    #[test]
    fn bad_first_fd_is_an_error_naming_it() {
        for (fds, first_fd, reason) in [
            ("1", "", "not an fd number"),
            ("1", "three", "not an fd number"),
            ("1", "-3", "below 3"),
            ("1", "0", "below 3"),
            ("1", "2", "below 3"),
            ("2", "2147483647", "exceed"),
            ("1", "99999999999", "not an fd number"),
        ] {
            let case = systemfd(fds, first_fd);
            match case.parse(42) {
                Err(e @ ListenerError::BadVariable { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(LISTEN_FDS_FIRST_FD), "{case:?}: {text}");
                    assert!(text.contains(reason), "{case:?}: {text}");
                }
                other => panic!("{case:?}: expected an error, got {other:?}"),
            }
        }
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
            (env(Some("42"), Some("100000"), None), LISTEN_FDS),
            (env(Some("42"), None, None), LISTEN_FDS),
            (env(Some("42"), Some("2"), Some("http")), LISTEN_FDNAMES),
            (
                env(Some("42"), Some("1"), Some("http:extra")),
                LISTEN_FDNAMES,
            ),
            // Without LISTEN_PID the same rules hold.
            (env(None, Some(""), None), LISTEN_FDS),
            (env(None, Some("one"), None), LISTEN_FDS),
            (env(None, Some("100000"), None), LISTEN_FDS),
            (env(None, Some("2"), Some("http")), LISTEN_FDNAMES),
            (env(Some(""), Some("1"), None), LISTEN_PID),
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
        assert!(serves_http("example.socket"));
        assert!(!serves_http("metrics"));
    }

    #[test]
    fn adopt_rejects_what_is_not_a_listening_stream_socket() {
        use std::os::fd::IntoRawFd;
        let file = std::fs::File::open("/proc/self/status").expect("open");
        let fd = file.into_raw_fd();
        let err = adopt(fd, "http", Role::Listener).expect_err("a file is not a socket");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(err.to_string().contains(&format!("fd {fd}")), "{err}");
        // `adopt` did not take the fd; close it ourselves.
        #[allow(unsafe_code)]
        // SAFETY: we own `fd` (from `into_raw_fd`) and nothing else uses it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let err = adopt(udp.into_raw_fd(), "http", Role::Listener).expect_err("datagram");
        assert!(err.to_string().contains("not a stream socket"), "{err}");

        let tcp = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let err = adopt(OwnedFd::from(tcp).into_raw_fd(), "http", Role::Listener)
            .expect_err("not listening");
        assert!(err.to_string().contains("not listening"), "{err}");

        let err = adopt(987_654, "http", Role::Listener).expect_err("closed fd");
        assert!(err.to_string().contains("not an open fd"), "{err}");
    }

    #[test]
    fn a_kept_connection_must_be_connected() {
        use std::os::fd::IntoRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let err = adopt(
            OwnedFd::from(listener).into_raw_fd(),
            "connection",
            Role::Connection,
        )
        .expect_err("a listener is not a connection");
        assert!(err.to_string().contains("not a connection"), "{err}");
        assert!(err.to_string().contains("(connection)"), "{err}");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        let socket = adopt(
            OwnedFd::from(accepted).into_raw_fd(),
            "connection",
            Role::Connection,
        )
        .expect("a connected socket is adopted");
        assert!(socket.nonblocking().expect("flags"), "ready for tokio");
    }
}
