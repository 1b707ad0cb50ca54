//! Binary hot upgrade (`SIGUSR2` / `seamless upgrade`) under load, counted strictly: the new
//! binary takes over with zero failed requests, and every way a successor can fail leaves the
//! old process serving, also with zero failed requests.

mod support;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use loadgen::{Load, Mode, Report};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use support::{BIN, Systemd, get};
use tokio::sync::oneshot;

/// Successors outlive the process that started them; as their subreaper the test can wait
/// for them like systemd would.
fn become_subreaper() {
    #[allow(unsafe_code)]
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
}

/// A service started from a copy of the binary that the test may replace.
fn systemd_with_replaceable_binary() -> Systemd {
    let mut systemd = Systemd::new();
    let dir = systemd.dir.path().join("bin");
    std::fs::create_dir(&dir).expect("bin dir");
    systemd.bin = dir.join("seamless");
    install(&systemd.bin, Path::new(BIN));
    systemd
}

/// Puts `source` at `path` the way a package manager does: write aside, rename over. The
/// running process keeps its (now deleted) inode; `path` names the new file.
fn install(path: &Path, source: &Path) {
    let tmp = path.with_extension("new");
    support::write_executable(&tmp, &std::fs::read(source).expect("read binary"));
    std::fs::rename(&tmp, path).expect("rename binary");
}

fn install_script(path: &Path, script: &str) {
    let tmp = path.with_extension("new");
    support::write_executable(&tmp, script.as_bytes());
    std::fs::rename(&tmp, path).expect("rename script");
}

fn upgrade_command(systemd: &Systemd, pid: i32) -> Output {
    Command::new(BIN)
        .args(["upgrade", "--pid", &pid.to_string(), "--timeout", "30s"])
        .env("RUNTIME_DIRECTORY", systemd.runtime_dir())
        .output()
        .expect("run seamless upgrade")
}

fn pid_answering(systemd: &Systemd) -> i32 {
    let body = get(systemd.addr, "/version").body;
    body.split("(pid ")
        .nth(1)
        .and_then(|rest| rest.trim_end().strip_suffix(')'))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /version: {body:?}"))
}

/// Runs `mode` clients until the returned sender fires.
fn start_load(
    systemd: &Systemd,
    mode: Mode,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Report>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let load = Load {
        connections: 32,
        mode,
        ..Load::new(systemd.addr)
    };
    let task = tokio::spawn(loadgen::run(load, async {
        let _ = stop_rx.await;
    }));
    (stop_tx, task)
}

async fn upgrade_under_load(mode: Mode) {
    become_subreaper();
    let systemd = systemd_with_replaceable_binary();
    let mut old = systemd.start_ready().await;
    let (stop, load) = start_load(&systemd, mode);
    tokio::time::sleep(Duration::from_millis(300)).await;

    install(&systemd.bin, Path::new(BIN));
    let output = tokio::task::block_in_place(|| upgrade_command(&systemd, old.pid));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{output:?}\nservice:\n{}",
        old.stderr()
    );
    assert!(stderr.contains("serves now"), "{stderr}");

    // The old process hands the unit to its successor, then drains and exits 0.
    let seen = systemd.expect_notify("READY=1").await;
    let mainpid = systemd.expect_notify_prefix("MAINPID=").await;
    let new: i32 = mainpid.parse().expect("MAINPID value");
    assert_ne!(new, old.pid);
    assert_eq!(
        tokio::task::block_in_place(|| old.wait()).code(),
        Some(0),
        "{seen:?}"
    );

    assert_eq!(pid_answering(&systemd), new, "the successor answers");
    // It runs the file now at the install path, not the deleted inode the old one ran.
    let exe = std::fs::read_link(format!("/proc/{new}/exe")).expect("successor exe");
    assert_eq!(exe, systemd.bin, "successor runs {}", exe.display());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    let report = load.await.expect("load generator");
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(
        report.ok() > 500,
        "the load really ran: {}",
        report.summary()
    );
    if mode == Mode::KeepAlive {
        // The old process handed its connections to the successor instead of closing them.
        assert_eq!(report.connections_opened(), 32, "{}", report.summary());
        let handed = "handed connections to the new process";
        assert_eq!(
            support::log_count(&old.stderr(), handed),
            1,
            "{}",
            old.stderr()
        );
    }

    // Reload and stop reach the successor.
    systemd.write_config("message = \"after upgrade\\n\"\n");
    let reload = Command::new(BIN)
        .args(["reload", "--pid", &new.to_string()])
        .env("RUNTIME_DIRECTORY", systemd.runtime_dir())
        .output()
        .expect("reload");
    assert!(reload.status.success(), "{reload:?}");
    assert_eq!(get(systemd.addr, "/").body, "after upgrade\n");
    nix::sys::signal::kill(Pid::from_raw(new), Signal::SIGTERM).expect("SIGTERM successor");
    let status = tokio::task::block_in_place(|| waitpid(Pid::from_raw(new), None));
    assert_eq!(
        status.expect("waitpid"),
        WaitStatus::Exited(Pid::from_raw(new), 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_keep_alive_load_loses_nothing() {
    upgrade_under_load(Mode::KeepAlive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_connection_close_load_loses_nothing() {
    upgrade_under_load(Mode::Close).await;
}

/// A package replaced the binary before the process even started (or a process upgraded
/// before, from a file since replaced): `/proc/self/exe` already reads `PATH (deleted)` when the
/// process looks up where it came from. The successor must be the file now at `PATH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_a_deleted_executable_starts_the_installed_file() {
    become_subreaper();
    let mut systemd = systemd_with_replaceable_binary();
    let install_path = systemd.bin.clone();
    // Start the old process from an inode no path names: unlink the binary, and execute it
    // through the test's own open descriptor for it.
    let deleted = std::fs::File::open(&install_path).expect("open binary");
    std::fs::remove_file(&install_path).expect("rm binary");
    systemd.bin = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        deleted.as_raw_fd()
    ));
    let mut old = systemd.start_ready().await;
    systemd.bin = install_path;
    drop(deleted);
    let exe = std::fs::read_link(format!("/proc/{}/exe", old.pid)).expect("old exe");
    assert_eq!(
        exe.as_os_str().to_string_lossy(),
        format!("{} (deleted)", systemd.bin.display()),
        "the old process runs a deleted file"
    );

    install(&systemd.bin, Path::new(BIN));
    let output = tokio::task::block_in_place(|| upgrade_command(&systemd, old.pid));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{output:?}\nservice:\n{}",
        old.stderr()
    );
    assert!(stderr.contains("serves now"), "{stderr}");
    let new: i32 = systemd
        .expect_notify_prefix("MAINPID=")
        .await
        .parse()
        .expect("MAINPID value");
    assert_eq!(tokio::task::block_in_place(|| old.wait()).code(), Some(0));
    assert_eq!(pid_answering(&systemd), new, "the successor answers");
    let exe = std::fs::read_link(format!("/proc/{new}/exe")).expect("successor exe");
    assert_eq!(exe, systemd.bin, "successor runs {}", exe.display());

    nix::sys::signal::kill(Pid::from_raw(new), Signal::SIGTERM).expect("SIGTERM successor");
    let status = tokio::task::block_in_place(|| waitpid(Pid::from_raw(new), None));
    assert_eq!(
        status.expect("waitpid"),
        WaitStatus::Exited(Pid::from_raw(new), 0)
    );
}

/// Breaks the next upgrade in one particular way.
type Prepare = dyn Fn(&Systemd);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upgrades_leave_the_old_process_serving() {
    become_subreaper();
    let systemd = systemd_with_replaceable_binary();
    systemd.write_config("message = \"old\\n\"\n[upgrade]\nready_timeout = \"1s\"\n");
    let old = systemd.start_ready().await;
    let (stop, load) = start_load(&systemd, Mode::KeepAlive);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let cases: [(&str, Box<Prepare>, &str); 5] = [
        (
            "missing binary",
            Box::new(|s: &Systemd| std::fs::remove_file(&s.bin).expect("rm")),
            "No such file or directory",
        ),
        (
            "crashing binary",
            Box::new(|s: &Systemd| install_script(&s.bin, "#!/bin/sh\nexit 3\n")),
            "exited before it was ready",
        ),
        (
            "never ready",
            Box::new(|s: &Systemd| install_script(&s.bin, "#!/bin/sh\nexec sleep 30\n")),
            "not ready within 1s",
        ),
        (
            "invalid config",
            Box::new(|s: &Systemd| {
                install(&s.bin, Path::new(BIN));
                s.write_config(
                    "message = \"old\\n\"\n[upgrade]\nready_timeout = \"1s\"\nunknown_key = 1\n",
                );
            }),
            "could not start: ",
        ),
        // The successor's own words reach the operator.
        (
            "invalid config, reported",
            Box::new(|_: &Systemd| {}),
            "unknown_key",
        ),
    ];
    for (case, prepare, reason) in cases {
        prepare(&systemd);
        let output = tokio::task::block_in_place(|| upgrade_command(&systemd, old.pid));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{case}: {output:?}");
        assert!(stderr.contains(reason), "{case}: {stderr}");
        assert!(stderr.contains("serves on"), "{case}: {stderr}");
        assert_eq!(
            pid_answering(&systemd),
            old.pid,
            "{case}: old process still answers"
        );
        assert_eq!(get(systemd.addr, "/").body, "old\n", "{case}");
    }

    let _ = stop.send(());
    let report = load.await.expect("load generator");
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(old.stderr().contains("upgrade failed"), "{}", old.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_upgrade_is_refused_while_one_runs() {
    become_subreaper();
    let systemd = systemd_with_replaceable_binary();
    systemd.write_config("[upgrade]\nready_timeout = \"3s\"\n");
    let old = systemd.start_ready().await;
    install_script(&systemd.bin, "#!/bin/sh\nexec sleep 30\n");

    let pid = old.pid;
    let runtime = systemd.runtime_dir();
    let first = std::thread::spawn(move || {
        Command::new(BIN)
            .args(["upgrade", "--pid", &pid.to_string()])
            .env("RUNTIME_DIRECTORY", runtime)
            .output()
            .expect("first upgrade")
    });
    // Wait until the service has marked the first upgrade as under way.
    let verdict: PathBuf = systemd.runtime_dir().join("upgrade-verdict");
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while !support::read_file(&verdict).contains("pending=true") {
        assert!(
            std::time::Instant::now() < deadline,
            "no pending upgrade marker"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = tokio::task::block_in_place(|| upgrade_command(&systemd, old.pid));
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("in progress"),
        "{second:?}"
    );

    let first = tokio::task::block_in_place(|| first.join().expect("first thread"));
    assert_eq!(first.status.code(), Some(1), "{first:?}");
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("not ready within 3s"),
        "{first:?}"
    );
    assert_eq!(pid_answering(&systemd), old.pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_an_upgrade_kills_the_successor() {
    become_subreaper();
    let systemd = systemd_with_replaceable_binary();
    systemd.write_config("[upgrade]\nready_timeout = \"20s\"\n");
    let mut old = systemd.start_ready().await;
    install_script(&systemd.bin, "#!/bin/sh\nexec sleep 30\n");
    old.signal(Signal::SIGUSR2);
    let deadline = std::time::Instant::now() + support::PATIENCE;
    let successor = loop {
        let stderr = old.stderr();
        if let Some(pid) = stderr
            .lines()
            .find(|l| l.contains("the new process is starting"))
            .and_then(|l| l.split("pid=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|pid| pid.parse::<i32>().ok())
        {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no successor started: {stderr}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    old.signal(Signal::SIGTERM);
    assert_eq!(tokio::task::block_in_place(|| old.wait()).code(), Some(0));
    // The successor was killed, not left to serve beside whatever starts next.
    let status = tokio::task::block_in_place(|| waitpid(Pid::from_raw(successor), None));
    assert_eq!(
        status.expect("waitpid"),
        WaitStatus::Signaled(Pid::from_raw(successor), Signal::SIGKILL, false)
    );
}
