//! seamless-core: the systemd plumbing of an HTTP service that restarts, reloads and upgrades
//! without dropping a request. An application implements [`App`] and calls [`main`]; this
//! library does the rest.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use axum::{Router, routing::get};
//! use seamless_core::{App, BoxError, Identity, Metrics, NoConfig};
//!
//! struct Hello;
//!
//! impl App for Hello {
//!     const IDENTITY: Identity = seamless_core::identity!();
//!     type Config = NoConfig;
//!     type State = ();
//!
//!     async fn state(_: &NoConfig, _: &mut Metrics) -> Result<(), BoxError> {
//!         Ok(())
//!     }
//!
//!     fn router(_: &Arc<()>, _: &NoConfig) -> Router {
//!         Router::new().route("/", get(|| async { "hello\n" }))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     seamless_core::main::<Hello>()
//! }
//! ```
//!
//! # Layout
//!
//! | module | concern |
//! |---|---|
//! | [`app`] | what an application supplies: the [`App`] trait |
//! | [`identity`](mod@identity) | the service's name and every name derived from it |
//! | `entry` | the binary's edge: [`main`] |
//! | `cli` | command line and exit codes |
//! | [`config`] | the service's keys beside the application's, layers, validation |
//! | [`listeners`] | sockets from systemd (`LISTEN_FDS`) or bound ourselves |
//! | [`signals`] | `SIGHUP`/`SIGUSR2`/`SIGTERM`/`SIGINT`/`SIGQUIT` as [`signals::Request`]s |
//! | `notify` | `sd_notify`: `READY`, `RELOADING`, `STOPPING`, `STATUS`, `WATCHDOG` |
//! | [`server`] | accept loops and the events of a serving process: [`run`] |
//! | `connection` | one connection: HTTP/1 or HTTP/2, serving it, keeping or closing it in the drain |
//! | `keep` | keeping idle connections across a restart in systemd's fd store |
//! | `generation` | one configuration generation, swapped as a whole |
//! | `timer` | hyper's header-read timer, one tokio timer per connection |
//! | [`tls`] | HTTPS: the certificate and key, the handshake on the `https` socket |
//! | [`routes`] | built-in routes and what is done to every response |
//! | `drain` | coordination: telling tasks the drain began, knowing when all have ended |
//! | [`reload`] | swapping in a new configuration; `NAME reload` |
//! | `upgrade` | binary hot upgrade: successor start, socket handover, `NAME upgrade` |
//! | `verdict` | how the service answers a tool that signalled it (reload, upgrade) |
//! | [`metrics`] | the service's and the application's metrics behind `GET /metrics` |
//! | `logging` | journald natively under systemd, readable stderr otherwise |

pub mod app;
mod cli;
pub mod config;
mod connection;
mod drain;
mod entry;
mod generation;
pub mod identity;
mod keep;
pub mod listeners;
mod logging;
pub mod metrics;
mod notify;
pub mod reload;
pub mod routes;
pub mod server;
pub mod signals;
mod timer;
pub mod tls;
mod upgrade;
mod verdict;

#[cfg(test)]
mod test_app;

pub use app::{App, BoxError};
pub use config::{AppConfig, Config, ConfigError, Invalid, Loaded, Loader, NoConfig};
pub use entry::main;
pub use identity::Identity;
pub use metrics::Metrics;
pub use server::{Stopped, run};
