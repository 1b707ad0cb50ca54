//! HTTPS on the socket named `https`: served beside plain HTTP, certificates rotated by
//! `SIGHUP` for new handshakes only, bad pairs refused with the old one serving, bad input
//! closed quietly and counted, TLS connections drained (never kept), restarts under TLS load.
//! Certificates are made here, at test time, by a test CA.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use loadgen::{Load, Mode};
use nix::sys::signal::Signal;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};
use support::{PATIENCE, Service, Systemd, get};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A test CA, and the leaf certificates it signs for `localhost`.
struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// A leaf certificate and its key, as PEM, and the leaf's DER to recognise it by.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { key, cert }
    }

    /// A leaf for `localhost` with `serial`, signed with `key`.
    fn leaf(&self, key: &KeyPair, serial: u64) -> Leaf {
        self.leaf_with(key, serial, |_| {})
    }

    fn leaf_with(
        &self,
        key: &KeyPair,
        serial: u64,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
        params.serial_number = Some(SerialNumber::from(serial));
        edit(&mut params);
        let cert = params
            .signed_by(key, &self.cert, &self.key)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

fn new_key() -> KeyPair {
    KeyPair::generate().expect("key")
}

/// Writes `contents` to `path` by write-and-rename, as certbot and config management do.
fn install(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A harness with an `https` socket whose certificate and key are credentials, as the
/// packaged unit takes them with `LoadCredential=`: relative paths in the configuration.
struct Https {
    systemd: Systemd,
    ca: Ca,
    credentials: PathBuf,
    /// The leaf installed at start.
    first: Leaf,
}

impl Https {
    fn new(leaf: impl FnOnce(&Ca) -> Leaf, extra: &str) -> Https {
        Https::with(Systemd::new(), leaf, extra)
    }

    fn with(systemd: Systemd, leaf: impl FnOnce(&Ca) -> Leaf, extra: &str) -> Https {
        let mut systemd = systemd.with_https();
        let credentials = systemd.dir.path().join("credentials");
        std::fs::create_dir(&credentials).expect("credentials dir");
        systemd.env.push((
            "CREDENTIALS_DIRECTORY".to_owned(),
            credentials.display().to_string(),
        ));
        let ca = Ca::new();
        let first = leaf(&ca);
        let https = Https {
            systemd,
            ca,
            credentials,
            first,
        };
        https.install(&https.first);
        https.systemd.write_config(&format!(
            "[tls]\ncertificate = \"cert.pem\"\nkey = \"key.pem\"\n{extra}"
        ));
        https
    }

    fn install(&self, leaf: &Leaf) {
        install(&self.credentials.join("cert.pem"), &leaf.cert_pem);
        install(&self.credentials.join("key.pem"), &leaf.key_pem);
    }

    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        connector(&self.ca.pem(), alpn)
    }

    async fn connect(&self, name: &str, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
        connect(self.systemd.https_addr(), &self.connector(alpn), name).await
    }

    /// Starts 8 HTTPS clients in `mode`, trusting the test CA, until the returned sender fires.
    fn load(
        &self,
        mode: Mode,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<loadgen::Report>,
    ) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let tls = loadgen::Tls::from_pem(self.ca.pem().as_bytes(), "localhost").expect("CA");
        let load = Load {
            connections: 8,
            mode,
            timeout: Duration::from_secs(10),
            tls: Some(tls),
            ..Load::new(self.systemd.https_addr())
        };
        let task = tokio::spawn(loadgen::run(load, async {
            let _ = stop_rx.await;
        }));
        (stop_tx, task)
    }

    /// The leaf certificate a new handshake gets.
    async fn serving(&self) -> CertificateDer<'static> {
        let stream = self.connect("localhost", &[]).await.expect("handshake");
        leaf_of(&stream)
    }
}

fn connector(ca_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem) {
        roots.add(cert).expect("CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

async fn connect(
    addr: SocketAddr,
    connector: &TlsConnector,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("the handshake ends in time")
}

fn leaf_of(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .clone()
}

/// Sends one HTTP/1.1 request on `stream` and reads its response head and body (by
/// `content-length`).
async fn request(stream: &mut TlsStream<TcpStream>, path: &str) -> support::Response {
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.flush().await.expect("flush");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(response) = support::parse(&raw) {
            return response;
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn https_serves_http1_and_h2_beside_plain_http() {
    let key = new_key();
    let https = Https::new(|ca| ca.leaf(&key, 1), "");
    let _service = https.systemd.start_ready().await;

    let mut stream = https
        .connect("localhost", &[b"http/1.1"])
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let response = request(&mut stream, "/").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "Hello from seamless!\n");
    assert_eq!(
        request(&mut stream, "/healthz").await.status,
        200,
        "keep-alive"
    );

    let stream = https
        .connect("localhost", &[b"h2", b"http/1.1"])
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let request = hyper::Request::get("https://localhost/")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"Hello from seamless!\n");

    // The plain socket stays plain.
    assert_eq!(get(https.systemd.addr, "/").status, 200);
    let metrics = get(https.systemd.addr, "/metrics").body;
    assert!(
        metrics.contains("seamless_tls_handshakes_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    let expiry = format!(
        "seamless_tls_certificate_expiry_seconds{{certificate=\"{}\"}}",
        https.credentials.join("cert.pem").display()
    );
    assert!(metrics.contains(&expiry), "{metrics}");
}

#[tokio::test]
async fn sighup_rotates_the_certificate_for_new_handshakes_only() {
    let key = new_key();
    let https = Https::new(|ca| ca.leaf(&key, 1), "");
    let service = https.systemd.start_ready().await;
    let mut established = https.connect("localhost", &[]).await.expect("handshake");
    assert_eq!(leaf_of(&established), https.first.der);
    assert_eq!(request(&mut established, "/").await.status, 200);

    // Renewed with the same key (`certbot renew --reuse-key`).
    let renewed = https.ca.leaf(&key, 2);
    https.install(&renewed);
    service.signal(Signal::SIGHUP);
    let seen = https.systemd.expect_notify("READY=1").await;
    assert!(
        seen.last().expect("ready").contains("config generation 2"),
        "{seen:?}"
    );
    assert_eq!(
        https.serving().await,
        renewed.der,
        "a new handshake gets the new one"
    );
    let response = request(&mut established, "/").await;
    assert_eq!(
        response.status, 200,
        "the established connection keeps working"
    );
    assert_eq!(response.header("x-config-generation"), Some("2"));

    // A new key too.
    let rekeyed = https.ca.leaf(&new_key(), 3);
    https.install(&rekeyed);
    let output = https.systemd.reload_command(service.pid);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(https.serving().await, rekeyed.der);
}

/// What a test case does to the installed pair.
type Breaks<'a> = Box<dyn Fn() + 'a>;

#[tokio::test]
async fn a_bad_pair_refuses_the_reload_and_the_old_one_serves_on() {
    let key = new_key();
    let https = Https::new(|ca| ca.leaf(&key, 1), "");
    let service = https.systemd.start_ready().await;
    let good = &https.first;
    let other_key = https.ca.leaf(&new_key(), 2);
    let expired = https.ca.leaf_with(&key, 3, |params| {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let not_yet = https.ca.leaf_with(&key, 4, |params| {
        params.not_before = rcgen::date_time_ymd(4000, 1, 1);
        params.not_after = rcgen::date_time_ymd(4001, 1, 1);
    });
    let cert = https.credentials.join("cert.pem");
    let key_file = https.credentials.join("key.pem");
    let cases: [(&str, Breaks<'_>); 6] = [
        (
            "does not match the certificate",
            Box::new(|| install(&cert, &other_key.cert_pem)),
        ),
        ("expired on", Box::new(|| install(&cert, &expired.cert_pem))),
        (
            "is not valid before",
            Box::new(|| install(&cert, &not_yet.cert_pem)),
        ),
        (
            "is not PEM",
            Box::new(|| install(&cert, "not a certificate\n")),
        ),
        (
            "holds no private key",
            Box::new(|| install(&key_file, &good.cert_pem)),
        ),
        (
            "cannot read",
            Box::new(|| std::fs::remove_file(&key_file).expect("remove key")),
        ),
    ];
    for (expected, break_it) in cases {
        break_it();
        let output = https.systemd.reload_command(service.pid);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{expected}: {stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert!(stderr.contains("credentials/"), "names the file: {stderr}");
        assert_eq!(
            https.serving().await,
            good.der,
            "{expected}: the old pair serves on"
        );
        https.install(good);
    }
    let metrics = get(https.systemd.addr, "/metrics").body;
    assert!(
        metrics.contains("seamless_reloads_total{result=\"failed\"} 6"),
        "{metrics}"
    );

    // Without a certificate the `https` socket cannot be served: refused too.
    https.systemd.write_config("");
    let output = https.systemd.reload_command(service.pid);
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    assert_eq!(https.serving().await, good.der);
}

#[tokio::test]
async fn an_https_socket_without_a_certificate_refuses_to_start() {
    let systemd = Systemd::new().with_https();
    let mut service = systemd.start();
    let status = service.wait();
    assert_eq!(status.code(), Some(78), "{}", service.stderr());
    assert!(
        service.stderr().contains("tls.certificate"),
        "{}",
        service.stderr()
    );
}

#[tokio::test]
async fn bad_input_on_the_https_socket_is_closed_counted_and_not_logged() {
    let key = new_key();
    let https = Https::new(
        |ca| ca.leaf(&key, 1),
        "[http]\nheader_read_timeout = \"1s\"\n",
    );
    let service = https.systemd.start_ready().await;
    let addr = https.systemd.https_addr();

    // Plain HTTP: answered 400, then closed.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let answer = read_to_close(&mut plain).await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("plain HTTP"),
        "{answer}"
    );

    // A client that never completes the handshake: closed after http.header_read_timeout.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(read_to_close(&mut silent).await, "");

    // A handshake record that is garbage, and bytes that are no record at all.
    for garbage in [
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..],
        &[0u8; 64][..],
    ] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(garbage).await.expect("write");
        let _ = read_to_close(&mut stream).await;
    }

    // A name the certificate does not hold.
    let refused = https.connect("unknown.example", &[]).await;
    assert!(refused.is_err(), "unknown SNI must not be served");

    let metrics = get(https.systemd.addr, "/metrics").body;
    for (result, count) in [
        ("plain_http", 1),
        ("timeout", 1),
        ("failed", 2),
        ("unknown_sni", 1),
        ("ok", 0),
    ] {
        let line = format!("seamless_tls_handshakes_total{{result=\"{result}\"}} {count}");
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    // Still serving, and a scanner left nothing in the log.
    assert_eq!(https.serving().await, https.first.der);
    let stderr = service.stderr();
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR") && !stderr.contains("TLS handshake"),
        "{stderr}"
    );
}

/// Everything the peer sends until it closes (or resets), bounded by `PATIENCE`.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("closed in time");
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_drains_with_close_and_close_notify_and_is_never_kept() {
    let key = new_key();
    let https = Https::with(
        Systemd::with_fd_store(16),
        |ca| ca.leaf(&key, 1),
        "[shutdown]\nlinger = \"5s\"\n",
    );
    let mut service = https.systemd.start_ready().await;
    let mut tls = https.connect("localhost", &[]).await.expect("handshake");
    assert_eq!(request(&mut tls, "/").await.status, 200);
    let mut plain = support::KeepAlive::connect(https.systemd.addr);
    assert_eq!(plain.request("/").expect("answer").status, 200);

    service.signal(Signal::SIGTERM);
    https.systemd.expect_notify("STOPPING=1").await;
    // During the linger: answered, told to close, then `close_notify` (a clean end, which
    // rustls tells from a cut connection).
    let response = request(&mut tls, "/").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(read.is_ok(), "a clean close_notify, not a cut: {read:?}");
    assert!(rest.is_empty());

    let status = tokio::task::block_in_place(|| https.systemd.wait_reading(&mut service));
    assert_eq!(status.code(), Some(0), "{}", service.stderr());
    assert_eq!(
        https.systemd.stored("connection"),
        1,
        "the plain connection is kept, the TLS one is not"
    );
}

#[tokio::test]
async fn tls_listen_binds_https_without_systemd() {
    let key = new_key();
    let (http, tls) = (free_port(), free_port());
    let https = Https::new(
        |ca| ca.leaf(&key, 1),
        &format!("listen = \"{tls}\"\n[http]\nlisten = \"{http}\"\n"),
    );
    // No LISTEN_FDS: the service binds both itself.
    let credentials = https.credentials.display().to_string();
    let _service = https
        .systemd
        .start_with(&[("CREDENTIALS_DIRECTORY", &credentials)], false);
    https.systemd.expect_notify("READY=1").await;
    let mut stream = connect(tls, &https.connector(&[]), "localhost")
        .await
        .expect("handshake");
    assert_eq!(request(&mut stream, "/").await.status, 200);
    assert_eq!(get(http, "/").status, 200);
}

/// An address on loopback that nothing listens on right now.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Restarts under HTTPS load, counted strictly: keep-alive clients reconnect after each drain
/// (TLS connections are not kept) and connection-close clients handshake every time; no
/// request fails either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_tls_load_fail_nothing() {
    let key = new_key();
    let https = Https::with(Systemd::with_fd_store(64), |ca| ca.leaf(&key, 1), "");
    let mut service = https.systemd.start_ready().await;
    for mode in [Mode::KeepAlive, Mode::Close] {
        let (stop_tx, load) = https.load(mode);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            service.signal(Signal::SIGTERM);
            let status = tokio::task::block_in_place(|| https.systemd.wait_reading(&mut service));
            assert_eq!(status.code(), Some(0), "{}", service.stderr());
            service = https.systemd.start_ready().await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop_tx.send(());
        let report = load.await.expect("load generator");
        assert_eq!(report.failed(), 0, "{mode}: {}", report.summary());
        assert!(
            report.ok() > 100,
            "{mode}: the load ran: {}",
            report.summary()
        );
        if mode == Mode::KeepAlive {
            assert!(
                report.connections_opened() > 8,
                "TLS connections are drained, not kept: {}",
                report.summary()
            );
        }
    }
    drop::<Service>(service);
}

/// A binary upgrade passes the `https` listener to the successor like the others: under HTTPS
/// load in both modes, two upgrades in a row fail nothing, and the successor serves HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_under_tls_load_fail_nothing() {
    // Successors outlive the process that started them; as their subreaper the test can
    // wait for them like systemd would.
    #[allow(unsafe_code)]
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
    let key = new_key();
    let https = Https::new(|ca| ca.leaf(&key, 1), "");
    // Held to the end: dropping a `Service` kills its process.
    let first = https.systemd.start_ready().await;
    let mut pid = first.pid;
    for mode in [Mode::KeepAlive, Mode::Close] {
        let (stop_tx, load) = https.load(mode);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let output = tokio::task::block_in_place(|| {
            std::process::Command::new(support::BIN)
                .args(["upgrade", "--pid", &pid.to_string(), "--timeout", "30s"])
                .env("RUNTIME_DIRECTORY", https.systemd.runtime_dir())
                .output()
                .expect("run seamless upgrade")
        });
        assert!(output.status.success(), "{output:?}");
        let new: i32 = https
            .systemd
            .expect_notify_prefix("MAINPID=")
            .await
            .parse()
            .expect("MAINPID value");
        let old = nix::unistd::Pid::from_raw(pid);
        let status = tokio::task::block_in_place(|| nix::sys::wait::waitpid(old, None));
        assert_eq!(
            status.expect("waitpid"),
            nix::sys::wait::WaitStatus::Exited(old, 0)
        );
        pid = new;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop_tx.send(());
        let report = load.await.expect("load generator");
        assert_eq!(report.failed(), 0, "{mode}: {}", report.summary());
        assert!(
            report.ok() > 100,
            "{mode}: the load ran: {}",
            report.summary()
        );
        let mut stream = https.connect("localhost", &[]).await.expect("handshake");
        let version = request(&mut stream, "/version").await.body;
        assert!(version.contains(&format!("(pid {new})")), "{version}");
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
    let _ = tokio::task::block_in_place(|| {
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)
    });
    drop(first);
}
