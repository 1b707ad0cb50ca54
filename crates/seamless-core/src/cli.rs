//! Command line: what the service binary can be asked to do, and the exit codes it answers
//! with. The command's name, version and description are the application's ([`Identity`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::identity::Identity;

/// Exit code for success, also after a completed drain.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit code for failures other than configuration: bad sockets, bind errors, immediate exit.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code for an invalid configuration (`EX_CONFIG` from sysexits.h, as `nginx -t` uses).
pub(crate) const EXIT_CONFIG: u8 = 78;

/// The command line of a service binary.
#[derive(Debug, Parser)]
pub(crate) struct Cli {
    /// Configuration file [default: $CONFIGURATION_DIRECTORY/NAME.toml, else
    /// /etc/NAME/NAME.toml]; drop-ins are read from NAME.d/ beside it.
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// What to do (default: serve).
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve HTTP on the sockets passed by systemd, or on `http.listen` without them.
    Serve,
    /// Validate the layered configuration; exit 78 with the first error (file and key) if invalid.
    CheckConfig,
    /// Print the effective configuration (built-in defaults, file, drop-ins and environment
    /// merged) as TOML; exit 78 with the first error if invalid.
    PrintConfig,
    /// Ask a running service to reload (SIGHUP) and wait until it reports the result; exits
    /// non-zero with the error when the new configuration is refused. For ExecReload=.
    Reload {
        /// The service's PID (ExecReload=NAME reload --pid $MAINPID).
        #[arg(long)]
        pid: i32,
        /// How long to wait for the service's verdict.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
        timeout: Duration,
        /// Where the service writes its verdict [default: $RUNTIME_DIRECTORY/reload-verdict, else
        /// /run/NAME/reload-verdict].
        #[arg(long, value_name = "PATH")]
        verdict_file: Option<PathBuf>,
    },
    /// Replace the running binary without dropping a request (SIGUSR2): the installed binary
    /// starts with the listening sockets, and the old process drains once it serves. Exits 0
    /// once the new process serves, non-zero with the reason otherwise.
    Upgrade {
        /// The service's PID (systemctl show -p MainPID --value NAME).
        #[arg(long)]
        pid: i32,
        /// How long to wait for the outcome (keep above upgrade.ready_timeout).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        timeout: Duration,
        /// Where the service writes its verdict [default: $RUNTIME_DIRECTORY/upgrade-verdict, else
        /// /run/NAME/upgrade-verdict].
        #[arg(long, value_name = "PATH")]
        verdict_file: Option<PathBuf>,
    },
}

impl Cli {
    /// Parses the process's arguments for `identity`'s binary: `NAME` in the help texts becomes
    /// the service's name, and `--version` and `--help` describe the application.
    pub(crate) fn parse_for(identity: &Identity) -> Self {
        let name = identity.name;
        let command = Cli::command()
            .name(name)
            .bin_name(name)
            .version(identity.version)
            .about(identity.description)
            .mut_args(|arg| named(arg, name))
            .mut_subcommands(|sub| {
                let about = sub.get_about().map(ToString::to_string);
                let sub = match about {
                    Some(about) if about.contains("NAME") => sub.about(about.replace("NAME", name)),
                    _ => sub,
                };
                sub.mut_args(|arg| named(arg, name))
            });
        let matches = command.get_matches();
        // The matches come from this very struct's command, so they always convert.
        Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }
}

/// `arg` with `NAME` in its help replaced by the service's name.
fn named(arg: clap::Arg, name: &str) -> clap::Arg {
    match arg.get_help().map(ToString::to_string) {
        Some(help) if help.contains("NAME") => arg.help(help.replace("NAME", name)),
        _ => arg,
    }
}
