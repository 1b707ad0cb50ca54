//! HTTPS: the client TLS configuration that [`crate::Load::tls`] carries.
//!
//! Certificates are verified against the CA certificates given, and only
//! those: the system trust store is never consulted, so a run proves that
//! the service presents a certificate chaining to the CA the test expects.
//! The crypto provider is always `ring`, chosen explicitly rather than taken
//! from a process-wide default, and ALPN offers only `http/1.1`, the one
//! protocol the generator speaks.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// The only ALPN protocol offered.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// TLS client settings for a run: the CA certificates to trust and the
/// server name to send (SNI) and to verify the certificate against.
///
/// Cheap to clone: the rustls configuration is shared, so TLS session
/// resumption works across the workers' connections as it would in one
/// client process.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    server_name: String,
}

impl Tls {
    /// Trusts the CA certificates in the PEM file at `path` (one or more
    /// `CERTIFICATE` blocks; anything else in the file is ignored). Errors
    /// about the file's contents name the file.
    pub fn from_file(path: impl AsRef<Path>, server_name: &str) -> Result<Tls, String> {
        let path = path.as_ref();
        // Checked first, so that a bad name is not blamed on the file.
        server_name_of(server_name)?;
        let in_file = |e| format!("CA file {}: {e}", path.display());
        let pem = std::fs::read(path).map_err(|e| in_file(e.to_string()))?;
        Tls::from_pem(&pem, server_name).map_err(in_file)
    }

    /// Trusts the CA certificates in `ca_pem` (one or more PEM
    /// `CERTIFICATE` blocks; other blocks are ignored).
    pub fn from_pem(ca_pem: &[u8], server_name: &str) -> Result<Tls, String> {
        let certs = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("invalid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("no PEM CERTIFICATE block found".into());
        }
        Tls::from_certs(certs, server_name)
    }

    /// Trusts the one CA certificate `ca_der` (DER encoded).
    pub fn from_der(ca_der: &[u8], server_name: &str) -> Result<Tls, String> {
        Tls::from_certs(vec![CertificateDer::from(ca_der.to_vec())], server_name)
    }

    fn from_certs(certs: Vec<CertificateDer<'static>>, server_name: &str) -> Result<Tls, String> {
        let name = server_name_of(server_name)?;
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.into_iter().enumerate() {
            roots
                .add(cert)
                .map_err(|e| format!("CA certificate {}: {e}", i + 1))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            name,
            server_name: server_name.to_owned(),
        })
    }

    /// The name sent as SNI and checked against the server's certificate.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The rustls client configuration every connection of the run uses.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// What a worker needs to open connections.
    pub(crate) fn connector(&self) -> Connector {
        Connector {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name: self.name.clone(),
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The rustls configuration's own Debug output is long and says
        // nothing a reader of a `Load` needs.
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Parses a server name: a DNS name or an IP address.
fn server_name_of(server_name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("invalid TLS server name {server_name:?}: {e}"))
}

/// A ready-made connector and server name, shared by a run's workers.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) name: ServerName<'static>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The server name to use when none is given: the host part of a
/// `HOST:PORT` address when it is a DNS name, else `localhost` (for an IP
/// address, which a certificate for a test service rarely names).
pub(crate) fn default_server_name(addr: &str) -> String {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match ServerName::try_from(host) {
        Ok(ServerName::DnsName(_)) => host.to_owned(),
        _ => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("self-signed")
    }

    #[test]
    fn builds_from_pem_and_der() {
        let a = ca();
        let b = ca();
        let both = format!("{}{}", a.pem(), b.pem());
        let tls = Tls::from_pem(both.as_bytes(), "localhost").expect("two CAs");
        assert_eq!(tls.server_name(), "localhost");
        assert_eq!(tls.config().alpn_protocols, vec![b"http/1.1".to_vec()]);
        let tls = Tls::from_der(a.der(), "example.test").expect("der");
        assert_eq!(tls.server_name(), "example.test");
        assert!(format!("{tls:?}").contains("example.test"));
        // An IP address is a valid name to verify, if given explicitly.
        assert!(Tls::from_der(a.der(), "127.0.0.1").is_ok());
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let e = Tls::from_pem(b"not a certificate", "localhost").expect_err("no PEM");
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");
        let e = Tls::from_der(b"garbage", "localhost").expect_err("bad DER");
        assert!(e.contains("CA certificate 1"), "{e}");
        let e = Tls::from_der(ca().der(), "bad name!").expect_err("bad name");
        assert!(e.contains("invalid TLS server name"), "{e}");
        let e = Tls::from_file("/nonexistent/ca.pem", "localhost").expect_err("missing");
        assert!(e.starts_with("CA file /nonexistent/ca.pem: "), "{e}");
        let e = Tls::from_file("/nonexistent/ca.pem", "").expect_err("empty name");
        assert!(e.starts_with("invalid TLS server name"), "{e}");
    }

    #[test]
    fn server_name_defaults_to_the_dns_host() {
        assert_eq!(default_server_name("example.test:443"), "example.test");
        assert_eq!(default_server_name("localhost:8443"), "localhost");
        assert_eq!(default_server_name("127.0.0.1:8443"), "localhost");
        assert_eq!(default_server_name("[::1]:8443"), "localhost");
        assert_eq!(default_server_name("::1"), "localhost");
        assert_eq!(default_server_name("svc.internal"), "svc.internal");
    }
}
