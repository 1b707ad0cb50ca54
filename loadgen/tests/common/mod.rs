//! A deliberately misbehaving HTTP/1.1 test server.
//!
//! Each [`Behavior`] reproduces one way a real server can end a request, and
//! the server counts what it did (answered, dropped, ...) so tests can check
//! the generator's numbers against the server's, request for request.
//! [`serve_tls`] runs the same server behind TLS, with certificates made by
//! [`TestPki`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What the server does with each request.
#[derive(Clone, Copy, Debug)]
pub enum Behavior {
    /// Keep-alive `200 OK` with a small body, forever.
    Normal,
    /// On every connection, answer `n - 1` requests, then read the `n`th
    /// completely and close the connection without answering it.
    DropEvery(u64),
    /// On every connection, the `n`th response carries `Connection: close`
    /// and the server closes after sending it.
    CloseEvery(u64),
    /// Read requests, never answer.
    Stall,
    /// Answer after this delay.
    Delay(Duration),
    /// Send a head promising 100 bytes, 10 bytes of body, then close.
    MidBody,
    /// Answer with a chunked body.
    Chunked,
    /// Answer `503` with a body.
    Unavailable,
    /// Keep-alive `200 OK`, but close a connection that stays idle for this
    /// long after a response, as a server with a short keep-alive timeout
    /// (or one handing idle connections over on restart) does. The close is
    /// a shutdown: over TLS, `close_notify` and then the TCP close.
    CloseIdle(Duration),
    /// As [`Behavior::CloseIdle`], but the connection is dropped without a
    /// shutdown: over TLS, the TCP close comes without `close_notify`.
    /// (Over plain TCP the two are the same.)
    DropIdle(Duration),
    /// As [`Behavior::MidBody`], but dropped without a shutdown: over TLS,
    /// no `close_notify`.
    MidBodyDrop,
}

/// Request arrival times kept per server; enough for any test, and a
/// bound so a fast run cannot grow memory without limit.
pub const MAX_ARRIVALS: usize = 10_000;

/// What the server did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Requests read completely.
    pub requests: AtomicU64,
    /// Requests answered with a complete response.
    pub answered: AtomicU64,
    /// Requests read and then dropped by closing the connection.
    pub dropped: AtomicU64,
    /// Requests that carried `Connection: close`.
    pub close_requested: AtomicU64,
    /// Idle connections closed by [`Behavior::CloseIdle`] or
    /// [`Behavior::DropIdle`].
    pub idle_closed: AtomicU64,
    /// TLS handshakes completed (by [`serve_tls`]).
    pub handshakes: AtomicU64,
    /// TLS handshakes that failed.
    pub handshake_failures: AtomicU64,
    /// Completed TLS handshakes that negotiated ALPN `http/1.1`.
    pub alpn_http11: AtomicU64,
    /// When the first [`MAX_ARRIVALS`] requests were read completely.
    pub arrivals: Mutex<Vec<Instant>>,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    /// The recorded request arrival times, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        let mut times = self.arrivals.lock().expect("arrivals lock").clone();
        times.sort();
        times
    }
}

/// A running test server.
pub struct Server {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

/// Starts a TCP server with `behavior` on an ephemeral loopback port.
pub async fn serve(behavior: Behavior) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let stats = Arc::new(Stats::default());
    let s = stats.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            s.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handle(stream, behavior, s.clone()));
        }
    });
    Server { addr, stats }
}

/// Serves one connection according to `behavior`.
pub async fn handle<S>(mut stream: S, behavior: Behavior, stats: Arc<Stats>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(4096);
    let mut n = 0u64;
    loop {
        let next = read_request(&mut stream, &mut buf);
        let request = match behavior {
            Behavior::CloseIdle(idle) | Behavior::DropIdle(idle) if n > 0 => {
                match tokio::time::timeout(idle, next).await {
                    Ok(request) => request,
                    Err(_) => {
                        // Counted before closing: the client may see EOF at once.
                        stats.idle_closed.fetch_add(1, Ordering::SeqCst);
                        if matches!(behavior, Behavior::CloseIdle(_)) {
                            let _ = stream.shutdown().await;
                        }
                        return;
                    }
                }
            }
            _ => next.await,
        };
        let Some(close_requested) = request else {
            return;
        };
        n += 1;
        stats.requests.fetch_add(1, Ordering::SeqCst);
        {
            let mut arrivals = stats.arrivals.lock().expect("arrivals lock");
            if arrivals.len() < MAX_ARRIVALS {
                arrivals.push(Instant::now());
            }
        }
        if close_requested {
            stats.close_requested.fetch_add(1, Ordering::SeqCst);
        }
        let body = "hello, world\n";
        let response = match behavior {
            Behavior::Normal | Behavior::CloseIdle(_) | Behavior::DropIdle(_) => {
                ok_response(body, false)
            }
            Behavior::DropEvery(every) if n % every == 0 => {
                // Counted before closing: the client may see EOF at once.
                stats.dropped.fetch_add(1, Ordering::SeqCst);
                let _ = stream.shutdown().await;
                return;
            }
            Behavior::DropEvery(_) => ok_response(body, false),
            Behavior::CloseEvery(every) => ok_response(body, n % every == 0),
            Behavior::Stall => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            Behavior::Delay(d) => {
                tokio::time::sleep(d).await;
                ok_response(body, false)
            }
            Behavior::MidBody => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nx-pid: 4242\r\nContent-Length: 100\r\n\r\n0123456789",
                    )
                    .await;
                let _ = stream.shutdown().await;
                return;
            }
            Behavior::MidBodyDrop => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nx-pid: 4242\r\nContent-Length: 100\r\n\r\n0123456789",
                    )
                    .await;
                let _ = stream.flush().await;
                return;
            }
            Behavior::Chunked => {
                "HTTP/1.1 200 OK\r\nx-pid: 4242\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
                    .to_owned()
            }
            Behavior::Unavailable => {
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_owned()
            }
        };
        // Counted before writing, so the count can never lag behind what a
        // client has already received.
        stats.answered.fetch_add(1, Ordering::SeqCst);
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        if close_requested || response.contains("Connection: close") {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

fn ok_response(body: &str, close: bool) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nx-pid: 4242\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// Reads one request head (GET, no body). Returns whether it asked for
/// `Connection: close`, or `None` at EOF or error.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Option<bool> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            buf.drain(..end + 4);
            return Some(head.contains("\r\nconnection: close"));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Starts [`serve`]'s server behind TLS with `config`. `accepted` counts
/// TCP connections, whether or not their handshake succeeds.
pub async fn serve_tls(behavior: Behavior, config: Arc<rustls::ServerConfig>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let stats = Arc::new(Stats::default());
    let s = stats.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            s.accepted.fetch_add(1, Ordering::SeqCst);
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(tls) => {
                        s.handshakes.fetch_add(1, Ordering::SeqCst);
                        if tls.get_ref().1.alpn_protocol() == Some(b"http/1.1") {
                            s.alpn_http11.fetch_add(1, Ordering::SeqCst);
                        }
                        handle(tls, behavior, s).await;
                    }
                    Err(_) => {
                        s.handshake_failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    Server { addr, stats }
}

/// A test CA and a server certificate for `localhost` (and 127.0.0.1)
/// signed by it.
pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// Server configuration presenting the certificate (with its CA) and
    /// offering ALPN `h2` and `http/1.1`, so that a client offering `h2`
    /// would get it.
    pub server: Arc<rustls::ServerConfig>,
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "loadgen test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

        let key = rcgen::KeyPair::generate().expect("server key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), CertificateDer::from(ca.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TestPki {
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
            server: Arc::new(server),
        }
    }
}

/// A loopback address on which nothing listens (bound once, then released).
pub fn refused_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}
