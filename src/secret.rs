//! Secrets in the config: inline, `env:NAME` or `file:/path` (systemd credentials), never printed.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret value resolved at load; its `Debug` output is redacted so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Resolves `env:NAME`, `file:/path` or an inline value.
    pub fn resolve(spec: &str) -> Result<Self, String> {
        if let Some(name) = spec.strip_prefix("env:") {
            return match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(_) => Err(format!("environment variable {name} is not set")),
            };
        }
        if let Some(path) = spec.strip_prefix("file:") {
            return match read_limited(path) {
                Ok(v) => {
                    let v = v.trim_end_matches(['\r', '\n']).to_string();
                    if v.is_empty() {
                        Err(format!("secret file {path} is empty"))
                    } else {
                        Ok(Secret(v))
                    }
                }
                Err(e) => Err(format!("cannot read secret file {path}: {e}")),
            };
        }
        if spec.is_empty() {
            return Err("secret is empty".into());
        }
        Ok(Secret(spec.to_string()))
    }

    /// The secret's bytes, for HMAC keys and passwords.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Largest secret file read: keys and passwords are small, and a path like `/dev/zero` must not
/// exhaust memory.
const MAX_SECRET_FILE: u64 = 64 * 1024;

fn read_limited(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_SECRET_FILE} bytes"
        )));
    }
    Ok(text)
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(d)?;
        Secret::resolve(&spec).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_env_and_file() {
        assert_eq!(Secret::resolve("abc").unwrap().expose(), "abc");
        assert!(
            Secret::resolve("env:HOOKBRIDGE_SURELY_UNSET_VAR")
                .unwrap_err()
                .contains("is not set")
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "s3cret\n").unwrap();
        let s = Secret::resolve(&format!("file:{}", p.display())).unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(
            Secret::resolve("file:/nonexistent/x")
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
