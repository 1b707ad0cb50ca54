//! The binary's edge: parse the command line, load the configuration, take the sockets, set up
//! logging, build the application's state and serve — or carry out a one-shot command. An
//! application's `main` is one call to [`main`].

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::app::App;
use crate::cli::{self, Cli, Command};
use crate::config::{Config, ConfigError, InvalidConfig, Loader};
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::reload::{self, Reloader};
use crate::routes::Shared;
use crate::server::{self, Stopped, Upgrades};
use crate::verdict::{RequestError, Verdict};
use crate::{listeners, logging, signals, tls, upgrade};

/// Runs the service binary of application `A`: `NAME [serve]`, `NAME check-config`,
/// `NAME print-config`, `NAME reload --pid PID`, `NAME upgrade --pid PID` (see `NAME --help`).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use axum::Router;
/// # use seamless_core::{App, BoxError, Identity, Metrics, NoConfig};
/// # struct MyApp;
/// # impl App for MyApp {
/// #     const IDENTITY: Identity = seamless_core::identity!();
/// #     type Config = NoConfig;
/// #     type State = ();
/// #     async fn state(_: &NoConfig, _: &mut Metrics) -> Result<(), BoxError> { Ok(()) }
/// #     fn router(_: &Arc<()>, _: &NoConfig) -> Router { Router::new() }
/// # }
/// fn main() -> std::process::ExitCode {
///     seamless_core::main::<MyApp>()
/// }
/// ```
pub fn main<A: App>() -> ExitCode {
    let identity = A::IDENTITY;
    let cli = Cli::parse_for(&identity);
    let loader = Loader::new(&identity, cli.config);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::<A>(loader),
        Command::CheckConfig => check_config::<A>(&loader),
        Command::PrintConfig => print_config::<A>(&loader),
        // A refused reload is an invalid configuration; a failed upgrade is a failure.
        Command::Reload {
            pid,
            timeout,
            verdict_file,
        } => report(
            &identity,
            reload::request(&identity, pid, verdict_file, timeout),
            cli::EXIT_CONFIG,
        ),
        Command::Upgrade {
            pid,
            timeout,
            verdict_file,
        } => report(
            &identity,
            upgrade::request(&identity, pid, verdict_file, timeout),
            cli::EXIT_FAILURE,
        ),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            print_error(&identity, &format!("{error:#}"));
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
fn print_error(identity: &Identity, message: &str) {
    let priority = if logging::stderr_is_journal() {
        "<3>"
    } else {
        ""
    };
    eprintln!("{priority}{}: {message}", identity.name);
}

/// Prints a verdict for the operator. A refusal exits with `refused`.
fn report(
    identity: &Identity,
    verdict: Result<Verdict, RequestError>,
    refused: u8,
) -> anyhow::Result<u8> {
    match verdict {
        Ok(verdict) => {
            eprintln!("{}: {}", identity.name, verdict.message);
            Ok(cli::EXIT_OK)
        }
        Err(RequestError::Refused(message)) => {
            print_error(identity, &message);
            Ok(refused)
        }
        Err(other) => Err(other.into()),
    }
}

fn check_config<A: App>(loader: &Loader) -> anyhow::Result<u8> {
    loader.load::<A::Config>()?;
    eprintln!(
        "{}: configuration OK ({} and its drop-ins)",
        A::IDENTITY.name,
        loader.main_file().display()
    );
    Ok(cli::EXIT_OK)
}

/// The application's keys first: its top-level keys must come before any `[section]`.
fn print_config<A: App>(loader: &Loader) -> anyhow::Result<u8> {
    let loaded = loader.load::<A::Config>()?;
    let app = toml::to_string(&loaded.app).context("cannot print the application's keys")?;
    let service = toml::to_string(&loaded.service).context("cannot print the service's keys")?;
    std::io::stdout()
        .write_all(format!("{app}\n{service}").as_bytes())
        .context("cannot write to stdout")?;
    Ok(cli::EXIT_OK)
}

/// Without socket activation: `http.listen`, and `tls.listen` when set.
async fn bind_own(config: &Config) -> Result<Vec<listeners::Named>, listeners::ListenerError> {
    let mut bound = listeners::bind(config.http.listen).await?;
    if let Some(addr) = config.tls.listen {
        bound.push(listeners::bind_as(tls::HTTPS_NAME, addr).await?);
    }
    Ok(bound)
}

fn serve<A: App>(loader: Loader) -> anyhow::Result<u8> {
    // First, before any thread exists and before the configuration's NAME_* environment layer
    // is read: when started by `NAME upgrade`, the pipe back to the old process.
    let mut parent = upgrade::take_parent();
    let result = serve_with::<A>(loader, &mut parent);
    if let (Err(error), Some(parent)) = (&result, parent) {
        // The old process serves on and tells `NAME upgrade` why.
        parent.report_failure(&format!("{error:#}"));
    }
    result
}

fn serve_with<A: App>(loader: Loader, parent: &mut Option<upgrade::Parent>) -> anyhow::Result<u8> {
    let identity = A::IDENTITY;
    let loaded = loader.load::<A::Config>()?;
    // Before any thread exists: reads and unsets LISTEN_* and takes the fds.
    let passed = listeners::take_from_env()?;
    let (log, _) = logging::init(identity.name, &loaded.service.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let stopped = runtime.block_on(async {
        // Handlers first: a SIGHUP right after READY=1 must not kill us.
        let requests = signals::listen().context("cannot install signal handlers")?;
        let socket_activated = passed.is_some();
        let sockets = match passed {
            Some(passed) => passed.into_sockets()?,
            None => bind_own(&loaded.service).await?.into(),
        };
        let https = sockets.listeners.iter().any(|l| l.name == tls::HTTPS_NAME);
        if https && loaded.tls.is_none() {
            return Err(ConfigError::Invalid(InvalidConfig {
                errors: vec![format!(
                    "{}: key `tls.certificate`: not set, but systemd passed a socket named `https`",
                    loader.main_file().display()
                )],
            })
            .into());
        }
        let mut metrics = Metrics::new(&identity.metric_prefix());
        let state = A::state(&loaded.app, &mut metrics)
            .await
            .map_err(|error| anyhow::anyhow!(error))
            .context("cannot create the application's state")?;
        let shared = Arc::new(Shared::new(&identity, metrics));
        let reloader = Reloader::<A>::new(loader, loaded, Arc::new(state), shared)
            .with_log(log)
            .socket_activated(socket_activated);
        let upgrades = Upgrades::of_this_process(parent.take());
        anyhow::Ok(server::run(sockets, reloader, requests, upgrades).await)
    })?;
    // Connections cut by a deadline or an exit request are dropped here, without waiting.
    runtime.shutdown_background();
    Ok(match stopped {
        Stopped::Drained | Stopped::DeadlineReached { .. } => cli::EXIT_OK,
        Stopped::Exited => cli::EXIT_FAILURE,
    })
}
