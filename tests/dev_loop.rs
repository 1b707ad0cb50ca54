//! The Rust dev loop: `systemfd --no-pid -s http::8080 -- cargo watch -x run` holds the socket
//! and passes it with `LISTEN_FDS` and `LISTEN_FDS_FIRST_FD` but no `LISTEN_PID` (it cannot know
//! the PID of the process `cargo run` ends up starting) and no `LISTEN_FDNAMES`. Here the harness
//! plays systemfd: it holds the socket and starts the real binary the same way.

mod support;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use support::{KeepAlive, Service, Systemd, get};

/// An address nothing listens on, configured as `http.listen` to see whether the service binds it.
fn free_addr() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("probe");
    probe.local_addr().expect("addr")
}

fn assert_refused(addr: SocketAddr, why: &str) {
    match TcpStream::connect(addr) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("{addr} ({why}) should refuse connections, got {other:?}"),
    }
}

/// The variables systemfd sets with `--no-pid` for one socket at fd 3.
const SYSTEMFD_ENV: [(&str, &str); 2] = [("LISTEN_FDS", "1"), ("LISTEN_FDS_FIRST_FD", "3")];

#[tokio::test]
async fn socket_passed_without_listen_pid_is_served() {
    let systemd = Systemd::new();
    let self_bind = free_addr();
    systemd.write_config(&format!("[http]\nlisten = \"{self_bind}\"\n"));
    let service = systemd.start_with(&SYSTEMFD_ENV, false);
    systemd.expect_notify("READY=1").await;

    for _ in 0..3 {
        let response = get(systemd.addr, "/");
        assert_eq!(response.status, 200, "{response:?}");
    }
    assert_refused(
        self_bind,
        "http.listen must not be bound when a socket is passed",
    );
    let stderr = service.stderr();
    assert!(stderr.contains("without LISTEN_PID"), "{stderr}");
    assert!(stderr.contains("no-pid"), "{stderr}");
}

/// What `cargo watch` does on every save: stop the old process, start a new one. The socket
/// stays open in the tool, so a connection made while nothing runs waits in the backlog and is
/// answered by the next process: no refused connection, only latency.
#[tokio::test]
async fn restart_keeps_the_socket_and_refuses_nothing() {
    let systemd = Systemd::new();
    let mut first = systemd.start_with(&SYSTEMFD_ENV, false);
    systemd.expect_notify("READY=1").await;
    assert_eq!(get(systemd.addr, "/").status, 200);

    first.signal(Signal::SIGTERM);
    let status = first.wait();
    assert!(status.success(), "{status:?}: {}", first.stderr());

    // Nothing serves now; the kernel still accepts into the held socket's backlog.
    let mut waiting = KeepAlive::connect(systemd.addr);
    waiting.send("/");

    let _second = systemd.start_with(&SYSTEMFD_ENV, false);
    let response = waiting
        .receive()
        .expect("the request made between two processes is answered");
    assert_eq!(response.status, 200, "{response:?}");
    systemd.expect_notify("READY=1").await;
    assert_eq!(get(systemd.addr, "/").status, 200);
}

/// systemfd says where the sockets start; followed without `LISTEN_PID`.
#[tokio::test]
async fn first_fd_from_the_tool_is_followed() {
    let systemd = Systemd::new();
    let self_bind = free_addr();
    systemd.write_config(&format!("[http]\nlisten = \"{self_bind}\"\n"));
    let service = start_at_fd(
        &systemd,
        5,
        &[("LISTEN_FDS", "1"), ("LISTEN_FDS_FIRST_FD", "5")],
    );
    systemd.expect_notify("READY=1").await;
    assert_eq!(get(systemd.addr, "/").status, 200, "{}", service.stderr());
    assert_refused(
        self_bind,
        "http.listen must not be bound when a socket is passed",
    );
}

#[tokio::test]
async fn foreign_listen_pid_is_ignored_and_http_listen_bound() {
    let systemd = Systemd::new();
    let self_bind = free_addr();
    systemd.write_config(&format!("[http]\nlisten = \"{self_bind}\"\n"));
    // PID 1 is never us: the fds are someone else's, even with the dev tool's variables.
    let mut env = vec![("LISTEN_PID", "1")];
    env.extend(SYSTEMFD_ENV);
    let service = systemd.start_with(&env, false);
    systemd.expect_notify("READY=1").await;

    assert_eq!(get(self_bind, "/").status, 200);
    let stderr = service.stderr();
    assert!(!stderr.contains("using sockets passed"), "{stderr}");
}

/// Starts `seamless serve` as `Systemd::start_with(env, false)` does, but with the held socket
/// at `fd` instead of 3 (and 3 closed), as a tool that opened other files first would.
fn start_at_fd(systemd: &Systemd, fd: i32, env: &[(&str, &str)]) -> Service {
    let stderr = systemd.dir.path().join(format!("stderr-fd{fd}"));
    let mut command = Command::new(&systemd.bin);
    command
        .arg("serve")
        .arg("--config")
        .arg(systemd.config_path())
        .env_clear()
        .env("NOTIFY_SOCKET", systemd.dir.path().join("notify"))
        .env("RUNTIME_DIRECTORY", systemd.runtime_dir())
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    let held = systemd.listener.as_raw_fd();
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl, close) are made.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(held, fd) < 0 || libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Whatever the test process had at 3 must not be mistaken for the socket.
            if fd != 3 {
                libc::close(3);
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn seamless");
    let pid = i32::try_from(child.id()).expect("pid fits");
    Service { child, pid, stderr }
}
