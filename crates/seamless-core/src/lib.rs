//! seamless: a systemd-native, socket-activated HTTP service that restarts, reloads and upgrades
//! without dropping a request — and a template to copy for your own.
//!
//! # Layout
//!
//! The binary (`src/main.rs`) parses the command line, loads the configuration, takes the
//! sockets, sets up logging and calls [`server::run`]. Everything else is here, one concern per
//! module:
//!
//! | module | concern |
//! |---|---|
//! | [`cli`] | command line and exit codes |
//! | [`config`] | the configuration struct, its layers (defaults, file, drop-ins, env) and validation |
//! | [`listeners`] | sockets from systemd (`LISTEN_FDS`) or bound ourselves |
//! | [`signals`] | `SIGHUP`/`SIGUSR2`/`SIGTERM`/`SIGINT`/`SIGQUIT` as [`signals::Request`]s |
//! | [`notify`] | `sd_notify`: `READY`, `RELOADING`, `STOPPING`, `STATUS`, `WATCHDOG` |
//! | [`server`] | accept loops, connections, reloads, the zero-drop drain: [`server::run`] |
//! | [`drain`] | coordination: telling tasks the drain began, knowing when all have ended |
//! | [`reload`] | swapping in a new configuration; `seamless reload` |
//! | [`upgrade`] | binary hot upgrade: successor start, socket handover, `seamless upgrade` |
//! | [`verdict`] | how the service answers a tool that signalled it (reload, upgrade) |
//! | [`app`] | routes and per-request layers |
//! | [`metrics`] | counters behind `GET /metrics` |
//! | [`logging`] | journald natively under systemd, readable stderr otherwise |

pub mod app;
pub mod cli;
pub mod config;
pub mod drain;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod reload;
pub mod server;
pub mod signals;
pub mod upgrade;
pub mod verdict;

pub use config::{Config, ConfigError, Loader};
pub use server::{Stopped, run};
