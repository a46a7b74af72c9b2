//! Native TLS termination (rustls) with certificates that SIGHUP can replace without a restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// `[server.tls]`: native TLS termination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no certificate.
    #[error("server.tls.cert: {0}")]
    Cert(String),
    /// The key file is unreadable or holds no usable key.
    #[error("server.tls.key: {0}")]
    Key(String),
    /// rustls refused the combination.
    #[error("server.tls: {0}")]
    Config(String),
}

/// Reads and checks a certificate chain and its key.
pub fn load(cfg: &TlsConfig) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| TlsError::Cert(format!("{}: {e}", cfg.cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(format!("{}: {e}", cfg.cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(format!(
            "{} holds no PEM certificate",
            cfg.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| TlsError::Key(format!("{}: {e}", cfg.key.display())))?;
    let signer = ring::sign::any_supported_type(&key).map_err(|e| TlsError::Key(e.to_string()))?;
    let certified = CertifiedKey::new(certs, signer);
    certified
        .keys_match()
        .map_err(|e| TlsError::Config(format!("the key does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

/// The certificate in force, swapped on reload; rustls asks it at every handshake.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the files named in `cfg`.
    pub fn new(cfg: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(CertStore {
            current: RwLock::new(load(cfg)?),
        }))
    }

    /// Loads the files again; on error the old certificate stays in force.
    pub fn reload(&self, cfg: &TlsConfig) -> Result<(), TlsError> {
        let fresh = load(cfg)?;
        match self.current.write() {
            Ok(mut c) => *c = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
        Ok(())
    }

    /// A rustls server config that resolves certificates through this store.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(c) => Some(c.clone()),
            Err(p) => Some(p.into_inner().clone()),
        }
    }
}
