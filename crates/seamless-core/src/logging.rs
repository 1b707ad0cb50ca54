//! Logging: journald's native protocol under systemd, readable lines on stderr otherwise.
//!
//! systemd connects stderr to the journal and says so with `JOURNAL_STREAM=<dev>:<ino>`; when
//! that matches stderr we log through the native protocol instead, so each event keeps its
//! priority and its fields (`GENERATION`, `PEER`, `ERROR`, …) as journal fields:
//! `journalctl -u NAME -o json` shows them. The filter (`log.level`) can be swapped on a
//! reload through the [`Handle`].

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

/// Set by systemd when stderr goes to the journal.
const JOURNAL_STREAM: &str = "JOURNAL_STREAM";

/// Changes the active filter at run time.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    /// The reloadable filter layer's handle.
    filter: reload::Handle<EnvFilter, Registry>,
}

impl Handle {
    /// Replaces the filter with `directive` (validated by the config loader already).
    pub(crate) fn set_level(&self, directive: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directive).map_err(|e| e.to_string())?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// The journal, natively, with structured fields.
    Journal,
    /// Human-readable lines on stderr.
    Stderr,
}

/// Installs the global subscriber with `directive` as the filter; journal entries carry
/// `identifier` as `SYSLOG_IDENTIFIER`. Call once, early.
pub(crate) fn init(identifier: &str, directive: &str) -> (Handle, Sink) {
    // Validated by the config loader; a broken directive here would be a bug, so fall back
    // to `info` rather than lose all logging.
    let filter = EnvFilter::try_new(directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let journal = stderr_is_journal()
        .then(|| {
            tracing_journald::layer().ok().map(|layer| {
                layer
                    .with_syslog_identifier(identifier.to_owned())
                    // Our field names are our own; no `F_` prefix needed to tell them apart.
                    .with_field_prefix(None)
            })
        })
        .flatten();
    let sink = if journal.is_some() {
        Sink::Journal
    } else {
        Sink::Stderr
    };
    let stderr = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .boxed()
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(stderr)
        .init();
    (Handle { filter: handle }, sink)
}

/// Whether `JOURNAL_STREAM` names the very file stderr is: only then is stderr the journal
/// (a child started from a unit's shell inherits the variable but may have stderr redirected).
pub(crate) fn stderr_is_journal() -> bool {
    let Some(expected) = std::env::var_os(JOURNAL_STREAM) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    matches_stream(&expected.to_string_lossy(), meta.dev(), meta.ino())
}

/// Parses `JOURNAL_STREAM`'s `<dev>:<ino>` and compares.
fn matches_stream(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_match_exactly() {
        assert!(matches_stream("8:1234", 8, 1234));
        assert!(!matches_stream("8:1235", 8, 1234));
        assert!(!matches_stream("9:1234", 8, 1234));
        assert!(!matches_stream("8", 8, 1234));
        assert!(!matches_stream("", 8, 1234));
        assert!(!matches_stream("x:y", 8, 1234));
    }
}
