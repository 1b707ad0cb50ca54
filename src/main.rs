//! The `seamless` binary: parse, load, take sockets, log, serve. Everything of substance lives
//! in the library; see `src/lib.rs` for the map.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use seamless_core::cli::{self, Cli, Command};
use seamless_core::verdict::{RequestError, Verdict};
use seamless_core::{
    ConfigError, Loader, Stopped, listeners, logging, reload, server, signals, upgrade,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loader = Loader::new(cli.config);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(loader),
        Command::CheckConfig => check_config(&loader),
        // A refused reload is an invalid configuration; a failed upgrade is a failure.
        Command::Reload {
            pid,
            timeout,
            verdict_file,
        } => report(
            reload::request(pid, verdict_file, timeout),
            cli::EXIT_CONFIG,
        ),
        Command::Upgrade {
            pid,
            timeout,
            verdict_file,
        } => report(
            upgrade::request(pid, verdict_file, timeout),
            cli::EXIT_FAILURE,
        ),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            print_error(&format!("{error:#}"));
            let invalid_config = error.downcast_ref::<ConfigError>().is_some();
            ExitCode::from(if invalid_config {
                cli::EXIT_CONFIG
            } else {
                cli::EXIT_FAILURE
            })
        }
    }
}

/// One line on stderr. `<3>` makes journald file it at error priority when stderr is the
/// journal (`ExecReload=`, a failed start); a terminal gets the plain line.
fn print_error(message: &str) {
    let priority = if logging::stderr_is_journal() {
        "<3>"
    } else {
        ""
    };
    eprintln!("{priority}seamless: {message}");
}

/// Prints a verdict for the operator. A refusal exits with `refused`.
fn report(verdict: Result<Verdict, RequestError>, refused: u8) -> anyhow::Result<u8> {
    match verdict {
        Ok(verdict) => {
            eprintln!("seamless: {}", verdict.message);
            Ok(cli::EXIT_OK)
        }
        Err(RequestError::Refused(message)) => {
            print_error(&message);
            Ok(refused)
        }
        Err(other) => Err(other.into()),
    }
}

fn check_config(loader: &Loader) -> anyhow::Result<u8> {
    loader.load()?;
    eprintln!(
        "seamless: configuration OK ({} and its drop-ins)",
        loader.main_file().display()
    );
    Ok(cli::EXIT_OK)
}

fn serve(loader: Loader) -> anyhow::Result<u8> {
    // First, before any thread exists and before the configuration's SEAMLESS_* environment
    // layer is read: when started by `seamless upgrade`, the pipe back to the old process.
    let mut parent = upgrade::take_parent();
    let result = serve_with(loader, &mut parent);
    if let (Err(error), Some(parent)) = (&result, parent) {
        // The old process serves on and tells `seamless upgrade` why.
        parent.report_failure(&format!("{error:#}"));
    }
    result
}

fn serve_with(loader: Loader, parent: &mut Option<upgrade::Parent>) -> anyhow::Result<u8> {
    let config = loader.load()?;
    // Before any thread exists: reads and unsets LISTEN_* and takes the fds.
    let passed = listeners::take_from_env()?;
    let (log, _) = logging::init(&config.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let stopped = runtime.block_on(async {
        // Handlers first: a SIGHUP right after READY=1 must not kill us.
        let requests = signals::listen().context("cannot install signal handlers")?;
        let socket_activated = passed.is_some();
        let listeners = match passed {
            Some(passed) => passed.into_listeners()?,
            None => listeners::bind(config.http.listen).await?,
        };
        let reloader =
            reload::Reloader::new(loader, config, Some(log)).socket_activated(socket_activated);
        let upgrades = server::Upgrades::of_this_process(parent.take());
        anyhow::Ok(server::run(listeners, reloader, requests, upgrades).await)
    })?;
    // Connections cut by a deadline or an exit request are dropped here, without waiting.
    runtime.shutdown_background();
    Ok(match stopped {
        Stopped::Drained | Stopped::DeadlineReached { .. } => cli::EXIT_OK,
        Stopped::Exited => cli::EXIT_FAILURE,
    })
}
