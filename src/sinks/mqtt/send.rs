//! The running MQTT sink: a persistent session, a batch handed over at once, then each
//! message counted done only on its PUBACK (QoS 1) or PUBCOMP (QoS 2).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::v5::MqttOptions;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::{TlsConfiguration, Transport};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{Mutex, oneshot};
use tokio::time::{Instant, timeout_at};

use super::encode::Encoder;
use super::errors::{Answer, outcome};
use super::session::{Link, Options, Session};
use crate::event::Delivery;
use crate::metrics::METRICS;
use crate::secret::Secret;
use crate::sinks::{Outcome, Sink, SinkError, batch_outcomes};

/// How long `connect` waits for the session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Publishes rumqttc keeps in flight at most (the broker's receive maximum may lower it).
const MAX_IN_FLIGHT: u16 = 512;

/// The broker and how to reach it.
pub(super) struct Broker {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS with the system's roots and `ca`.
    pub tls: bool,
    /// User and password.
    pub login: Option<(String, Secret)>,
    /// CA certificates trusted besides the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The session and how messages are published: the settings of these names in the sink's
/// `[sinks.NAME]` table.
pub(super) struct Publishing {
    pub broker: Broker,
    pub client_id: String,
    /// MQTT 5 (else 3.1.1).
    pub v5: bool,
    /// Seconds the broker keeps the session while disconnected.
    pub session_expiry: u32,
    pub keep_alive: Duration,
    /// 1 or 2.
    pub qos: u8,
    pub retain: bool,
    /// A message no subscription matched is a dead letter.
    pub require_subscribers: bool,
    /// How long a batch may wait for its acknowledgements.
    pub timeout: Duration,
}

/// Publishes each delivery in a persistent MQTT v5 session.
pub(super) struct MqttSink {
    name: String,
    publishing: Publishing,
    encoder: Encoder,
    /// Started on the first `connect` or `send`; it reconnects by itself after that.
    session: Mutex<Option<Arc<Session>>>,
}

impl MqttSink {
    /// A sink publishing as `publishing` says; the session starts on `connect` or `send`.
    pub fn new(name: &str, publishing: Publishing, encoder: Encoder) -> Self {
        MqttSink {
            name: name.to_string(),
            publishing,
            encoder,
            session: Mutex::new(None),
        }
    }

    /// Counts one failure of `kind` for this sink.
    fn count(&self, kind: &str) {
        METRICS
            .sink_errors
            .with_label_values(&[&self.name, kind])
            .inc();
    }

    /// `host:port`, for messages.
    fn address(&self) -> String {
        let b = &self.publishing.broker;
        format!("{}:{}", b.host, b.port)
    }

    /// The session, started if it is not yet.
    async fn session(&self) -> Result<Arc<Session>, SinkError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let secret = self
            .publishing
            .broker
            .login
            .as_ref()
            .map(|(_, p)| p.expose().to_string());
        let session = Arc::new(Session::start(&self.name, self.options()?, secret));
        *slot = Some(session.clone());
        Ok(session)
    }

    /// The client's options: a persistent session (clean start off, a v5 session expiry),
    /// credentials, TLS.
    fn options(&self) -> Result<Options, SinkError> {
        let p = &self.publishing;
        let b = &p.broker;
        let transport = if b.tls {
            let config = tls_config(b).map_err(SinkError::Config)?;
            Some(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )))
        } else {
            None
        };
        if !p.v5 {
            let mut options =
                rumqttc::MqttOptions::new(p.client_id.clone(), b.host.clone(), b.port);
            options
                .set_clean_session(false)
                .set_keep_alive(p.keep_alive.max(Duration::from_secs(5)))
                .set_inflight(MAX_IN_FLIGHT);
            if let Some((user, password)) = &b.login {
                options.set_credentials(user.clone(), password.expose().to_string());
            }
            if let Some(t) = transport {
                options.set_transport(t);
            }
            return Ok(Options::V311(Box::new(options)));
        }
        let mut options = MqttOptions::new(p.client_id.clone(), b.host.clone(), b.port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(p.session_expiry))
            .set_keep_alive(p.keep_alive.max(Duration::from_secs(5)))
            .set_connection_timeout(10)
            .set_outgoing_inflight_upper_limit(MAX_IN_FLIGHT);
        if let Some((user, password)) = &b.login {
            options.set_credentials(user.clone(), password.expose().to_string());
        }
        if let Some(t) = transport {
            options.set_transport(t);
        }
        Ok(Options::V5(Box::new(options)))
    }
}

/// rustls (ring) with the system's roots, the sink's `ca`, and its client certificate.
fn tls_config(b: &Broker) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = &b.ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("ca: {}: {e}", ca.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("ca: {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("ca: {} holds no PEM certificate", ca.display()));
        }
        roots.add_parsable_certificates(certs);
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    match (&b.client_cert, &b.client_key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("client_cert: {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client_cert: {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("client_key: {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

#[async_trait]
impl Sink for MqttSink {
    async fn connect(&self) -> Result<(), SinkError> {
        let session = self.session().await?;
        match session.settled(CONNECT_TIMEOUT).await {
            Link::Up => Ok(()),
            Link::Down(why) => {
                self.count("connect");
                Err(SinkError::Unavailable(format!(
                    "MQTT broker {}: {why}",
                    self.address()
                )))
            }
            Link::Connecting => {
                self.count("connect");
                Err(SinkError::Unavailable(format!(
                    "no MQTT session with {} within {CONNECT_TIMEOUT:?}",
                    self.address()
                )))
            }
        }
    }

    /// Hands the whole batch to the session, then collects the acknowledgements, all within
    /// `timeout`.
    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let deadline = Instant::now() + self.publishing.timeout;
        let session = self.session().await?;
        match session.link() {
            Link::Up => {}
            Link::Down(why) => {
                return Err(SinkError::Unavailable(format!(
                    "MQTT broker {}: {why}",
                    self.address()
                )));
            }
            Link::Connecting => {
                return Err(SinkError::Unavailable(format!(
                    "connecting to the MQTT broker {}",
                    self.address()
                )));
            }
        }
        let p = &self.publishing;
        let qos = if p.qos == 2 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        let mut steps = Vec::with_capacity(batch.len());
        {
            // Handed over under the lock, so the order of the waiters is the order of the
            // publishes in the client's queue.
            let mut waiting = session.waiting();
            for d in batch {
                let m = match self.encoder.message(&d.event, &d.payload) {
                    Ok(m) => m,
                    Err(reason) => {
                        self.count("render");
                        steps.push(Step::Done(Outcome::Reject(reason)));
                        continue;
                    }
                };
                let Some(client) = waiting.client().cloned() else {
                    steps.push(Step::NotSent("the MQTT session is restarting".into()));
                    continue;
                };
                let answer = waiting.queue();
                match client.try_publish(m.topic.clone(), qos, p.retain, m.body, m.properties) {
                    Ok(()) => steps.push(Step::Published(m.topic, answer)),
                    Err(e) => {
                        waiting.unqueue();
                        steps.push(Step::NotSent(format!(
                            "the MQTT client did not take it: {e}"
                        )));
                    }
                }
            }
        }
        let mut heard = false;
        let mut results = Vec::with_capacity(steps.len());
        for step in steps {
            results.push(match step {
                Step::Done(o) => Ok(o),
                Step::NotSent(why) => Err(why),
                Step::Published(topic, answer) => {
                    let answer = match timeout_at(deadline, answer).await {
                        Ok(Ok(a)) => a,
                        Ok(Err(_)) => Answer::Lost("the MQTT session stopped".into()),
                        Err(_) => Answer::Lost(format!(
                            "no acknowledgement from the broker within {:?}",
                            p.timeout
                        )),
                    };
                    heard |= !matches!(answer, Answer::Lost(_));
                    let (result, kind) = outcome(answer, &topic, p.require_subscribers);
                    if let Some(kind) = kind {
                        self.count(kind);
                    }
                    result
                }
            });
        }
        batch_outcomes(results, heard)
    }

    /// Batches of 128, handed over at once: rumqttc keeps up to the broker's receive maximum
    /// in flight.
    fn max_batch(&self) -> usize {
        128
    }

    /// Batches are handed over one after another and await their acknowledgements together.
    fn max_in_flight(&self) -> usize {
        8
    }
}

/// One delivery on its way through a batch.
enum Step {
    /// Decided before publishing (a template or a topic refused).
    Done(Outcome),
    /// Not handed over: not sent.
    NotSent(String),
    /// Handed over on this topic; the broker's answer is awaited.
    Published(String, oneshot::Receiver<Answer>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::SinkType;
    use crate::sinks::mqtt::config::tests::{config, renderer};

    #[test]
    fn tls_takes_a_private_ca_and_a_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, issued.cert.pem()).unwrap();
        std::fs::write(&key, issued.key_pair.serialize_pem()).unwrap();
        let broker = |ca: Option<PathBuf>, client: bool| Broker {
            host: "localhost".into(),
            port: 8883,
            tls: true,
            login: None,
            ca,
            client_cert: client.then(|| cert.clone()),
            client_key: client.then(|| key.clone()),
        };
        assert!(tls_config(&broker(None, false)).is_ok());
        assert!(tls_config(&broker(Some(cert.clone()), true)).is_ok());
        let err = tls_config(&broker(Some(key.clone()), false)).err().unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_unavailable_not_a_failed_delivery() {
        // Port 1 on loopback refuses connections.
        let c = config("url = \"mqtt://127.0.0.1:1\"\nuser = \"u\"\npassword = \"s3cret\"");
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
