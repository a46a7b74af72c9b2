//! The SMTP side of the email sink: the `smtp` URL, the pooled lettre transport, and how an
//! SMTP answer becomes a delivery outcome.

use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{Error as SmtpError, PoolConfig};
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use percent_encoding::percent_decode_str;

use crate::sinks::{Outcome, SinkError};

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// Plain text: only for a relay on the same host or network.
    None,
    /// STARTTLS, required: no credentials or mail cross an unencrypted connection.
    StartTls,
    /// STARTTLS when the server offers it, plain text otherwise.
    Opportunistic,
    /// Implicit TLS from the first byte (`smtps://`).
    Implicit,
}

/// Where and how to reach the SMTP server, parsed from the `smtp` URL and `user`/`password`.
pub(crate) struct SmtpTarget {
    /// Host name or address (also the name TLS certificates are checked against).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Transport security.
    pub tls: TlsMode,
    /// User name and password, when the server wants AUTH.
    credentials: Option<(String, String)>,
}

impl SmtpTarget {
    /// Parses `smtp://host[:port][?tls=starttls|opportunistic]` or `smtps://host[:port]`;
    /// `user`/`password` override credentials in the URL. Messages never repeat the URL (it may
    /// hold a password).
    pub fn parse(url: &str, user: Option<&str>, password: Option<&str>) -> Result<Self, String> {
        const EXPECTED: &str =
            "expected smtp://host:port, smtp://host:port?tls=starttls or smtps://host:port";
        let u = url::Url::parse(url).map_err(|e| format!("{EXPECTED}: {e}"))?;
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{EXPECTED}: the URL names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls_param = u
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.to_ascii_lowercase());
        let tls = match (u.scheme(), tls_param.as_deref()) {
            ("smtp", None | Some("none")) => TlsMode::None,
            ("smtp", Some("starttls" | "required")) => TlsMode::StartTls,
            ("smtp", Some("opportunistic")) => TlsMode::Opportunistic,
            ("smtps", None | Some("implicit" | "wrapper")) => TlsMode::Implicit,
            (scheme, Some(t)) if scheme == "smtp" || scheme == "smtps" => {
                return Err(format!(
                    "{EXPECTED}: unknown tls={t:?} (use starttls or opportunistic with smtp://)"
                ));
            }
            (scheme, _) => return Err(format!("{EXPECTED}: found scheme {scheme:?}")),
        };
        let port = u.port().unwrap_or(match tls {
            TlsMode::None => 25,
            TlsMode::StartTls | TlsMode::Opportunistic => 587,
            TlsMode::Implicit => 465,
        });
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let url_user = Some(decode(u.username())).filter(|s| !s.is_empty());
        let url_password = u.password().map(decode);
        let credentials = match (user.map(str::to_string).or(url_user), password) {
            (Some(user), Some(p)) => Some((user, p.to_string())),
            (Some(user), None) => match url_password {
                Some(p) => Some((user, p)),
                None => return Err("a user is set but no password".into()),
            },
            (None, Some(_)) => return Err("a password is set but no user".into()),
            (None, None) => None,
        };
        Ok(SmtpTarget {
            host,
            port,
            tls,
            credentials,
        })
    }

    /// `host:port`, for logs and error messages (never the credentials).
    pub fn display(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A pooled transport with `timeout` on every SMTP command.
    pub fn transport(
        &self,
        timeout: Duration,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, SinkError> {
        let tls = match self.tls {
            TlsMode::None => Tls::None,
            mode => {
                let params = TlsParameters::new(self.host.clone())
                    .map_err(|e| SinkError::Config(format!("TLS for {}: {e}", self.display())))?;
                match mode {
                    TlsMode::Implicit => Tls::Wrapper(params),
                    TlsMode::Opportunistic => Tls::Opportunistic(params),
                    _ => Tls::Required(params),
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .timeout(Some(timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(4)
                    .idle_timeout(Duration::from_secs(60)),
            );
        if let Some((user, password)) = &self.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }
}

/// Maps a failed send: 4xx → retry, 5xx → dead letter with the server's text, anything else
/// (refused, timed out, TLS, broken connection) → the server is unavailable.
pub(crate) fn classify(error: &SmtpError, server: &str) -> Result<Outcome, SinkError> {
    if error.is_transient() {
        Ok(Outcome::Retry(format!("SMTP server {server}: {error}")))
    } else if error.is_permanent() {
        Ok(Outcome::Reject(format!("SMTP server {server}: {error}")))
    } else {
        Err(SinkError::Unavailable(format!(
            "SMTP server {server}: {error}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = SmtpTarget::parse("smtp://127.0.0.1:2525", None, None).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("127.0.0.1", 2525, TlsMode::None)
        );
        assert!(t.credentials.is_none());
        let t = SmtpTarget::parse("smtp://mail.example.org?tls=starttls", Some("u"), Some("p"))
            .unwrap();
        assert_eq!((t.port, t.tls), (587, TlsMode::StartTls));
        assert_eq!(t.credentials, Some(("u".into(), "p".into())));
        let t = SmtpTarget::parse("smtps://bob:s%40cret@mail.example.org", None, None).unwrap();
        assert_eq!((t.port, t.tls), (465, TlsMode::Implicit));
        assert_eq!(t.credentials, Some(("bob".into(), "s@cret".into())));
        assert_eq!(t.display(), "mail.example.org:465");
        let t = SmtpTarget::parse("smtps://bob:url@mail.example.org", None, Some("cfg")).unwrap();
        assert_eq!(t.credentials, Some(("bob".into(), "cfg".into())));
    }

    #[test]
    fn bad_urls_do_not_echo_secrets() {
        for (url, want) in [
            ("http://u:hunter2@host", "scheme \"http\""),
            ("smtp://u:hunter2@host?tls=maybe", "unknown tls"),
            ("not a url hunter2", "expected smtp://"),
        ] {
            let e = SmtpTarget::parse(url, None, None).err().unwrap();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = SmtpTarget::parse("smtp://h", Some("u"), None)
            .err()
            .unwrap();
        assert!(e.contains("no password"), "{e}");
    }
}
