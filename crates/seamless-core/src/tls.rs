//! HTTPS: the certificate and key a generation serves with, and the TLS handshake of a
//! connection accepted on the `https` socket.
//!
//! The certificate and key are loaded with the rest of the configuration, so a reload that
//! brings a broken pair is refused as a whole and the old pair keeps serving. New handshakes use
//! the generation current when they start; established connections keep the keys they
//! negotiated.
//!
//! rustls with the `ring` provider: it builds with the C compiler every Rust install already
//! needs, where the default provider (aws-lc-rs) also wants cmake or a long build on a fresh
//! machine.
//!
//! A TLS connection is never kept across a restart (see `keep`): systemd's fd store holds a
//! socket, not the session keys on top of it. TLS connections always drain gently, with
//! `Connection: close` on the last response and then `close_notify`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::LazyConfigAcceptor;

use crate::config::TlsConfig;
use crate::connection::{Prefixed, Stream};
use crate::metrics::{Handshake, Metrics};

/// The socket name (`FileDescriptorName=`) served with TLS.
pub const HTTPS_NAME: &str = "https";
/// systemd's directory of the unit's credentials (`LoadCredential=`).
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// The first byte of a TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;
/// The answer to plain HTTP sent to the HTTPS port, as nginx gives it.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 42\r\n\r\nplain HTTP request sent to the HTTPS port\n";

/// Why a certificate or key cannot serve. Each variant names the key and the file.
///
/// An expired or not yet valid certificate is an error, not a warning: no client accepts it, so
/// serving it fails every handshake. On reload the old certificate keeps serving; at start the
/// unit fails and says why. Alert on `tls_certificate_expiry_seconds` to renew in time.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `tls.certificate` without `tls.key`, or the other way round.
    #[error("tls.certificate and tls.key must be set together (only {set} is set)")]
    Incomplete {
        /// The key that is set.
        set: &'static str,
    },
    /// The file cannot be read.
    #[error("{key}: cannot read {path}: {reason}")]
    Unreadable {
        /// `tls.certificate` or `tls.key`.
        key: &'static str,
        /// The file, after resolving against `$CREDENTIALS_DIRECTORY`.
        path: PathBuf,
        /// What the operating system said.
        reason: io::Error,
    },
    /// The file is not PEM.
    #[error("{key}: {path} is not PEM: {reason}")]
    NotPem {
        /// `tls.certificate` or `tls.key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file holds no `CERTIFICATE` block.
    #[error("tls.certificate: {path} holds no certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key block.
    #[error("tls.key: {path} holds no private key (PKCS#8, RSA or SEC1 PEM)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a type the crypto provider cannot sign with.
    #[error("tls.key: {path}: unsupported key type ({reason})")]
    UnknownKeyType {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The leaf certificate cannot be parsed.
    #[error("tls.certificate: {path}: not a valid X.509 certificate ({reason})")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The key is not the one the leaf certificate was issued for.
    #[error("tls.key: {key} does not match the certificate in {certificate}")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        certificate: PathBuf,
    },
    /// The leaf certificate has expired.
    #[error("tls.certificate: {path} expired on {not_after} (valid from {not_before})")]
    Expired {
        /// The file.
        path: PathBuf,
        /// Its first valid moment.
        not_before: String,
        /// Its last valid moment.
        not_after: String,
    },
    /// The leaf certificate is not valid yet.
    #[error("tls.certificate: {path} is not valid before {not_before} (until {not_after})")]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Its first valid moment.
        not_before: String,
        /// Its last valid moment.
        not_after: String,
    },
    /// rustls refused the configuration.
    #[error("tls: cannot set up TLS with {path}: {reason}")]
    Setup {
        /// The certificate file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// A certificate and key ready to serve: loaded, checked against each other and the clock.
pub struct Tls {
    /// rustls's settings: the certificate, the key, ALPN `h2` and `http/1.1`.
    config: Arc<ServerConfig>,
    /// The certificate file, for logs and the expiry metric.
    certificate: PathBuf,
    /// The leaf's DNS names (lower case), to refuse handshakes for other names.
    names: Vec<String>,
    /// The leaf's serial number, for logs.
    serial: String,
    /// The leaf's last valid moment, seconds since the epoch.
    not_after: i64,
    /// The chain as loaded, to tell whether a reload changed it.
    chain: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("certificate", &self.certificate)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain && self.certificate == other.certificate
    }
}

impl Tls {
    /// Loads and checks `tls.certificate` and `tls.key`; `None` when neither is set.
    pub(crate) fn load(config: &TlsConfig) -> Result<Option<Arc<Tls>>, TlsError> {
        let (certificate, key) = match (&config.certificate, &config.key) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(TlsError::Incomplete {
                    set: "tls.certificate",
                });
            }
            (None, Some(_)) => return Err(TlsError::Incomplete { set: "tls.key" }),
            (Some(certificate), Some(key)) => (resolve(certificate), resolve(key)),
        };
        Tls::from_files(&certificate, &key, SystemTime::now()).map(|tls| Some(Arc::new(tls)))
    }

    /// Loads the pair, checked as valid at `now`.
    fn from_files(certificate: &Path, key: &Path, now: SystemTime) -> Result<Tls, TlsError> {
        let chain = read_chain(certificate)?;
        let key_der = read_key(key)?;
        let leaf = Leaf::parse(certificate, &chain[0])?;
        leaf.check_validity(certificate, now)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signing_key = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| TlsError::UnknownKeyType {
                path: key.to_owned(),
                reason: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain.clone(), signing_key);
        if certified.keys_match().is_err() {
            return Err(TlsError::KeyMismatch {
                key: key.to_owned(),
                certificate: certificate.to_owned(),
            });
        }
        let config = server_config(provider, certified).map_err(|e| TlsError::Setup {
            path: certificate.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Tls {
            config: Arc::new(config),
            certificate: certificate.to_owned(),
            names: leaf.names,
            serial: leaf.serial,
            not_after: leaf.not_after.0,
            chain,
        })
    }

    /// The certificate file it was loaded from.
    pub(crate) fn certificate(&self) -> &Path {
        &self.certificate
    }

    /// The leaf certificate's serial number, in hex.
    pub(crate) fn serial(&self) -> &str {
        &self.serial
    }

    /// When the leaf certificate expires, in seconds since the epoch.
    pub(crate) fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Whether a client asking for `name` (SNI) may be served: any name the certificate holds,
    /// a wildcard covering one label included.
    fn serves(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|held| match held.strip_prefix("*.") {
            Some(parent) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => *held == name,
        })
    }
}

/// Settings for every handshake: TLS 1.2 and 1.3, no client certificates, ALPN `h2` first.
fn server_config(
    provider: Arc<CryptoProvider>,
    certified: CertifiedKey,
) -> Result<ServerConfig, rustls::Error> {
    // One certificate answers every accepted name; the SNI check happens before, in `accept`.
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A relative path names a credential when systemd passed any (`LoadCredential=`), else a
/// file relative to the working directory.
fn resolve(path: &Path) -> PathBuf {
    match std::env::var_os(CREDENTIALS_DIRECTORY) {
        Some(dir) if path.is_relative() => Path::new(&dir).join(path),
        _ => path.to_owned(),
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|reason| TlsError::Unreadable {
        key,
        path: path.to_owned(),
        reason,
    })
}

fn not_pem(key: &'static str, path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::NotPem {
        key,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Whether `bytes` has a PEM block at all: a DER file or a typo should say "not PEM".
fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let key = "tls.certificate";
    let pem = read(key, path)?;
    if !looks_like_pem(&pem) {
        return Err(not_pem(key, path, "no -----BEGIN line"));
    }
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(key, path, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let key = "tls.key";
    let pem = read(key, path)?;
    if !looks_like_pem(&pem) {
        return Err(not_pem(key, path, "no -----BEGIN line"));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        other => not_pem(key, path, other),
    })
}

/// What the service needs from the leaf certificate.
struct Leaf {
    /// Its DNS names, lower case.
    names: Vec<String>,
    /// Its serial number, in hex.
    serial: String,
    /// Its validity, in seconds since the epoch, and as the certificate says it (for errors).
    not_before: (i64, String),
    not_after: (i64, String),
}

impl Leaf {
    fn parse(path: &Path, der: &CertificateDer<'_>) -> Result<Leaf, TlsError> {
        let bad = |reason: String| TlsError::BadCertificate {
            path: path.to_owned(),
            reason,
        };
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| bad(e.to_string()))?
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(dns) => {
                            Some(dns.to_ascii_lowercase())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let validity = cert.validity();
        Ok(Leaf {
            names,
            serial: cert.raw_serial_as_string(),
            not_before: (
                validity.not_before.timestamp(),
                validity.not_before.to_string(),
            ),
            not_after: (
                validity.not_after.timestamp(),
                validity.not_after.to_string(),
            ),
        })
    }

    fn check_validity(&self, path: &Path, now: SystemTime) -> Result<(), TlsError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let dates = || {
            (
                path.to_owned(),
                self.not_before.1.clone(),
                self.not_after.1.clone(),
            )
        };
        if now > self.not_after.0 {
            let (path, not_before, not_after) = dates();
            return Err(TlsError::Expired {
                path,
                not_before,
                not_after,
            });
        }
        if now < self.not_before.0 {
            let (path, not_before, not_after) = dates();
            return Err(TlsError::NotYetValid {
                path,
                not_before,
                not_after,
            });
        }
        Ok(())
    }
}

/// Makes `stream`, accepted on the `https` socket, a TLS stream, within `limit`. Every outcome
/// is counted in `metrics`; failures are logged at `debug` only, so a scanner cannot flood the
/// journal. `None` when the handshake did not complete: the connection is closed.
pub(crate) async fn accept(
    stream: Stream,
    tls: &Tls,
    limit: Duration,
    metrics: &Metrics,
    peer: &str,
) -> Option<Stream> {
    let outcome = tokio::time::timeout(limit, handshake(stream, tls)).await;
    let (result, stream) = match outcome {
        Ok(Ok(stream)) => (Handshake::Ok, Some(stream)),
        Ok(Err(failed)) => (failed, None),
        Err(_) => (Handshake::Timeout, None),
    };
    metrics.handshake(result);
    if stream.is_none() {
        tracing::debug!(
            peer,
            result = result.label(),
            "TLS handshake failed; closing"
        );
    }
    stream
}

async fn handshake(mut stream: Stream, tls: &Tls) -> Result<Stream, Handshake> {
    // A look at the first byte tells a TLS client from one speaking plain HTTP.
    let mut first = BytesMut::with_capacity(512);
    match stream.read_buf(&mut first).await {
        Ok(0) | Err(_) => return Err(Handshake::Failed),
        Ok(_) => {}
    }
    if first[0] != HANDSHAKE_RECORD {
        if first[0].is_ascii_uppercase() {
            // Answered, so someone trying `curl http://…:443` sees why.
            let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = stream.shutdown().await;
            return Err(Handshake::PlainHttp);
        }
        return Err(Handshake::Failed);
    }
    let io = Prefixed::new(first.freeze(), stream);
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
        .await
        .map_err(|_| Handshake::Failed)?;
    if let Some(name) = start.client_hello().server_name() {
        if !tls.serves(name) {
            return Err(Handshake::UnknownName);
        }
    }
    let stream = start
        .into_stream(tls.config.clone())
        .await
        .map_err(|_| Handshake::Failed)?;
    Ok(Stream::Tls(Box::new(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        dir: tempfile::TempDir,
    }

    impl Pair {
        fn new(names: &[&str]) -> (Pair, PathBuf, PathBuf) {
            let dir = tempfile::tempdir().expect("tempdir");
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let made = rcgen::generate_simple_self_signed(names).expect("certificate");
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, made.cert.pem()).expect("write");
            std::fs::write(&key, made.key_pair.serialize_pem()).expect("write");
            (Pair { dir }, cert, key)
        }

        fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).expect("write");
            path
        }
    }

    fn error(cert: &Path, key: &Path) -> String {
        Tls::from_files(cert, key, SystemTime::now())
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn a_matching_pair_loads_with_its_names_and_dates() {
        let (_pair, cert, key) = Pair::new(&["localhost", "*.example.test"]);
        let tls = Tls::from_files(&cert, &key, SystemTime::now()).expect("valid pair");
        assert!(tls.serves("localhost"));
        assert!(tls.serves("LOCALHOST."));
        assert!(tls.serves("api.example.test"));
        assert!(!tls.serves("example.test"), "a wildcard needs a label");
        assert!(
            !tls.serves("a.b.example.test"),
            "a wildcard covers one label"
        );
        assert!(!tls.serves("other.test"));
        assert!(tls.not_after() > 0);
        assert!(!tls.serial().is_empty());
    }

    #[test]
    fn every_bad_pair_is_refused_naming_the_file() {
        let (pair, cert, key) = Pair::new(&["localhost"]);
        let (_other, _, other_key) = Pair::new(&["localhost"]);
        let missing = pair.dir.path().join("missing.pem");
        let text = pair.file("text.pem", b"hello\n");
        let key_only = key.clone();
        let cert_only = cert.clone();
        let bad_base64 = pair.file(
            "bad.pem",
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        );
        let unknown_key = pair.file(
            "dsa.pem",
            b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
        );
        let cases = [
            (
                missing.as_path(),
                key.as_path(),
                "tls.certificate: cannot read",
            ),
            (cert.as_path(), missing.as_path(), "tls.key: cannot read"),
            (text.as_path(), key.as_path(), "is not PEM"),
            (cert.as_path(), text.as_path(), "tls.key"),
            (bad_base64.as_path(), key.as_path(), "is not PEM"),
            (key_only.as_path(), key.as_path(), "holds no certificate"),
            (cert.as_path(), cert_only.as_path(), "holds no private key"),
            (
                cert.as_path(),
                unknown_key.as_path(),
                "unsupported key type",
            ),
            (
                cert.as_path(),
                other_key.as_path(),
                "does not match the certificate",
            ),
        ];
        for (cert_path, key_path, expected) in cases {
            let message = error(cert_path, key_path);
            assert!(
                message.contains(expected),
                "{cert_path:?} + {key_path:?}: {message}"
            );
            let named = if expected.starts_with("tls.key") || message.starts_with("tls.key") {
                key_path
            } else {
                cert_path
            };
            assert!(
                message.contains(&named.display().to_string()),
                "names the file: {message}"
            );
        }
    }

    #[test]
    fn a_certificate_outside_its_validity_is_refused() {
        let (_pair, cert, key) = Pair::new(&["localhost"]);
        let years = Duration::from_secs(60 * 60 * 24 * 365 * 5000);
        let future = SystemTime::now() + years;
        let message = Tls::from_files(&cert, &key, future)
            .expect_err("expired by then")
            .to_string();
        assert!(message.contains("expired on"), "{message}");
        let message = Tls::from_files(&cert, &key, UNIX_EPOCH)
            .expect_err("not valid yet then")
            .to_string();
        assert!(message.contains("is not valid before"), "{message}");
    }

    #[test]
    fn half_a_pair_is_refused() {
        let config = TlsConfig {
            certificate: Some("cert.pem".into()),
            ..TlsConfig::default()
        };
        let message = Tls::load(&config).expect_err("incomplete").to_string();
        assert!(message.contains("only tls.certificate is set"), "{message}");
        assert!(Tls::load(&TlsConfig::default()).expect("off").is_none());
    }
}
