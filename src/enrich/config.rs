//! `[arcgis.NAME]` connections and the sink keys that ask for changes, validated at load.

use std::time::Duration;

use serde::Deserialize;

use crate::problem::{Problem, table_into};
use crate::secret::Secret;

/// `[arcgis.NAME]`: how hookbridge signs in to ArcGIS to read change files, and where it may.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// URL prefixes of the feature services this connection reads; the token is sent to no
    /// other URL, so a payload cannot lure it elsewhere.
    pub services: Vec<String>,
    /// The portal that issues tokens (`https://www.arcgis.com`, `https://gis.example.com/portal`).
    pub portal: Option<String>,
    /// An API key or long-lived token (`env:NAME`).
    pub token: Option<Secret>,
    /// OAuth2 app credentials: the client id.
    pub client_id: Option<String>,
    /// OAuth2 app credentials: the client secret (`env:NAME`).
    pub client_secret: Option<Secret>,
    /// A named user for `generateToken` (ArcGIS Enterprise).
    pub username: Option<String>,
    /// That user's password (`env:NAME`).
    pub password: Option<Secret>,
    /// How long one HTTP call to ArcGIS may take.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// The first wait between job status polls; it doubles up to `max_poll_interval`.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The longest wait between job status polls.
    #[serde(default = "default_max_poll", with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// How long a job may stay unfinished before the fetch counts as failed.
    #[serde(default = "default_job_timeout", with = "humantime_serde")]
    pub job_timeout: Duration,
    /// The largest change file read; a larger one dead-letters its event.
    #[serde(default = "default_max_change_file")]
    pub max_change_file: bytesize::ByteSize,
    /// Failed fetches (errors ArcGIS reports, not outages) before the event is given up.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// How long an event's change file may stay unavailable (outages, timeouts, 5xx) before it
    /// is given up: then each sink dead-letters it or delivers it unenriched, as it chose.
    #[serde(default = "default_give_up_after", with = "humantime_serde")]
    pub give_up_after: Duration,
    /// Lifetime asked for OAuth2 and generateToken tokens.
    #[serde(default = "default_token_lifetime", with = "humantime_serde")]
    pub token_lifetime: Duration,
}

fn default_fetch_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_poll() -> Duration {
    Duration::from_millis(500)
}
fn default_max_poll() -> Duration {
    Duration::from_secs(10)
}
fn default_job_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_max_change_file() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(64)
}
fn default_attempts() -> u32 {
    5
}
fn default_give_up_after() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn default_token_lifetime() -> Duration {
    Duration::from_secs(2 * 3600)
}

/// How a connection gets its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `token`: used as it is.
    Static,
    /// `client_id` + `client_secret`: the OAuth2 client-credentials grant.
    App,
    /// `username` + `password`: `generateToken`.
    User,
}

impl ConnectionConfig {
    /// Parses and checks `[arcgis.NAME]`, naming the key of each problem.
    pub fn from_table(name: &str, table: toml::Table) -> Result<Self, Vec<Problem>> {
        let key = format!("arcgis.{name}");
        let c: ConnectionConfig = table_into(table, &key)?;
        let mut p = c.check_services(&key);
        p.extend(c.check_credentials(&key));
        p.extend(c.check_limits(&key));
        if p.is_empty() { Ok(c) } else { Err(p) }
    }

    /// `services`: at least one http(s) URL prefix with a path, without credentials, query
    /// or fragment.
    fn check_services(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.services.is_empty() {
            p.push(Problem::new(
                format!("{key}.services"),
                "is empty; expected the URL prefixes of the feature services to read, \
                 e.g. [\"https://services.arcgis.com/ORGID/\"]",
            ));
        }
        for (i, s) in self.services.iter().enumerate() {
            if let Err(e) = ServicePrefix::parse(s) {
                p.push(Problem::new(format!("{key}.services[{i}]"), e));
            }
        }
        p
    }

    /// Exactly one way to sign in, each pair whole, no empty secret, and a portal unless a token is given.
    fn check_credentials(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let ways = [
            self.token.is_some(),
            self.client_id.is_some() || self.client_secret.is_some(),
            self.username.is_some() || self.password.is_some(),
        ];
        match ways.iter().filter(|w| **w).count() {
            0 => p.push(Problem::new(
                key,
                "no credentials; set token, or client_id and client_secret, or username and password",
            )),
            1 => {}
            _ => p.push(Problem::new(
                key,
                "set only one of token, client_id/client_secret, username/password",
            )),
        }
        let pairs = [
            (
                "client_id",
                self.client_id.is_some(),
                "client_secret",
                self.client_secret.is_some(),
            ),
            (
                "username",
                self.username.is_some(),
                "password",
                self.password.is_some(),
            ),
        ];
        for (a, has_a, b, has_b) in pairs {
            if has_a && !has_b {
                p.push(Problem::new(
                    format!("{key}.{b}"),
                    format!("missing; {a} needs it"),
                ));
            }
            if has_b && !has_a {
                p.push(Problem::new(
                    format!("{key}.{a}"),
                    format!("missing; {b} needs it"),
                ));
            }
        }
        for (field, secret) in [
            ("token", &self.token),
            ("client_secret", &self.client_secret),
            ("password", &self.password),
        ] {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose().trim().is_empty())
            {
                p.push(Problem::new(format!("{key}.{field}"), "is empty"));
            }
        }
        if self.token.is_none() {
            match &self.portal {
                None => p.push(Problem::new(
                    format!("{key}.portal"),
                    "missing; expected the portal that issues tokens, e.g. \"https://www.arcgis.com\"",
                )),
                Some(u) if !is_http_url(u) => p.push(Problem::new(
                    format!("{key}.portal"),
                    format!("expected an http(s) URL, found {u:?}"),
                )),
                Some(_) => {}
            }
        }
        p
    }

    /// Attempts, the change file cap and the timeouts are above zero.
    fn check_limits(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.attempts == 0 {
            p.push(Problem::new(
                format!("{key}.attempts"),
                "must be at least 1",
            ));
        }
        if self.max_change_file.as_u64() == 0 {
            p.push(Problem::new(
                format!("{key}.max_change_file"),
                "must be larger than 0",
            ));
        }
        for (field, d) in [
            ("fetch_timeout", self.fetch_timeout),
            ("poll_interval", self.poll_interval),
            ("job_timeout", self.job_timeout),
            ("give_up_after", self.give_up_after),
        ] {
            if d.is_zero() {
                p.push(Problem::new(
                    format!("{key}.{field}"),
                    "must be longer than 0",
                ));
            }
        }
        p
    }

    /// Which way this connection signs in (validated: exactly one is set).
    pub fn auth(&self) -> Auth {
        if self.token.is_some() {
            Auth::Static
        } else if self.client_id.is_some() {
            Auth::App
        } else {
            Auth::User
        }
    }

    /// Whether the token may be sent to `url`: it lies under one of `services` (see
    /// [`ServicePrefix::covers`]).
    pub fn serves(&self, url: &str) -> bool {
        url::Url::parse(url).is_ok_and(|u| self.serves_url(&u))
    }

    /// [`ConnectionConfig::serves`] for a parsed URL: the URL that is then sent.
    pub fn serves_url(&self, url: &url::Url) -> bool {
        self.services
            .iter()
            .filter_map(|s| ServicePrefix::parse(s).ok())
            .any(|s| s.covers(url))
    }

    /// What `check` says but does not refuse: a `services` entry over plain `http` off
    /// loopback sends the token unencrypted.
    pub fn warnings(&self, name: &str) -> Vec<Problem> {
        self.services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, ServicePrefix::parse(s).ok()?)))
            .filter(|(_, s)| s.scheme == "http" && !s.loopback())
            .map(|(i, _)| {
                Problem::new(
                    format!("arcgis.{name}.services[{i}]"),
                    "plain http off loopback: the ArcGIS token would cross the network unencrypted",
                )
            })
            .collect()
    }
}

/// A `services` entry, parsed: the token goes only to URLs of this scheme, host and port whose
/// path starts with these segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePrefix {
    scheme: String,
    host: String,
    port: u16,
    segments: Vec<String>,
}

impl ServicePrefix {
    /// Parses an entry: an http(s) URL with a host and a path, no credentials, query or fragment.
    pub fn parse(text: &str) -> Result<ServicePrefix, String> {
        let url = url::Url::parse(text)
            .map_err(|e| format!("expected an http(s) URL prefix, found {text:?} ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("expected an http(s) URL prefix, found {text:?}"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not hold a user name or password".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not hold a query or fragment".into());
        }
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(format!(
                "expected an http(s) URL prefix with a host, found {text:?}"
            ));
        };
        let segments = segments(&url).ok_or_else(|| format!("not a URL prefix: {text:?}"))?;
        if segments.is_empty() {
            return Err(format!(
                "needs a path (the organization or service, e.g. \"https://services.arcgis.com/ORGID/\"), \
                 so that the token goes to no other service of {host}"
            ));
        }
        Ok(ServicePrefix {
            scheme: url.scheme().to_string(),
            host: host.to_string(),
            port,
            segments,
        })
    }

    /// Whether `url` lies under this prefix: the same scheme, host and port; no credentials;
    /// its path, after dot segments are resolved (the URL parser does, `%2e` too), starts with
    /// the prefix's segments; and no encoded `/` or `\\` that a server might split on.
    pub fn covers(&self, url: &url::Url) -> bool {
        let encoded_separator = ["%2f", "%5c"]
            .iter()
            .any(|s| url.path().to_ascii_lowercase().contains(s));
        let Some(path) = segments(url) else {
            return false;
        };
        url.scheme() == self.scheme
            && url.username().is_empty()
            && url.password().is_none()
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == Some(self.port)
            && !encoded_separator
            && path.len() >= self.segments.len()
            && path.iter().zip(&self.segments).all(|(a, b)| a == b)
    }

    /// Whether the host is this machine.
    fn loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// A URL's path segments, without the empty one a trailing `/` leaves.
fn segments(url: &url::Url) -> Option<Vec<String>> {
    let mut out: Vec<String> = url.path_segments()?.map(str::to_string).collect();
    if out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    Some(out)
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// What a sink does with a feature-service event's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// One message per event, with `properties.changes`.
    None,
    /// One message per added, updated or deleted feature.
    Feature,
}

/// What a sink does when the changes cannot be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Dead-letter the delivery with the reason (`dlq replay` fetches again).
    DeadLetter,
    /// Send the event without changes, with `properties.changesError`.
    DeliverUnenriched,
}

/// A sink's `enrich`, `split` and `on_enrich_failure` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkEnrich {
    /// Per event or per feature.
    pub split: Split,
    /// On a failed fetch.
    pub on_failure: OnFailure,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSinkEnrich {
    enrich: Option<String>,
    split: Option<Split>,
    on_enrich_failure: Option<OnFailure>,
}

impl SinkEnrich {
    /// Takes the enrichment keys out of `[sinks.NAME]` (the rest is the sink type's).
    pub fn take_from(table: &mut toml::Table, key: &str) -> Result<Option<Self>, Vec<Problem>> {
        let mut mine = toml::Table::new();
        for k in ["enrich", "split", "on_enrich_failure"] {
            if let Some(v) = table.remove(k) {
                mine.insert(k.to_string(), v);
            }
        }
        if mine.is_empty() {
            return Ok(None);
        }
        let raw: RawSinkEnrich = table_into(mine, key)?;
        match raw.enrich.as_deref() {
            Some("changes") => Ok(Some(SinkEnrich {
                split: raw.split.unwrap_or(Split::None),
                on_failure: raw.on_enrich_failure.unwrap_or(OnFailure::DeadLetter),
            })),
            Some(other) => Err(vec![Problem::new(
                format!("{key}.enrich"),
                format!("unknown value {other:?}; expected \"changes\""),
            )]),
            None => Err(vec![Problem::new(
                format!("{key}.enrich"),
                "missing; split and on_enrich_failure need enrich = \"changes\"",
            )]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConnectionConfig, Vec<String>> {
        let t: toml::Table = toml::from_str(text).unwrap();
        ConnectionConfig::from_table("online", t)
            .map_err(|p| p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn problems_name_their_key() {
        let e = parse("services = [\"https://s/a/\"]\nportal = \"https://p\"\nclient_id = \"x\"\n")
            .unwrap_err();
        assert!(
            e.iter()
                .any(|p| p.starts_with("arcgis.online.client_secret")),
            "{e:?}"
        );
        let e = parse("services = []\ntoken = \"t\"\n").unwrap_err();
        assert!(e[0].starts_with("arcgis.online.services"), "{e:?}");
        let e = parse("services = [\"https://s/a/\"]\nusername = \"u\"\npassword = \"p\"\n")
            .unwrap_err();
        assert!(e[0].starts_with("arcgis.online.portal"), "{e:?}");
        let e = parse("services = [\"https://s/a/\"]\n").unwrap_err();
        assert!(e[0].contains("no credentials"), "{e:?}");
        let c = parse("services = [\"https://s/a/\"]\ntoken = \"t\"\n").unwrap();
        assert_eq!(c.auth(), Auth::Static);
        assert!(c.serves("https://s/a/x") && !c.serves("https://evil/a/x"));
    }

    #[test]
    fn services_match_the_parsed_url_by_segments() {
        let c = parse(
            "services = [\"https://services.arcgis.com/ORG/\", \"http://localhost:7/rest/services\"]\ntoken = \"t\"\n",
        )
        .unwrap();
        for good in [
            "https://services.arcgis.com/ORG/arcgis/rest/services/x/FeatureServer/extractChanges?a=1",
            "https://services.arcgis.com:443/ORG/x",
            "https://SERVICES.arcgis.com/ORG/x",
            "http://localhost:7/rest/services/a/b",
        ] {
            assert!(c.serves(good), "{good}");
        }
        for bad in [
            "https://services.arcgis.com/ORG/../OTHER/x",
            "https://services.arcgis.com/ORG/%2e%2e/OTHER/x",
            "https://services.arcgis.com/ORG/%2E./OTHER/x",
            "https://services.arcgis.com/ORG/..\\OTHER/x",
            "https://services.arcgis.com/ORG%2F..%2FOTHER/x",
            "https://services.arcgis.com/ORGX/x",
            "https://services.arcgis.com/OTHER/ORG/x",
            "https://services.arcgis.com.evil.example/ORG/x",
            "http://services.arcgis.com/ORG/x",
            "https://services.arcgis.com:8443/ORG/x",
            "https://user@services.arcgis.com/ORG/x",
            "http://localhost@127.0.0.1:7/rest/services/x",
            "http://localhost:8/rest/services/x",
            "http://localhost:7/rest/servicesX/x",
            "http://localhost:7/rest/x",
            "not a url",
        ] {
            assert!(!c.serves(bad), "{bad}");
        }
        assert!(c.warnings("online").is_empty());
    }

    #[test]
    fn services_entries_are_checked() {
        for (entry, says) in [
            ("https://services.arcgis.com", "needs a path"),
            ("https://services.arcgis.com/", "needs a path"),
            (
                "https://u:p@services.arcgis.com/ORG/",
                "user name or password",
            ),
            ("https://services.arcgis.com/ORG/?x=1", "query or fragment"),
            ("ftp://services.arcgis.com/ORG/", "http(s)"),
        ] {
            let e = parse(&format!("services = [\"{entry}\"]\ntoken = \"t\"\n")).unwrap_err();
            assert!(
                e[0].starts_with("arcgis.online.services[0]") && e[0].contains(says),
                "{entry}: {e:?}"
            );
        }
        let c = parse("services = [\"http://gis.example/ORG/\"]\ntoken = \"t\"\n").unwrap();
        assert!(c.warnings("online")[0].to_string().contains("plain http"));
    }

    #[test]
    fn sink_keys_are_taken_and_checked() {
        let mut t: toml::Table =
            toml::from_str("type = \"file\"\nenrich = \"changes\"\nsplit = \"feature\"\n").unwrap();
        let e = SinkEnrich::take_from(&mut t, "sinks.f").unwrap().unwrap();
        assert_eq!(e.split, Split::Feature);
        assert_eq!(e.on_failure, OnFailure::DeadLetter);
        assert_eq!(t.len(), 1);
        let mut t: toml::Table = toml::from_str("split = \"feature\"\n").unwrap();
        let p = SinkEnrich::take_from(&mut t, "sinks.f").unwrap_err();
        assert!(p[0].to_string().starts_with("sinks.f.enrich"), "{p:?}");
    }
}
