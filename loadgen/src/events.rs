//! Wall-clock events and the events file format.
//!
//! Shell-driven tests note when they restart or reload the service by
//! appending lines to a file while the load runs:
//!
//! ```text
//! echo "$(date +%s%N) restart" >> events.txt
//! ```
//!
//! Each line is `UNIX_TIME_NANOS LABEL`; the label is the rest of the line
//! and may contain spaces. Blank lines and lines starting with `#` are
//! ignored. After the run, [`crate::Report::add_unix_event`] places each event
//! relative to the run's start.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// A named point in wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Free-form label, e.g. `restart` or `reload config-b`.
    pub label: String,
    /// Nanoseconds since the Unix epoch (as printed by `date +%s%N`).
    pub unix_nanos: i128,
}

impl Event {
    /// An event labelled `label` at the current wall-clock time.
    pub fn now(label: impl Into<String>) -> Event {
        Event {
            label: label.into(),
            unix_nanos: unix_nanos(SystemTime::now()),
        }
    }
}

/// Nanoseconds since the Unix epoch; negative before it.
pub fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Parses the contents of an events file.
pub fn parse(text: &str) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (stamp, label) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let unix_nanos: i128 = stamp
            .parse()
            .map_err(|_| format!("line {}: {stamp:?} is not a UNIX_TIME_NANOS value", n + 1))?;
        let label = label.trim();
        events.push(Event {
            label: if label.is_empty() {
                format!("event{}", events.len() + 1)
            } else {
                label.to_owned()
            },
            unix_nanos,
        });
    }
    Ok(events)
}

/// Reads and parses an events file.
pub fn read(path: &Path) -> Result<Vec<Event>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let text = "# started\n1700000000123456789 restart\n\n  1700000001000000000   reload config b  \n1700000002000000000\n";
        let events = parse(text).expect("parse");
        assert_eq!(
            events,
            vec![
                Event {
                    label: "restart".into(),
                    unix_nanos: 1_700_000_000_123_456_789
                },
                Event {
                    label: "reload config b".into(),
                    unix_nanos: 1_700_000_001_000_000_000
                },
                Event {
                    label: "event3".into(),
                    unix_nanos: 1_700_000_002_000_000_000
                },
            ]
        );
    }

    #[test]
    fn rejects_garbage() {
        let err = parse("1700000000 ok\nrestart 1700000000\n").expect_err("must fail");
        assert!(err.contains("line 2"), "{err}");
    }
}
