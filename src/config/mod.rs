//! `routes.toml`: the schema, loading and whole-file validation with errors that name the key.

mod hooks;
mod server;
mod sinks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use hooks::{HookConfig, valid_name};
pub use server::ServerConfig;

pub use crate::problem::Problem;
use crate::problem::deserialize_collecting;
pub use crate::queue::StorageConfig;
pub use crate::retry::{Backoff, RetryConfig};
pub use crate::secret::Secret;
pub use crate::senders::{AuthWay, HookKind};
pub use crate::tls::TlsConfig;

use crate::enrich::{ConnectionConfig, SinkEnrich};
use crate::render::{Renderer, TimeZone};
use crate::route::{RouteConfig, RouteTable};
use crate::senders::{self, Headers, Limits, ParseError, Prepared, Request};
use crate::sinks::SinkSettings;

/// Why a config could not be loaded: every problem found, in file order where possible.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is invalid.
    #[error("{} problem(s) in {}:\n{}", problems.len(), path.display(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The config path.
        path: PathBuf,
        /// Each problem found.
        problems: Vec<Problem>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default)]
    retry: RetryConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    storage: StorageConfig,
    templates: Option<PathBuf>,
    templates_timezone: Option<String>,
    #[serde(default)]
    hooks: BTreeMap<String, HookConfig>,
    #[serde(default)]
    sinks: BTreeMap<String, toml::Table>,
    #[serde(default)]
    arcgis: BTreeMap<String, toml::Table>,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    routes: Vec<RouteConfig>,
}

/// `[arcgis.NAME]`: the connections the change feed fetches with.
fn connections(
    tables: BTreeMap<String, toml::Table>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, ConnectionConfig> {
    let mut arcgis = BTreeMap::new();
    for (name, table) in tables {
        if !valid_name(&name) {
            problems.push(Problem::new(
                format!("arcgis.{name}"),
                "a connection name may use only letters, digits, '-' and '_'",
            ));
        }
        match ConnectionConfig::from_table(&name, table) {
            Ok(c) => {
                arcgis.insert(name, c);
            }
            Err(p) => problems.extend(p),
        }
    }
    arcgis
}

/// `templates_timezone`: the IANA time zone (`Europe/Berlin`) templates print local times in,
/// UTC when unset; a name the time zone database does not hold is a problem, with the closest.
fn timezone(name: Option<&str>, problems: &mut Vec<Problem>) -> TimeZone {
    let Some(name) = name else {
        return TimeZone::UTC;
    };
    if let Ok(zone) = TimeZone::get(name) {
        return zone;
    }
    let closest = jiff::tz::db()
        .available()
        .map(|n| (strsim::jaro_winkler(name, n.as_str()), n))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| format!(" (did you mean {:?}?)", n.as_str()))
        .unwrap_or_default();
    problems.push(Problem::new(
        "templates_timezone",
        format!(
            "{name:?} is not a time zone the IANA database names{closest}; expected a name such \
             as \"Europe/Berlin\", \"America/New_York\" or \"UTC\""
        ),
    ));
    TimeZone::UTC
}

/// A configured sink: its settings and its retry policy.
#[derive(Debug, Clone)]
pub struct ConfiguredSink {
    /// Type-specific settings.
    pub settings: SinkSettings,
    /// Retry policy (the sink's own or the defaults).
    pub retry: RetryConfig,
}

/// A loaded, validated configuration: nothing starts until this exists.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// The parsed listen address.
    pub listen: SocketAddr,
    /// `[storage]`, with `path` made absolute against the config directory.
    pub storage: StorageConfig,
    /// `[hooks.*]`.
    pub hooks: BTreeMap<String, HookConfig>,
    /// `[sinks.*]`.
    pub sinks: BTreeMap<String, ConfiguredSink>,
    /// `[[routes]]`, compiled.
    pub routes: RouteTable,
    /// `[arcgis.*]`: connections for reading change files.
    pub arcgis: BTreeMap<String, ConnectionConfig>,
    /// The sinks that want feature-service changes, and how.
    pub enrich: BTreeMap<String, SinkEnrich>,
    /// Every template (sink fields and email templates), compiled.
    pub renderer: Renderer,
}

impl Config {
    /// A payload's events as hook `name` takes them under this config: the hook's kind and
    /// `redact` paths, and `server.max_events`. The one path the ingress and `explain` share.
    /// `admit` is asked, with the event count, whether that many may be built now.
    pub fn prepare(
        &self,
        name: &str,
        hook: &HookConfig,
        headers: &dyn Headers,
        json: &[u8],
        admit: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Prepared, ParseError> {
        let limits = Limits {
            redact: &hook.redact,
            max_events: self.server.max_events,
        };
        let request = Request {
            hook: name,
            headers,
            paths: hook.json.as_ref(),
        };
        senders::prepare(hook.kind, &request, json, limits, admit)
    }

    /// The hooks that are reconciled, with their service, layers and schedule.
    pub fn reconciled(&self) -> Vec<crate::enrich::reconcile::Reconciled> {
        self.hooks
            .iter()
            .filter_map(|(name, h)| {
                Some(crate::enrich::reconcile::Reconciled {
                    hook: name.clone(),
                    service: h.service.clone()?,
                    layers: h.layers.clone(),
                    every: h.reconcile.as_ref()?.every,
                    webhook: h.webhook,
                })
            })
            .collect()
    }

    /// Every ArcGIS webhook resource a hook watches: hook, URL, how often.
    pub fn watched_webhooks(&self) -> Vec<crate::enrich::webhooks::Watched> {
        self.hooks
            .iter()
            .flat_map(|(name, h)| {
                let every = h
                    .watch_every
                    .unwrap_or(crate::enrich::webhooks::DEFAULT_EVERY);
                h.webhooks
                    .iter()
                    .map(move |url| crate::enrich::webhooks::Watched {
                        hook: name.clone(),
                        url: url.clone(),
                        every,
                    })
            })
            .collect()
    }

    /// What is allowed but unwise (plain-http ArcGIS services off loopback): `check` prints
    /// these, and `serve` logs them at start.
    pub fn warnings(&self) -> Vec<Problem> {
        self.arcgis
            .iter()
            .flat_map(|(name, c)| c.warnings(name))
            .collect()
    }

    /// Reads, parses and validates `path`, collecting every problem found.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text).map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Parses and validates config text; `path` anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Problem>> {
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // Every wrong value is found, not only the first: a missing environment variable is one
        // problem among the others.
        let (raw, mut problems) = deserialize_collecting::<RawConfig>(text);
        let Some(raw) = raw else {
            return Err(located(problems, text));
        };
        let read_wrong: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();

        let mut server = raw.server;
        let listen = server.check(base, &mut problems);
        let mut storage = raw.storage;
        storage.path = base.join(&storage.path);
        hooks::check(&raw.hooks, &mut problems);

        let templates_dir = base.join(raw.templates.unwrap_or_else(|| PathBuf::from("templates")));
        let zone = timezone(raw.templates_timezone.as_deref(), &mut problems);
        let mut renderer =
            Renderer::in_zone(templates_dir, &zone).with_builtins(crate::senders::templates());
        let no_connection = raw.arcgis.is_empty();
        let arcgis = connections(raw.arcgis, &mut problems);
        for (name, hook) in &raw.hooks {
            let unserved = hook.reconcile.is_some()
                && hook
                    .service
                    .as_ref()
                    .is_some_and(|s| !arcgis.values().any(|c| c.serves(s)));
            if unserved {
                problems.push(Problem::new(
                    format!("hooks.{name}.service"),
                    "no [arcgis.*] connection lists a services prefix for it; reconciliation reads it with that connection's token",
                ));
            }
            for (i, url) in hook.webhooks.iter().enumerate() {
                if !arcgis.values().any(|c| c.serves(url)) {
                    problems.push(Problem::new(
                        format!("hooks.{name}.webhooks[{i}]"),
                        "no [arcgis.*] connection lists a services prefix for it; add the admin URL's prefix to its services",
                    ));
                }
            }
        }
        let raw_sinks_empty = raw.sinks.is_empty();
        let declared_sinks: Vec<String> = raw.sinks.keys().cloned().collect();
        let (sinks, enrich) = sinks::load(
            raw.sinks,
            &sinks::Context {
                base,
                defaults: &raw.defaults.retry,
                no_connection,
            },
            &mut renderer,
            &mut problems,
        );
        if raw.defaults.retry.attempts == 0 {
            problems.push(Problem::new(
                "defaults.retry.attempts",
                "must be at least 1",
            ));
        }

        // A sink table with a problem still exists for the routes that name it.
        let sink_names = declared_sinks.iter().map(String::as_str).collect();
        let routes = match RouteTable::build(&raw.routes, &sink_names, &senders::kinds()) {
            Ok(t) => t,
            Err(p) => {
                problems.extend(p);
                RouteTable::default()
            }
        };
        // An empty or truncated file must never be swapped in: every hook would answer 404.
        for (key, empty, what) in [
            (
                "hooks",
                raw.hooks.is_empty(),
                "no hook: add a [hooks.NAME] table",
            ),
            (
                "sinks",
                sinks.is_empty() && raw_sinks_empty,
                "no sink: add a [sinks.NAME] table",
            ),
            (
                "routes",
                raw.routes.is_empty(),
                "no route: add a [[routes]] table",
            ),
        ] {
            if empty {
                problems.push(Problem::new(key, format!("the config has {what}")));
            }
        }

        // A stand-in for a wrong value must not be reported again by a later check.
        let later = problems.split_off(read_wrong.len());
        problems.extend(
            later
                .into_iter()
                .filter(|p| !read_wrong.iter().any(|k| p.key.starts_with(k.as_str()))),
        );
        if problems.is_empty() {
            Ok(Config {
                path: path.to_path_buf(),
                server,
                listen,
                storage,
                hooks: raw.hooks,
                sinks,
                routes,
                renderer,
                arcgis,
                enrich,
            })
        } else {
            Err(located(problems, text))
        }
    }
}

/// `problems` in file order, with a line found for those that have none (the sink and
/// connection tables are checked apart from the text): the line of the key's next part within
/// its table, else the table's header.
fn located(mut problems: Vec<Problem>, text: &str) -> Vec<Problem> {
    for p in problems.iter_mut().filter(|p| p.line.is_none()) {
        p.line = crate::problem::line_of(text, &p.key);
    }
    // In file order; problems of the file as a whole last.
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    problems
}

#[cfg(test)]
mod tests;
