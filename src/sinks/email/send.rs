//! The running email sink: the SMTP server (from the `smtp` URL), its pooled lettre transport,
//! and sending one mail per event or one per digest window.

use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use percent_encoding::percent_decode_str;

use super::encode::{RenderedMail, digest_context, render_mail, single_context, template_for};
use super::errors::{classify, no_answer, unfinished};
use crate::clock::now_ms;
use crate::event::Delivery;
use crate::render::Renderer;
use crate::sinks::{Outcome, Sink, SinkError};

/// Largest digest: the dispatcher hands the whole window over at once.
pub(super) const DIGEST_BATCH: usize = 1000;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsMode {
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
pub(super) struct SmtpTarget {
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

/// Sends templated mail through a pooled SMTP connection.
pub(super) struct EmailSink {
    pub(super) name: String,
    /// The `from`, `to`, `cc` and `bcc` settings, literal or templates, in `ADDRESS_FIELDS`
    /// order (`from` as a list of one).
    pub(super) addresses: [Vec<String>; 4],
    /// The `template` setting: one template base name for every mail.
    pub(super) template: Option<String>,
    /// The `digest` window: one mail per window instead of one per event.
    pub(super) digest: Option<Duration>,
    /// The SMTP timeout for connecting and each command; a whole mail may take twice this.
    pub(super) timeout: Duration,
    pub(super) renderer: Renderer,
    /// `host:port`, for messages.
    pub(super) server: String,
    /// The right-hand side of Message-IDs.
    pub(super) domain: String,
    pub(super) transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl EmailSink {
    /// Renders a mail; a failure is the payload's fault and is not going to change on retry.
    fn compose(
        &self,
        kind: &str,
        ctx: &tera::Context,
        message_id: String,
    ) -> Result<lettre::Message, String> {
        let t = template_for(self.template.as_deref(), self.digest.is_some(), kind);
        let addresses = self.addresses.each_ref().map(Vec::as_slice);
        let mail: RenderedMail = render_mail(&self.name, addresses, t, &self.renderer, ctx)
            .map_err(|e| e.to_string())?;
        mail.message(message_id)
    }

    /// Sends one message and maps the server's answer. The whole exchange is bounded too
    /// (twice `timeout`): a server that stops answering must not stall the dispatcher.
    async fn deliver(&self, message: lettre::Message) -> Result<Outcome, SinkError> {
        let bound = self.timeout.saturating_mul(2);
        match tokio::time::timeout(bound, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(Outcome::Delivered),
            Ok(Err(e)) => classify(&e, &self.server),
            Err(_) => Err(unfinished(&self.server, bound)),
        }
    }

    /// One mail for the whole batch; every delivery shares its outcome.
    async fn send_digest(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let ctx = digest_context(batch.iter().map(|d| (&d.event, &*d.payload)));
        let first = batch
            .first()
            .map(|d| d.event.event_id.as_str())
            .unwrap_or("");
        let id = format!(
            "<digest.{first}.{}.{}@{}>",
            batch.len(),
            self.name,
            self.domain
        );
        let kind = batch.first().map_or("", |d| d.event.kind.as_str());
        let outcome = match self.compose(kind, &ctx, id) {
            Ok(m) => self.deliver(m).await?,
            Err(e) => Outcome::Reject(e),
        };
        if outcome == Outcome::Delivered {
            tracing::info!(sink = %self.name, events = batch.len(), "digest mail sent");
        }
        Ok(vec![outcome; batch.len()])
    }
}

#[async_trait]
impl Sink for EmailSink {
    async fn connect(&self) -> Result<(), SinkError> {
        let bound = self.timeout.saturating_mul(2);
        match tokio::time::timeout(bound, self.transport.test_connection()).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) | Err(_) => Err(no_answer(&self.server, None)),
            Ok(Err(e)) => Err(no_answer(&self.server, Some(&e))),
        }
    }

    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        if self.digest.is_some() {
            return self.send_digest(batch).await;
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for d in batch {
            let ctx = single_context(&d.event, &d.payload);
            let id = format!("<{}.{}@{}>", d.event.event_id, self.name, self.domain);
            let message = match self.compose(d.event.kind.as_str(), &ctx, id) {
                Ok(m) => m,
                Err(e) => {
                    outcomes.push(Outcome::Reject(e));
                    continue;
                }
            };
            match self.deliver(message).await {
                Ok(o) => outcomes.push(o),
                // Nothing went out yet: let the dispatcher back off without spending attempts.
                Err(e) if !outcomes.contains(&Outcome::Delivered) => return Err(e),
                // Some mail went out: keep those outcomes, retry the rest.
                Err(e) => {
                    let reason = e.to_string();
                    outcomes.resize(batch.len(), Outcome::Retry(reason));
                    break;
                }
            }
        }
        Ok(outcomes)
    }

    fn hold_until(&self, batch: &[Delivery]) -> Option<u64> {
        let window = self.digest?;
        let oldest = batch.iter().map(|d| d.event.accepted_at).min()?;
        let until = u64::try_from(oldest)
            .unwrap_or(0)
            .saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        (until > now_ms()).then_some(until)
    }

    fn max_batch(&self) -> usize {
        if self.digest.is_some() {
            DIGEST_BATCH
        } else {
            64
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::senders::HookKind;
    use crate::senders::samples::payloads;

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

    fn config(extra: &str) -> Result<crate::config::Config, Vec<crate::problem::Problem>> {
        let smtp = if extra.contains("smtp =") {
            ""
        } else {
            "smtp = \"smtp://127.0.0.1:2525\"\n"
        };
        let text = format!(
            "[hooks.h]\n[[routes]]\nmatch = {{}}\nto = [\"mail\"]\n[sinks.mail]\ntype = \"email\"\n{smtp}{extra}\n"
        );
        crate::config::Config::parse(std::path::Path::new("routes.toml"), &text)
    }

    fn delivery() -> Delivery {
        let json = payloads()[0].1.body;
        let mut events = crate::senders::parse(
            HookKind::named("portal").unwrap(),
            "portal",
            json.as_bytes(),
        )
        .unwrap();
        Delivery {
            seq: 1,
            attempts: 0,
            event: events.remove(0),
            payload: Arc::from(json),
        }
    }

    #[tokio::test]
    async fn a_server_that_stops_answering_does_not_stall_the_sink() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(b"220 mute.test ESMTP\r\n").await;
                    let mut buf = [0u8; 512];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        let cfg = config(&format!(
            "smtp = \"smtp://127.0.0.1:{port}\"\nfrom = \"hb@example.org\"\nto = [\"a@example.org\"]\ntemplate = \"portal\"\ntimeout = \"200ms\""
        ))
        .unwrap();
        let sink = cfg.sinks["mail"]
            .settings
            .build("mail", &cfg.renderer)
            .unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            sink.connect().await,
            Err(SinkError::Unavailable(_))
        ));
        let e = sink.send(&[delivery()]).await.unwrap_err();
        assert!(e.to_string().contains("did not finish a mail"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    /// A tokio test: lettre's connection pool spawns its housekeeping on the runtime.
    #[tokio::test]
    async fn digests_hold_until_the_oldest_event_is_a_window_old() {
        let cfg = config(
            "from = \"hb@example.org\"\nto = [\"a@example.org\"]\ntemplate = \"digest\"\ndigest = \"1m\"",
        )
        .unwrap();
        let sink = cfg.sinks["mail"]
            .settings
            .build("mail", &cfg.renderer)
            .unwrap();
        let now = now_ms();
        let (mut a, mut b) = (delivery(), delivery());
        a.event.accepted_at = now as i64 - 10_000;
        b.event.accepted_at = now as i64;
        assert_eq!(
            sink.hold_until(&[b.clone(), a.clone()]),
            Some(now - 10_000 + 60_000)
        );
        a.event.accepted_at = now as i64 - 61_000;
        assert_eq!(sink.hold_until(&[b, a]), None);
        assert_eq!(sink.max_batch(), DIGEST_BATCH);
    }
}
