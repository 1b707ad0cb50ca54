//! Properties of the two parsers every start and reload goes through, over arbitrary input:
//!
//! - `ActivationEnv::parse` (the `LISTEN_*` variables) never panics, takes exactly the fds
//!   systemd or a dev tool without `LISTEN_PID` would have passed, ignores variables meant for
//!   another process, and refuses garbage with an error naming the variable;
//! - `Loader::load` never panics on any file content, and what it accepts survives a round trip
//!   through its own serialisation; what it refuses is refused with one line naming the file.
//!
//! Failures proptest finds are kept in `tests/properties.proptest-regressions` and replayed
//! first on every run.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use seamless_core::listeners::{
    ActivationEnv, LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_FIRST_FD, LISTEN_FDS_START, LISTEN_PID,
    ListenerError,
};
use seamless_core::{AppConfig, Identity, Loaded, Loader};
use serde::{Deserialize, Serialize};

/// The name the files below are looked up by.
const EXAMPLE: Identity = Identity {
    name: "example",
    version: "1.0.0",
    description: "",
};

/// An application's keys, as a typical application has them: a top-level key and a section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct Settings {
    message: String,
    demo: Demo,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Demo {
    slow_endpoint: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            message: "hello\n".into(),
            demo: Demo::default(),
        }
    }
}

impl AppConfig for Settings {}

type Both = Loaded<Settings>;

/// Mirrors the private limit in `src/listeners.rs`: more passed fds is certainly garbage.
const MAX_LISTEN_FDS: usize = 65536 + 1024;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Beside this file, as `tests/properties.proptest-regressions`: proptest's default
        // looks for a crate root next to the source, which integration tests do not have.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES

/// Text that is often a number, sometimes almost one, sometimes anything.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..8).prop_map(|n| n.to_string()),
        (0u64..5000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[ \t\n]{0,2}[0-9]{1,4}[ \t\n]{0,2}",
        "[-+][0-9]{1,4}",
        "[0-9]{19,25}",
        "0x[0-9a-f]{1,4}",
        Just(String::new()),
        any::<String>(),
    ]
}

/// Colon-separated names, sometimes with odd characters, sometimes anything.
fn names_text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec("[a-z0-9.\\-]{0,8}", 0..8).prop_map(|v| v.join(":")),
        any::<String>(),
    ]
}

/// How `LISTEN_PID` relates to the PID `parse` is given.
#[derive(Debug, Clone)]
enum PidText {
    /// Unset.
    Unset,
    /// Our PID, with this padding around it.
    Ours(String, String),
    /// Anything else.
    Text(String),
}

fn activation() -> impl Strategy<Value = (u32, ActivationEnv)> {
    let pid = prop_oneof![
        1 => Just(PidText::Unset),
        4 => ("[ \t]{0,1}", "[ \t\n]{0,1}").prop_map(|(a, b)| PidText::Ours(a, b)),
        2 => number_text().prop_map(PidText::Text),
    ];
    // Well-formed pairs are rare at random; make sure they are generated too.
    let consistent = (0usize..6)
        .prop_flat_map(|n| {
            proptest::collection::vec("[a-z0-9.]{0,6}", n).prop_map(move |names| (n, names))
        })
        .prop_map(|(n, names)| (Some(n.to_string()), Some(names.join(":"))));
    let anything = (
        proptest::option::of(number_text()),
        proptest::option::of(names_text()),
    );
    let fds_and_names = prop_oneof![consistent, anything];
    let first_fd = prop_oneof![
        2 => Just(None),
        1 => number_text().prop_map(Some),
    ];
    (any::<u32>(), pid, fds_and_names, first_fd).prop_map(
        |(our_pid, pid, (fds, names), first_fd)| {
            let pid = match pid {
                PidText::Unset => None,
                PidText::Ours(before, after) => Some(format!("{before}{our_pid}{after}")),
                PidText::Text(text) => Some(text),
            };
            let env = ActivationEnv {
                pid,
                fds,
                names,
                first_fd,
            };
            (our_pid, env)
        },
    )
}

/// The variable a `BadVariable` error is about; `None` for any other kind of error.
fn named_variable(error: &ListenerError) -> Option<&'static str> {
    let ListenerError::BadVariable { var, .. } = error else {
        return None;
    };
    Some(var)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn activation_env_parse_is_total_and_exact((our_pid, env) in activation()) {
        let result = env.parse(our_pid);
        // None: unset; Some(None): not a number; Some(Some(pid)): a PID.
        let pid: Option<Option<u32>> = env.pid.as_deref().map(|p| p.trim().parse().ok());
        // LISTEN_FDS_FIRST_FD is followed only without LISTEN_PID; `None` when it is not a number.
        let first_fd: Option<i32> = match (&pid, &env.first_fd) {
            (None, Some(f)) => f.trim().parse().ok(),
            _ => Some(LISTEN_FDS_START),
        };
        match &result {
            Ok(Some(fds)) => {
                prop_assert!(
                    pid.is_none() || pid == Some(Some(our_pid)),
                    "taken only when LISTEN_PID is unset or ours"
                );
                let count: usize = env
                    .fds
                    .as_deref()
                    .and_then(|f| f.trim().parse().ok())
                    .expect("taken only with a numeric LISTEN_FDS");
                prop_assert_eq!(fds.len(), count);
                prop_assert!(fds.len() <= MAX_LISTEN_FDS);
                let first = first_fd.expect("taken only with a numeric LISTEN_FDS_FIRST_FD");
                prop_assert!(first >= LISTEN_FDS_START, "never stdin, stdout or stderr");
                for (i, (fd, _)) in fds.iter().enumerate() {
                    prop_assert_eq!(i64::from(*fd), i64::from(first) + i as i64);
                }
                let names: Vec<&str> = fds.iter().map(|(_, n)| n.as_str()).collect();
                match &env.names {
                    Some(given) => prop_assert_eq!(names, given.split(':').collect::<Vec<_>>()),
                    None => prop_assert!(names.iter().all(|n| *n == "unknown"), "{:?}", names),
                }
            }
            Ok(None) => prop_assert!(
                (pid.is_none() && env.fds.is_none()) || matches!(pid, Some(Some(p)) if p != our_pid),
                "nothing taken although LISTEN_PID is unset or ours: {:?}",
                env
            ),
            Err(error) => {
                let var = named_variable(error);
                prop_assert!(var.is_some(), "{}", error);
                let message = error.to_string();
                prop_assert!(message.contains(var.unwrap_or_default()), "{}", message);
                prop_assert!(!message.contains('\n'), "one line: {:?}", message);
                match pid {
                    Some(None) => prop_assert_eq!(var, Some(LISTEN_PID)),
                    Some(Some(p)) => {
                        prop_assert_eq!(p, our_pid, "another process's variables are no error");
                        prop_assert!(var == Some(LISTEN_FDS) || var == Some(LISTEN_FDNAMES));
                    }
                    None => {
                        prop_assert!(env.fds.is_some(), "nothing passed is no error: {}", message);
                        prop_assert!(
                            var == Some(LISTEN_FDS)
                                || var == Some(LISTEN_FDNAMES)
                                || var == Some(LISTEN_FDS_FIRST_FD)
                        );
                    }
                }
            }
        }

        // Valid input is never refused.
        let count = env.fds.as_deref().and_then(|f| f.trim().parse::<usize>().ok());
        let names_match = |n: usize| env.names.as_deref().is_none_or(|s| s.split(':').count() == n);
        let first_fd_fits = |n: usize| {
            first_fd.is_some_and(|f| f >= LISTEN_FDS_START && f.checked_add(n as i32).is_some())
        };
        if pid.is_none() || pid == Some(Some(our_pid)) {
            if let Some(n) =
                count.filter(|n| *n <= MAX_LISTEN_FDS && names_match(*n) && first_fd_fits(*n))
            {
                prop_assert!(matches!(&result, Ok(Some(v)) if v.len() == n), "{:?}", result);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration files

fn any_of(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(items).prop_map(str::to_owned)
}

fn section() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any_of(&["http", "log", "shutdown", "demo", "upgrade"]),
        1 => any_of(&["htttp", "http.extra", "\"http\"", "", "log.level"]),
        1 => "[a-z_]{1,8}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => any_of(&[
            "message", "level", "listen", "max_connections", "header_read_timeout",
            "request_timeout", "max_header_bytes", "max_body_bytes", "drain_timeout", "linger",
            "slow_endpoint", "ready_timeout",
        ]),
        1 => any_of(&["max_conections", "levle", "\"message\"", "message.x"]),
        1 => "[a-z_]{1,10}",
    ]
}

/// A TOML string literal for `text`, quoted and escaped as TOML requires.
fn quoted(text: String) -> String {
    toml::Value::String(text).to_string()
}

fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,4}(ns|us|ms|s|m|h|d|w|y)",
        "[0-9]{1,3}s [0-9]{1,3}ms",
        "[0-9]{1,4} ?[a-z]{0,3}",
        any_of(&[
            "0s",
            "-1s",
            "soon",
            "",
            "18446744073709551615s",
            "99999999999999999999s"
        ]),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => duration_text().prop_map(quoted),
        2 => (0i64..100_000).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any_of(&["99999999999999999999", "1e3", "nan", "inf", "-0", "0x10", "1_000"]),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => any_of(&["\"127.0.0.1:0\"", "\"[::1]:8080\"", "\"localhost\"", "\"0.0.0.0:99999\""]),
        1 => any_of(&["\"info\"", "\"example=debug,info\"", "\"info,[[[\"", "\"\""]),
        2 => any::<String>().prop_map(quoted),
        1 => any_of(&["[]", "[1, \"a\"]", "{ a = 1 }", "{}", "1979-05-27T07:32:00Z"]),
        1 => "[^\n]{0,12}",
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (key(), value()).prop_map(|(k, v)| format!("{k} = {v}\n")),
        2 => section().prop_map(|s| format!("[{s}]\n")),
        1 => (section(), key(), value()).prop_map(|(s, k, v)| format!("{s}.{k} = {v}\n")),
        1 => section().prop_map(|s| format!("[[{s}]]\n")),
        1 => "(#[^\n]{0,12})?\n",
        1 => "[^\n]{0,20}\n",
    ]
}

/// A quoted duration, mostly plausible.
fn duration_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[1-9][0-9]{0,3}(ms|s|m)".prop_map(quoted),
        2 => duration_text().prop_map(quoted),
        1 => value(),
    ]
}

/// A count, mostly plausible.
fn count_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..100_000).prop_map(|n| n.to_string()),
        1 => any_of(&["0", "1", "8191", "8192", "9223372036854775807", "-1"]),
        1 => value(),
    ]
}

fn string_value(plausible: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any_of(plausible).prop_map(quoted),
        1 => any::<String>().prop_map(quoted),
        1 => value(),
    ]
}

fn bool_value() -> impl Strategy<Value = String> {
    prop_oneof![4 => any::<bool>().prop_map(|b| b.to_string()), 1 => value()]
}

/// What kind of value a key takes, to generate mostly plausible ones.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Message,
    Level,
    Address,
    Count,
    Duration,
    Bool,
}

impl Kind {
    fn values(self) -> BoxedStrategy<String> {
        match self {
            Kind::Message => string_value(&["hello", "", "line\nbreak", "\u{0}"]).boxed(),
            Kind::Level => string_value(&[
                "info",
                "debug",
                "example=debug,info",
                "warn,hyper=off",
                "info,[[[",
            ])
            .boxed(),
            Kind::Address => {
                string_value(&["127.0.0.1:0", "[::1]:8080", "0.0.0.0:80", "localhost:80"]).boxed()
            }
            Kind::Count => count_value().boxed(),
            Kind::Duration => duration_value().boxed(),
            Kind::Bool => bool_value().boxed(),
        }
    }
}

/// Every known key: its section (empty for the top level), name and kind. A new key is one
/// more row.
const KEYS: &[(&str, &str, Kind)] = &[
    ("", "message", Kind::Message),
    ("log", "level", Kind::Level),
    ("http", "listen", Kind::Address),
    ("http", "max_connections", Kind::Count),
    ("http", "header_read_timeout", Kind::Duration),
    ("http", "request_timeout", Kind::Duration),
    ("http", "max_header_bytes", Kind::Count),
    ("http", "max_body_bytes", Kind::Count),
    ("shutdown", "drain_timeout", Kind::Duration),
    ("shutdown", "linger", Kind::Duration),
    ("upgrade", "ready_timeout", Kind::Duration),
    ("demo", "slow_endpoint", Kind::Bool),
];

/// Each known key with probability 0.4, with a value that is usually of the right kind: a
/// configuration that is well-formed TOML with the real keys, so validation gets exercised.
fn known_keys() -> impl Strategy<Value = String> {
    let values: Vec<_> = KEYS
        .iter()
        .map(|(_, _, kind)| proptest::option::weighted(0.4, kind.values()))
        .collect();
    values.prop_map(|values| {
        let mut text = String::new();
        // Top-level keys first: after a `[section]` header they would belong to it.
        let mut current = "";
        let mut rows: Vec<_> = KEYS.iter().zip(values).collect();
        rows.sort_by_key(|((section, _, _), _)| !section.is_empty());
        for ((section, key, _), value) in rows {
            let Some(value) = value else { continue };
            if *section != current {
                text.push_str(&format!("[{section}]\n"));
                current = section;
            }
            text.push_str(&format!("{key} = {value}\n"));
        }
        text
    })
}

/// Mostly the real keys with plausible values, else a soup of TOML-ish lines, arbitrary text,
/// or arbitrary bytes.
fn file_content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => known_keys().prop_map(String::into_bytes),
        3 => proptest::collection::vec(line(), 0..10).prop_map(|lines| lines.concat().into_bytes()),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

/// One case: the error names the file at fault, on one line; or the configuration is valid and
/// loads again, unchanged, from its own serialisation.
fn check_load(loader: &Loader, at_fault: &Path) -> Result<(), TestCaseError> {
    match loader.load::<Settings>() {
        Ok(config) => {
            check_invariants(&config)?;
            let service = toml::to_string(&config.service);
            let app = toml::to_string(&config.app);
            let text = service
                .and_then(|service| Ok(format!("{}\n{service}", app?)))
                .map_err(|e| TestCaseError::fail(format!("{config:?} does not serialise: {e}")))?;
            let dir = tempfile::tempdir().expect("tempdir");
            let again = dir.path().join("example.toml");
            std::fs::write(&again, &text).expect("write");
            match Loader::new(&EXAMPLE, Some(again)).load::<Settings>() {
                Ok(reloaded) => prop_assert_eq!(reloaded, config, "from:\n{}", text),
                Err(e) => prop_assert!(false, "own serialisation refused: {}\n{}", e, text),
            }
        }
        Err(error) => {
            let message = error.to_string();
            prop_assert!(!message.contains('\n'), "one line: {:?}", message);
            let file = at_fault.display().to_string();
            prop_assert!(
                message.contains(&file),
                "{:?} does not name {}",
                message,
                file
            );
        }
    }
    Ok(())
}

/// What `Config::validate` promises about any configuration it lets through.
fn check_invariants(
    Loaded {
        service: config, ..
    }: &Both,
) -> Result<(), TestCaseError> {
    prop_assert!(config.http.max_connections > 0);
    prop_assert!(config.http.max_header_bytes >= 8192);
    prop_assert!(!config.http.header_read_timeout.is_zero());
    prop_assert!(!config.http.request_timeout.is_zero());
    prop_assert!(!config.shutdown.drain_timeout.is_zero());
    prop_assert!(config.shutdown.linger <= config.shutdown.drain_timeout);
    prop_assert!(
        config
            .log
            .level
            .parse::<tracing_subscriber::filter::EnvFilter>()
            .is_ok()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn main_file_loads_round_trips_or_names_itself(content in file_content()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("example.toml");
        std::fs::write(&main, &content).expect("write");
        check_load(&Loader::new(&EXAMPLE, Some(main.clone())), &main)?;
    }

    #[test]
    fn drop_in_loads_round_trips_or_names_itself(content in file_content()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("example.toml");
        std::fs::write(&main, "").expect("write");
        std::fs::create_dir(dir.path().join("example.d")).expect("mkdir");
        let drop_in = dir.path().join("example.d").join("50-case.toml");
        std::fs::write(&drop_in, &content).expect("write");
        check_load(&Loader::new(&EXAMPLE, Some(main)), &drop_in)?;
    }
}

/// The case proptest shrank `main_file_loads_round_trips_or_names_itself` to: only
/// `shutdown.drain_timeout` is set, below the default `shutdown.linger`.
#[test]
fn regression_drain_timeout_below_the_default_linger_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = dir.path().join("example.toml");
    std::fs::write(&main, "[shutdown]\ndrain_timeout = \"1ms\"\n").expect("write");
    let error = Loader::new(&EXAMPLE, Some(main.clone()))
        .load::<Settings>()
        .expect_err("linger (1s by default) exceeds the drain timeout");
    let message = error.to_string();
    assert!(message.contains(&main.display().to_string()), "{message}");
    assert!(!message.contains("src/config.rs"), "{message}");
}
