//! HTTPS: the certificate chain and key (PEM files) loaded into a TLS acceptor.
//! Connections are accepted as before (same cap and timeouts); the TLS handshake must
//! finish within the header read timeout.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::ServerError;

fn tls_error(what: &str, path: &Path, why: impl std::fmt::Display) -> ServerError {
    ServerError::Config(format!("{what} {}: {why}", path.display()))
}

/// A TLS acceptor for the PEM certificate chain at `cert` and private key at `key`.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_error("cannot read the TLS certificate", cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error("cannot read the TLS certificate", cert, e))?;
    if certs.is_empty() {
        return Err(tls_error(
            "no certificate in",
            cert,
            "expected PEM \"BEGIN CERTIFICATE\" blocks",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_error("cannot read the TLS private key", key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Config(format!("TLS set-up failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_error("the TLS key does not fit the certificate", cert, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
