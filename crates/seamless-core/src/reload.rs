//! Reloading the configuration, and `NAME reload`, which waits for the verdict.
//!
//! In the service, `Reloader::reload` loads and validates a complete new configuration and
//! swaps it in atomically: requests already running keep the generation they started with,
//! new requests get the new one, nobody waits on a lock. A failed reload changes nothing.
//!
//! `systemctl reload` on systemd 252 cannot learn whether a reload worked (no
//! `Type=notify-reload` there, and none of any version can report failure). So after every
//! attempt the service writes a verdict, and `ExecReload=NAME reload --pid $MAINPID`
//! (`request`) sends `SIGHUP` and waits for it: `systemctl reload` returns only once the new
//! config is live, and fails, printing the error, when it is invalid.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use nix::sys::signal::Signal;

use crate::app::App;
use crate::config::{AppConfig as _, Loaded, Loader};
use crate::generation::Generation;
use crate::identity::Identity;
use crate::logging;
use crate::notify::monotonic_usec;
use crate::routes::Shared;
use crate::tls::Tls;
use crate::verdict::{RequestError, Verdict};

/// Name of the verdict file inside the runtime directory.
pub(crate) const VERDICT_FILE: &str = "reload-verdict";

/// The result of one reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The new configuration is live.
    Applied {
        /// Its generation.
        generation: u64,
        /// Changed keys that cannot change while running.
        on_restart: Vec<&'static str>,
    },
    /// The old configuration keeps serving.
    Failed {
        /// The generation still serving.
        generation: u64,
        /// Why the new one was refused (names file and key).
        error: String,
    },
}

/// Owns the live configuration and replaces it on request.
///
/// ```
/// use std::sync::Arc;
///
/// use axum::Router;
/// use seamless_core::{App, BoxError, Identity, Loader, Metrics, NoConfig};
/// use seamless_core::{reload::Reloader, routes::Shared};
///
/// struct Hello;
/// impl App for Hello {
///     const IDENTITY: Identity = seamless_core::identity!();
///     type Config = NoConfig;
///     type State = ();
///     async fn state(_: &NoConfig, _: &mut Metrics) -> Result<(), BoxError> { Ok(()) }
///     fn router(_: &Arc<()>, _: &NoConfig) -> Router { Router::new() }
/// }
///
/// let loader = Loader::new(&Hello::IDENTITY, Some("/dev/null".into()));
/// let loaded = loader.load::<NoConfig>().unwrap();
/// let shared = Arc::new(Shared::new(&Hello::IDENTITY, Metrics::new("hello")));
/// let reloader = Reloader::<Hello>::new(loader, loaded, Arc::new(()), shared.clone());
/// assert!(Arc::ptr_eq(&reloader.shared(), &shared));
/// ```
pub struct Reloader<A: App> {
    /// Where the configuration comes from.
    loader: Loader,
    /// What new requests are served with. Readers only ever `load()` it.
    live: Arc<ArcSwap<Generation>>,
    /// The application's configuration now serving, to compare a new one against.
    app_config: A::Config,
    /// The application's long-lived state, handed to every generation's router.
    state: Arc<A::State>,
    /// Metrics and the draining flag, shared with every connection.
    shared: Arc<Shared>,
    /// Swaps the log filter; `None` when the caller manages logging itself (tests).
    log: Option<logging::Handle>,
    /// Where verdicts are written for `NAME reload`; `None` outside systemd.
    verdict_file: Option<PathBuf>,
    /// Whether listening addresses came from systemd (then `http.listen` never applies).
    socket_activated: bool,
    /// Whether an `https` socket is served: then a configuration without TLS is refused.
    serving_https: bool,
}

impl<A: App> std::fmt::Debug for Reloader<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("loader", &self.loader)
            .field("generation", &self.live.load().number)
            .field("app_config", &self.app_config)
            .finish_non_exhaustive()
    }
}

impl<A: App> Reloader<A> {
    /// A reloader serving `loaded` as generation 1, with the application's long-lived `state`
    /// and the process's `shared` metrics and flags.
    pub fn new(
        loader: Loader,
        loaded: Loaded<A::Config>,
        state: Arc<A::State>,
        shared: Arc<Shared>,
    ) -> Self {
        shared.metrics.set_generation(1);
        set_certificate(&shared, loaded.tls.as_deref(), None);
        let router = A::router(&state, &loaded.app);
        let live = Arc::new(ArcSwap::from_pointee(Generation::new(
            loaded.service,
            1,
            router,
            loaded.tls,
        )));
        Reloader {
            loader,
            live,
            app_config: loaded.app,
            state,
            shared,
            log: None,
            verdict_file: crate::verdict::default_path(VERDICT_FILE),
            socket_activated: false,
            serving_https: false,
        }
    }

    /// Applies `log.level` changes through `log`, the installed subscriber's handle.
    pub(crate) fn with_log(mut self, log: logging::Handle) -> Self {
        self.log = Some(log);
        self
    }

    /// Writes verdicts to `path` instead of `$RUNTIME_DIRECTORY/reload-verdict`.
    #[cfg(test)]
    fn with_verdict_file(mut self, path: Option<PathBuf>) -> Self {
        self.verdict_file = path;
        self
    }

    /// Records that the sockets came from systemd, so a changed `http.listen` is reported as
    /// not applying at all rather than "on restart".
    pub(crate) fn socket_activated(mut self, yes: bool) -> Self {
        self.socket_activated = yes;
        self
    }

    /// Records that an `https` socket is served, so a reload that drops `tls.certificate` is
    /// refused. Fails when the configuration serving now has no certificate.
    pub(crate) fn serve_https(&mut self) -> Result<(), String> {
        self.serving_https = true;
        match self.live.load().tls {
            Some(_) => Ok(()),
            None => Err(NO_CERTIFICATE.to_owned()),
        }
    }

    /// The live configuration, shared with every connection.
    pub(crate) fn live(&self) -> Arc<ArcSwap<Generation>> {
        self.live.clone()
    }

    /// Metrics and the draining flag, shared with every connection.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Loads, validates and applies the configuration; on failure keeps the old one.
    pub(crate) fn reload(&mut self) -> Outcome {
        let started_usec = monotonic_usec().unwrap_or(0);
        let started = Instant::now();
        let current = self.live.load_full();
        let loaded = self.loader.load::<A::Config>().map_err(|e| e.to_string());
        let loaded = loaded.and_then(|loaded| {
            if self.serving_https && loaded.tls.is_none() {
                Err(NO_CERTIFICATE.to_owned())
            } else {
                Ok(loaded)
            }
        });
        let outcome = match loaded {
            Ok(loaded) => self.apply(loaded, &current, started),
            Err(error) => {
                let generation = current.number;
                self.shared.metrics.reloaded(false, generation);
                tracing::error!(%error, generation, "reload failed; keeping the running configuration");
                Outcome::Failed { generation, error }
            }
        };
        let verdict = match &outcome {
            Outcome::Applied {
                generation,
                on_restart,
            } if on_restart.is_empty() => Verdict::new(
                started_usec,
                true,
                format!("config generation {generation} is live"),
            ),
            Outcome::Applied {
                generation,
                on_restart,
            } => Verdict::new(
                started_usec,
                true,
                format!(
                    "config generation {generation} is live; takes effect on restart: {}",
                    on_restart.join(", ")
                ),
            ),
            Outcome::Failed { generation, error } => Verdict::new(
                started_usec,
                false,
                format!("reload failed, still serving config generation {generation}: {error}"),
            ),
        };
        verdict.publish(self.verdict_file.as_deref());
        outcome
    }

    /// Swaps in a validated configuration as the next generation.
    fn apply(
        &mut self,
        loaded: Loaded<A::Config>,
        current: &Generation,
        started: Instant,
    ) -> Outcome {
        let generation = current.number + 1;
        let mut on_restart = Vec::new();
        if current.config.http.listen != loaded.service.http.listen && !self.socket_activated {
            on_restart.push("http.listen");
        }
        if current.config.tls.listen != loaded.service.tls.listen && !self.socket_activated {
            on_restart.push("tls.listen");
        }
        set_certificate(&self.shared, loaded.tls.as_deref(), current.tls.as_deref());
        on_restart.extend(loaded.app.restart_only(&self.app_config));
        let level = &loaded.service.log.level;
        if current.config.log.level != *level {
            if let Some(Err(error)) = self.log.as_ref().map(|h| h.set_level(level)) {
                tracing::warn!(%error, %level, "cannot apply log.level");
            }
        }
        let router = A::router(&self.state, &loaded.app);
        self.live.store(Arc::new(Generation::new(
            loaded.service,
            generation,
            router,
            loaded.tls,
        )));
        self.app_config = loaded.app;
        self.shared.metrics.reloaded(true, generation);
        for key in &on_restart {
            tracing::warn!(key, generation, "changed setting takes effect on restart");
        }
        tracing::info!(
            generation,
            elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "configuration reloaded"
        );
        Outcome::Applied {
            generation,
            on_restart,
        }
    }
}

/// Why a configuration without a certificate cannot serve the `https` socket.
const NO_CERTIFICATE: &str =
    "key `tls.certificate`: not set, but the `https` socket needs a certificate and key";

/// Publishes the certificate `tls` serves with (and logs it when it is not `running`'s).
fn set_certificate(shared: &Shared, tls: Option<&Tls>, running: Option<&Tls>) {
    shared
        .metrics
        .set_certificate(tls.map(|t| (t.certificate(), t.not_after())));
    if let Some(tls) = tls.filter(|&t| running != Some(t)) {
        tracing::info!(
            certificate = %tls.certificate().display(),
            serial = tls.serial(),
            not_after = tls.not_after(),
            "TLS certificate loaded"
        );
    }
}

/// `NAME reload`: sends `SIGHUP` to `pid` and waits for the verdict of a reload that
/// started afterwards.
pub(crate) fn request(
    identity: &Identity,
    pid: i32,
    verdict_file: Option<PathBuf>,
    timeout: Duration,
) -> Result<Verdict, RequestError> {
    let packaged = identity.runtime_dir();
    crate::verdict::request(
        pid,
        Signal::SIGHUP,
        verdict_file,
        VERDICT_FILE,
        &packaged,
        timeout,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metrics;
    use crate::test_app::{Routers, TestApp};
    use std::sync::atomic::Ordering;

    #[test]
    fn reload_swaps_or_keeps_and_state_survives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("example.toml");
        std::fs::write(&file, "message = \"one\"\n").expect("write");
        let loader = Loader::new(&TestApp::IDENTITY, Some(file.clone()));
        let loaded = loader.load().expect("valid");
        let verdict_path = dir.path().join(VERDICT_FILE);
        let state = Arc::new(Routers::default());
        let shared = Arc::new(Shared::new(&TestApp::IDENTITY, Metrics::new("example")));
        let mut reloader = Reloader::<TestApp>::new(loader, loaded, state.clone(), shared)
            .with_verdict_file(Some(verdict_path.clone()));
        let before = reloader.live().load_full();

        std::fs::write(
            &file,
            "message = \"two\"\nsize = 5\n[http]\nlisten = \"127.0.0.1:9\"\n",
        )
        .expect("write");
        let outcome = reloader.reload();
        assert_eq!(
            outcome,
            Outcome::Applied {
                generation: 2,
                on_restart: vec!["http.listen", "size"]
            }
        );
        assert_eq!(reloader.live().load().number, 2);
        assert_eq!(before.number, 1, "holders of the old generation keep it");
        assert_eq!(reloader.app_config.message, "two");
        assert_eq!(
            state.0.load(Ordering::Relaxed),
            2,
            "one state, a router per generation"
        );
        let verdict = Verdict::read(&verdict_path).expect("written");
        assert!(verdict.ok);
        assert!(
            verdict
                .message
                .contains("takes effect on restart: http.listen, size"),
            "{verdict:?}"
        );

        std::fs::write(&file, "message = \n").expect("write");
        let Outcome::Failed { generation, error } = reloader.reload() else {
            panic!("a syntax error must fail the reload");
        };
        assert_eq!(generation, 2);
        assert!(error.contains("example.toml"), "{error}");
        assert_eq!(reloader.live().load().number, 2, "old config still serves");
        assert_eq!(reloader.app_config.message, "two");
        assert_eq!(
            state.0.load(Ordering::Relaxed),
            2,
            "no router for a refused config"
        );
        let verdict = Verdict::read(&verdict_path).expect("written");
        assert!(!verdict.ok);
        assert!(verdict.message.contains(&error), "{verdict:?}");
    }
}
