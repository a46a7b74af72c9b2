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

/// Deserializes TOML, reporting the failing key path and line on error.
pub fn deserialize_with_path<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, Vec<Problem>> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let message = inner.message().trim().to_string();
        vec![Problem {
            // An unknown top-level key spelled `""` has an empty path.
            key: if path == "." || path.is_empty() {
                "(file)".into()
            } else {
                path
            },
            line,
            message,
        }]
    })
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
        vec![Problem::new(key, e.into_inner().to_string().trim())]
    })
}
