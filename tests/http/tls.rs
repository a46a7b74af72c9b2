//! TLS to the receiver: a private CA named in `ca` is trusted; without it the handshake fails
//! and the sink backs off as a whole (nothing dead-lettered); `insecure_skip_verify` works and
//! says so in the log at every start.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::common::Daemon;
use super::receiver::Receiver;
use super::{config, dead_letters, http_sink, portal_event, post, wait_log};

/// A CA (its PEM) and a server configuration for 127.0.0.1 with a certificate it signed.
fn private_ca() -> (String, rustls::ServerConfig) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "hookbridge test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    (ca_cert.pem(), tls)
}

#[tokio::test]
async fn a_private_ca_is_trusted_and_a_failed_handshake_backs_the_sink_off() {
    let (ca, tls) = private_ca();
    let r = Receiver::start_tls(tls);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let sinks = [
        http_sink(
            "trusting",
            &format!("{}/trusting", r.base),
            &format!("ca = {:?}", ca_file.display().to_string()),
        ),
        http_sink("untrusting", &format!("{}/untrusting", r.base), ""),
        http_sink(
            "insecure",
            &format!("{}/insecure", r.base),
            "insecure_skip_verify = true",
        ),
    ]
    .concat();
    let mut d = Daemon::start(&config(
        &sinks,
        "\"trusting\", \"untrusting\", \"insecure\"",
    ));
    let ids = post(&d, "portal", &portal_event("tls")).await;
    let seen = r.wait_until(|c| c.len() >= 2).await;
    let paths: Vec<&str> = seen.iter().map(|c| c.path.as_str()).collect();
    assert!(
        paths.contains(&"/trusting") && paths.contains(&"/insecure"),
        "{paths:?}\n{}",
        d.log_text()
    );
    assert!(seen.iter().all(|c| c.event_id() == ids[0]));
    assert!(
        wait_log(&d, "cannot connect to https://127.0.0.1").await,
        "{}",
        d.log_text()
    );
    // Several backoffs long; with attempts = 4, spent attempts would have dead-lettered it.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(r.requests_to("/untrusting").is_empty());
    let log = d.log_text();
    assert_eq!(
        log.matches("TLS certificate verification is OFF").count(),
        1,
        "{log}"
    );
    assert!(log.contains("insecure"), "{log}");
    assert!(d.stop().success());
    let dead = dead_letters(&d);
    assert!(!dead.contains("event_id"), "nothing dead-lettered: {dead}");
    d.spawn();
    assert!(wait_log(&d, "TLS certificate verification is OFF").await);
    let restarts = d
        .log_text()
        .matches("TLS certificate verification is OFF")
        .count();
    assert_eq!(restarts, 2, "said again at the next start");
}
