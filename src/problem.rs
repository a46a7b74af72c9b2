//! Config problems: what is wrong, at which key path and line. Every component validates its own
//! settings into these, so a leaf module keeps them out of the config loader's import ring.

use std::fmt;

/// One thing wrong with a config file, located by its key path and, where known, its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `sinks.bus.topic` or `routes[2].to`.
    pub key: String,
    /// 1-based line in the file, when the TOML parser knows it.
    pub line: Option<usize>,
    /// What was expected and what was found.
    pub message: String,
}

impl Problem {
    /// A problem at `key` with no known line.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {}): {}", self.key, line, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// The line where `key` (`sinks.bus.topic`, `sinks.web.auth.password`, `routes[2].to`) is
/// written, found in the text: within the table its head names, the line of its next part; the
/// table's header line when the part is not found.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let parts: Vec<&str> = key.split('.').collect();
    // `routes[2].to`: the third `[[routes]]` table.
    if let Some((name, index)) = parts[0]
        .strip_suffix(']')
        .and_then(|p| p.split_once('['))
        .and_then(|(n, i)| Some((n, i.parse::<usize>().ok()?)))
    {
        let header = format!("[[{name}]]");
        let at = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim() == header)
            .nth(index)?
            .0;
        return Some(key_line(&lines, at, parts.get(1).copied()));
    }
    // The longest prefix of the key that is a table header.
    for cut in (1..=parts.len()).rev() {
        let table = parts[..cut].join(".");
        let header = format!("[{table}]");
        let Some(at) = lines.iter().position(|l| l.trim() == header) else {
            continue;
        };
        return Some(key_line(&lines, at, parts.get(cut).copied()));
    }
    // A key of no table (`templates_timezone`): its line before the first table header.
    lines
        .iter()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| assigns(l, parts[0]))
        .map(|i| i + 1)
}

/// Whether `line` assigns key `name` (its `[i]` index dropped; bare or quoted).
fn assigns(line: &str, name: &str) -> bool {
    let name = name.split('[').next().unwrap_or(name);
    let quoted = format!("\"{name}\"");
    let line = line.trim_start();
    [name, quoted.as_str()].iter().any(|k| {
        line.strip_prefix(k)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

/// The 1-based line of key `next` (its `[i]` index dropped; bare or quoted) in the table whose
/// header is line index `at`; the header's line when the key is not found or not given.
fn key_line(lines: &[&str], at: usize, next: Option<&str>) -> usize {
    let Some(next) = next else {
        return at + 1;
    };
    let found = lines[at + 1..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| assigns(l, next));
    found.map_or(at + 1, |i| at + 2 + i)
}

/// The most problems [`deserialize_collecting`] looks for before it gives up.
const MAX_PASSES: usize = 64;

/// Deserializes TOML and, where a value is wrong, goes on past it: the value is replaced by a
/// harmless one of the type expected (or, when that type is unknown, its lines are blanked, so
/// line numbers stay true) and the text is read again, so that one wrong value does not hide
/// the others. Returns the value when a pass succeeds, and every problem met on the way; later
/// problems at a key already named are left out (they would be about the stand-in).
pub fn deserialize_collecting<T: serde::de::DeserializeOwned>(
    text: &str,
) -> (Option<T>, Vec<Problem>) {
    let mut text = text.to_string();
    let mut problems: Vec<Problem> = Vec::new();
    for _ in 0..MAX_PASSES {
        match deserialize_once::<T>(&text) {
            Ok(v) => return (Some(v), problems),
            Err((p, span)) => {
                let repeated = problems
                    .iter()
                    .any(|q| q.key.starts_with(&p.key) || p.key.starts_with(&q.key));
                let replaced = span.and_then(|span| stand_in(&text, span, &p.message));
                if !repeated {
                    problems.push(p);
                }
                match replaced {
                    Some(next) if next != text => text = next,
                    _ => return (None, problems),
                }
            }
        }
    }
    (None, problems)
}

/// `text` with the value at `span` replaced by one of the type `message` says was expected, or
/// with the lines it covers blanked when the value is a key of its own line; `None` when
/// neither can be done without changing what other lines mean.
fn stand_in(text: &str, span: std::ops::Range<usize>, message: &str) -> Option<String> {
    let span = span.start.min(text.len())..span.end.min(text.len());
    let covered = text[span.clone()].trim_start();
    let value = if covered.starts_with('[') {
        // The error is about an element: the list it is in becomes empty.
        Some("[]")
    } else if covered.starts_with('{') {
        Some("{}")
    } else if message.contains("expected a whole number") {
        Some("1")
    } else if message.contains("expected a true or false") {
        Some("false")
    } else if message.contains("expected a list") {
        Some("[]")
    } else if message.contains("expected a table") {
        Some("{}")
    } else if message.contains("environment variable")
        || message.contains("expected a string")
        || message.contains("file:")
    {
        Some("\"stand-in-value-0123456789\"")
    } else {
        None
    };
    if let Some(v) = value {
        let covered = &text[span.clone()];
        // A whole table's span (a missing field) is never replaced: other keys live in it.
        if !covered.contains('\n') || covered.trim_start().starts_with('[') {
            // The newlines a value spanned stay, so every later line keeps its number.
            let newlines = "\n".repeat(covered.matches('\n').count());
            return Some(format!(
                "{}{v}{newlines}{}",
                &text[..span.start],
                &text[span.end..]
            ));
        }
    }
    // Blank the lines of a one- or two-line key, keeping the newlines.
    let start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let end = text[span.end..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    let lines = &text[start..end];
    if lines.matches('\n').count() > 1 || lines.trim_start().starts_with('[') {
        return None;
    }
    let blank: String = lines
        .chars()
        .map(|c| if c == '\n' { c } else { ' ' })
        .collect();
    Some(format!("{}{blank}{}", &text[..start], &text[end..]))
}

/// One pass: the value, or the problem and the span of the value it is about.
fn deserialize_once<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, (Problem, Option<std::ops::Range<usize>>)> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let span = inner.span();
        let line = span
            .clone()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let message = in_words(inner.message().trim());
        (
            Problem {
                // An unknown top-level key spelled `""` has an empty path.
                key: if path == "." || path.is_empty() {
                    "(file)".into()
                } else {
                    path
                },
                line,
                message,
            },
            span,
        )
    })
}

/// A serde message with Rust's type names said in words (`expected usize` → `expected a whole
/// number`), for people who write TOML, not Rust.
pub fn in_words(message: &str) -> String {
    const WORDS: [(&str, &str); 14] = [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected a true or false"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a table"),
        ("expected struct", "expected a table for"),
        ("expected a borrowed string", "expected a string"),
        ("expected an integer", "expected a whole number"),
    ];
    WORDS
        .iter()
        .fold(message.to_string(), |m, (from, to)| m.replace(from, to))
}

/// Deserializes a sub-table, prefixing the failing key path with `prefix`.
pub fn table_into<T: serde::de::DeserializeOwned>(
    table: toml::Table,
    prefix: &str,
) -> Result<T, Vec<Problem>> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{path}")
        };
        let message = e.into_inner().to_string();
        // toml adds "in `key`" on a line of its own: the key path says it already.
        let message = message.split("\nin `").next().unwrap_or_default();
        vec![Problem::new(key, in_words(message.trim()))]
    })
}
