//! The shape every sink type has: settings read from `[sinks.NAME]`, checked at load, previewed
//! by `explain`, built into a running [`Sink`]. A type is declared once, by implementing
//! [`SinkType`] on its settings, and listed once, in `sinks::TYPES`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Sink, SinkError};
use crate::event::Event;
use crate::problem::{Problem, table_into};
use crate::render::{RenderError, Renderer};
use crate::retry::RetryConfig;

/// What a sink type checks its settings against at load, and where it reports.
pub struct Check<'a> {
    /// The sink's name (`NAME` in `[sinks.NAME]`).
    pub name: &'a str,
    /// Where the sink compiles its templates.
    pub renderer: &'a mut Renderer,
    /// Every problem found, each named by its key.
    pub problems: &'a mut Vec<Problem>,
    /// One event (with its payload) of each shape ArcGIS sends, to render templates with.
    pub samples: &'a [(Event, String)],
}

impl Check<'_> {
    /// The key path of one of the sink's settings: `sinks.NAME.field`.
    pub fn key(&self, field: &str) -> String {
        format!("sinks.{}.{field}", self.name)
    }

    /// Records a problem with the sink's setting `field`.
    pub fn problem(&mut self, field: &str, message: impl Into<String>) {
        let key = self.key(field);
        self.problems.push(Problem::new(key, message));
    }

    /// Compiles an inline template under its own key path (`sinks.NAME.field`).
    pub fn template(&mut self, field: &str, text: &str) {
        let key = self.key(field);
        self.renderer.add_inline(&key, text, &key, self.problems);
    }
}

/// A sink type: its settings (deserialized from `[sinks.NAME]`) and what it does with them.
pub trait SinkType: DeserializeOwned + fmt::Debug + Clone + Send + Sync + 'static {
    /// The `type` value that selects it.
    const NAME: &'static str;

    /// Makes relative paths absolute against the config file's directory.
    fn resolve(&mut self, _base: &Path) {}

    /// Validates the settings and compiles their templates, naming each problem's key.
    fn check(&self, check: &mut Check<'_>);

    /// What the sink would send for `event`, for `hookbridge explain` (secrets hidden).
    fn preview(
        &self,
        name: &str,
        renderer: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError>;

    /// The running sink; nothing connects yet (`Sink::connect` does).
    fn build(&self, name: &str, renderer: &Renderer) -> Result<Arc<dyn Sink>, SinkError>;
}

/// The object-safe face of a [`SinkType`], so one config can hold sinks of every type.
trait Settings: fmt::Debug + Send + Sync {
    fn type_name(&self) -> &'static str;
    fn check(&self, check: &mut Check<'_>);
    fn preview(
        &self,
        name: &str,
        renderer: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError>;
    fn build(&self, name: &str, renderer: &Renderer) -> Result<Arc<dyn Sink>, SinkError>;
}

impl<T: SinkType> Settings for T {
    fn type_name(&self) -> &'static str {
        T::NAME
    }
    fn check(&self, check: &mut Check<'_>) {
        SinkType::check(self, check)
    }
    fn preview(
        &self,
        name: &str,
        renderer: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        SinkType::preview(self, name, renderer, event, payload)
    }
    fn build(&self, name: &str, renderer: &Renderer) -> Result<Arc<dyn Sink>, SinkError> {
        SinkType::build(self, name, renderer)
    }
}

/// One entry of the registry: a type name and how its table becomes settings.
pub struct TypeEntry {
    name: &'static str,
    parse: fn(toml::Table, &str, &Path) -> Result<SinkSettings, Vec<Problem>>,
}

impl TypeEntry {
    /// The registry entry of sink type `T`.
    pub const fn of<T: SinkType>() -> TypeEntry {
        TypeEntry {
            name: T::NAME,
            parse: parse::<T>,
        }
    }
}

/// Deserializes a `[sinks.NAME]` table (without `type` and `retry`) as `T`'s settings.
fn parse<T: SinkType>(
    table: toml::Table,
    key: &str,
    base: &Path,
) -> Result<SinkSettings, Vec<Problem>> {
    let mut settings: T = table_into(table, key)?;
    settings.resolve(base);
    Ok(SinkSettings(Arc::new(settings)))
}

/// A sink's type-specific settings, of whichever registered type.
#[derive(Debug, Clone)]
pub struct SinkSettings(Arc<dyn Settings>);

impl SinkSettings {
    /// Parses `[sinks.NAME]`: its `type`, its optional `retry`, and the type's own keys.
    pub fn from_table(
        name: &str,
        mut table: toml::Table,
        base: &Path,
        defaults: &RetryConfig,
    ) -> Result<(SinkSettings, RetryConfig), Vec<Problem>> {
        let key = format!("sinks.{name}");
        let types = || {
            super::TYPES
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let retry = match table.remove("retry") {
            Some(toml::Value::Table(t)) => table_into::<RetryConfig>(t, &format!("{key}.retry"))?,
            Some(_) => {
                return Err(vec![Problem::new(
                    format!("{key}.retry"),
                    "expected a table",
                )]);
            }
            None => *defaults,
        };
        let kind = match table.remove("type") {
            Some(toml::Value::String(s)) => s,
            Some(_) => {
                return Err(vec![Problem::new(
                    format!("{key}.type"),
                    "expected a string",
                )]);
            }
            None => {
                return Err(vec![Problem::new(
                    format!("{key}.type"),
                    format!("missing; expected one of {}", types()),
                )]);
            }
        };
        let Some(entry) = super::TYPES.iter().find(|k| k.name == kind) else {
            return Err(vec![Problem::new(
                format!("{key}.type"),
                format!("unknown sink type {kind:?}; expected one of {}", types()),
            )]);
        };
        Ok(((entry.parse)(table, &key, base)?, retry))
    }

    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        self.0.type_name()
    }

    /// Validates the settings and compiles their templates (see [`SinkType::check`]).
    pub fn check(&self, check: &mut Check<'_>) {
        self.0.check(check)
    }

    /// Checks the settings on their own (as the config loader does, with its sample events) and
    /// compiles their templates into `renderer`: how a sink is made outside a whole config.
    pub fn compile(
        &self,
        name: &str,
        renderer: &mut Renderer,
        samples: &[(Event, String)],
    ) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        self.check(&mut Check {
            name,
            renderer,
            problems: &mut problems,
            samples,
        });
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// What this sink would send for `event`, for `hookbridge explain`.
    pub fn preview(
        &self,
        name: &str,
        renderer: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        self.0.preview(name, renderer, event, payload)
    }

    /// Builds the running sink.
    pub fn build(&self, name: &str, renderer: &Renderer) -> Result<Arc<dyn Sink>, SinkError> {
        self.0.build(name, renderer)
    }
}

/// The problems `check` finds in `settings` for sink `name` (no sample events).
#[cfg(test)]
pub(crate) fn check_problems<T: SinkType>(
    name: &str,
    settings: &T,
    renderer: &mut Renderer,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    settings.check(&mut Check {
        name,
        renderer,
        problems: &mut problems,
        samples: &[],
    });
    problems
}
