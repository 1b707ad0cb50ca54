//! Command line: what `seamless` can be asked to do, and the exit codes it answers with.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Exit code for success, also after a completed drain.
pub const EXIT_OK: u8 = 0;
/// Exit code for failures other than configuration: bad sockets, bind errors, immediate exit.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for an invalid configuration (`EX_CONFIG` from sysexits.h, as `nginx -t` uses).
pub const EXIT_CONFIG: u8 = 78;

/// A systemd-native, socket-activated HTTP service that restarts and reloads without dropping
/// a request.
#[derive(Debug, Parser)]
#[command(name = "seamless", version, about)]
pub struct Cli {
    /// Configuration file [default: $CONFIGURATION_DIRECTORY/seamless.toml, else
    /// /etc/seamless/seamless.toml]; drop-ins are read from seamless.d/ beside it.
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP on the sockets passed by systemd, or on `http.listen` without them.
    Serve,
    /// Validate the layered configuration; exit 78 with the first error (file and key) if invalid.
    CheckConfig,
    /// Ask a running service to reload (SIGHUP) and wait until it reports the result; exits
    /// non-zero with the error when the new configuration is refused. For ExecReload=.
    Reload {
        /// The service's PID (ExecReload=seamless reload --pid $MAINPID).
        #[arg(long)]
        pid: i32,
        /// How long to wait for the service's verdict.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
        timeout: Duration,
        /// Where the service writes its verdict [default: $RUNTIME_DIRECTORY/reload-verdict, else
        /// /run/seamless/reload-verdict].
        #[arg(long, value_name = "PATH")]
        verdict_file: Option<PathBuf>,
    },
    /// Replace the running binary without dropping a request (SIGUSR2): the installed binary
    /// starts with the listening sockets, and the old process drains once it serves. Exits 0
    /// once the new process serves, non-zero with the reason otherwise.
    Upgrade {
        /// The service's PID (systemctl show -p MainPID --value seamless).
        #[arg(long)]
        pid: i32,
        /// How long to wait for the outcome (keep above upgrade.ready_timeout).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        timeout: Duration,
        /// Where the service writes its verdict [default: $RUNTIME_DIRECTORY/upgrade-verdict, else
        /// /run/seamless/upgrade-verdict].
        #[arg(long, value_name = "PATH")]
        verdict_file: Option<PathBuf>,
    },
}
