//! The `seamless` binary: parse, load, take sockets, log, serve. Everything of substance lives
//! in the library; see `src/lib.rs` for the map.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use seamless::cli::{self, Cli, Command};
use seamless::{ConfigError, Loader, Stopped, listeners, logging, reload, server, signals};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loader = Loader::new(cli.config);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(loader),
        Command::CheckConfig => check_config(&loader),
        Command::Reload {
            pid,
            timeout,
            verdict_file,
        } => reload::request(pid, verdict_file, timeout)
            .map(|verdict| {
                eprintln!(
                    "seamless: reloaded, config generation {} {}",
                    verdict.generation, verdict.message
                );
                cli::EXIT_OK
            })
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("seamless: {error:#}");
            let invalid_config = error.downcast_ref::<ConfigError>().is_some()
                || matches!(
                    error.downcast_ref(),
                    Some(reload::RequestError::Refused { .. })
                );
            ExitCode::from(if invalid_config {
                cli::EXIT_CONFIG
            } else {
                cli::EXIT_FAILURE
            })
        }
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
    let config = loader.load()?;
    // Before any thread exists: this reads and unsets LISTEN_* and takes the fds.
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
        anyhow::Ok(server::run(listeners, reloader, requests).await)
    })?;
    // Connections cut by a deadline or an exit request are dropped here, without waiting.
    runtime.shutdown_background();
    Ok(match stopped {
        Stopped::Drained | Stopped::DeadlineReached { .. } => cli::EXIT_OK,
        Stopped::Exited => cli::EXIT_FAILURE,
    })
}
