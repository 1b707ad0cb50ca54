//! Bad input, end to end: every configuration, environment and fd mistake at start is one clear
//! stderr line and the documented exit code (78 for configuration, 1 for sockets and the
//! environment); a bad configuration at reload leaves the old one serving; a notification
//! socket that goes nowhere and storms of signals never stop the service from serving or from
//! stopping cleanly. Nothing here may panic or hang.
//!
//! Parsing rules are unit-tested in `src/config.rs` and `src/listeners.rs`, and a few start-up
//! failures in `tests/lifecycle.rs`; this file covers the rest through the real binary.

mod support;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{BIN, PATIENCE, Service, Systemd, get};

/// Exit code for configuration errors (`EX_CONFIG`).
const EXIT_CONFIG: i32 = 78;
/// Exit code for start-up failures other than configuration.
const EXIT_FAILURE: i32 = 1;
/// Far more than a drain with nothing open ever takes; only hit when a stop hangs.
const QUICK_STOP: Duration = Duration::from_secs(5);

/// Asserts that `stderr` is exactly one line, the service's own error line, mentioning every
/// needle, and that nothing panicked.
fn assert_one_clear_line(case: &str, stderr: &str, needles: &[&str]) {
    assert!(!stderr.contains("panicked"), "{case}: panicked:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{case}: expected one line:\n{stderr}");
    assert!(
        lines[0].starts_with("seamless: "),
        "{case}: not the service's error line: {stderr}"
    );
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{case}: {needle:?} missing: {stderr}"
        );
    }
}

/// Waits for a service that is expected to fail at start and checks how it failed.
fn assert_fails_at_start(case: &str, mut service: Service, code: i32, needles: &[&str]) {
    let status = service.wait();
    let stderr = service.stderr();
    assert_eq!(status.code(), Some(code), "{case}: {status:?}\n{stderr}");
    assert_one_clear_line(case, &stderr, needles);
}

/// Polls `GET /` until it answers 200: readiness for services whose notifications go nowhere.
fn wait_until_serving(service: &mut Service, addr: std::net::SocketAddr) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        // The held socket accepts connections before the service runs, so ask for an answer;
        // but not from a service that has already exited, which never answers.
        if let Some(status) = service.child.try_wait().expect("try_wait") {
            panic!(
                "exited with {status:?} instead of serving:\n{}",
                service.stderr()
            );
        }
        if get(addr, "/").status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not serving within {PATIENCE:?}; stderr:\n{}",
            service.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGTERM and asserts a clean exit 0 within `within`, without a panic.
fn assert_stops_cleanly(case: &str, service: &mut Service, within: Duration) {
    let signalled = Instant::now();
    service.signal(Signal::SIGTERM);
    let status = service.wait();
    let elapsed = signalled.elapsed();
    let stderr = service.stderr();
    assert_eq!(status.code(), Some(0), "{case}: {status:?}\n{stderr}");
    assert!(elapsed < within, "{case}: stop took {elapsed:?}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{case}: panicked:\n{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Configuration at start: exit 78.

/// How a case breaks the configuration before the service starts.
enum Setup {
    /// The main file holds these bytes.
    Main(&'static [u8]),
    /// A drop-in `seamless.d/50-case.toml` holds this text; the main file is empty.
    DropIn(&'static str),
    /// A directory stands where the main file is expected.
    MainIsDirectory,
    /// A regular file stands where the drop-in directory is expected.
    DropInDirIsFile,
    /// A directory named like a drop-in file.
    DropInIsDirectory,
    /// A drop-in that is a symbolic link to nothing.
    DanglingDropIn,
    /// The main file is fine; an environment variable is not.
    Env(&'static str, &'static str),
}

fn set_up(systemd: &Systemd, setup: &Setup) -> Vec<(&'static str, &'static str)> {
    let dir = systemd.dir.path();
    let drop_ins = dir.join("seamless.d");
    match setup {
        Setup::Main(bytes) => std::fs::write(systemd.config_path(), bytes).expect("write"),
        Setup::DropIn(text) => {
            std::fs::create_dir(&drop_ins).expect("mkdir");
            std::fs::write(drop_ins.join("50-case.toml"), text).expect("write");
        }
        Setup::MainIsDirectory => {
            std::fs::remove_file(systemd.config_path()).expect("rm");
            std::fs::create_dir(systemd.config_path()).expect("mkdir");
        }
        Setup::DropInDirIsFile => std::fs::write(&drop_ins, "").expect("write"),
        Setup::DropInIsDirectory => {
            std::fs::create_dir_all(drop_ins.join("50-case.toml")).expect("mkdir");
        }
        Setup::DanglingDropIn => {
            std::fs::create_dir(&drop_ins).expect("mkdir");
            std::os::unix::fs::symlink(dir.join("nowhere"), drop_ins.join("50-case.toml"))
                .expect("symlink");
        }
        Setup::Env(var, value) => return vec![(var, value)],
    }
    Vec::new()
}

/// Far deeper than any parser should recurse into: must be an error, not a stack overflow.
fn deeply_nested() -> &'static [u8] {
    static TEXT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text = b"message = ".to_vec();
        text.extend(std::iter::repeat_n(b'[', 100_000));
        text.extend(std::iter::repeat_n(b']', 100_000));
        text.push(b'\n');
        text
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_at_start_is_one_line_and_exit_78() {
    // (case, setup, what the line must name); `FILE` stands for the main file's full path.
    let cases: Vec<(&str, Setup, &[&str])> = vec![
        (
            "malformed TOML",
            Setup::Main(b"message = \"unterminated\n"),
            &["FILE", "line 1"],
        ),
        (
            "unknown key",
            Setup::Main(b"[http]\nmax_conections = 5\n"),
            &["FILE", "max_conections"],
        ),
        (
            "unknown section",
            Setup::Main(b"[htttp]\nlisten = \"127.0.0.1:1\"\n"),
            &["FILE", "htttp"],
        ),
        (
            "wrong type",
            Setup::Main(b"[http]\nmax_connections = \"many\"\n"),
            &["FILE", "http.max_connections"],
        ),
        (
            "a table given a scalar",
            Setup::Main(b"http = 5\n"),
            &["FILE", "http"],
        ),
        (
            "negative count",
            Setup::Main(b"[http]\nmax_body_bytes = -1\n"),
            &["FILE", "http.max_body_bytes"],
        ),
        (
            "integer out of range",
            Setup::Main(b"[http]\nmax_connections = 99999999999999999999\n"),
            &["FILE"],
        ),
        (
            "duration as a number",
            Setup::Main(b"[http]\nheader_read_timeout = 10\n"),
            &["FILE", "http.header_read_timeout"],
        ),
        (
            "negative duration",
            Setup::Main(b"[http]\nrequest_timeout = \"-1s\"\n"),
            &["FILE", "http.request_timeout"],
        ),
        (
            "duration beyond any clock",
            Setup::Main(b"[shutdown]\nlinger = \"99999999999999999999s\"\n"),
            &["FILE", "shutdown.linger"],
        ),
        (
            "zero duration",
            Setup::Main(b"[http]\nheader_read_timeout = \"0s\"\n"),
            &["FILE", "http.header_read_timeout"],
        ),
        (
            "address that is not one",
            Setup::Main(b"[http]\nlisten = \"localhost\"\n"),
            &["FILE", "http.listen"],
        ),
        (
            "header limit below hyper's minimum",
            Setup::Main(b"[http]\nmax_header_bytes = 100\n"),
            &["FILE", "http.max_header_bytes"],
        ),
        (
            "not UTF-8",
            Setup::Main(b"message = \"\xff\xfe\"\n"),
            &["FILE"],
        ),
        (
            "nested beyond reason",
            Setup::Main(deeply_nested()),
            &["FILE"],
        ),
        (
            "bad drop-in",
            Setup::DropIn("[shutdown]\ndrain_timeout = \"soon\"\n"),
            &["50-case.toml", "shutdown.drain_timeout"],
        ),
        (
            "directory where the main file is expected",
            Setup::MainIsDirectory,
            &["FILE"],
        ),
        (
            "file where the drop-in directory is expected",
            Setup::DropInDirIsFile,
            &["seamless.d"],
        ),
        (
            "directory where a drop-in file is expected",
            Setup::DropInIsDirectory,
            &["50-case.toml"],
        ),
        (
            "dangling drop-in link",
            Setup::DanglingDropIn,
            &["50-case.toml"],
        ),
        (
            "bad environment value",
            Setup::Env("SEAMLESS_SHUTDOWN__DRAIN_TIMEOUT", "soon"),
            &["SEAMLESS_SHUTDOWN__DRAIN_TIMEOUT"],
        ),
        (
            "environment variable for no key",
            Setup::Env("SEAMLESS_HTTP__MAX_CONECTIONS", "5"),
            &["max_conections"],
        ),
    ];
    for (case, setup, needles) in cases {
        let systemd = Systemd::new();
        let env = set_up(&systemd, &setup);
        let file = systemd.config_path().display().to_string();
        let needles: Vec<&str> = needles
            .iter()
            .map(|n| if *n == "FILE" { file.as_str() } else { n })
            .collect();
        let mut start_env = vec![("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "http")];
        start_env.extend(env);
        let service = systemd.start_with(&start_env, true);
        assert_fails_at_start(case, service, EXIT_CONFIG, &needles);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_below_the_default_linger_names_the_file() {
    let systemd = Systemd::new();
    // Only drain_timeout is set; the default linger (1s) now exceeds it.
    systemd.write_config("[shutdown]\ndrain_timeout = \"500ms\"\n");
    let file = systemd.config_path().display().to_string();
    let service = systemd.start();
    assert_fails_at_start(
        "drain_timeout below the default linger",
        service,
        EXIT_CONFIG,
        &[&file, "shutdown."],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operating_system_reason_is_given_once() {
    let systemd = Systemd::new();
    std::fs::write(systemd.dir.path().join("seamless.d"), "").expect("write");
    let mut service = systemd.start();
    service.wait();
    let stderr = service.stderr();
    assert_eq!(stderr.matches("Not a directory").count(), 1, "{stderr}");

    let systemd = Systemd::new();
    systemd.write_config("[http]\nlisten = \"192.0.2.1:8080\"\n");
    let mut service = systemd.start_with(&[], false);
    service.wait();
    let stderr = service.stderr();
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
}

/// Asserts that the user the service runs as may not read `path`: otherwise the case would
/// prove nothing, and must say so rather than pass.
fn assert_refused_to_the_service(systemd: &Systemd, path: &Path) {
    let mut probe = Command::new("/bin/sh");
    probe
        .arg("-c")
        .arg(r#"test -r "$0""#)
        .arg(path)
        .stdin(Stdio::null());
    let readable = systemd
        .as_service_user(&mut probe)
        .status()
        .expect("run the probe")
        .success();
    assert!(
        !readable,
        "{} is readable despite mode 000: the service user ({:?}) is not subject to permission bits",
        path.display(),
        systemd.credentials
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_configuration_at_start_is_one_line_and_exit_78() {
    use std::os::unix::fs::PermissionsExt;
    let systemd = Systemd::unprivileged();
    std::fs::set_permissions(
        systemd.config_path(),
        std::fs::Permissions::from_mode(0o000),
    )
    .expect("chmod");
    assert_refused_to_the_service(&systemd, &systemd.config_path());
    let file = systemd.config_path().display().to_string();
    assert_fails_at_start(
        "unreadable main file",
        systemd.start(),
        EXIT_CONFIG,
        &[&file, "ermission denied"],
    );

    let systemd = Systemd::unprivileged();
    let drop_ins = systemd.dir.path().join("seamless.d");
    std::fs::create_dir(&drop_ins).expect("mkdir");
    std::fs::set_permissions(&drop_ins, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_refused_to_the_service(&systemd, &drop_ins);
        assert_fails_at_start(
            "unreadable drop-in directory",
            systemd.start(),
            EXIT_CONFIG,
            &["seamless.d", "ermission denied"],
        );
    }));
    // Let the temporary directory be removed (by a test that does not run as root).
    std::fs::set_permissions(&drop_ins, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------------------------
// Activation environment and sockets at start: exit 1.

/// LISTEN_* as passed, whether LISTEN_PID is set to the service's PID, what the line must name.
type EnvCase = (
    Vec<(&'static str, &'static str)>,
    bool,
    &'static [&'static str],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_activation_variables_are_one_line_and_exit_1() {
    let cases: Vec<EnvCase> = vec![
        (vec![("LISTEN_FDS", "")], true, &["LISTEN_FDS"]),
        (vec![("LISTEN_FDS", "-1")], true, &["LISTEN_FDS"]),
        (vec![("LISTEN_FDS", "0x1")], true, &["LISTEN_FDS"]),
        (vec![("LISTEN_FDS", "5000")], true, &["LISTEN_FDS"]),
        (
            vec![("LISTEN_FDS", "99999999999999999999")],
            true,
            &["LISTEN_FDS"],
        ),
        (
            vec![("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "http")],
            true,
            &["LISTEN_FDNAMES", "1 names for 2 sockets"],
        ),
        (
            vec![("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "")],
            true,
            &["http"],
        ),
        (
            vec![("LISTEN_PID", "ourselves"), ("LISTEN_FDS", "1")],
            false,
            &["LISTEN_PID"],
        ),
        (
            vec![("LISTEN_PID", "-5"), ("LISTEN_FDS", "1")],
            false,
            &["LISTEN_PID"],
        ),
        (vec![("LISTEN_FDNAMES", "http")], true, &["LISTEN_FDS"]),
    ];
    let systemd = Systemd::new();
    for (env, own_pid, needles) in cases {
        let case = format!("{env:?} (LISTEN_PID ours: {own_pid})");
        let service = systemd.start_with(&env, own_pid);
        assert_fails_at_start(&case, service, EXIT_FAILURE, needles);
    }
}

/// What the started process finds at fd 3.
enum Fd3<'a> {
    /// Nothing: fd 3 is closed.
    Closed,
    /// This fd, duplicated onto 3.
    Dup(BorrowedFd<'a>),
}

/// Starts the service as `Systemd::start_with` does, but with `fd3` at fd 3 instead of the
/// held listening socket.
fn start_with_fd3(systemd: &Systemd, fd3: Fd3<'_>, env: &[(&str, &str)]) -> Service {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let stderr = systemd.dir.path().join(format!(
        "fd3-stderr-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#)
        .arg(BIN)
        .arg("serve")
        .arg("--config")
        .arg(systemd.config_path())
        .env_clear()
        .env("NOTIFY_SOCKET", systemd.dir.path().join("notify"))
        .env("RUNTIME_DIRECTORY", systemd.runtime_dir())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    let source: RawFd = match fd3 {
        Fd3::Closed => -1,
        Fd3::Dup(fd) => fd.as_raw_fd(),
    };
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec only async-signal-safe calls (close, dup2, fcntl) are made,
    // and `source` stays open in the parent until `spawn` returns.
    unsafe {
        command.pre_exec(move || {
            if source < 0 {
                libc::close(3);
                return Ok(());
            }
            if libc::dup2(source, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn seamless");
    let pid = i32::try_from(child.id()).expect("pid fits");
    Service { child, pid, stderr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_fd_3_is_one_line_and_exit_1() {
    let systemd = Systemd::new();
    let env = [("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "http")];

    let file = std::fs::File::open(systemd.config_path()).expect("open");
    // A pipe's read end, without `std::io::pipe` (newer than the crate's rust-version).
    let mut piped = Command::new("true")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn true");
    let pipe_read = OwnedFd::from(piped.stdout.take().expect("stdout pipe"));
    piped.wait().expect("wait for true");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let unix_dgram = std::os::unix::net::UnixDatagram::unbound().expect("unix datagram");
    let unbound_tcp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("tcp socket");
    let bound_tcp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("tcp socket");
    bound_tcp
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .expect("addr")
                .into(),
        )
        .expect("bind");
    let connected = std::net::TcpStream::connect(systemd.addr).expect("connect");

    let cases: Vec<(&str, Fd3<'_>, &[&str])> = vec![
        ("closed", Fd3::Closed, &["fd 3", "not an open fd"]),
        (
            "regular file",
            Fd3::Dup(file.as_fd()),
            &["fd 3", "not a socket"],
        ),
        (
            "pipe",
            Fd3::Dup(pipe_read.as_fd()),
            &["fd 3", "not a socket"],
        ),
        (
            "UDP socket",
            Fd3::Dup(udp.as_fd()),
            &["fd 3", "not a stream socket"],
        ),
        (
            "unix datagram socket",
            Fd3::Dup(unix_dgram.as_fd()),
            &["fd 3", "not a stream socket"],
        ),
        (
            "TCP socket never bound",
            Fd3::Dup(unbound_tcp.as_fd()),
            &["fd 3", "not listening"],
        ),
        (
            "TCP socket bound, not listening",
            Fd3::Dup(bound_tcp.as_fd()),
            &["fd 3", "not listening"],
        ),
        (
            "connected TCP stream",
            Fd3::Dup(connected.as_fd()),
            &["fd 3", "not listening"],
        ),
    ];
    for (case, fd3, needles) in cases {
        let service = start_with_fd3(&systemd, fd3, &env);
        assert_fails_at_start(case, service, EXIT_FAILURE, needles);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_failure_is_one_line_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    for (case, listen) in [
        ("address in use", taken_addr.as_str()),
        // TEST-NET-1 (RFC 5737) is assigned to no local interface.
        ("address not local", "192.0.2.1:8080"),
    ] {
        let systemd = Systemd::new();
        systemd.write_config(&format!("[http]\nlisten = \"{listen}\"\n"));
        // No LISTEN_*: the service binds http.listen itself.
        let service = systemd.start_with(&[], false);
        assert_fails_at_start(case, service, EXIT_FAILURE, &["cannot listen on", listen]);
    }
}

// ---------------------------------------------------------------------------------------------
// NOTIFY_SOCKET that goes nowhere: serve anyway, stop cleanly.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_socket_going_nowhere_still_serves_and_stops_with_0() {
    let systemd = Systemd::new();
    let regular_file = systemd.dir.path().join("not-a-socket");
    std::fs::write(&regular_file, "").expect("write");
    let regular_file = regular_file.display().to_string();
    let abstract_name = format!("@seamless-test-nobody-listens-{}", std::process::id());
    let too_long = format!("/{}", "x".repeat(200));
    for (case, notify_socket) in [
        ("missing path", "/nonexistent/notify"),
        ("empty", ""),
        ("relative path", "notify"),
        ("abstract name nobody bound", abstract_name.as_str()),
        ("regular file", regular_file.as_str()),
        ("longer than a socket address", too_long.as_str()),
    ] {
        let mut service = systemd.start_with(
            &[
                ("LISTEN_FDS", "1"),
                ("LISTEN_FDNAMES", "http"),
                ("NOTIFY_SOCKET", notify_socket),
                // Many notifications, each failing: the failure must be reported only once.
                ("WATCHDOG_USEC", "20000"),
            ],
            true,
        );
        wait_until_serving(&mut service, systemd.addr);
        // A reload notifies too; it must still apply.
        systemd.write_config("message = \"reloaded\\n\"\n");
        service.signal(Signal::SIGHUP);
        let deadline = Instant::now() + PATIENCE;
        while get(systemd.addr, "/").body != "reloaded\n" {
            assert!(Instant::now() < deadline, "{case}: reload not applied");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_stops_cleanly(case, &mut service, QUICK_STOP);
        let stderr = service.stderr();
        assert_eq!(
            support::log_count(&stderr, "cannot notify the service manager"),
            1,
            "{case}: the failure is reported, once:\n{stderr}"
        );
        systemd.write_config("");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_socket_nobody_reads_does_not_stall_the_service() {
    let systemd = Systemd::new();
    // Bound but never read: its receive queue fills after a few datagrams.
    let deaf = systemd.dir.path().join("deaf-notify");
    let _deaf = std::os::unix::net::UnixDatagram::bind(&deaf).expect("bind");
    let deaf = deaf.display().to_string();
    let mut service = systemd.start_with(
        &[
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "http"),
            ("NOTIFY_SOCKET", &deaf),
            ("WATCHDOG_USEC", "2000"),
        ],
        true,
    );
    wait_until_serving(&mut service, systemd.addr);
    for _ in 0..50 {
        assert_eq!(get(systemd.addr, "/").status, 200);
    }
    for i in 0..5 {
        systemd.write_config(&format!("message = \"{i}\\n\"\n"));
        service.signal(Signal::SIGHUP);
        let deadline = Instant::now() + PATIENCE;
        while get(systemd.addr, "/").body != format!("{i}\n") {
            assert!(Instant::now() < deadline, "reload {i} not applied");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_stops_cleanly("deaf manager", &mut service, QUICK_STOP);
}

// ---------------------------------------------------------------------------------------------
// Configuration at reload: refused, the old one keeps serving.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_on_reload_keeps_the_old_one_serving() {
    let systemd = Systemd::new();
    systemd.write_config("message = \"good\\n\"\n");
    let mut service = systemd.start_ready().await;
    let file = systemd.config_path().display().to_string();
    let drop_ins = systemd.dir.path().join("seamless.d");

    // (case, how to break it, what the status must name, how to repair it)
    type Step = Box<dyn Fn(&Systemd)>;
    let restore_main: Step = Box::new(|s: &Systemd| {
        let _ = std::fs::remove_dir(s.config_path());
        s.write_config("message = \"good\\n\"\n");
    });
    let nothing: Step = Box::new(|_: &Systemd| {});
    let cases: Vec<(&str, Step, Vec<String>, &Step)> = vec![
        (
            "wrong type",
            Box::new(|s: &Systemd| s.write_config("[http]\nmax_body_bytes = \"big\"\n")),
            vec![file.clone(), "http.max_body_bytes".into()],
            &nothing,
        ),
        (
            "invalid duration",
            Box::new(|s: &Systemd| s.write_config("[http]\nrequest_timeout = \"a while\"\n")),
            vec![file.clone(), "http.request_timeout".into()],
            &nothing,
        ),
        (
            "semantic error",
            Box::new(|s: &Systemd| {
                s.write_config("[shutdown]\nlinger = \"30s\"\ndrain_timeout = \"5s\"\n")
            }),
            vec!["shutdown.linger".into()],
            &nothing,
        ),
        (
            "main file deleted",
            Box::new(|s: &Systemd| std::fs::remove_file(s.config_path()).expect("rm")),
            vec![file.clone(), "does not exist".into()],
            &restore_main,
        ),
        (
            "directory where the main file is expected",
            Box::new(|s: &Systemd| {
                std::fs::remove_file(s.config_path()).expect("rm");
                std::fs::create_dir(s.config_path()).expect("mkdir");
            }),
            vec![file.clone()],
            &restore_main,
        ),
        (
            "file where the drop-in directory is expected",
            Box::new(|s: &Systemd| {
                std::fs::write(s.dir.path().join("seamless.d"), "").expect("write");
            }),
            vec!["seamless.d".into()],
            &nothing,
        ),
    ];
    for (i, (case, break_it, needles, repair)) in cases.iter().enumerate() {
        break_it(&systemd);
        service.signal(Signal::SIGHUP);
        let seen = systemd.expect_notify("READY=1").await;
        let status = seen.last().expect("READY message");
        assert!(status.contains("reload failed"), "{case}: {status}");
        for needle in needles {
            assert!(
                status.contains(needle.as_str()),
                "{case}: {needle} missing: {status}"
            );
        }
        let response = get(systemd.addr, "/");
        assert_eq!(response.body, "good\n", "{case}: old config serves");
        assert_eq!(response.header("x-config-generation"), Some("1"), "{case}");
        let metrics = get(systemd.addr, "/metrics").body;
        let failed = format!("seamless_reloads_total{{result=\"failed\"}} {}", i + 1);
        assert!(metrics.contains(&failed), "{case}: {metrics}");
        repair(&systemd);
        if drop_ins.is_file() {
            std::fs::remove_file(&drop_ins).expect("rm");
        }
    }

    // After all that, a good configuration still applies.
    systemd.write_config("message = \"better\\n\"\n");
    service.signal(Signal::SIGHUP);
    let seen = systemd.expect_notify("READY=1").await;
    assert!(
        seen.last().expect("ready").contains("config generation 2"),
        "{seen:?}"
    );
    assert_eq!(get(systemd.addr, "/").body, "better\n");
    assert!(
        !service.stderr().contains("panicked"),
        "{}",
        service.stderr()
    );
    tokio::task::block_in_place(|| assert_stops_cleanly("after reloads", &mut service, QUICK_STOP));
}

// ---------------------------------------------------------------------------------------------
// Signal storms and interleavings.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_storm_then_sigterm_exits_0_quickly() {
    let systemd = Systemd::new();
    let mut service = systemd.start_ready().await;
    for i in 0..500 {
        if i % 50 == 0 {
            systemd.write_config(&format!("message = \"{i}\\n\"\n"));
        }
        service.signal(Signal::SIGHUP);
    }
    tokio::task::block_in_place(|| {
        assert_stops_cleanly("SIGHUP storm, then SIGTERM", &mut service, QUICK_STOP);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_storm_with_a_bad_configuration_keeps_the_old_one() {
    let systemd = Systemd::new();
    systemd.write_config("message = \"good\\n\"\n");
    let mut service = systemd.start_ready().await;
    systemd.write_config("message = ");
    for _ in 0..300 {
        service.signal(Signal::SIGHUP);
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = get(systemd.addr, "/metrics").body;
        if !metrics.contains("seamless_reloads_total{result=\"failed\"} 0") {
            assert!(
                metrics.contains("seamless_reloads_total{result=\"ok\"} 0"),
                "{metrics}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no reload ran: {metrics}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..20 {
        assert_eq!(get(systemd.addr, "/").body, "good\n");
    }
    tokio::task::block_in_place(|| {
        assert_stops_cleanly("bad SIGHUP storm", &mut service, QUICK_STOP);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_storm_is_one_drain_and_exits_0() {
    let systemd = Systemd::new();
    let mut service = systemd.start_ready().await;
    for _ in 0..100 {
        service.signal(Signal::SIGTERM);
    }
    let status = tokio::task::block_in_place(|| service.wait());
    let stderr = service.stderr();
    assert_eq!(
        status.code(),
        Some(0),
        "repeated SIGTERM is not SIGQUIT:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // One drain, counted twice over: what systemd was told, and what the log says.
    let sent = systemd.pending_notifications();
    let stopping = sent
        .iter()
        .flat_map(|message| message.lines())
        .filter(|line| *line == "STOPPING=1")
        .count();
    assert_eq!(stopping, 1, "{sent:#?}");
    assert_eq!(support::log_count(&stderr, "draining"), 1, "{stderr}");
    assert_eq!(support::log_count(&stderr, "drained"), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighups_during_the_drain_do_not_disturb_it() {
    let systemd = Systemd::new();
    systemd.write_config("message = \"old\\n\"\n[demo]\nslow_endpoint = true\n");
    let mut service = systemd.start_ready().await;
    let mut slow = support::KeepAlive::connect(systemd.addr);
    slow.send("/slow?ms=1000");
    tokio::time::sleep(Duration::from_millis(100)).await;

    service.signal(Signal::SIGTERM);
    systemd.expect_notify("STOPPING=1").await;
    // A new configuration and a reload request arrive while draining: neither may restart
    // serving nor cut the request in flight.
    systemd.write_config(
        "message = \"new\\n\"\n[shutdown]\ndrain_timeout = \"1ms\"\nlinger = \"1ms\"\n",
    );
    for _ in 0..200 {
        service.signal(Signal::SIGHUP);
    }
    let response = tokio::task::block_in_place(|| slow.receive()).expect("slow response");
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "slept 1000 ms\n")
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.header("x-config-generation"), Some("1"));
    let status = tokio::task::block_in_place(|| service.wait());
    let stderr = service.stderr();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("drained"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_sighup_and_sigterm_exit_0() {
    // SIGTERM arriving in the middle of a burst of reloads, many times over: whichever order
    // the service sees them in, it reloads what it can, then drains and exits 0.
    for round in 0..10 {
        let systemd = Systemd::new();
        let mut service = systemd.start_ready().await;
        for i in 0..40 {
            if i == 10 + round * 3 {
                service.signal(Signal::SIGTERM);
            }
            if i % 7 == 0 {
                let text = if i % 2 == 0 {
                    "message = \"x\"\n"
                } else {
                    "message = "
                };
                systemd.write_config(text);
            }
            service.signal(Signal::SIGHUP);
        }
        let signalled = Instant::now();
        let status = tokio::task::block_in_place(|| service.wait());
        let stderr = service.stderr();
        assert_eq!(status.code(), Some(0), "round {round}: {stderr}");
        assert!(signalled.elapsed() < QUICK_STOP, "round {round}: {stderr}");
        assert!(!stderr.contains("panicked"), "round {round}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// Values that parse but no clock can hold.

/// The largest duration the configuration syntax accepts.
const FOREVER: &str = "18446744073709551615s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_timeouts_are_refused_at_start() {
    // Beyond what a timer can hold: refused by the configuration's upper bound, not served
    // with a deadline that would overflow.
    for key in [
        "http.header_read_timeout",
        "shutdown.drain_timeout",
        "shutdown.announce",
    ] {
        let (section, name) = key.split_once('.').expect("section.name");
        let systemd = Systemd::new();
        systemd.write_config(&format!("[{section}]\n{name} = \"{FOREVER}\"\n"));
        let file = systemd.config_path().display().to_string();
        assert_fails_at_start(
            &format!("endless {key}"),
            systemd.start(),
            EXIT_CONFIG,
            &[&file, key, "must be at most"],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_command_with_an_endless_timeout_does_not_panic() {
    let systemd = Systemd::new();
    let service = systemd.start_ready().await;
    let output = Command::new(BIN)
        .args([
            "reload",
            "--pid",
            &service.pid.to_string(),
            "--timeout",
            FOREVER,
        ])
        .env("RUNTIME_DIRECTORY", systemd.runtime_dir())
        .output()
        .expect("run seamless reload");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // An absurd timeout means "wait as long as it takes"; the reload itself is quick.
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("config generation 2 is live"), "{stderr}");
}
