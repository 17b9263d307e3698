//! TLS for the default transport: which servers an `https://` connection trusts.
//!
//! By default the platform's trust roots (on Linux the system bundle, or the files
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` name; on macOS and Windows the system store). A
//! self-hosted hub is trusted either through its own CA ([`TlsConfig::with_ca_pem`],
//! which replaces the platform's roots) or by pinning its certificate
//! ([`TlsConfig::with_pinned_sha256`]: the SHA-256 of the leaf certificate's DER, trusted
//! whatever signed it and whatever names it carries; with a CA as well, both must hold).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::ClientError;

/// Which servers `https://` connections of the default transport trust.
///
/// The default trusts the platform's roots. Cheap to clone.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// CA certificates (DER) trusted instead of the platform's roots.
    pub ca_certs: Vec<Vec<u8>>,
    /// The SHA-256 of the one server certificate (its DER) trusted.
    pub pinned_sha256: Option<[u8; 32]>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_certs", &self.ca_certs.len())
            .field("pinned_sha256", &self.pinned_sha256.map(hex::encode))
            .finish()
    }
}

impl TlsConfig {
    /// Trust the platform's roots (the default).
    pub fn platform() -> Self {
        TlsConfig::default()
    }

    /// Trusts the CA certificates of a PEM file's text instead of the platform's roots.
    /// Fails when it holds no certificate.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError::Invalid(format!("the CA certificate is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Invalid(
                "no certificate in the CA file (expected PEM \"BEGIN CERTIFICATE\" blocks)".into(),
            ));
        }
        let mut roots = RootCertStore::empty();
        for c in &certs {
            roots.add(c.clone()).map_err(|e| {
                ClientError::Invalid(format!("the CA certificate cannot be used: {e}"))
            })?;
        }
        self.ca_certs = certs.into_iter().map(|c| c.to_vec()).collect();
        Ok(self)
    }

    /// [`Self::with_ca_pem`] with the text of a file.
    pub fn with_ca_file(self, path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::Invalid(format!("cannot read the CA file {}: {e}", path.display()))
        })?;
        self.with_ca_pem(&pem).map_err(|e| match e {
            ClientError::Invalid(m) => ClientError::Invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Trusts only the server certificate whose DER hashes to `sha256`.
    pub fn with_pinned_sha256(mut self, sha256: [u8; 32]) -> Self {
        self.pinned_sha256 = Some(sha256);
        self
    }

    /// [`Self::with_pinned_sha256`] from 64 hexadecimal digits (colons between byte
    /// pairs allowed, as `openssl x509 -fingerprint -sha256` prints them; a leading
    /// `sha256:` allowed).
    pub fn with_pinned_sha256_hex(self, hex_digits: &str) -> Result<Self, ClientError> {
        Ok(self.with_pinned_sha256(parse_sha256(hex_digits)?))
    }

    /// Whether this is the default (platform roots, nothing pinned).
    pub fn is_platform(&self) -> bool {
        self.ca_certs.is_empty() && self.pinned_sha256.is_none()
    }

    /// The rustls configuration these settings describe.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, ClientError> {
        if self.is_platform() {
            return Ok(platform_config().clone());
        }
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Invalid(format!("TLS set-up failed: {e}")))?;
        let roots = if self.ca_certs.is_empty() {
            None
        } else {
            let mut roots = RootCertStore::empty();
            for c in &self.ca_certs {
                roots
                    .add(CertificateDer::from(c.clone()))
                    .map_err(|e| ClientError::Invalid(format!("the CA certificate: {e}")))?;
            }
            Some(Arc::new(roots))
        };
        let config = match (self.pinned_sha256, roots) {
            (Some(pin), roots) => {
                let chain = match roots {
                    Some(r) => Some(
                        WebPkiServerVerifier::builder_with_provider(r, provider.clone())
                            .build()
                            .map_err(|e| ClientError::Invalid(format!("TLS set-up failed: {e}")))?,
                    ),
                    None => None,
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                        pin,
                        chain,
                        provider,
                    }))
                    .with_no_client_auth()
            }
            (None, Some(roots)) => builder.with_root_certificates(roots).with_no_client_auth(),
            (None, None) => platform_config().clone(),
        };
        Ok(config)
    }
}

/// Reads a SHA-256 pin: 64 hexadecimal digits, colons allowed, `sha256:` prefix allowed.
pub(crate) fn parse_sha256(text: &str) -> Result<[u8; 32], ClientError> {
    let t = text.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let digits: String = t.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&digits).ok().filter(|b| b.len() == 32);
    match bytes {
        Some(b) => {
            let mut pin = [0u8; 32];
            pin.copy_from_slice(&b);
            Ok(pin)
        }
        None => Err(ClientError::Invalid(format!(
            "a certificate pin is the SHA-256 of the certificate's DER in 64 hexadecimal digits, not {text:?}"
        ))),
    }
}

/// The SHA-256 of a certificate's DER, in lowercase hex (what a pin names).
pub fn certificate_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The platform roots, loaded once per process, on the first `https://` handshake that
/// needs them: reading the system bundle (hundreds of files) costs a fresh process tens of
/// milliseconds, which a client of an `http://` server never pays.
pub(crate) fn platform_config() -> &'static rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        match rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PlatformVerifier {
                    provider: provider(),
                }))
                .with_no_client_auth(),
            Err(_) => unreachable!("the ring provider supports the default protocol versions"),
        }
    })
}

/// Whether this process has loaded the platform's trust roots.
#[cfg(test)]
fn platform_roots_loaded() -> bool {
    PLATFORM_VERIFIER.get().is_some()
}

/// The platform roots' verifier; `None` when the platform has no usable root.
static PLATFORM_VERIFIER: OnceLock<Option<Arc<WebPkiServerVerifier>>> = OnceLock::new();

fn platform_verifier() -> Option<Arc<WebPkiServerVerifier>> {
    PLATFORM_VERIFIER
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "a platform trust root could not be loaded");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "platform trust roots loaded");
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| tracing::debug!(error = %e, "no platform trust roots"))
                .ok()
        })
        .clone()
}

/// The handshake-signature half of a [`ServerCertVerifier`], the same for every verifier
/// here: signatures are checked with the algorithms of the verifier's `provider` field.
macro_rules! handshake_signatures_checked_by_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Checks certificates against the platform's roots, loaded when the first one is checked.
/// Without any usable root every certificate is of an unknown issuer.
#[derive(Debug)]
struct PlatformVerifier {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PlatformVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match platform_verifier() {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    handshake_signatures_checked_by_provider!();
}

/// Trusts the one certificate whose DER hashes to the pin (and, with a CA, only when
/// the CA also vouches for it). Handshake signatures are still checked against it.
#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got != self.pin {
            return Err(rustls::Error::General(format!(
                "the server's certificate (SHA-256 {}) is not the pinned one (SHA-256 {})",
                hex::encode(got),
                hex::encode(self.pin)
            )));
        }
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures_checked_by_provider!();
}

/// The TLS failure behind a connection error, described, when there is one: such a
/// failure (an untrusted or mismatched certificate, a server that does not speak TLS) is
/// not transient, so it is not retried.
pub(crate) fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(describe(r));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // `io::Error::source` skips the error it wraps: look at it directly.
            if let Some(inner) = io.get_ref() {
                if let Some(found) = tls_failure(inner) {
                    return Some(found);
                }
            }
        }
        cur = err.source();
    }
    None
}

fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => format!(
            "the server's certificate is not trusted ({c}); for a self-hosted server give its CA certificate or pin its certificate"
        ),
        rustls::Error::General(m) => m.clone(),
        rustls::Error::InvalidMessage(_) => format!(
            "the server does not speak TLS here ({e}); is the url's scheme right (http:// or https://)?"
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client of an `http://` server never reads the platform's trust roots (a fresh
    /// process would pay tens of milliseconds for them); the first certificate checked
    /// against them loads them.
    #[tokio::test]
    async fn platform_roots_are_loaded_only_to_check_a_certificate() {
        use crate::transport::{HttpRequest, Method, Transport};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.expect("read");
                assert!(n > 0, "request cut short");
                got.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .expect("write");
        });
        let transport = crate::transport::HyperTransport::new();
        let answer = transport
            .send(HttpRequest {
                method: Method::Get,
                url,
                headers: vec![],
                body: vec![],
            })
            .await
            .expect("plain http request");
        assert_eq!(answer.status, 200);
        server.await.expect("server");
        assert!(
            !platform_roots_loaded(),
            "http:// loaded the platform roots"
        );

        // A certificate to check (any will do: it is not the handshake's) loads them.
        let verifier = PlatformVerifier {
            provider: provider(),
        };
        let der = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let name = ServerName::try_from("example.invalid").expect("name");
        assert!(verifier
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_err());
        assert!(platform_roots_loaded());
    }

    #[test]
    fn pins_are_read_in_either_form() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_sha256(&hex64).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_sha256(&colons).unwrap(), [0xab; 32]);
        assert_eq!(
            parse_sha256(&format!("sha256:{hex64}")).unwrap(),
            [0xab; 32]
        );
        assert!(parse_sha256("abcd").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let e = TlsConfig::platform().with_ca_pem(b"hello").unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        assert!(TlsConfig::platform().is_platform());
    }
}
