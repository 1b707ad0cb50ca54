//! Configuration: one plain struct, loaded in layers and validated as a whole.
//!
//! Layers, lowest first:
//!
//! 1. built-in defaults ([`Config::default`]),
//! 2. the main file: `--config PATH`, else `$CONFIGURATION_DIRECTORY/seamless.toml`, else
//!    `/etc/seamless/seamless.toml`,
//! 3. drop-ins `seamless.d/*.toml` beside the main file, in lexical order,
//! 4. `SEAMLESS_*` environment variables, `__` separating nested keys
//!    (`SEAMLESS_HTTP__MAX_CONNECTIONS=64`).
//!
//! A missing default file means "built-in defaults"; a missing file named with `--config` is an
//! error. Unknown keys are errors, so a typo never silently does nothing. Every error names the
//! file (or variable) and the key.

use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Name of the main configuration file inside its directory.
pub const FILE_NAME: &str = "seamless.toml";
/// Directory searched for the main file when neither `--config` nor
/// `$CONFIGURATION_DIRECTORY` says otherwise.
pub const DEFAULT_DIR: &str = "/etc/seamless";
/// Drop-in directory name, beside the main file.
pub const DROP_IN_DIR: &str = "seamless.d";
/// Prefix of environment variables that override keys.
pub const ENV_PREFIX: &str = "SEAMLESS_";
/// Longest duration any key accepts. Far beyond any sensible timeout, and far from the limits
/// of the clocks the durations are added to (which panic on overflow).
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Smallest `http.max_header_bytes`: hyper's read buffer cannot be smaller.
const MIN_HEADER_BYTES: usize = 8192;
/// Set by systemd for units with `ConfigurationDirectory=`.
const CONFIGURATION_DIRECTORY: &str = "CONFIGURATION_DIRECTORY";

/// The whole service configuration. Every field has a built-in default, so an empty file (or
/// none) is a valid configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Body of `GET /`. Changes live on reload.
    pub message: String,
    /// Logging.
    pub log: LogConfig,
    /// HTTP serving.
    pub http: HttpConfig,
    /// Stopping and draining.
    pub shutdown: ShutdownConfig,
    /// Binary hot upgrades.
    pub upgrade: UpgradeConfig,
    /// Demo switches, all off by default.
    pub demo: DemoConfig,
}

/// `[log]`: what gets logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter directive such as `info` or `seamless=debug,hyper=warn`.
    /// Changes live on reload.
    pub level: String,
}

/// `[http]`: listening and per-connection limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address bound when no socket is passed in by systemd (`cargo run`, containers).
    /// Takes effect on restart only; under socket activation the socket unit decides.
    pub listen: SocketAddr,
    /// Connections served at once; further connections get a `503` and are closed.
    /// Changes live on reload.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection is kept. Applies to connections accepted after a reload.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a request may take from headers received to response ready (`408` after).
    /// Changes live on reload.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request head (request line + headers) in bytes, at least 8192; larger gets
    /// `431`. Applies to connections accepted after a reload.
    pub max_header_bytes: usize,
    /// Largest request body in bytes; larger gets `413`. Changes live on reload.
    pub max_body_bytes: usize,
}

/// `[shutdown]`: how a stop drains connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Hard deadline for the whole drain. Keep it below the unit's `TimeoutStopSec=`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How long an idle HTTP/1 keep-alive connection stays open after the drain starts, so a
    /// request the client is already sending is answered (with `Connection: close`) rather than
    /// cut. Busy connections close after their next response, usually long before this.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
}

/// `[upgrade]`: handing over to a new binary (`SIGUSR2`, `seamless upgrade`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradeConfig {
    /// How long the new process may take to report that it serves before it is killed and
    /// the old process serves on.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig {
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// `[demo]`: endpoints that exist only to demonstrate and test behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Enables `GET /slow?ms=N` (at most 60 s), used to show in-flight requests surviving a
    /// drain. Off by default: a slow endpoint is a free way to hold connections open.
    pub slow_endpoint: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            message: "Hello from seamless!\n".to_owned(),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            shutdown: ShutdownConfig::default(),
            upgrade: UpgradeConfig::default(),
            demo: DemoConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: Duration::from_secs(25),
            linger: Duration::from_secs(1),
        }
    }
}

/// Why a configuration could not be loaded. Each variant names the file or key involved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file named explicitly with `--config` does not exist.
    #[error("config file {path} does not exist")]
    NotFound {
        /// The file that was asked for.
        path: PathBuf,
    },
    /// A file or the drop-in directory exists but cannot be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said (printed here, so not a `source`).
        reason: std::io::Error,
    },
    /// Syntax error, unknown key, wrong type or bad value.
    #[error("{0}")]
    Invalid(InvalidConfig),
}

/// One or more parse or validation errors, each with its source and key.
#[derive(Debug)]
pub struct InvalidConfig {
    /// Human-readable errors, `SOURCE: key `KEY`: WHAT` each.
    pub errors: Vec<String>,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.errors.join("; "))
    }
}

/// Where the configuration comes from; loads it again on every reload.
#[derive(Debug, Clone)]
pub struct Loader {
    /// The main file.
    main: PathBuf,
    /// Whether a missing main file is an error (it was named with `--config`).
    required: bool,
}

impl Loader {
    /// The loader for `--config PATH` if given, else for the default location.
    pub fn new(explicit: Option<PathBuf>) -> Self {
        match explicit {
            Some(main) => Loader {
                main,
                required: true,
            },
            None => Loader {
                main: default_dir().join(FILE_NAME),
                required: false,
            },
        }
    }

    /// The main file this loader reads.
    pub fn main_file(&self) -> &Path {
        &self.main
    }

    /// Loads and validates all layers. Pure with respect to the service: nothing is applied.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if readable_file(&self.main, self.required)? {
            figment = figment.merge(Toml::file_exact(&self.main));
        }
        for drop_in in self.drop_ins()? {
            figment = figment.merge(Toml::file_exact(drop_in));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));

        let config: Config = figment.extract().map_err(|e| describe(&figment, e))?;
        config.validate().map_err(|(mut key, what)| {
            // A rule between two keys is broken by whichever one was set: blame that one, so
            // the message names the file (or variable) to fix rather than the defaults.
            if key == "shutdown.linger" && is_default(&figment, key) {
                key = "shutdown.drain_timeout";
            }
            ConfigError::Invalid(InvalidConfig {
                errors: vec![format!("{}: key `{key}`: {what}", source_of(&figment, key))],
            })
        })?;
        Ok(config)
    }

    /// `seamless.d/*.toml` beside the main file, sorted by name. A missing directory is fine;
    /// one that exists but cannot be listed is an error, not an empty list.
    fn drop_ins(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let dir = self
            .main
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(DROP_IN_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(reason) => return Err(ConfigError::Unreadable { path: dir, reason }),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|reason| ConfigError::Unreadable {
                path: dir.clone(),
                reason,
            })?;
            let path = entry.path();
            if path.extension() == Some(OsStr::new("toml")) && readable_file(&path, true)? {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }
}

impl Config {
    /// Checks what types alone cannot. Returns the offending key and what is wrong.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Err(e) = self
            .log
            .level
            .parse::<tracing_subscriber::filter::EnvFilter>()
        {
            return Err(("log.level", format!("not a valid filter directive: {e}")));
        }
        let positive: [(&'static str, bool); 5] = [
            (
                "upgrade.ready_timeout",
                !self.upgrade.ready_timeout.is_zero(),
            ),
            ("http.max_connections", self.http.max_connections > 0),
            (
                "http.header_read_timeout",
                !self.http.header_read_timeout.is_zero(),
            ),
            ("http.request_timeout", !self.http.request_timeout.is_zero()),
            (
                "shutdown.drain_timeout",
                !self.shutdown.drain_timeout.is_zero(),
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, ok)| !ok) {
            return Err((key, "must be greater than zero".to_owned()));
        }
        let durations: [(&'static str, Duration); 5] = [
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.request_timeout", self.http.request_timeout),
            ("shutdown.drain_timeout", self.shutdown.drain_timeout),
            ("shutdown.linger", self.shutdown.linger),
            ("upgrade.ready_timeout", self.upgrade.ready_timeout),
        ];
        if let Some((key, _)) = durations.iter().find(|(_, d)| *d > MAX_DURATION) {
            return Err((
                key,
                format!(
                    "must be at most {}",
                    humantime::format_duration(MAX_DURATION)
                ),
            ));
        }
        if self.http.max_header_bytes < MIN_HEADER_BYTES {
            return Err((
                "http.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        if self.shutdown.linger > self.shutdown.drain_timeout {
            return Err((
                "shutdown.linger",
                format!(
                    "{} exceeds shutdown.drain_timeout ({})",
                    humantime::format_duration(self.shutdown.linger),
                    humantime::format_duration(self.shutdown.drain_timeout)
                ),
            ));
        }
        Ok(())
    }
}

/// `$CONFIGURATION_DIRECTORY` (its first entry) when systemd set it, else `/etc/seamless`.
fn default_dir() -> PathBuf {
    std::env::var_os(CONFIGURATION_DIRECTORY)
        .and_then(|dirs| {
            let first = dirs.to_string_lossy().split(':').next()?.to_owned();
            (!first.is_empty()).then(|| PathBuf::from(first))
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// Whether `path` should be read: `false` when it is absent and optional. Opening it here turns
/// "permission denied" into an error that names the file (figment would report it less clearly).
fn readable_file(path: &Path, required: bool) -> Result<bool, ConfigError> {
    match std::fs::File::open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::NotFound {
            path: path.to_owned(),
        }),
        Err(reason) => Err(ConfigError::Unreadable {
            path: path.to_owned(),
            reason,
        }),
    }
}

/// Turns figment's errors into lines of the form `SOURCE: key `KEY`: WHAT`.
fn describe(figment: &Figment, error: figment::Error) -> ConfigError {
    let errors = error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = match &e.metadata {
                Some(meta) => match &meta.source {
                    Some(source) => source_name(source),
                    // Environment variables have no file: name the variable itself.
                    None if !key.is_empty() => env_var_for(&e.path),
                    None => meta.name.to_string(),
                },
                None => source_of(figment, &key),
            };
            let what = one_line(&e.kind.to_string());
            if key.is_empty() {
                format!("{source}: {what}")
            } else {
                format!("{source}: key `{key}`: {what}")
            }
        })
        .collect();
    ConfigError::Invalid(InvalidConfig { errors })
}

/// A layer's name for messages. Files by their full path: figment's own display makes them
/// relative to the working directory, which is `/` under systemd (`etc/seamless/…`).
fn source_name(source: &figment::Source) -> String {
    match source {
        figment::Source::File(path) => path.display().to_string(),
        // Only `Config::default()` is layered from code.
        figment::Source::Code(_) => "built-in defaults".to_owned(),
        other => other.to_string(),
    }
}

/// Whether `key` still has its built-in default (no file or variable set it).
fn is_default(figment: &Figment, key: &str) -> bool {
    figment
        .find_metadata(key)
        .is_none_or(|meta| matches!(meta.source, Some(figment::Source::Code(_))))
}

/// The variable that sets `path`: `http.max_connections` → `SEAMLESS_HTTP__MAX_CONNECTIONS`.
fn env_var_for(path: &[String]) -> String {
    format!("{ENV_PREFIX}{}", path.join("__").to_uppercase())
}

/// Folds a multi-line parser message (with its source excerpt and caret) into one line, so
/// an error is one line in the journal and in `systemctl status`.
fn one_line(message: &str) -> String {
    let is_excerpt = |line: &&str| {
        let line = line.trim();
        line.is_empty()
            || line.starts_with('|')
            || line
                .split_once('|')
                .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()))
    };
    message
        .lines()
        .filter(|line| !is_excerpt(line))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which layer set `key` last: a file path, an environment variable, or "built-in defaults".
fn source_of(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(meta) => match &meta.source {
            Some(source) => source_name(source),
            None => {
                let path: Vec<String> = key.split('.').map(str::to_owned).collect();
                env_var_for(&path)
            }
        },
        None => "built-in defaults".to_owned(),
    }
}

#[cfg(test)]
// figment's `Jail` closures return its (large) error type; that is its API, not our choice.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in(jail: &Jail) -> Result<Config, ConfigError> {
        Loader::new(Some(jail.directory().join(FILE_NAME))).load()
    }

    fn error_text(result: Result<Config, ConfigError>) -> String {
        match result {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_without_any_file() {
        Jail::expect_with(|jail| {
            let loader = Loader {
                main: jail.directory().join("absent.toml"),
                required: false,
            };
            assert_eq!(loader.load().expect("defaults load"), Config::default());
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        Jail::expect_with(|jail| {
            let text = error_text(load_in(jail));
            assert!(text.contains("does not exist"), "{text}");
            assert!(text.contains(FILE_NAME), "{text}");
            Ok(())
        });
    }

    #[test]
    fn layers_override_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file(
                FILE_NAME,
                "message = \"file\"\n[http]\nmax_connections = 10\nrequest_timeout = \"5s\"\n",
            )?;
            std::fs::create_dir(jail.directory().join(DROP_IN_DIR)).expect("mkdir");
            jail.create_file("seamless.d/20-b.toml", "message = \"drop-in b\"\n")?;
            jail.create_file(
                "seamless.d/10-a.toml",
                "message = \"drop-in a\"\n[http]\nmax_connections = 20\n",
            )?;
            jail.create_file("seamless.d/ignored.txt", "not toml at all")?;
            jail.set_env("SEAMLESS_HTTP__MAX_CONNECTIONS", "30");

            let config = load_in(jail).expect("valid layers");
            assert_eq!(config.message, "drop-in b", "later drop-in wins");
            assert_eq!(config.http.max_connections, 30, "environment wins");
            assert_eq!(config.http.request_timeout, Duration::from_secs(5));
            assert_eq!(config.shutdown, ShutdownConfig::default());
            Ok(())
        });
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        Jail::expect_with(|jail| {
            jail.create_file(FILE_NAME, "[http]\nmax_conections = 10\n")?;
            let text = error_text(load_in(jail));
            assert!(text.contains("max_conections"), "{text}");
            assert!(text.contains(FILE_NAME), "{text}");
            Ok(())
        });
    }

    #[test]
    fn wrong_type_names_file_and_key() {
        Jail::expect_with(|jail| {
            jail.create_file(FILE_NAME, "[http]\nmax_connections = \"many\"\n")?;
            let text = error_text(load_in(jail));
            assert!(text.contains("http.max_connections"), "{text}");
            assert!(text.contains(FILE_NAME), "{text}");
            Ok(())
        });
    }

    #[test]
    fn invalid_duration_names_key() {
        Jail::expect_with(|jail| {
            jail.create_file(FILE_NAME, "[shutdown]\ndrain_timeout = \"soon\"\n")?;
            let text = error_text(load_in(jail));
            assert!(text.contains("shutdown.drain_timeout"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn malformed_toml_names_file_on_one_line() {
        Jail::expect_with(|jail| {
            jail.create_file(FILE_NAME, "message = \n")?;
            let text = error_text(load_in(jail));
            assert!(text.contains(FILE_NAME), "{text}");
            assert!(text.contains("line 1"), "{text}");
            assert!(!text.contains('\n'), "{text}");
            Ok(())
        });
    }

    #[test]
    fn bad_drop_in_names_drop_in() {
        Jail::expect_with(|jail| {
            jail.create_file(FILE_NAME, "")?;
            std::fs::create_dir(jail.directory().join(DROP_IN_DIR)).expect("mkdir");
            jail.create_file("seamless.d/50-oops.toml", "[log]\nlevle = \"debug\"\n")?;
            let text = error_text(load_in(jail));
            assert!(text.contains("50-oops.toml"), "{text}");
            assert!(text.contains("levle"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn bad_environment_value_names_variable() {
        Jail::expect_with(|jail| {
            jail.create_file(FILE_NAME, "")?;
            jail.set_env("SEAMLESS_HTTP__MAX_CONNECTIONS", "lots");
            let text = error_text(load_in(jail));
            assert!(text.contains("SEAMLESS_HTTP__MAX_CONNECTIONS"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn semantic_errors_name_source_and_key() {
        Jail::expect_with(|jail| {
            jail.create_file(FILE_NAME, "[http]\nmax_connections = 0\n")?;
            let text = error_text(load_in(jail));
            assert!(text.contains("http.max_connections"), "{text}");
            assert!(text.contains(FILE_NAME), "{text}");

            jail.create_file(FILE_NAME, "[log]\nlevel = \"info,[[[\"\n")?;
            let text = error_text(load_in(jail));
            assert!(text.contains("log.level"), "{text}");

            jail.create_file(
                FILE_NAME,
                "[shutdown]\nlinger = \"30s\"\ndrain_timeout = \"5s\"\n",
            )?;
            let text = error_text(load_in(jail));
            assert!(text.contains("shutdown.linger"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn configuration_directory_is_the_default_location() {
        Jail::expect_with(|jail| {
            jail.create_file(FILE_NAME, "message = \"from systemd's directory\"\n")?;
            let dir = jail.directory().display().to_string();
            jail.set_env(CONFIGURATION_DIRECTORY, format!("{dir}:/elsewhere"));
            let config = Loader::new(None).load().expect("valid");
            assert_eq!(config.message, "from systemd's directory");
            Ok(())
        });
    }
}
