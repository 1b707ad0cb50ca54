//! Reloading the configuration, and `seamless reload`, which waits for the verdict.
//!
//! In the service, [`Reloader::reload`] loads and validates a complete new configuration and
//! swaps it in atomically: requests already running keep the generation they started with,
//! new requests get the new one, nobody waits on a lock. A failed reload changes nothing.
//!
//! `systemctl reload` on systemd 252 cannot learn whether a reload worked (no
//! `Type=notify-reload` there, and none of any version can report failure). So after every
//! attempt the service writes a [`Verdict`], and `ExecReload=seamless reload --pid $MAINPID`
//! ([`request`]) sends `SIGHUP` and waits for it: `systemctl reload` returns only once the new
//! config is live, and fails, printing the error, when it is invalid.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use nix::sys::signal::Signal;

use crate::config::{Config, Loader};
use crate::logging;
use crate::metrics::Metrics;
use crate::notify::monotonic_usec;
use crate::server::Live;
use crate::verdict::{RequestError, Verdict};

/// Name of the verdict file inside the runtime directory.
pub const VERDICT_FILE: &str = "reload-verdict";

/// The result of one reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
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
#[derive(Debug)]
pub struct Reloader {
    /// Where the configuration comes from.
    loader: Loader,
    /// What new requests are served with. Readers only ever `load()` it.
    live: Arc<ArcSwap<Live>>,
    /// Counters, for `seamless_reloads_total` and the generation.
    metrics: Arc<Metrics>,
    /// Swaps the log filter; `None` when the caller manages logging itself (tests).
    log: Option<logging::Handle>,
    /// Where verdicts are written for `seamless reload`; `None` outside systemd.
    verdict_file: Option<PathBuf>,
    /// Whether listening addresses came from systemd (then `http.listen` never applies).
    socket_activated: bool,
}

impl Reloader {
    /// A reloader serving `config` as generation 1.
    pub fn new(loader: Loader, config: Config, log: Option<logging::Handle>) -> Self {
        let metrics = Arc::new(Metrics::default());
        metrics.set_generation(1);
        let live = Arc::new(ArcSwap::from_pointee(Live::new(config, 1, metrics.clone())));
        let verdict_file = crate::verdict::default_path(VERDICT_FILE);
        Reloader {
            loader,
            live,
            metrics,
            log,
            verdict_file,
            socket_activated: false,
        }
    }

    /// Writes verdicts to `path` instead of `$RUNTIME_DIRECTORY/reload-verdict`.
    pub fn with_verdict_file(mut self, path: Option<PathBuf>) -> Self {
        self.verdict_file = path;
        self
    }

    /// Records that the sockets came from systemd, so a changed `http.listen` is reported as
    /// not applying at all rather than "on restart".
    pub fn socket_activated(mut self, yes: bool) -> Self {
        self.socket_activated = yes;
        self
    }

    /// The live configuration, shared with every connection.
    pub fn live(&self) -> Arc<ArcSwap<Live>> {
        self.live.clone()
    }

    /// The counters shared with every connection.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Loads, validates and applies the configuration; on failure keeps the old one.
    pub fn reload(&mut self) -> Outcome {
        let started_usec = monotonic_usec().unwrap_or(0);
        let started = Instant::now();
        let current = self.live.load_full();
        let outcome = match self.loader.load() {
            Ok(config) => {
                let generation = current.generation + 1;
                let on_restart = self.restart_only_changes(&current.config, &config);
                if current.config.log.level != config.log.level {
                    if let Some(Err(error)) =
                        self.log.as_ref().map(|h| h.set_level(&config.log.level))
                    {
                        tracing::warn!(%error, level = %config.log.level, "cannot apply log.level");
                    }
                }
                self.live.store(Arc::new(Live::new(
                    config,
                    generation,
                    self.metrics.clone(),
                )));
                self.metrics.reloaded(true, generation);
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
            Err(error) => {
                let generation = current.generation;
                self.metrics.reloaded(false, generation);
                let error = error.to_string();
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

    /// Keys whose new value cannot be applied to a running process.
    fn restart_only_changes(&self, old: &Config, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if old.http.listen != new.http.listen && !self.socket_activated {
            keys.push("http.listen");
        }
        keys
    }
}

/// `seamless reload`: sends `SIGHUP` to `pid` and waits for the verdict of a reload that
/// started afterwards.
pub fn request(
    pid: i32,
    verdict_file: Option<PathBuf>,
    timeout: Duration,
) -> Result<Verdict, RequestError> {
    crate::verdict::request(pid, Signal::SIGHUP, verdict_file, VERDICT_FILE, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_swaps_or_keeps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("seamless.toml");
        std::fs::write(&file, "message = \"one\"\n").expect("write");
        let loader = Loader::new(Some(file.clone()));
        let config = loader.load().expect("valid");
        let verdict_path = dir.path().join(VERDICT_FILE);
        let mut reloader =
            Reloader::new(loader, config, None).with_verdict_file(Some(verdict_path.clone()));
        let before = reloader.live().load_full();

        std::fs::write(
            &file,
            "message = \"two\"\n[http]\nlisten = \"127.0.0.1:9\"\n",
        )
        .expect("write");
        let outcome = reloader.reload();
        assert_eq!(
            outcome,
            Outcome::Applied {
                generation: 2,
                on_restart: vec!["http.listen"]
            }
        );
        assert_eq!(reloader.live().load().config.message, "two");
        assert_eq!(
            before.config.message, "one",
            "holders of the old generation keep it"
        );
        assert!(Verdict::read(&verdict_path).expect("written").ok);

        std::fs::write(&file, "message = \n").expect("write");
        let Outcome::Failed { generation, error } = reloader.reload() else {
            panic!("a syntax error must fail the reload");
        };
        assert_eq!(generation, 2);
        assert!(error.contains("seamless.toml"), "{error}");
        assert_eq!(
            reloader.live().load().config.message,
            "two",
            "old config still serves"
        );
        let verdict = Verdict::read(&verdict_path).expect("written");
        assert!(!verdict.ok);
        assert!(verdict.message.contains(&error), "{verdict:?}");
    }
}
