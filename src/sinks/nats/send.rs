//! The connection to NATS, the stream check, and publishing a batch to JetStream.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::{GetStreamByNameErrorKind, GetStreamErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{Client, ConnectOptions};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout, timeout_at};

use super::encode::{Encoder, Message};
use super::errors::{Acked, ack_outcome, error_kind, no_stream_outcome, redacted, scrub};
use crate::event::Delivery;
use crate::metrics::METRICS;
use crate::secret::Secret;
use crate::sinks::{Outcome, Sink, SinkError, batch_outcomes};

/// How long opening the connection and checking the stream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How the sink authenticates.
#[derive(Clone)]
pub(super) enum Auth {
    /// No credentials (or those in the URL).
    None,
    /// A token.
    Token(Secret),
    /// A user and password.
    UserPassword(String, Secret),
    /// An NKey seed.
    NKey(Secret),
    /// A credentials file's text (JWT and NKey seed).
    Credentials(Secret),
}

/// TLS towards the server.
pub(super) struct Tls {
    /// Refuse a connection without TLS.
    pub required: bool,
    /// CA certificates trusted besides the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Where and how the sink connects, and what it checks once connected: the settings of these
/// names in its `[sinks.NAME]` table.
pub(super) struct Connecting {
    /// The server URL(s); may hold a password.
    pub url: Secret,
    pub auth: Auth,
    pub tls: Tls,
    /// The stream every message must land in, when set.
    pub stream: Option<String>,
    /// `sinks.NAME.subject`, for the errors of the stream check.
    pub subject_key: String,
    /// The subjects the template can render, as a filter (`arcgis.*.*`).
    pub probe: String,
    /// How long a batch may wait for its acknowledgements.
    pub timeout: Duration,
}

impl Connecting {
    /// Every secret these settings hold, to scrub from the client's errors.
    fn secrets(&self) -> Vec<&str> {
        let mut out = vec![self.url.expose()];
        match &self.auth {
            Auth::None => {}
            Auth::Token(s) | Auth::NKey(s) | Auth::Credentials(s) | Auth::UserPassword(_, s) => {
                out.push(s.expose())
            }
        }
        out
    }
}

/// An open client and its JetStream context.
#[derive(Clone)]
struct Link {
    client: Client,
    jetstream: jetstream::Context,
}

/// Publishes each delivery to JetStream and counts it done only on the stream's
/// acknowledgement; `Nats-Msg-Id` is the event id, so the stream drops a resend.
pub(super) struct NatsSink {
    name: String,
    connecting: Connecting,
    encoder: Encoder,
    /// The client once connected and checked; it reconnects by itself after that. Held while
    /// a batch publishes (so batches go out in order), not while it awaits acknowledgements.
    link: Mutex<Option<Link>>,
}

impl NatsSink {
    /// A sink connecting as `connecting` says, on `connect` or the first `send`.
    pub fn new(name: &str, connecting: Connecting, encoder: Encoder) -> Self {
        NatsSink {
            name: name.to_string(),
            connecting,
            encoder,
            link: Mutex::new(None),
        }
    }

    /// Counts one failure of `kind` for this sink.
    fn count(&self, kind: &str) {
        METRICS
            .sink_errors
            .with_label_values(&[&self.name, kind])
            .inc();
    }

    /// A client error as it may be logged: no secret in it.
    fn safe(&self, e: impl std::fmt::Display) -> String {
        scrub(&e.to_string(), &self.connecting.secrets())
    }

    /// The link, connected and checked if there is none yet.
    async fn ensure(&self, slot: &mut Option<Link>) -> Result<Link, SinkError> {
        if let Some(link) = slot.as_ref() {
            return Ok(link.clone());
        }
        let opened = timeout(CONNECT_TIMEOUT, self.open())
            .await
            .unwrap_or_else(|_| {
                Err(SinkError::Unavailable(format!(
                    "connecting to NATS at {} took longer than {CONNECT_TIMEOUT:?}",
                    redacted(self.connecting.url.expose())
                )))
            });
        let link = opened.inspect_err(|_| self.count("connect"))?;
        tracing::info!(sink = %self.name, url = %redacted(self.connecting.url.expose()), subjects = %self.connecting.probe, "connected to NATS JetStream");
        *slot = Some(link.clone());
        Ok(link)
    }

    /// Connects, then checks that a stream takes the sink's subjects.
    async fn open(&self) -> Result<Link, SinkError> {
        let client = self.options()?.connect(self.connecting.url.expose()).await;
        let client = client.map_err(|e| {
            SinkError::Unavailable(format!(
                "connect to NATS at {}: {}",
                redacted(self.connecting.url.expose()),
                self.safe(e)
            ))
        })?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(self.connecting.timeout)
            .build(client.clone());
        if let Err(e) = self.check_stream(&jetstream).await {
            let _ = client.drain().await;
            return Err(e);
        }
        Ok(Link { client, jetstream })
    }

    /// The client's options: name, credentials, TLS, reconnecting forever, events logged.
    fn options(&self) -> Result<ConnectOptions, SinkError> {
        let sink = self.name.clone();
        let c = &self.connecting;
        let mut options = ConnectOptions::new()
            .name(format!("hookbridge sink {}", self.name))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .require_tls(c.tls.required)
            .event_callback(move |event| {
                let sink = sink.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(sink = %sink, "NATS connection up")
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(sink = %sink, "NATS connection lost; reconnecting")
                        }
                        other => tracing::debug!(sink = %sink, event = %other, "NATS client event"),
                    }
                }
            });
        options = match &c.auth {
            Auth::None => options,
            Auth::Token(t) => options.token(t.expose().to_string()),
            Auth::UserPassword(u, p) => {
                options.user_and_password(u.clone(), p.expose().to_string())
            }
            Auth::NKey(seed) => options.nkey(seed.expose().to_string()),
            Auth::Credentials(creds) => options
                .credentials(creds.expose())
                .map_err(|e| SinkError::Config(format!("credentials: {}", self.safe(e))))?,
        };
        if let Some(ca) = &c.tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&c.tls.client_cert, &c.tls.client_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }

    /// The stream named by `stream` exists, or some stream takes the template's subjects.
    async fn check_stream(&self, js: &jetstream::Context) -> Result<(), SinkError> {
        let c = &self.connecting;
        if let Some(stream) = &c.stream {
            return match js.get_stream(stream).await {
                Ok(_) => Ok(()),
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(api)
                        if api.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Err(SinkError::Unavailable(format!(
                            "JetStream stream {stream:?} (sinks.{}.stream) does not exist: create it with the subjects {}",
                            self.name, c.probe
                        )))
                    }
                    _ => Err(SinkError::Unavailable(format!(
                        "look up JetStream stream {stream:?}: {}",
                        self.safe(e)
                    ))),
                },
            };
        }
        match js.stream_by_subject(c.probe.clone()).await {
            Ok(stream) => {
                tracing::debug!(sink = %self.name, stream = %stream, "a JetStream stream takes the subjects");
                Ok(())
            }
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
                Err(SinkError::Unavailable(format!(
                    "no JetStream stream takes subjects {} ({}): create one, e.g. `nats stream add ARCGIS --subjects '{}'`",
                    c.probe, c.subject_key, c.probe
                )))
            }
            Err(e) => Err(SinkError::Unavailable(format!(
                "look up the JetStream stream of subjects {}: {}",
                c.probe,
                self.safe(e)
            ))),
        }
    }

    /// Whether some stream takes `subject`: `Ok(None)` when JetStream says none does.
    async fn stream_of(
        &self,
        js: &jetstream::Context,
        subject: &str,
    ) -> Result<Option<String>, String> {
        match js.stream_by_subject(subject.to_string()).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.safe(e)),
        }
    }
}

impl NatsSink {
    /// Hands every message to the client (each waits only for its slot in the client's
    /// buffer), before any acknowledgement is awaited.
    async fn publish(
        &self,
        link: &Link,
        messages: Vec<Result<Message, String>>,
        deadline: Instant,
    ) -> Vec<Step> {
        let max_payload = link.client.server_info().max_payload;
        let mut steps = Vec::with_capacity(messages.len());
        for message in messages {
            let m = match message {
                Ok(m) => m,
                Err(reason) => {
                    self.count("render");
                    steps.push(Step::Done(Ok(Outcome::Reject(reason))));
                    continue;
                }
            };
            let size = m.body.len() + headers_size(&m.headers);
            if max_payload > 0 && size > max_payload {
                self.count("too_large");
                steps.push(Step::Done(Ok(Outcome::Reject(format!(
                    "the message is {size} bytes with its headers; the NATS server takes at most {max_payload}"
                )))));
                continue;
            }
            let publish = PublishMessage::build()
                .payload(Bytes::from(m.body))
                .headers(m.headers);
            let sent = timeout_at(
                deadline,
                link.jetstream.send_publish(m.subject.clone(), publish),
            );
            steps.push(match sent.await {
                Ok(Ok(ack)) => Step::Published(m.subject, ack),
                Ok(Err(e)) => Step::Done(Err(format!("publish: {}", self.safe(e)))),
                Err(_) => Step::Done(Err(
                    "the NATS client did not take the message in time".into()
                )),
            });
        }
        steps
    }

    /// Awaits each published message's acknowledgement (until `deadline`) and sorts it.
    async fn acks(
        &self,
        link: &Link,
        steps: Vec<Step>,
        deadline: Instant,
    ) -> (Vec<Result<Outcome, String>>, bool) {
        let mut heard = false;
        let mut results = Vec::with_capacity(steps.len());
        let mut no_stream: BTreeMap<String, Result<Option<String>, String>> = BTreeMap::new();
        for step in steps {
            let (subject, ack) = match step {
                Step::Done(result) => {
                    results.push(result);
                    continue;
                }
                Step::Published(subject, ack) => (subject, ack),
            };
            let acked = match timeout_at(deadline, ack).await {
                Ok(answer) => ack_outcome(&subject, answer),
                Err(_) => Acked::Lost("no acknowledgement from JetStream in time".into()),
            };
            if let Some(kind) = error_kind(&acked) {
                self.count(kind);
            }
            results.push(match acked {
                Acked::Done(outcome) => {
                    heard = true;
                    Ok(outcome)
                }
                Acked::NoStream(subject) => {
                    if !no_stream.contains_key(&subject) {
                        let found = self.stream_of(&link.jetstream, &subject).await;
                        no_stream.insert(subject.clone(), found);
                    }
                    let found = no_stream.get(&subject).cloned().unwrap_or(Ok(None));
                    heard |= found.is_ok();
                    Ok(no_stream_outcome(&subject, found))
                }
                Acked::Lost(reason) => Err(reason),
            });
        }
        (results, heard)
    }
}

/// About how many bytes `headers` take on the wire.
fn headers_size(headers: &async_nats::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, vs)| {
            vs.iter()
                .map(|v| AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum::<usize>()
        + 16
}

/// One delivery on its way through a batch.
enum Step {
    /// Decided before publishing: refused, or not handed over (`Err`: not sent).
    Done(Result<Outcome, String>),
    /// Published on this subject; the acknowledgement is awaited.
    Published(String, jetstream::context::PublishAckFuture),
}

#[async_trait]
impl Sink for NatsSink {
    async fn connect(&self) -> Result<(), SinkError> {
        let mut slot = self.link.lock().await;
        self.ensure(&mut slot).await.map(|_| ())
    }

    /// Publishes the whole batch, then collects the acknowledgements, all within `timeout`.
    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let deadline = Instant::now() + self.connecting.timeout;
        let mut slot = self.link.lock().await;
        let link = self.ensure(&mut slot).await?;
        if link.client.connection_state() != State::Connected {
            return Err(SinkError::Unavailable(format!(
                "not connected to NATS at {} (the client is reconnecting)",
                redacted(self.connecting.url.expose())
            )));
        }
        let messages = batch
            .iter()
            .map(|d| self.encoder.message(&d.event, &d.payload))
            .collect();
        let steps = self.publish(&link, messages, deadline).await;
        // Published: the next batch may publish while this one waits for its acknowledgements.
        drop(slot);
        let (results, heard) = self.acks(&link, steps, deadline).await;
        if !heard && results.iter().any(Result::is_err) {
            tracing::warn!(sink = %self.name, "JetStream acknowledged none of a batch; the sink backs off");
        }
        batch_outcomes(results, heard)
    }

    /// Batches of 256: JetStream acknowledges each message, and the client pipelines them.
    fn max_batch(&self) -> usize {
        256
    }

    /// Batches publish one after another and await their acknowledgements together.
    fn max_in_flight(&self) -> usize {
        8
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sinks::SinkType;
    use crate::sinks::nats::config::tests::{config, renderer};

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_not_a_failed_delivery() {
        // Port 1 on loopback refuses connections.
        let c = config("url = \"nats://u:s3cret@127.0.0.1:1\"");
        let s = c.build("bus", &renderer(&c)).unwrap();
        let err = s.connect().await.err().unwrap();
        assert!(matches!(err, SinkError::Unavailable(_)), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let d = Delivery {
            seq: 1,
            attempts: 0,
            event: crate::event::sample(1),
            payload: Arc::from("{}"),
        };
        assert!(matches!(s.send(&[d]).await, Err(SinkError::Unavailable(_))));
    }
}
