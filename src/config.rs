//! `routes.toml`: the schema, loading and whole-file validation with errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::problem::Problem;
use crate::problem::deserialize_with_path;
pub use crate::retry::{Backoff, RetryConfig};
pub use crate::secret::Secret;
pub use crate::tls::TlsConfig;
pub use crate::verify::AuthWay;

pub use crate::arcgis::HookKind;
use crate::arcgis::json::RedactPath;

use crate::enrich::{ConnectionConfig, SinkEnrich};
use crate::render::Renderer;
use crate::route::{RouteConfig, RouteTable};
use crate::sinks::{Check, SinkConfig};

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

/// `[hooks.NAME]`: one payload URL, `POST /hooks/NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The payload kind this hook accepts.
    #[serde(default = "default_kind")]
    pub kind: HookKind,
    /// Keys and shared secrets; any one may match (rotation). The first answers CRC challenges.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// The ways a delivery may authenticate; by default those the hook's kind of sender uses.
    pub auth: Option<Vec<AuthWay>>,
    /// Refuse unauthenticated deliveries; defaults to true when secrets are set.
    /// (`require_signature` is its older name.)
    #[serde(alias = "require_signature")]
    pub require_auth: Option<bool>,
    /// JSON paths removed from the payload before it is stored or sent (personal data).
    #[serde(default, deserialize_with = "redact_paths")]
    pub redact: Vec<RedactPath>,
}

impl HookConfig {
    /// Whether an unauthenticated delivery is refused.
    pub fn auth_required(&self) -> bool {
        self.require_auth.unwrap_or(!self.secrets.is_empty())
    }

    /// The ways a delivery may authenticate.
    pub fn auth_ways(&self) -> &[AuthWay] {
        match &self.auth {
            Some(ways) => ways,
            None => AuthWay::defaults(self.kind),
        }
    }
}

fn redact_paths<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<RedactPath>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|p| RedactPath::parse(p).map_err(serde::de::Error::custom))
        .collect()
}

fn default_kind() -> HookKind {
    HookKind::Auto
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to bind.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Native TLS; plain HTTP when absent (put a reverse proxy in front).
    pub tls: Option<TlsConfig>,
    /// Largest body accepted; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body: bytesize::ByteSize,
    /// Most events one delivery may hold; more get 413 before anything is parsed into events.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Bearer token for `/admin`; the admin API is off without one.
    pub admin_token: Option<Secret>,
    /// How long a graceful stop may take before in-flight work is abandoned (it stays queued).
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a client may take to send its headers, and then its body (slow clients get 408).
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tls: None,
            max_body: default_max_body(),
            max_events: default_max_events(),
            admin_token: None,
            shutdown_timeout: default_shutdown_timeout(),
            read_timeout: default_read_timeout(),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
/// Far above a real delivery (ArcGIS batches a feature service's changes per layer and change
/// type, and an organization event is one change), far below what a request may cost: see
/// docs/reliability.md, "Hostile load".
fn default_max_events() -> usize {
    10_000
}
fn default_max_body() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(1)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[storage]`: where the durable queue lives and how long it remembers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory (relative paths are relative to the config file).
    #[serde(default = "default_data")]
    pub path: PathBuf,
    /// How long an accepted event id is remembered to refuse retried deliveries.
    #[serde(default = "days7", with = "humantime_serde")]
    pub dedup_window: Duration,
    /// How long delivered events are kept (for status queries).
    #[serde(default = "day1", with = "humantime_serde")]
    pub keep_delivered: Duration,
    /// How long dead letters are kept before they are purged.
    #[serde(default = "days7", with = "humantime_serde")]
    pub keep_dead: Duration,
    /// Free space below which deliveries are refused with 503, so the store never fills up.
    #[serde(default = "default_min_free")]
    pub min_free: bytesize::ByteSize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: default_data(),
            dedup_window: days7(),
            keep_delivered: day1(),
            keep_dead: days7(),
            min_free: default_min_free(),
        }
    }
}

fn default_min_free() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(100)
}
fn default_data() -> PathBuf {
    PathBuf::from("./data")
}
fn day1() -> Duration {
    Duration::from_secs(86_400)
}
fn days7() -> Duration {
    Duration::from_secs(7 * 86_400)
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

/// A configured sink: its settings and its retry policy.
#[derive(Debug, Clone)]
pub struct SinkEntry {
    /// Type-specific settings.
    pub config: SinkConfig,
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
    pub sinks: BTreeMap<String, SinkEntry>,
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
        let raw: RawConfig = deserialize_with_path(text)?;
        let mut problems = Vec::new();

        let listen = match raw.server.listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                problems.push(Problem::new(
                    "server.listen",
                    format!(
                        "expected an address like 0.0.0.0:8080, found {:?}",
                        raw.server.listen
                    ),
                ));
                SocketAddr::from(([0, 0, 0, 0], 8080))
            }
        };
        if raw.server.max_body.as_u64() == 0 {
            problems.push(Problem::new("server.max_body", "must be larger than 0"));
        }
        if raw.server.max_events == 0 {
            problems.push(Problem::new("server.max_events", "must be at least 1"));
        }
        if let Some(token) = &raw.server.admin_token {
            let t = token.expose();
            if t.trim().is_empty() || t.chars().count() < MIN_ADMIN_TOKEN {
                problems.push(Problem::new(
                    "server.admin_token",
                    format!(
                        "must be at least {MIN_ADMIN_TOKEN} characters and not only whitespace \
                         (e.g. `openssl rand -hex 24`)"
                    ),
                ));
            }
        }
        let mut server = raw.server;
        if let Some(tls) = &mut server.tls {
            tls.cert = base.join(&tls.cert);
            tls.key = base.join(&tls.key);
            if let Err(e) = crate::tls::load(tls) {
                let (key, msg) = match &e {
                    crate::tls::TlsError::Cert(m) => ("server.tls.cert", m.clone()),
                    crate::tls::TlsError::Key(m) => ("server.tls.key", m.clone()),
                    crate::tls::TlsError::Config(m) => ("server.tls", m.clone()),
                };
                problems.push(Problem::new(key, msg));
            }
        }
        let mut storage = raw.storage;
        storage.path = base.join(&storage.path);

        for (name, hook) in &raw.hooks {
            if !valid_name(name) {
                problems.push(Problem::new(
                    format!("hooks.{name}"),
                    "a hook name may use only letters, digits, '-' and '_'",
                ));
            }
            if hook.require_auth == Some(true) && hook.secrets.is_empty() {
                problems.push(Problem::new(
                    format!("hooks.{name}.secrets"),
                    "require_auth is true but no secret is configured",
                ));
            }
            let explicit_url = hook.kind == HookKind::Survey123
                || hook
                    .auth
                    .as_ref()
                    .is_some_and(|w| w.contains(&AuthWay::UrlSecret));
            if explicit_url {
                for (i, secret) in hook.secrets.iter().enumerate() {
                    if !url_safe(secret.expose()) {
                        problems.push(Problem::new(
                            format!("hooks.{name}.secrets[{i}]"),
                            "a secret sent in the payload URL must use only A-Z a-z 0-9 - . _ ~ \
                             (it is compared exactly as it arrives, never percent-decoded)",
                        ));
                    }
                }
            }
            if hook.auth.as_ref().is_some_and(Vec::is_empty) {
                problems.push(Problem::new(
                    format!("hooks.{name}.auth"),
                    "lists no way; expected any of \"signature\", \"secret-header\", \"url-secret\"",
                ));
            }
        }

        let templates_dir = base.join(raw.templates.unwrap_or_else(|| PathBuf::from("templates")));
        let mut renderer = Renderer::new(templates_dir);
        let no_connection = raw.arcgis.is_empty();
        let mut arcgis = BTreeMap::new();
        for (name, table) in raw.arcgis {
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
        let mut enrich = BTreeMap::new();
        let mut sinks = BTreeMap::new();
        let raw_sinks_empty = raw.sinks.is_empty();
        let samples = crate::arcgis::samples::events();
        for (name, mut table) in raw.sinks {
            let key = format!("sinks.{name}");
            match SinkEnrich::take_from(&mut table, &key) {
                Ok(Some(_)) if no_connection => problems.push(Problem::new(
                    format!("{key}.enrich"),
                    "no [arcgis.NAME] connection is configured to fetch changes with",
                )),
                Ok(Some(e)) => {
                    enrich.insert(name.clone(), e);
                }
                Ok(None) => {}
                Err(p) => problems.extend(p),
            }
            if !valid_name(&name) {
                problems.push(Problem::new(
                    &key,
                    "a sink name may use only letters, digits, '-' and '_'",
                ));
            }
            match SinkConfig::from_table(&name, table, base, &raw.defaults.retry) {
                Ok((config, retry)) => {
                    config.check(&mut Check {
                        name: &name,
                        renderer: &mut renderer,
                        problems: &mut problems,
                        samples: &samples,
                    });
                    if retry.attempts == 0 {
                        problems.push(Problem::new(
                            format!("{key}.retry.attempts"),
                            "must be at least 1",
                        ));
                    }
                    sinks.insert(name, SinkEntry { config, retry });
                }
                Err(p) => problems.extend(p),
            }
        }
        if raw.defaults.retry.attempts == 0 {
            problems.push(Problem::new(
                "defaults.retry.attempts",
                "must be at least 1",
            ));
        }

        let sink_names = sinks.keys().map(String::as_str).collect();
        let routes = match RouteTable::build(&raw.routes, &sink_names) {
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
            Err(problems)
        }
    }
}

/// Shortest admin token accepted: it guards replay, purge and pause over the network.
const MIN_ADMIN_TOKEN: usize = 16;

/// Whether a secret can travel in a URL as it is.
fn url_safe(secret: &str) -> bool {
    secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `name` is a safe hook or sink name (it appears in URLs, keys and metric labels).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink and a route, so that a test's hooks make a complete config.
    const SINK_AND_ROUTE: &str =
        "\n[sinks.s]\ntype = \"file\"\npath = \"x.jsonl\"\n[[routes]]\nmatch = {}\nto = [\"s\"]\n";

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(Path::new("routes.toml"), text) {
            Ok(_) => vec![],
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn the_default_routes_toml_is_valid() {
        let text = include_str!("../routes.toml");
        let cfg = Config::parse(Path::new("routes.toml"), text).unwrap();
        assert!(cfg.sinks.contains_key("log"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let p = problems("[server]\nlisten = \"127.0.0.1:1\"\nlissten = 3\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("server"), "{p:?}");
        assert!(p[0].contains("lissten"), "{p:?}");
        assert!(p[0].contains("line 3"), "{p:?}");
    }

    #[test]
    fn an_empty_top_level_key_is_still_named() {
        // Found by the config_load fuzzer: the problem's key was "".
        let p = Config::parse(Path::new("routes.toml"), "\n\"\" = 99").unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "(file)");
        assert_eq!(p[0].line, Some(2));
    }

    #[test]
    fn bad_duration_names_the_key() {
        let p = problems("[storage]\ndedup_window = \"seven days\"\n");
        assert!(p[0].starts_with("storage.dedup_window"), "{p:?}");
    }

    #[test]
    fn missing_env_secret_names_the_key() {
        let p = problems(
            "[hooks.portal]\nkind = \"portal\"\nsecrets = [\"env:HOOKBRIDGE_TEST_UNSET\"]\n",
        );
        assert!(p[0].starts_with("hooks.portal.secrets[0]"), "{p:?}");
        assert!(p[0].contains("HOOKBRIDGE_TEST_UNSET is not set"), "{p:?}");
    }

    #[test]
    fn every_semantic_problem_is_listed() {
        let p = problems(
            r#"
[server]
listen = "nowhere"
[hooks."bad/name"]
kind = "portal"
[hooks.p]
require_signature = true
[sinks.log]
type = "file"
path = "x.jsonl"
[[routes]]
match = { colour = "red" }
to = ["nope"]
"#,
        );
        let all = p.join("\n");
        assert!(all.contains("server.listen"), "{all}");
        assert!(all.contains("hooks.bad/name"), "{all}");
        assert!(all.contains("hooks.p.secrets"), "{all}");
        assert!(all.contains("routes[0].to"), "{all}");
        assert!(all.contains("routes[0].match.colour"), "{all}");
    }

    #[test]
    fn hook_auth_ways_are_checked() {
        let p = problems("[hooks.s]\nkind = \"survey123\"\nsecrets = [\"a+b/c\"]\n");
        assert!(p[0].starts_with("hooks.s.secrets[0]"), "{p:?}");
        let p = problems("[hooks.s]\nauth = [\"carrier-pigeon\"]\n");
        assert!(p[0].starts_with("hooks.s.auth"), "{p:?}");
        assert!(p[0].contains("secret-header"), "{p:?}");
        let p = problems("[hooks.s]\nauth = []\nsecrets = [\"k\"]\n");
        assert!(p[0].starts_with("hooks.s.auth"), "{p:?}");
        let p = problems("[hooks.s]\nredact = [\"a..b\"]\n");
        assert!(p[0].starts_with("hooks.s.redact"), "{p:?}");
        let cfg = Config::parse(
            Path::new("routes.toml"),
            &format!("[hooks.a]\nkind = \"portal\"\nsecrets = [\"k\"]\nrequire_signature = false\n[hooks.b]\nkind = \"survey123\"\n{SINK_AND_ROUTE}"),
        )
        .unwrap();
        assert!(!cfg.hooks["a"].auth_required());
        assert_eq!(
            cfg.hooks["a"].auth_ways(),
            &[AuthWay::Signature, AuthWay::SecretHeader]
        );
        assert_eq!(cfg.hooks["b"].auth_ways(), &[AuthWay::UrlSecret]);
    }

    #[test]
    fn weak_admin_tokens_and_zero_limits_are_refused() {
        for token in ["x", "                    ", "short-token-15c"] {
            let p = problems(&format!("[server]\nadmin_token = {token:?}\n"));
            assert!(p[0].starts_with("server.admin_token"), "{token:?}: {p:?}");
            assert!(!p[0].contains("short-token-15c"), "echoes the token: {p:?}");
        }
        let good =
            format!("[server]\nadmin_token = \"0123456789abcdef\"\n[hooks.h]{SINK_AND_ROUTE}");
        assert!(problems(&good).is_empty(), "{:?}", problems(&good));
        let p = problems("[server]\nmax_events = 0\n");
        assert!(p[0].starts_with("server.max_events"), "{p:?}");
    }

    #[test]
    fn an_empty_or_truncated_file_is_refused() {
        let all = problems("").join("\n");
        for key in ["hooks:", "sinks:", "routes:"] {
            assert!(all.contains(key), "{all}");
        }
        let p = problems("[server]\nlisten = \"127.0.0.1:8080\"\n[hooks.h]\n");
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn unknown_sink_type_is_named() {
        let p = problems("[sinks.x]\ntype = \"carrier-pigeon\"\n");
        assert!(p[0].starts_with("sinks.x.type"), "{p:?}");
    }
}
