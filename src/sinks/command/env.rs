//! The program's environment: cleared, then only what the config names. `env` sets variables
//! (inline, or `env:`/`file:` secrets resolved at load), `pass_env` passes hookbridge's own by
//! name, `PATH` is `/usr/bin:/bin` unless one of those sets it, and `HOOKBRIDGE_EVENT_ID` is the
//! event's id, so that a program can recognise an event it already handled (delivery is at
//! least once). No value is ever logged or shown.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::secret::Secret;

/// `PATH` when the config does not set or pass one.
pub(super) const DEFAULT_PATH: &str = "/usr/bin:/bin";

/// The variable that carries the event's id.
pub(super) const EVENT_ID_VAR: &str = "HOOKBRIDGE_EVENT_ID";

/// A value of `env`: written in the config, or an `env:`/`file:` secret read at load. Its
/// `Debug` shows neither.
#[derive(Clone)]
pub enum EnvValue {
    /// Written in the config file.
    Text(String),
    /// Read from hookbridge's environment or a file.
    Secret(Secret),
}

impl EnvValue {
    /// The value.
    pub fn expose(&self) -> &str {
        match self {
            EnvValue::Text(t) => t,
            EnvValue::Secret(s) => s.expose(),
        }
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.starts_with("env:") || text.starts_with("file:") {
            return Secret::resolve(&text)
                .map(EnvValue::Secret)
                .map_err(serde::de::Error::custom);
        }
        Ok(EnvValue::Text(text))
    }
}

/// Why `name` cannot be a variable the config sets or passes, if it cannot.
pub(super) fn name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Some(format!(
            "{name:?} is not a variable name: letters, digits and '_', not starting with a digit"
        ));
    }
    if name == EVENT_ID_VAR {
        return Some(format!("{EVENT_ID_VAR} is set by hookbridge itself"));
    }
    None
}

/// Why a value of `env` cannot be passed, if it cannot.
pub(super) fn value_problem(value: &EnvValue) -> Option<&'static str> {
    value
        .expose()
        .contains('\0')
        .then_some("holds a NUL byte, which no environment variable can")
}

/// The variables every run gets (all but the event id): `pass_env` read from `daemon` (those
/// it does not have are left out), then `env`, then `PATH` if neither set it.
pub(super) fn child_env(
    env: &BTreeMap<String, EnvValue>,
    pass_env: &[String],
    daemon: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut vars: BTreeMap<String, String> = pass_env
        .iter()
        .filter_map(|name| Some((name.clone(), daemon(name)?)))
        .collect();
    for (name, value) in env {
        vars.insert(name.clone(), value.expose().to_string());
    }
    vars.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    vars.into_iter().collect()
}

/// The environment as `explain` shows it: every name, no value but the default `PATH` and the
/// event id.
pub(super) fn shown(
    env: &BTreeMap<String, EnvValue>,
    pass_env: &[String],
    event_id: &str,
) -> BTreeMap<String, String> {
    let mut shown: BTreeMap<String, String> = pass_env
        .iter()
        .map(|n| (n.clone(), "(passed from hookbridge's environment)".into()))
        .collect();
    for name in env.keys() {
        shown.insert(name.clone(), "***".into());
    }
    shown
        .entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    shown.insert(EVENT_ID_VAR.into(), event_id.into());
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_and_the_event_id_is_ours() {
        assert_eq!(name_problem("API_TOKEN"), None);
        assert_eq!(name_problem("_x1"), None);
        for bad in ["", "1X", "A-B", "A=B", "A B", "Ä"] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(
            name_problem(EVENT_ID_VAR)
                .unwrap()
                .contains("hookbridge itself")
        );
    }

    #[test]
    fn the_child_gets_only_what_is_named() {
        let env: BTreeMap<String, EnvValue> =
            toml::from_str("MODE = \"restore\"\nLANG = \"C\"\n").unwrap();
        let daemon = |n: &str| match n {
            "LANG" => Some("de_DE.UTF-8".to_string()),
            "TZ" => Some("Europe/Berlin".to_string()),
            _ => None,
        };
        let vars = child_env(&env, &["TZ".into(), "LANG".into(), "NOPE".into()], daemon);
        assert_eq!(
            vars,
            [
                ("LANG".to_string(), "C".to_string()),
                ("MODE".to_string(), "restore".to_string()),
                ("PATH".to_string(), DEFAULT_PATH.to_string()),
                ("TZ".to_string(), "Europe/Berlin".to_string()),
            ]
        );
        let vars = child_env(&BTreeMap::new(), &["PATH".into()], |_| {
            Some("/opt/x".into())
        });
        assert_eq!(vars, [("PATH".to_string(), "/opt/x".to_string())]);
    }

    #[test]
    fn secrets_are_read_at_load_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-token\n").unwrap();
        let text = format!("TOKEN = \"file:{}\"\n", file.display());
        let env: BTreeMap<String, EnvValue> = toml::from_str(&text).unwrap();
        assert_eq!(env["TOKEN"].expose(), "s3cret-token");
        assert_eq!(format!("{env:?}"), "{\"TOKEN\": ***}");
        let shown = shown(&env, &["LANG".into()], "e1");
        assert_eq!(shown["TOKEN"], "***");
        assert_eq!(shown[EVENT_ID_VAR], "e1");
        assert!(!format!("{shown:?}").contains("s3cret"));
        assert!(
            toml::from_str::<BTreeMap<String, EnvValue>>("T = \"env:HOOKBRIDGE_SURELY_UNSET\"")
                .is_err()
        );
    }
}
