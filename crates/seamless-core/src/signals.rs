//! Unix signals, turned into [`Request`]s for the server.
//!
//! | signal | request |
//! |---|---|
//! | `SIGHUP` | [`Request::Reload`] |
//! | `SIGUSR2` | [`Request::Upgrade`] |
//! | `SIGTERM`, first `SIGINT` | [`Request::Drain`] |
//! | `SIGQUIT`, second `SIGINT` | [`Request::Exit`] |
//!
//! Handlers are installed by `listen` before the service reports `READY=1`: `SIGHUP`'s default
//! action kills the process, so a reload sent right after start must find a handler.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// What the outside world asks of a running server.
///
/// ```
/// use seamless_core::signals::Request;
///
/// // A harness asks `run` to drain, as SIGTERM would.
/// let (requests_tx, _requests_rx) = tokio::sync::mpsc::channel(1);
/// requests_tx.try_send(Request::Drain).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Load the configuration again and apply it.
    Reload,
    /// Hand over to the installed binary, then drain.
    Upgrade,
    /// Stop accepting, drain every connection, exit 0.
    Drain,
    /// Exit now, cutting open connections.
    Exit,
    /// Block every runtime thread (test builds with the `stall-hook` feature only): proves
    /// the watchdog notices a hung service.
    #[cfg(feature = "stall-hook")]
    Stall,
}

/// Installs the handlers and returns the stream of requests.
///
/// Must be called inside the tokio runtime. Fails only if a handler cannot be installed.
pub(crate) fn listen() -> std::io::Result<mpsc::Receiver<Request>> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    // Small on purpose: the server coalesces reloads, and a full queue only ever holds requests
    // the server will see anyway.
    let (tx, rx) = mpsc::channel(16);
    #[cfg(feature = "stall-hook")]
    {
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while usr1.recv().await.is_some() && tx.send(Request::Stall).await.is_ok() {}
        });
    }
    tokio::spawn(async move {
        let mut interrupted = false;
        loop {
            let request = tokio::select! {
                Some(()) = hup.recv() => Request::Reload,
                Some(()) = usr2.recv() => Request::Upgrade,
                Some(()) = term.recv() => Request::Drain,
                Some(()) = quit.recv() => Request::Exit,
                Some(()) = int.recv() => {
                    // Ctrl-C once drains; impatient Ctrl-C again exits.
                    let request = if interrupted { Request::Exit } else { Request::Drain };
                    interrupted = true;
                    request
                }
                else => break,
            };
            tracing::debug!(?request, "signal received");
            if tx.send(request).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
