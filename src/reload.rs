//! Reloading the configuration, and `seamless reload`, which waits for the verdict.
//!
//! In the service, [`Reloader::reload`] loads and validates a complete new configuration and
//! swaps it in atomically: requests already running keep the generation they started with,
//! new requests get the new one, nobody waits on a lock. A failed reload changes nothing.
//!
//! `systemctl reload` on systemd 252 cannot learn whether a reload worked (no
//! `Type=notify-reload` there, and none of any version can report failure). So after every
//! attempt the service writes a small [`Verdict`] file into `$RUNTIME_DIRECTORY`, and
//! `ExecReload=seamless reload --pid $MAINPID` ([`request`]) sends `SIGHUP`, waits for a verdict
//! of an attempt that started after its signal, and exits with it: `systemctl reload` returns
//! only once the new config is live, and fails, printing the error, when it is invalid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::{Config, Loader};
use crate::logging;
use crate::metrics::Metrics;
use crate::notify::monotonic_usec;
use crate::server::Live;

/// Set by systemd for units with `RuntimeDirectory=`.
pub const RUNTIME_DIRECTORY: &str = "RUNTIME_DIRECTORY";
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
        let verdict_file =
            std::env::var_os(RUNTIME_DIRECTORY).map(|dir| Path::new(&dir).join(VERDICT_FILE));
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
        if let Some(path) = &self.verdict_file {
            let verdict = Verdict::from_outcome(started_usec, &outcome);
            if let Err(error) = verdict.write(path) {
                tracing::warn!(%error, path = %path.display(), "cannot write the reload verdict");
            }
        }
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

/// What the service tells `seamless reload` about one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `CLOCK_MONOTONIC` µs when the attempt started; waiting callers compare it with the time
    /// they sent their signal.
    pub started_usec: u64,
    /// Whether the new configuration is live.
    pub ok: bool,
    /// The generation serving after the attempt.
    pub generation: u64,
    /// The error, or notes such as keys that take effect on restart.
    pub message: String,
}

impl Verdict {
    fn from_outcome(started_usec: u64, outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Applied {
                generation,
                on_restart,
            } => Verdict {
                started_usec,
                ok: true,
                generation: *generation,
                message: if on_restart.is_empty() {
                    String::new()
                } else {
                    format!("takes effect on restart: {}", on_restart.join(", "))
                },
            },
            Outcome::Failed { generation, error } => Verdict {
                started_usec,
                ok: false,
                generation: *generation,
                message: error.clone(),
            },
        }
    }

    /// `key=value` lines; the message goes last and may contain anything but a newline.
    fn encode(&self) -> String {
        format!(
            "started_usec={}\nok={}\ngeneration={}\nmessage={}\n",
            self.started_usec,
            self.ok,
            self.generation,
            self.message.replace('\n', " ")
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut verdict = Verdict {
            started_usec: 0,
            ok: false,
            generation: 0,
            message: String::new(),
        };
        let mut seen = 0;
        for line in text.lines() {
            let (key, value) = line.split_once('=')?;
            match key {
                "started_usec" => verdict.started_usec = value.parse().ok()?,
                "ok" => verdict.ok = value.parse().ok()?,
                "generation" => verdict.generation = value.parse().ok()?,
                "message" => verdict.message = value.to_owned(),
                _ => continue,
            }
            seen += 1;
        }
        (seen == 4).then_some(verdict)
    }

    /// Writes atomically (temp file + rename), so a reader never sees half a verdict.
    fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.encode())?;
        std::fs::rename(&tmp, path)
    }

    fn read(path: &Path) -> Option<Self> {
        Verdict::decode(&std::fs::read_to_string(path).ok()?)
    }
}

/// Why `seamless reload` did not report success.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Nowhere to read the verdict from.
    #[error(
        "${RUNTIME_DIRECTORY} is not set: run this as the unit's ExecReload= (RuntimeDirectory=seamless), or pass --verdict-file"
    )]
    NoRuntimeDirectory,
    /// The signal could not be sent.
    #[error("cannot send SIGHUP to PID {pid}: {source}")]
    Signal {
        /// The target.
        pid: i32,
        /// What the kernel said.
        source: nix::Error,
    },
    /// No verdict in time.
    #[error("PID {pid} did not report a reload within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The target.
        pid: i32,
        /// How long we waited.
        timeout: Duration,
    },
    /// The service refused the new configuration and keeps the old one.
    #[error("reload failed, still serving generation {generation}: {error}")]
    Refused {
        /// The generation still serving.
        generation: u64,
        /// The configuration error.
        error: String,
    },
}

/// Sends `SIGHUP` to `pid` and waits for the verdict of a reload that started afterwards.
/// Returns the verdict of a successful reload.
pub fn request(
    pid: i32,
    verdict_file: Option<PathBuf>,
    timeout: Duration,
) -> Result<Verdict, RequestError> {
    let path = verdict_file
        .or_else(|| {
            std::env::var_os(RUNTIME_DIRECTORY).map(|dir| Path::new(&dir).join(VERDICT_FILE))
        })
        .ok_or(RequestError::NoRuntimeDirectory)?;
    let sent_usec = monotonic_usec().unwrap_or(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|source| RequestError::Signal { pid, source })?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(verdict) = Verdict::read(&path).filter(|v| v.started_usec >= sent_usec) {
            return if verdict.ok {
                Ok(verdict)
            } else {
                Err(RequestError::Refused {
                    generation: verdict.generation,
                    error: verdict.message,
                })
            };
        }
        if Instant::now() >= deadline {
            return Err(RequestError::Timeout { pid, timeout });
        }
        // A reload takes well under a millisecond; polling briefly keeps `systemctl reload`
        // fast without inotify machinery.
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_round_trips() {
        let verdict = Verdict {
            started_usec: 123,
            ok: false,
            generation: 4,
            message: "seamless.toml: key `x`: unknown\nsecond line".to_owned(),
        };
        let decoded = Verdict::decode(&verdict.encode()).expect("decodes");
        assert_eq!(
            decoded.message,
            "seamless.toml: key `x`: unknown second line"
        );
        assert_eq!(
            (decoded.started_usec, decoded.ok, decoded.generation),
            (123, false, 4)
        );
        assert_eq!(
            Verdict::decode("started_usec=1\nok=true\n"),
            None,
            "incomplete"
        );
        assert_eq!(Verdict::decode("garbage"), None);
    }

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
        assert_eq!(verdict.message, error);
    }
}
