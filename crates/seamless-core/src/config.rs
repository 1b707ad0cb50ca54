//! Configuration: the service's own keys, the application's keys beside them, loaded in
//! layers and validated as a whole.
//!
//! Layers, lowest first (`NAME` is the application's package name, see [`Identity`]):
//!
//! 1. built-in defaults ([`Config::default`] and the application's `Default`),
//! 2. the main file: `--config PATH`, else `$CONFIGURATION_DIRECTORY/NAME.toml`, else
//!    `/etc/NAME/NAME.toml`,
//! 3. drop-ins `NAME.d/*.toml` beside the main file, in lexical order,
//! 4. `NAME_*` environment variables, `__` separating nested keys
//!    (`ORDERS_API_HTTP__MAX_CONNECTIONS=64`).
//!
//! The service's keys are the sections `log`, `http`, `tls`, `shutdown` and `upgrade`
//! ([`Config`]);
//! every other top-level key belongs to the application ([`AppConfig`]). A missing default file
//! means "built-in defaults"; a missing file named with `--config` is an error. Unknown keys are
//! errors, so a typo never silently does nothing. Every error names the file (or variable) and
//! the key.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Identity;
use crate::tls::{Tls, TlsError};

/// Longest duration any key accepts. Far beyond any sensible timeout, and far from the limits
/// of the clocks the durations are added to (which panic on overflow).
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Smallest `http.max_header_bytes`: hyper's read buffer cannot be smaller.
const MIN_HEADER_BYTES: usize = 8192;
/// Set by systemd for units with `ConfigurationDirectory=`.
const CONFIGURATION_DIRECTORY: &str = "CONFIGURATION_DIRECTORY";

/// The service's own configuration: logging, HTTP serving, draining, upgrades. Every field has
/// a built-in default, so an empty file (or none) is a valid configuration.
///
/// Unknown keys are checked by [`Loader::load`] across this and the application's keys
/// together, which is why this struct (unlike its sections) does not deny them itself.
///
/// ```
/// use std::time::Duration;
///
/// let defaults = seamless_core::Config::default();
/// assert_eq!(defaults.http.listen.to_string(), "127.0.0.1:8080");
/// assert_eq!(defaults.shutdown.drain_timeout, Duration::from_secs(25));
/// assert!(defaults.shutdown.linger <= defaults.shutdown.drain_timeout);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Logging.
    pub log: LogConfig,
    /// HTTP serving.
    pub http: HttpConfig,
    /// HTTPS: the certificate and key.
    pub tls: TlsConfig,
    /// Stopping and draining.
    pub shutdown: ShutdownConfig,
    /// Binary hot upgrades.
    pub upgrade: UpgradeConfig,
}

/// The application's configuration: its own top-level keys beside the service's sections
/// (`log`, `http`, `tls`, `shutdown`, `upgrade`), loaded from the same layers.
///
/// Derive `Serialize`, `Deserialize` and `Default`, with `#[serde(default)]` so every key is
/// optional. Do **not** put `deny_unknown_fields` on the top-level struct (the loader checks
/// unknown top-level keys across the service's and the application's keys); do put it on
/// nested sections. Every top-level field must serialize (no `skip_serializing_if`): the
/// serialized defaults are how the loader knows which keys exist.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use seamless_core::{AppConfig, Invalid};
///
/// #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
/// #[serde(default)]
/// struct Settings {
///     /// Live on reload.
///     greeting: String,
///     /// Sizes something built once at start: takes effect on restart.
///     pool_size: u32,
/// }
///
/// impl AppConfig for Settings {
///     fn validate(&self) -> Result<(), Invalid> {
///         if self.pool_size > 64 {
///             return Err(Invalid::new("pool_size", "must be at most 64"));
///         }
///         Ok(())
///     }
///
///     fn restart_only(&self, running: &Self) -> Vec<&'static str> {
///         if self.pool_size != running.pool_size { vec!["pool_size"] } else { vec![] }
///     }
/// }
///
/// let bad = Settings { pool_size: 100, ..Settings::default() };
/// assert_eq!(bad.validate().unwrap_err().key, "pool_size");
/// ```
pub trait AppConfig:
    Serialize + DeserializeOwned + Default + Clone + fmt::Debug + Send + Sync + 'static
{
    /// Checks what types alone cannot. The error names the key (`section.key`) so the loader
    /// can say which file or variable set it.
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }

    /// Keys whose new value (`self`) differs from the running one and cannot be applied by a
    /// reload (they size or configure the long-lived state). A reload reports them as taking
    /// effect on restart; every other key is live.
    fn restart_only(&self, running: &Self) -> Vec<&'static str> {
        let _ = running;
        Vec::new()
    }
}

/// A broken rule: the key (`section.key`) and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The offending key, dotted: `demo.history`.
    pub key: &'static str,
    /// What is wrong, e.g. "must be greater than zero".
    pub what: String,
}

impl Invalid {
    /// `key` is wrong because of `what`.
    pub fn new(key: &'static str, what: impl Into<String>) -> Self {
        Invalid {
            key,
            what: what.into(),
        }
    }
}

/// The configuration of an application without keys of its own.
///
/// ```
/// use seamless_core::{Loader, NoConfig, identity};
///
/// let loaded = Loader::new(&identity!(), Some("/dev/null".into())).load::<NoConfig>().unwrap();
/// assert_eq!(loaded.app, NoConfig {});
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoConfig {}

impl AppConfig for NoConfig {}

/// One complete, validated configuration: the service's and the application's.
///
/// ```
/// use seamless_core::{Loaded, Loader, NoConfig, identity};
///
/// let Loaded { service, app, .. } = Loader::new(&identity!(), Some("/dev/null".into()))
///     .load::<NoConfig>()
///     .unwrap();
/// assert_eq!(service, seamless_core::Config::default());
/// assert_eq!(app, NoConfig {});
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<C> {
    /// The service's keys.
    pub service: Config,
    /// The application's keys.
    pub app: C,
    /// The certificate and key `tls.certificate` and `tls.key` name, loaded and checked;
    /// `None` when they are not set.
    pub tls: Option<Arc<Tls>>,
}

/// `[log]`: what gets logged.
///
/// ```
/// assert_eq!(seamless_core::config::LogConfig::default().level, "info");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter directive such as `info` or `seamless_core=debug,hyper=warn`.
    /// Changes live on reload.
    pub level: String,
}

/// `[http]`: listening and per-connection limits.
///
/// ```
/// let http = seamless_core::config::HttpConfig::default();
/// assert_eq!((http.max_connections, http.max_header_bytes), (1024, 16 * 1024));
/// ```
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

/// `[tls]`: HTTPS. Sockets named `https` (`FileDescriptorName=https`) are served with TLS, with
/// this certificate and key; sockets named `http` (or unnamed) stay plain.
///
/// The files are read at start and on every reload, so `systemctl reload` puts a renewed
/// certificate in service; a pair that does not load (unreadable, not PEM, key not matching,
/// expired or not yet valid) fails the reload and the old pair keeps serving.
///
/// ```
/// let tls = seamless_core::config::TlsConfig::default();
/// assert!(tls.certificate.is_none() && tls.key.is_none() && tls.listen.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first. A relative path names a credential
    /// (`LoadCredential=`) when systemd passed any, else a file in the working directory.
    /// `""` (the default): no HTTPS. Changes live on reload.
    #[serde(with = "unset_if_empty")]
    pub certificate: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, RSA or SEC1), resolved like `certificate`.
    /// Changes live on reload.
    #[serde(with = "unset_if_empty")]
    pub key: Option<PathBuf>,
    /// Address bound for HTTPS when no socket is passed in by systemd (`cargo run`,
    /// containers); `""` (the default): none. Takes effect on restart only; under socket
    /// activation the socket unit decides.
    #[serde(with = "unset_if_empty")]
    pub listen: Option<SocketAddr>,
}

/// `""` stands for "not set": TOML has no null, and `print-config` shows every key.
mod unset_if_empty {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use serde::{Deserialize as _, Deserializer, Serializer};

    /// A value written as a string.
    pub(super) trait Text: Sized {
        fn parse(text: &str) -> Result<Self, String>;
        fn text(&self) -> String;
    }

    impl Text for PathBuf {
        fn parse(text: &str) -> Result<Self, String> {
            Ok(PathBuf::from(text))
        }
        fn text(&self) -> String {
            self.display().to_string()
        }
    }

    impl Text for SocketAddr {
        fn parse(text: &str) -> Result<Self, String> {
            text.parse()
                .map_err(|e| format!("{text:?} is not an address and port: {e}"))
        }
        fn text(&self) -> String {
            self.to_string()
        }
    }

    pub(super) fn serialize<T: Text, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.as_ref().map(Text::text).unwrap_or_default())
    }

    pub(super) fn deserialize<'de, T: Text, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Ok(None);
        }
        T::parse(&text).map(Some).map_err(serde::de::Error::custom)
    }
}

/// `[shutdown]`: how a stop drains connections.
///
/// ```
/// use std::time::Duration;
///
/// let shutdown = seamless_core::config::ShutdownConfig::default();
/// assert_eq!(shutdown.announce, Duration::ZERO);
/// assert_eq!(shutdown.linger, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long `/readyz` answers 503 after `SIGTERM` while everything else is served as
    /// usual, before the drain starts: time for a load balancer's health checks to take the
    /// instance out of rotation. `0s` (the default) drains at once, which is right under socket
    /// activation with one instance per host. Changes live on reload.
    #[serde(with = "humantime_serde")]
    pub announce: Duration,
    /// Hard deadline for the whole drain. Keep it below the unit's `TimeoutStopSec=`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How long an idle HTTP/1 keep-alive connection stays open after the drain starts, so a
    /// request the client is already sending is answered (with `Connection: close`) rather than
    /// cut. Busy connections close after their next response, usually long before this. Not
    /// used for connections the drain keeps (see `keep_connections`).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Whether a stop under systemd hands idle HTTP/1 keep-alive connections to systemd's fd
    /// store for the next process instead of closing them, so a restart closes no connection.
    /// Needs `FileDescriptorStoreMax=` in the unit (and, before systemd 254,
    /// `Environment=FDSTORE=` with the same number); without it, or once the store is full,
    /// connections drain as `linger` says. Changes live on reload.
    pub keep_connections: bool,
}

/// `[upgrade]`: handing over to a new binary (`SIGUSR2`, `NAME upgrade`).
///
/// ```
/// use std::time::Duration;
///
/// let upgrade = seamless_core::config::UpgradeConfig::default();
/// assert_eq!(upgrade.ready_timeout, Duration::from_secs(30));
/// ```
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
            announce: Duration::ZERO,
            drain_timeout: Duration::from_secs(25),
            linger: Duration::from_secs(1),
            keep_connections: true,
        }
    }
}

/// Why a configuration could not be loaded. Each variant names the file or key involved.
///
/// ```
/// use seamless_core::{ConfigError, Loader, NoConfig, identity};
///
/// let missing = Loader::new(&identity!(), Some("/nonexistent/example.toml".into()));
/// let error = missing.load::<NoConfig>().unwrap_err();
/// assert!(matches!(error, ConfigError::NotFound { .. }));
/// assert_eq!(error.to_string(), "config file /nonexistent/example.toml does not exist");
/// ```
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
    /// The certificate or key cannot serve.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// One or more parse or validation errors, each with its source and key.
///
/// ```
/// use seamless_core::{ConfigError, Loader, NoConfig, identity};
///
/// let file = std::env::temp_dir().join(format!("invalid-doc-{}.toml", std::process::id()));
/// std::fs::write(&file, "[http]\nmax_connections = 0\n").unwrap();
/// let error = Loader::new(&identity!(), Some(file.clone())).load::<NoConfig>().unwrap_err();
/// let ConfigError::Invalid(invalid) = error else { panic!("{error}") };
/// assert_eq!(
///     invalid.errors,
///     [format!("{}: key `http.max_connections`: must be greater than zero", file.display())]
/// );
/// # std::fs::remove_file(file).unwrap();
/// ```
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
    /// `NAME.d`, beside the main file.
    drop_in_dir: String,
    /// `NAME_`, the prefix of overriding environment variables.
    env_prefix: String,
}

impl Loader {
    /// The loader for `--config PATH` if given, else for the default location of `identity`'s
    /// file.
    ///
    /// ```
    /// use seamless_core::{Loader, NoConfig, identity};
    ///
    /// let dir = std::env::temp_dir().join(format!("loader-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(dir.join("seamless-core.d")).unwrap();
    /// std::fs::write(dir.join("seamless-core.toml"), "[http]\nmax_connections = 10\n").unwrap();
    /// std::fs::write(dir.join("seamless-core.d/50-more.toml"), "[http]\nmax_connections = 20\n").unwrap();
    ///
    /// let loader = Loader::new(&identity!(), Some(dir.join("seamless-core.toml")));
    /// let loaded = loader.load::<NoConfig>().unwrap();
    /// assert_eq!(loaded.service.http.max_connections, 20); // the drop-in wins
    /// # std::fs::remove_dir_all(dir).unwrap();
    /// ```
    pub fn new(identity: &Identity, explicit: Option<PathBuf>) -> Self {
        let (main, required) = match explicit {
            Some(main) => (main, true),
            None => (default_dir(identity).join(identity.config_file()), false),
        };
        Loader {
            main,
            required,
            drop_in_dir: identity.drop_in_dir(),
            env_prefix: identity.env_prefix(),
        }
    }

    /// The main file this loader reads.
    ///
    /// ```
    /// use seamless_core::{Loader, identity};
    ///
    /// let loader = Loader::new(&identity!(), Some("/srv/example.toml".into()));
    /// assert_eq!(loader.main_file(), std::path::Path::new("/srv/example.toml"));
    /// ```
    pub fn main_file(&self) -> &Path {
        &self.main
    }

    /// Loads and validates all layers, the service's keys and the application's `C`. Pure
    /// with respect to the service: nothing is applied.
    pub fn load<C: AppConfig>(&self) -> Result<Loaded<C>, ConfigError> {
        let defaults = Figment::from(Serialized::defaults(Config::default()))
            .merge(Serialized::defaults(C::default()));
        let mut figment = defaults.clone();
        if readable_file(&self.main, self.required)? {
            figment = figment.merge(Toml::file_exact(&self.main));
        }
        for drop_in in self.drop_ins()? {
            figment = figment.merge(Toml::file_exact(drop_in));
        }
        figment = figment.merge(Env::prefixed(&self.env_prefix).split("__"));

        let describe = |error| self.describe(&figment, error);
        self.reject_unknown_keys(&defaults, &figment)?;
        let service: Config = figment.extract().map_err(describe)?;
        let app: C = figment.extract().map_err(describe)?;
        let invalid = service.validate().err().or_else(|| app.validate().err());
        if let Some(Invalid { mut key, what }) = invalid {
            // A rule between two keys is broken by whichever one was set: blame that one, so
            // the message names the file (or variable) to fix rather than the defaults.
            if key == "shutdown.linger" && is_default(&figment, key) {
                key = "shutdown.drain_timeout";
            }
            return Err(ConfigError::Invalid(InvalidConfig {
                errors: vec![format!(
                    "{}: key `{key}`: {what}",
                    self.source_of(&figment, key)
                )],
            }));
        }
        if service.tls.listen.is_some() && service.tls.certificate.is_none() {
            return Err(ConfigError::Invalid(InvalidConfig {
                errors: vec![format!(
                    "{}: key `tls.listen`: needs tls.certificate and tls.key",
                    self.source_of(&figment, "tls.listen")
                )],
            }));
        }
        let tls = Tls::load(&service.tls)?;
        Ok(Loaded { service, app, tls })
    }

    /// Top-level keys that neither the service nor the application knows. Nested sections
    /// deny unknown keys themselves; the top level is shared, so it is checked here against
    /// the keys the built-in defaults have.
    fn reject_unknown_keys(
        &self,
        defaults: &Figment,
        figment: &Figment,
    ) -> Result<(), ConfigError> {
        let known: BTreeSet<String> = top_level(defaults).into_keys().collect();
        let errors: Vec<String> = top_level(figment)
            .into_keys()
            .filter(|key| !known.contains(key))
            .map(|key| {
                let expected = known
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "{}: key `{key}`: unknown key, expected one of {expected}",
                    self.source_of(figment, &key)
                )
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(InvalidConfig { errors }))
        }
    }

    /// `NAME.d/*.toml` beside the main file, sorted by name. A missing directory is fine;
    /// one that exists but cannot be listed is an error, not an empty list.
    fn drop_ins(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let dir = self
            .main
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&self.drop_in_dir);
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

impl Loader {
    /// Turns figment's errors into lines of the form `SOURCE: key `KEY`: WHAT`.
    fn describe(&self, figment: &Figment, error: figment::Error) -> ConfigError {
        let errors = error
            .into_iter()
            .map(|e| {
                let key = e.path.join(".");
                let source = match &e.metadata {
                    Some(meta) => match &meta.source {
                        Some(source) => source_name(source),
                        // Environment variables have no file: name the variable itself.
                        None if !key.is_empty() => self.env_var_for(&e.path),
                        None => meta.name.to_string(),
                    },
                    None => self.source_of(figment, &key),
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

    /// The variable that sets `path`: `http.max_connections` → `NAME_HTTP__MAX_CONNECTIONS`.
    fn env_var_for(&self, path: &[String]) -> String {
        format!("{}{}", self.env_prefix, path.join("__").to_uppercase())
    }

    /// Which layer set `key` last: a file path, an environment variable, or "built-in defaults".
    fn source_of(&self, figment: &Figment, key: &str) -> String {
        match figment.find_metadata(key) {
            Some(meta) => match &meta.source {
                Some(source) => source_name(source),
                None => {
                    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
                    self.env_var_for(&path)
                }
            },
            None => "built-in defaults".to_owned(),
        }
    }
}

impl Config {
    /// Checks what types alone cannot. Returns the offending key and what is wrong.
    fn validate(&self) -> Result<(), Invalid> {
        if let Err(e) = self
            .log
            .level
            .parse::<tracing_subscriber::filter::EnvFilter>()
        {
            return Err(Invalid::new(
                "log.level",
                format!("not a valid filter directive: {e}"),
            ));
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
            return Err(Invalid::new(key, "must be greater than zero"));
        }
        let durations: [(&'static str, Duration); 6] = [
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.request_timeout", self.http.request_timeout),
            ("shutdown.drain_timeout", self.shutdown.drain_timeout),
            ("shutdown.linger", self.shutdown.linger),
            ("shutdown.announce", self.shutdown.announce),
            ("upgrade.ready_timeout", self.upgrade.ready_timeout),
        ];
        if let Some((key, _)) = durations.iter().find(|(_, d)| *d > MAX_DURATION) {
            return Err(Invalid::new(
                key,
                format!(
                    "must be at most {}",
                    humantime::format_duration(MAX_DURATION)
                ),
            ));
        }
        if self.http.max_header_bytes < MIN_HEADER_BYTES {
            return Err(Invalid::new(
                "http.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        if self.shutdown.linger > self.shutdown.drain_timeout {
            return Err(Invalid::new(
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

/// `$CONFIGURATION_DIRECTORY` (its first entry) when systemd set it, else `/etc/NAME`.
fn default_dir(identity: &Identity) -> PathBuf {
    std::env::var_os(CONFIGURATION_DIRECTORY)
        .and_then(|dirs| {
            let first = dirs.to_string_lossy().split(':').next()?.to_owned();
            (!first.is_empty()).then(|| PathBuf::from(first))
        })
        .unwrap_or_else(|| PathBuf::from(identity.config_dir()))
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

/// A layer's name for messages. Files by their full path: figment's own display makes them
/// relative to the working directory, which is `/` under systemd (`etc/NAME/…`).
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

/// The top-level keys and values of a layered configuration (empty when it is not a table,
/// which extraction then reports).
fn top_level(figment: &Figment) -> Dict {
    match figment.extract::<Value>() {
        Ok(Value::Dict(_, dict)) => dict,
        _ => Dict::new(),
    }
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

#[cfg(test)]
// figment's `Jail` closures return its (large) error type; that is its API, not our choice.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    const EXAMPLE: Identity = Identity {
        name: "example",
        version: "1.0.0",
        description: "",
    };
    const FILE_NAME: &str = "example.toml";
    const DROP_IN_DIR: &str = "example.d";

    /// An application's keys, beside the service's.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    struct Settings {
        message: String,
        demo: Demo,
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        level: u8,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                message: "default".into(),
                demo: Demo::default(),
            }
        }
    }

    impl AppConfig for Settings {
        fn validate(&self) -> Result<(), Invalid> {
            if self.demo.level > 3 {
                return Err(Invalid::new("demo.level", "must be at most 3"));
            }
            Ok(())
        }
    }

    type Both = Loaded<Settings>;

    fn load_in(jail: &Jail) -> Result<Both, ConfigError> {
        Loader::new(&EXAMPLE, Some(jail.directory().join(FILE_NAME))).load()
    }

    fn error_text(result: Result<Both, ConfigError>) -> String {
        match result {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_without_any_file() {
        Jail::expect_with(|jail| {
            let loader = Loader {
                required: false,
                ..Loader::new(&EXAMPLE, Some(jail.directory().join("absent.toml")))
            };
            let loaded: Both = loader.load().expect("defaults load");
            assert_eq!(loaded.service, Config::default());
            assert_eq!(loaded.app, Settings::default());
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
            jail.create_file("example.d/20-b.toml", "message = \"drop-in b\"\n")?;
            jail.create_file(
                "example.d/10-a.toml",
                "message = \"drop-in a\"\n[http]\nmax_connections = 20\n",
            )?;
            jail.create_file("example.d/ignored.txt", "not toml at all")?;
            jail.set_env("EXAMPLE_HTTP__MAX_CONNECTIONS", "30");

            let config = load_in(jail).expect("valid layers");
            assert_eq!(config.app.message, "drop-in b", "later drop-in wins");
            assert_eq!(config.service.http.max_connections, 30, "environment wins");
            assert_eq!(config.service.http.request_timeout, Duration::from_secs(5));
            assert_eq!(config.service.shutdown, ShutdownConfig::default());
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
            jail.create_file("example.d/50-oops.toml", "[log]\nlevle = \"debug\"\n")?;
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
            jail.set_env("EXAMPLE_HTTP__MAX_CONNECTIONS", "lots");
            let text = error_text(load_in(jail));
            assert!(text.contains("EXAMPLE_HTTP__MAX_CONNECTIONS"), "{text}");
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
            let config: Both = Loader::new(&EXAMPLE, None).load().expect("valid");
            assert_eq!(config.app.message, "from systemd's directory");
            Ok(())
        });
    }

    #[test]
    fn unknown_top_level_key_names_its_source() {
        Jail::expect_with(|jail| {
            jail.create_file(FILE_NAME, "mesage = \"typo\"\n")?;
            let text = error_text(load_in(jail));
            assert!(text.contains("key `mesage`: unknown key"), "{text}");
            assert!(text.contains(FILE_NAME), "{text}");
            assert!(text.contains("message"), "lists what is known: {text}");

            jail.create_file(FILE_NAME, "")?;
            jail.set_env("EXAMPLE_NOPE", "1");
            let text = error_text(load_in(jail));
            assert!(text.contains("EXAMPLE_NOPE"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn application_keys_load_and_validate_beside_the_service_keys() {
        Jail::expect_with(|jail| {
            jail.create_file(
                FILE_NAME,
                "message = \"app\"\n[demo]\nlevel = 2\n[http]\nmax_connections = 7\n",
            )?;
            let loaded = load_in(jail).expect("valid");
            assert_eq!(
                (loaded.app.message.as_str(), loaded.app.demo.level),
                ("app", 2)
            );
            assert_eq!(loaded.service.http.max_connections, 7);

            jail.create_file(FILE_NAME, "[demo]\nlevel = 9\n")?;
            let text = error_text(load_in(jail));
            assert!(
                text.contains(FILE_NAME) && text.contains("key `demo.level`: must be at most 3"),
                "{text}"
            );

            jail.create_file(FILE_NAME, "[demo]\nlevl = 1\n")?;
            let text = error_text(load_in(jail));
            assert!(
                text.contains("levl"),
                "nested application sections deny unknown keys: {text}"
            );
            Ok(())
        });
    }
}
