//! The documentation of the configuration agrees with the binary. `NAME print-config` with an
//! empty file prints every key with its built-in default; the commented-out sample
//! `packaging/NAME.toml`, the README's key table and the man page's CONFIGURATION section must
//! each list exactly those keys with those defaults. A key added, renamed or given a new
//! default fails here, naming the file and the key, until all three say so.
//!
//! Every name is derived from the package name, so a project copied from this template and
//! renamed needs no edit here.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use toml::{Table, Value};

/// The package name: the binary, `packaging/NAME.toml`, `packaging/NAME.1` and the `NAME_*`
/// variables are all named after it.
const NAME: &str = env!("CARGO_PKG_NAME");
/// The binary under test, built by cargo for this test.
const BIN: &str = env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME")));

/// `section.key` (`key` at the top level) → value.
type Keys = BTreeMap<String, Value>;

#[test]
fn sample_config_file_shows_every_key_with_its_default() {
    let path = format!("packaging/{NAME}.toml");
    let mut problems = Vec::new();
    let documented = sample_file_keys(&path, &mut problems);
    compare(&path, &documented, &built_in_defaults(), &mut problems);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn readme_key_table_shows_every_key_with_its_default() {
    let path = "README.md";
    let mut problems = Vec::new();
    let documented = readme_keys(path, &mut problems);
    compare(path, &documented, &built_in_defaults(), &mut problems);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn man_page_configuration_section_shows_every_key_with_its_default() {
    let path = format!("packaging/{NAME}.1");
    let mut problems = Vec::new();
    let documented = man_page_keys(&path, &mut problems);
    compare(&path, &documented, &built_in_defaults(), &mut problems);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// What the binary prints for an empty configuration file, with no `NAME_*` variable that
/// could override a default.
fn built_in_defaults() -> Keys {
    let empty = tempfile::NamedTempFile::new().expect("cannot create an empty configuration file");
    let prefix = format!("{}_", NAME.to_uppercase().replace('-', "_"));
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(empty.path())
        .arg("print-config");
    for (variable, _) in std::env::vars_os() {
        if variable.as_bytes().starts_with(prefix.as_bytes()) {
            command.env_remove(variable);
        }
    }
    let output = command.output().expect("cannot run the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`{NAME} print-config` failed ({}): {stderr}",
        output.status
    );
    let text = String::from_utf8(output.stdout).expect("print-config printed invalid UTF-8");
    let table: Table = text
        .parse()
        .unwrap_or_else(|e| panic!("print-config printed invalid TOML: {e}\n{text}"));
    let mut keys = Keys::new();
    flatten("", table, &mut keys);
    assert!(!keys.is_empty(), "print-config printed no keys");
    keys
}

fn flatten(prefix: &str, table: Table, keys: &mut Keys) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Table(table) => flatten(&key, table, keys),
            value => {
                keys.insert(key, value);
            }
        }
    }
}

/// Adds a line to `problems` for each key missing from `documented`, unknown to the binary, or
/// documented with another default.
fn compare(path: &str, documented: &Keys, binary: &Keys, problems: &mut Vec<String>) {
    for (key, default) in binary {
        match documented.get(key) {
            None => problems.push(format!(
                "{path}: key `{key}` is missing (the binary's default is {})",
                show(default)
            )),
            Some(value) if value != default => problems.push(format!(
                "{path}: key `{key}` is documented with default {}, \
                 but the binary's default is {}",
                show(value),
                show(default)
            )),
            Some(_) => {}
        }
    }
    for key in documented.keys().filter(|key| !binary.contains_key(*key)) {
        problems.push(format!(
            "{path}: key `{key}` is documented, but the binary has no such key"
        ));
    }
}

/// A value on one line: TOML would print a string with a newline as a multi-line string.
fn show(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        value => value.to_string(),
    }
}

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Uncomments each `#key = value` and `#[section]` line and parses the result. Prose comments
/// start with `# ` (or are a bare `#`) and stay comments. Other lines keep their place, so
/// TOML errors point at the right line of the file.
fn sample_file_keys(path: &str, problems: &mut Vec<String>) -> Keys {
    let text = read(path);
    let uncommented: Vec<&str> = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c == '[' || c == '"' || is_key_char(c)) => {
                rest
            }
            _ => "",
        })
        .collect();
    let mut keys = Keys::new();
    match uncommented.join("\n").parse::<Table>() {
        Ok(table) => flatten("", table, &mut keys),
        Err(e) => problems.push(format!(
            "{path}: the uncommented settings are not TOML: {e}"
        )),
    }
    keys
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The table under the header `| key | default | ... |`: a key in backticks and its default in
/// backticks, in TOML syntax.
fn readme_keys(path: &str, problems: &mut Vec<String>) -> Keys {
    let text = read(path);
    let mut keys = Keys::new();
    let mut lines = text.lines().enumerate().skip_while(|(_, line)| {
        let cells = cells(line);
        !(cells.len() >= 2 && cells[0] == "key" && cells[1] == "default")
    });
    if lines.next().is_none() {
        problems.push(format!(
            "{path}: no key table (a header row `| key | default | ... |`)"
        ));
        return keys;
    }
    let rows = lines
        .skip(1) // |---|---|
        .take_while(|(_, line)| line.starts_with('|'));
    for (index, line) in rows {
        let at = format!("{path}:{}", index + 1);
        let cells = cells(line);
        let (Some(key), Some(default)) = (
            cells.first().and_then(|cell| code(cell)),
            cells.get(1).and_then(|cell| code(cell)),
        ) else {
            problems.push(format!(
                "{at}: expected `key` and `default` in backticks in the first two cells"
            ));
            continue;
        };
        insert(&at, key, default, &mut keys, problems);
    }
    keys
}

/// The cells of a Markdown table row, trimmed; empty if `line` is not a row.
fn cells(line: &str) -> Vec<&str> {
    let Some(inner) = line.trim().strip_prefix('|') else {
        return Vec::new();
    };
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(str::trim).collect()
}

/// The text of a cell that is one code span.
fn code(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`')
}

/// The man page's CONFIGURATION section: every `.TP` tag there is `.B key = value`, the value in
/// TOML syntax with roff escapes (`\(dq` for `"`, `\e` for a backslash).
fn man_page_keys(path: &str, problems: &mut Vec<String>) -> Keys {
    let text = read(path);
    let mut keys = Keys::new();
    let mut lines = text
        .lines()
        .enumerate()
        .skip_while(|(_, line)| line.trim_end() != ".SH CONFIGURATION");
    if lines.next().is_none() {
        problems.push(format!("{path}: no `.SH CONFIGURATION` section"));
        return keys;
    }
    let section: Vec<(usize, &str)> = lines
        .take_while(|(_, line)| !line.starts_with(".SH"))
        .collect();
    let tags = section
        .windows(2)
        .filter(|pair| pair[0].1.trim_end() == ".TP")
        .map(|pair| pair[1]);
    for (index, line) in tags {
        let at = format!("{path}:{}", index + 1);
        let entry = line.strip_prefix(".B ").map(unescape_roff);
        let Some(Ok(entry)) = entry else {
            let why = match entry {
                Some(Err(e)) => e,
                _ => "not a `.B` line".to_owned(),
            };
            problems.push(format!(
                "{at}: expected `.B key = value` after `.TP`: {why}"
            ));
            continue;
        };
        let Some((key, default)) = entry.split_once(" = ") else {
            problems.push(format!("{at}: expected `.B key = value`, found {line:?}"));
            continue;
        };
        insert(&at, key.trim(), default.trim(), &mut keys, problems);
    }
    keys
}

/// The roff escapes a default may need; anything else is reported rather than guessed at.
fn unescape_roff(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let (plain, len) = if rest.starts_with("\\(dq") {
            ("\"", 4)
        } else if rest.starts_with("\\(aq") {
            ("'", 4)
        } else if rest.starts_with("\\e") {
            ("\\", 2)
        } else if rest.starts_with("\\-") {
            ("-", 2)
        } else if rest.starts_with("\\&") {
            ("", 2)
        } else {
            return Err(format!("unsupported roff escape in {text:?}"));
        };
        out.push_str(plain);
        rest = &rest[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `default` as a TOML value and records it under `key`, once.
fn insert(at: &str, key: &str, default: &str, keys: &mut Keys, problems: &mut Vec<String>) {
    let value = match format!("value = {default}").parse::<Table>() {
        Ok(mut table) => table
            .remove("value")
            .expect("the table has the key just parsed"),
        Err(e) => {
            problems.push(format!(
                "{at}: key `{key}`: default {default} is not a TOML value: {e}"
            ));
            return;
        }
    };
    if keys.insert(key.to_owned(), value).is_some() {
        problems.push(format!("{at}: key `{key}` is listed twice"));
    }
}
