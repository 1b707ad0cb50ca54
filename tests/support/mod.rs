//! A harness that plays systemd for the real `seamless` binary: it holds the listening socket
//! across service processes, passes it as fd 3 with `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`,
//! and reads `sd_notify` datagrams on its own `NOTIFY_SOCKET`. With a store
//! ([`Systemd::with_fd_store`]) it also keeps the fds a service sends with `FDSTORE=1` and
//! passes them to the next process after the listener, as systemd does across a restart.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::UnixDatagram;

pub const BIN: &str = env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME")));
/// Generous bounds for things that normally take milliseconds; only hit when something is wrong.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Systemd {
    /// The binary to start (the build's by default; upgrade tests use a copy they can replace).
    pub bin: PathBuf,
    /// The listening socket systemd would hold; it outlives every service process.
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub notify: UnixDatagram,
    pub dir: tempfile::TempDir,
    /// The user and group the service runs as; `None`: the test's own. Set by
    /// [`Systemd::unprivileged`] for tests that need permission bits to be enforced.
    pub credentials: Option<(u32, u32)>,
    /// `FileDescriptorStoreMax=`: `None` offers no store (no `FDSTORE` variable).
    pub fd_store_max: Option<usize>,
    /// The fd store: what services sent with `FDSTORE=1` and have not removed, by `FDNAME=`.
    store: Mutex<Vec<(String, OwnedFd)>>,
    /// A second listening socket, passed as `https` after `http` ([`Systemd::with_https`]).
    pub https: Option<(TcpListener, SocketAddr)>,
    /// Extra variables for every service process (e.g. `CREDENTIALS_DIRECTORY`).
    pub env: Vec<(String, String)>,
}

pub struct Service {
    pub child: Child,
    pub pid: i32,
    pub stderr: PathBuf,
}

impl Systemd {
    pub fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let dir = tempfile::tempdir().expect("tempdir");
        let notify = UnixDatagram::bind(dir.path().join("notify")).expect("notify socket");
        std::fs::create_dir(dir.path().join("run")).expect("runtime dir");
        let systemd = Systemd {
            bin: PathBuf::from(BIN),
            listener,
            addr,
            notify,
            dir,
            credentials: None,
            fd_store_max: None,
            store: Mutex::new(Vec::new()),
            https: None,
            env: Vec::new(),
        };
        systemd.write_config("");
        systemd
    }

    /// A harness with an fd store for `max` fds, announced to services in `FDSTORE` as systemd
    /// 254+ does for `FileDescriptorStoreMax=`.
    pub fn with_fd_store(max: usize) -> Self {
        Systemd {
            fd_store_max: Some(max),
            ..Systemd::new()
        }
    }

    /// A harness that also holds a socket named `https`, as `seamless-https.socket` would.
    pub fn with_https(mut self) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        self.https = Some((listener, addr));
        self
    }

    /// The `https` socket's address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https.as_ref().expect("a harness made with_https").1
    }

    /// How many fds named `name` the store holds.
    pub fn stored(&self, name: &str) -> usize {
        let store = self.store.lock().expect("store lock");
        store.iter().filter(|(n, _)| n == name).count()
    }

    /// A harness whose service is refused what its permission bits refuse: it runs as `nobody`
    /// when the tests run as root (whom no permission bit stops), as the test's own user
    /// otherwise. The directory, the main file and a copy of the binary are made reachable for
    /// that user (the temporary directory is 0700; the build may sit under a private home).
    pub fn unprivileged() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let mut systemd = Systemd::new();
        if nix::unistd::geteuid().is_root() {
            let nobody = nix::unistd::User::from_name("nobody")
                .expect("look up the user nobody")
                .expect("a user named nobody, to run the service without privileges");
            systemd.credentials = Some((nobody.uid.as_raw(), nobody.gid.as_raw()));
        }
        let reachable = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(systemd.dir.path(), reachable.clone()).expect("chmod dir");
        let bin = systemd.dir.path().join("seamless");
        write_executable(&bin, &std::fs::read(BIN).expect("read binary"));
        std::fs::set_permissions(&bin, reachable).expect("chmod binary");
        systemd.bin = bin;
        std::fs::set_permissions(
            systemd.config_path(),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod config");
        systemd
    }

    /// Runs `command` as the user the service runs as.
    pub fn as_service_user<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        if let Some((uid, gid)) = self.credentials {
            // As root, std also drops every supplementary group before `setuid`.
            command.uid(uid).gid(gid);
        }
        command
    }

    /// `NAME reload --pid PID`, as the unit's `ExecReload=` runs it, reading verdicts from
    /// this harness's runtime directory.
    pub fn reload_command(&self, pid: i32) -> std::process::Output {
        Command::new(BIN)
            .args(["reload", "--pid", &pid.to_string(), "--timeout", "10s"])
            .env("RUNTIME_DIRECTORY", self.runtime_dir())
            .output()
            .expect("run the reload command")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("seamless.toml")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn write_config(&self, toml: &str) {
        // Write-and-rename, as editors and config management do: a reload never sees half a file.
        let tmp = self.dir.path().join("seamless.toml.tmp");
        std::fs::write(&tmp, toml).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config");
    }

    /// Starts `seamless serve` with the held socket and whatever the fd store holds, as a
    /// socket-activated unit would be.
    pub fn start(&self) -> Service {
        let store = self.store.lock().expect("store lock");
        let mut names = vec!["http"];
        // After fd 3 (`http`): the `https` listener, then what the store holds.
        let mut more: Vec<RawFd> = Vec::new();
        if let Some((https, _)) = &self.https {
            names.push("https");
            more.push(https.as_raw_fd());
        }
        names.extend(store.iter().map(|(name, _)| name.as_str()));
        let (count, names) = (names.len().to_string(), names.join(":"));
        more.extend(store.iter().map(|(_, fd)| fd.as_raw_fd()));
        let max = self.fd_store_max.map(|max| max.to_string());
        let mut env = vec![
            ("LISTEN_FDS", count.as_str()),
            ("LISTEN_FDNAMES", names.as_str()),
        ];
        if let Some(max) = &max {
            env.push(("FDSTORE", max));
        }
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.spawn(&env, true, more)
    }

    /// Starts `seamless serve` with these extra variables. `$$` of the wrapper shell becomes
    /// `LISTEN_PID` when `own_pid` is set, because `exec` keeps the PID — the trick
    /// systemd-socket-activate uses too.
    pub fn start_with(&self, env: &[(&str, &str)], own_pid: bool) -> Service {
        self.spawn(env, own_pid, Vec::new())
    }

    /// Starts `seamless serve` with the listener as fd 3 and `stored` as fds 4, 5, …
    fn spawn(&self, env: &[(&str, &str)], own_pid: bool, stored: Vec<RawFd>) -> Service {
        let stderr = self.dir.path().join(format!("stderr-{}", unique()));
        let script = if own_pid {
            r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#
        } else {
            r#"exec "$0" "$@""#
        };
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(script)
            .arg(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .env_clear()
            .env("NOTIFY_SOCKET", self.dir.path().join("notify"))
            .env("RUNTIME_DIRECTORY", self.runtime_dir())
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        self.as_service_user(&mut command);
        // fd 3 is the listener, 4, 5, … what the store holds.
        let mut passed: Vec<RawFd> = std::iter::once(self.listener.as_raw_fd())
            .chain(stored)
            .collect();
        #[allow(unsafe_code)]
        // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) are made,
        // and nothing is allocated: `passed` was built before the fork.
        unsafe {
            command.pre_exec(move || {
                // Out of the way first: a source may sit on a number another one goes to.
                for fd in passed.iter_mut() {
                    *fd = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 1000);
                    if *fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (target, &fd) in (3..).zip(passed.iter()) {
                    if libc::dup2(fd, target) < 0 || libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn seamless");
        let pid = i32::try_from(child.id()).expect("pid fits");
        Service { child, pid, stderr }
    }

    /// Receives notifications until one contains `line` as a whole line; returns all received.
    pub async fn expect_notify(&self, line: &str) -> Vec<String> {
        let (seen, ()) = self
            .receive_until(line, |message| {
                message.lines().any(|l| l == line).then_some(())
            })
            .await;
        seen
    }

    /// Receives notifications until a line starts with `prefix`; returns the rest of that line.
    pub async fn expect_notify_prefix(&self, prefix: &str) -> String {
        let (_, rest) = self
            .receive_until(prefix, |message| {
                message
                    .lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .map(str::to_owned)
            })
            .await;
        rest
    }

    /// Receives notifications until `found` picks something out of one, at most `PATIENCE`;
    /// returns every message received and what was picked.
    async fn receive_until<T>(
        &self,
        what: &str,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> (Vec<String>, T) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = self
                .notify
                .async_io(tokio::io::Interest::READABLE, || self.try_receive(&mut buf));
            let Ok(Ok(message)) = tokio::time::timeout(left, received).await else {
                panic!("no notification {what:?} within {PATIENCE:?}; got {seen:#?}");
            };
            let picked = found(&message);
            seen.push(message);
            if let Some(picked) = picked {
                return (seen, picked);
            }
        }
    }

    /// Every notification received and not yet read, without waiting: once the service has
    /// exited, the rest of what it sent.
    pub fn pending_notifications(&self) -> Vec<String> {
        // Read past tokio's readiness bookkeeping: the socket is non-blocking, so a plain read
        // returns each queued datagram, then `WouldBlock`.
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(message) = self.try_receive(&mut buf) {
            seen.push(message);
        }
        seen
    }

    /// Reads one queued notification without waiting, with the fds it carries, and acts on
    /// `FDSTORE=1` / `FDSTOREREMOVE=1` as systemd does; other fds (`BARRIER=1`'s pipe) are
    /// closed, which is what the sender waits for.
    fn try_receive(&self, buf: &mut [u8]) -> std::io::Result<String> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::os::fd::FromRawFd;
        let mut space = nix::cmsg_space!([RawFd; 253]);
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let received = recvmsg::<()>(
            self.notify.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        )
        .map_err(std::io::Error::from)?;
        let mut fds = Vec::new();
        for message in received.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = message {
                #[allow(unsafe_code)]
                // SAFETY: the kernel just installed these fds in this process for us alone.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = received.bytes;
        let message = String::from_utf8_lossy(&iov[0][..n]).into_owned();
        self.act_on(&message, fds);
        Ok(message)
    }

    fn act_on(&self, message: &str, fds: Vec<OwnedFd>) {
        let field = |name: &str| message.lines().find_map(|l| l.strip_prefix(name));
        let name = field("FDNAME=").unwrap_or("stored").to_owned();
        let mut store = self.store.lock().expect("store lock");
        if field("FDSTORE=") == Some("1") {
            for fd in fds {
                // Beyond FileDescriptorStoreMax= systemd closes what it is sent.
                if store.len() < self.fd_store_max.unwrap_or(0) {
                    store.push((name.clone(), fd));
                }
            }
        } else if field("FDSTOREREMOVE=") == Some("1") {
            store.retain(|(n, _)| *n != name);
        }
    }

    /// Waits for `service` to exit, at most `PATIENCE`, reading its notifications meanwhile as
    /// systemd does: the fds it stores arrive with them, and a `BARRIER=1` is answered.
    pub fn wait_reading(&self, service: &mut Service) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.pending_notifications();
            if let Some(status) = service.child.try_wait().expect("try_wait") {
                self.pending_notifications();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "seamless did not exit; stderr:\n{}",
                service.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the service and waits for READY=1.
    pub async fn start_ready(&self) -> Service {
        let service = self.start();
        self.expect_notify("READY=1").await;
        service
    }
}

impl Service {
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid), signal).expect("send signal");
    }

    /// Waits for the process to exit, at most `PATIENCE`.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "seamless did not exit; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One `GET` on a fresh connection with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse(&raw)
        .unwrap_or_else(|| panic!("unparsable response: {:?}", String::from_utf8_lossy(&raw)))
}

/// Parses a complete response with a `Content-Length` body.
pub fn parse(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let response = Response {
        status,
        headers,
        body: body.to_owned(),
    };
    let length: usize = response.header("content-length")?.parse().ok()?;
    (response.body.len() == length).then_some(response)
}

/// A keep-alive client kept by hand, to control exactly when each request is sent.
pub struct KeepAlive {
    stream: TcpStream,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> Self {
        KeepAlive::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// A client on a connection opened earlier.
    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        KeepAlive { stream }
    }

    pub fn send(&mut self, path: &str) {
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").expect("send");
    }

    /// Reads one response; `None` if the server closed the connection before a full one.
    pub fn receive(&mut self) -> Option<Response> {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(response) = parse(&raw) {
                return Some(response);
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    }

    pub fn request(&mut self, path: &str) -> Option<Response> {
        self.send(path);
        self.receive()
    }

    /// A request on a connection the server may have closed: `None` if it was.
    pub fn try_request(&mut self, path: &str) -> Option<Response> {
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
        self.receive()
    }
}

/// How many of the service's log lines (`TIMESTAMP LEVEL MESSAGE FIELDS…`) carry `message`.
pub fn log_count(stderr: &str, message: &str) -> usize {
    stderr
        .lines()
        .filter(|line| {
            let text = line
                .split_whitespace()
                .skip(2)
                .collect::<Vec<_>>()
                .join(" ");
            text == message || text.starts_with(&format!("{message} "))
        })
        .count()
}

pub fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Writes an executable file from a child process, never from this one: a write fd open in a
/// multi-threaded test process is inherited by every child another test forks meanwhile (until
/// that child execs), and exec'ing the file then fails with "Text file busy" (ETXTBSY).
pub fn write_executable(path: &Path, content: &[u8]) {
    let mut child = Command::new("/bin/sh")
        .args(["-c", r#"cat > "$1" && chmod 755 "$1""#, "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(content)
        .expect("write executable");
    assert!(
        child.wait().expect("wait").success(),
        "cannot write {}",
        path.display()
    );
}
