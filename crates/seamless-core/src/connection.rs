//! One connection: which protocol it speaks, serving it, and what it does when the drain begins.
//!
//! A connection is served by hyper's HTTP/1 or HTTP/2 connection directly, not through an
//! automatic one, because an HTTP/1 connection must be able to stop *between* two requests and
//! give its socket back: that is what lets the drain keep it for the next process (see `keep`)
//! instead of closing it. So the protocol is told here, from the first bytes (the HTTP/2
//! preface, or not), and those bytes are given back to hyper in front of the socket.
//!
//! When the drain begins, an HTTP/1 connection:
//! - is **kept** if systemd's fd store has room (or a successor took over by an upgrade): once
//!   no request is in progress it stops at the request boundary and its socket goes to the
//!   store (or the successor), without a `Connection: close` ever being sent, so the client
//!   goes on using it with the next process;
//! - otherwise **closes gently** as it always has: every response from now on carries
//!   `Connection: close`, and an idle connection stays open for `shutdown.linger`, so a request
//!   already on its way is answered rather than cut.
//!
//! A connection that cannot stop cleanly at a boundary (bytes read ahead, a request body left
//! unread, the client asking to close) closes gently too. HTTP/2 connections get GOAWAY.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Version, header};
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;

use crate::drain::Watch;
use crate::generation::{Current, Generation, Routed};
use crate::keep::Store;
use crate::routes::{self, Shared};
use crate::timer::ConnectionTimer;

/// The first bytes of every HTTP/2 connection with prior knowledge (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a connection over `http.max_connections` may take to read its `503`.
const REJECT_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Who is at the other end of a connection, for logs.
#[derive(Debug, Clone)]
pub(crate) struct Peer(pub(crate) Arc<str>);

/// An accepted (or adopted) stream of any kind.
#[derive(Debug)]
pub(crate) enum Stream {
    /// TCP, IPv4 or IPv6.
    Tcp(tokio::net::TcpStream),
    /// A unix stream socket.
    Unix(tokio::net::UnixStream),
    /// TLS over either, after the handshake (see `tls`). Never kept across a restart.
    Tls(Box<tokio_rustls::server::TlsStream<Prefixed>>),
}

/// What every connection task needs besides its socket.
#[derive(Debug, Clone)]
pub(crate) struct Serving {
    /// The live configuration generation.
    pub(crate) live: Arc<ArcSwap<Generation>>,
    /// Metrics and the drain flags.
    pub(crate) shared: Arc<Shared>,
    /// Where the drain keeps connections: systemd's fd store, or an upgrade's successor.
    pub(crate) store: Arc<Store>,
}

/// Serves one connection until it ends, is kept or closed by the drain, or the process exits.
pub(crate) async fn serve(mut stream: Stream, peer: Peer, serving: Arc<Serving>, watch: Watch) {
    // The fd store holds sockets, not TLS sessions: a TLS connection always drains.
    let keepable = !matches!(stream, Stream::Tls(_));
    // Connection settings come from the generation current at accept time; each request
    // then picks the generation current when it arrives.
    let settings = serving.live.load_full();
    // Outside the detecting future, so what it read survives the drain interrupting it.
    let mut read = BytesMut::with_capacity(H2_PREFACE.len());
    let header_read_timeout = settings.config.http.header_read_timeout;
    let protocol = tokio::select! {
        detected = tokio::time::timeout(header_read_timeout, detect(&mut stream, &mut read)) => detected,
        () = watch.started() => {
            if read.is_empty() {
                // Nothing read yet: the connection is at a request boundary, its first.
                drain_unread(stream, keepable, &peer, &serving, &settings).await;
                return;
            }
            // A request has begun: finish telling its protocol, then serve it as usual.
            tokio::time::timeout(header_read_timeout, detect(&mut stream, &mut read)).await
        }
    };
    let result = match protocol {
        // hyper times out slow request heads, but not a client that sends nothing at all: it
        // would hold a connection slot for ever.
        Err(_) => {
            tracing::debug!(
                peer = &*peer.0,
                "no request within http.header_read_timeout; closing"
            );
            return;
        }
        Ok(Err(error)) => {
            tracing::debug!(peer = &*peer.0, %error, "connection ended before a request");
            return;
        }
        Ok(Ok(Protocol::Http2(read))) => {
            let io = Prefixed::new(read, stream);
            serve_http2(io, &peer, &serving, &settings, watch).await
        }
        Ok(Ok(Protocol::Http1(read))) => {
            let io = Prefixed::new(read, stream);
            serve_http1(io, keepable, &peer, &serving, &settings, watch).await
        }
    };
    if let Err(error) = result {
        // Mostly clients going away or header timeouts: worth a debug line, not more.
        tracing::debug!(peer = &*peer.0, %error, "connection ended with an error");
    }
}

/// The protocol a connection speaks, with the bytes read to tell.
enum Protocol {
    Http1(Bytes),
    Http2(Bytes),
}

/// Reads into `read` until the first bytes match the HTTP/2 preface or cannot. Cancel-safe:
/// every byte read is in `read`.
async fn detect(stream: &mut Stream, read: &mut BytesMut) -> io::Result<Protocol> {
    loop {
        if !H2_PREFACE.starts_with(read) {
            return Ok(Protocol::Http1(read.split().freeze()));
        }
        if read.len() == H2_PREFACE.len() {
            return Ok(Protocol::Http2(read.split().freeze()));
        }
        // Read no further than the preface: the rest is hyper's to read.
        let mut window = (&mut *stream).take((H2_PREFACE.len() - read.len()) as u64);
        if window.read_buf(read).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A connection the drain found before its first byte: kept if it can be, else given
/// `shutdown.linger` to start a request, which is answered with `Connection: close`.
async fn drain_unread(
    mut stream: Stream,
    keepable: bool,
    peer: &Peer,
    serving: &Arc<Serving>,
    settings: &Generation,
) {
    if keepable && place_in_store(serving) {
        let store = serving.store.clone();
        keep_or_close(stream, Bytes::new(), store, peer, serving, settings).await;
        return;
    }
    let linger = settings.config.shutdown.linger;
    let mut read = BytesMut::new();
    if let Ok(Ok(Protocol::Http1(read))) =
        tokio::time::timeout(linger, detect(&mut stream, &mut read)).await
    {
        let io = Prefixed::new(read, stream);
        let conn = http1(io, settings, &Arc::new(Exchange::closing(serving)), peer);
        let _ = close_gently(conn, settings).await;
    }
}

/// Reserves a place in the store for one connection, if the drain may keep connections.
fn place_in_store(serving: &Serving) -> bool {
    // The generation live now, not the one the connection started with: a reload may have
    // switched keeping off.
    serving.live.load().config.shutdown.keep_connections && serving.store.reserve()
}

async fn serve_http2(
    io: Prefixed,
    peer: &Peer,
    serving: &Arc<Serving>,
    settings: &Generation,
    watch: Watch,
) -> hyper::Result<()> {
    let handler = Handler::new(&Arc::new(Exchange::new(serving)), peer);
    let conn = settings.http2.serve_connection(TokioIo::new(io), handler);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        () = watch.started() => {
            // GOAWAY tells the client which streams were processed: nothing is lost.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// An HTTP/1 connection as hyper serves it here.
type Http1 = hyper::server::conn::http1::Connection<TokioIo<Prefixed>, Handler>;

async fn serve_http1(
    io: Prefixed,
    keepable: bool,
    peer: &Peer,
    serving: &Arc<Serving>,
    settings: &Generation,
    watch: Watch,
) -> hyper::Result<()> {
    // Closing is decided from the start for a connection that cannot be kept; it shows only
    // once the drain begins.
    let exchange = Arc::new(if keepable {
        Exchange::new(serving)
    } else {
        Exchange::closing(serving)
    });
    let mut conn = http1(io, settings, &exchange, peer);
    tokio::select! {
        // The connection first: bytes already read (protocol detection read the start of a
        // request) must reach hyper before the drain decides, or the request would count as
        // read ahead and the connection could not be kept.
        biased;
        result = &mut conn => {
            exchange.ended();
            return result;
        }
        () = watch.started() => {}
    }
    let Some(store) = exchange.keeps() else {
        // No room, or a response already went out with `Connection: close`.
        return close_gently(conn, settings).await;
    };
    // Let the request in progress (if any) finish, then stop at the boundary.
    while exchange.in_flight() > 0 {
        tokio::select! {
            result = &mut conn => {
                store.release();
                return result;
            }
            () = exchange.idle.notified() => {}
        }
    }
    let started = exchange.started();
    // Idle: hyper stops now. Writing a response: it stops once the response is out, without
    // adding `Connection: close` (the head is written already). Reading a request head: it
    // answers it with `Connection: close`, which `started` below notices.
    Pin::new(&mut conn).graceful_shutdown();
    let result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await;
    let reusable = result.is_ok() && exchange.started() == started && exchange.reusable();
    let parts = conn.into_parts();
    let (mut stream, unread) = parts.io.into_inner().into_parts(parts.read_buf);
    if !reusable {
        store.release();
        // The client was told to close, or something is unfinished: close as hyper would.
        let _ = stream.shutdown().await;
        return result;
    }
    keep_or_close(stream, unread, store, peer, serving, settings).await;
    Ok(())
}

/// Hands an idle connection with nothing read ahead to the fd store. With bytes read ahead (a
/// pipelined request), or when systemd cannot take it, serves on with `Connection: close`
/// instead, as the drain always did.
async fn keep_or_close(
    stream: Stream,
    unread: Bytes,
    store: Arc<Store>,
    peer: &Peer,
    serving: &Arc<Serving>,
    settings: &Generation,
) {
    if !unread.is_empty() {
        store.release();
    } else {
        match stream.as_fd().try_clone_to_owned() {
            Ok(fd) => match store.keep(fd).await {
                Ok(()) => {
                    tracing::debug!(peer = &*peer.0, "kept for the next process");
                    return;
                }
                Err(error) => tracing::warn!(
                    peer = &*peer.0,
                    %error,
                    "cannot keep the connection in systemd's fd store; closing it gently"
                ),
            },
            Err(error) => {
                store.release();
                tracing::warn!(peer = &*peer.0, %error, "cannot copy the connection's fd; closing it gently");
            }
        }
    }
    let io = Prefixed::new(unread, stream);
    let conn = http1(io, settings, &Arc::new(Exchange::closing(serving)), peer);
    let _ = close_gently(conn, settings).await;
}

/// Serves on with `Connection: close` on every response; an idle connection gets
/// `shutdown.linger` for a request already on its way, then is closed.
async fn close_gently(mut conn: Http1, settings: &Generation) -> hyper::Result<()> {
    match tokio::time::timeout(settings.config.shutdown.linger, &mut conn).await {
        Ok(result) => result,
        Err(_) => {
            Pin::new(&mut conn).graceful_shutdown();
            conn.await
        }
    }
}

/// hyper's HTTP/1 connection over `io`, with `settings`, answering for `exchange`.
fn http1(io: Prefixed, settings: &Generation, exchange: &Arc<Exchange>, peer: &Peer) -> Http1 {
    let handler = Handler::new(exchange, peer);
    // Each connection gets its own timer for hyper's header-read timeout (see `timer`).
    let mut builder = settings.http1.clone();
    builder.timer(ConnectionTimer::default());
    builder.serve_connection(TokioIo::new(io), handler)
}

/// A connection's requests as the drain sees them: how many are in progress, whether the
/// connection could be reused, and whether the drain keeps or closes it.
#[derive(Debug)]
struct Exchange {
    /// What the connection is served with.
    serving: Arc<Serving>,
    /// Requests whose response has not been handed to hyper yet.
    in_flight: AtomicUsize,
    /// Requests started so far.
    started: AtomicU64,
    /// [`OPEN`], [`KEEP`] or [`CLOSE`]: decided once, by the drain or the first response
    /// during it, whichever comes first.
    fate: AtomicU8,
    /// Cleared when the client asked to close, or a request body was left unread.
    not_reusable: AtomicBool,
    /// Woken when `in_flight` drops to zero.
    idle: Notify,
}

/// No drain yet.
const OPEN: u8 = 0;
/// The drain keeps the connection: no `Connection: close`.
const KEEP: u8 = 1;
/// The drain closes the connection: `Connection: close` on every response.
const CLOSE: u8 = 2;

impl Exchange {
    /// The exchange of a new connection.
    fn new(serving: &Arc<Serving>) -> Self {
        Exchange {
            serving: serving.clone(),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            fate: AtomicU8::new(OPEN),
            not_reusable: AtomicBool::new(false),
            idle: Notify::new(),
        }
    }

    /// An exchange the drain already decided to close.
    fn closing(serving: &Arc<Serving>) -> Self {
        let exchange = Exchange::new(serving);
        exchange.fate.store(CLOSE, Ordering::Release);
        exchange
    }

    /// Whether the drain keeps this connection, decided on first asking: by the connection
    /// when it sees the drain start, or by a response that goes out before that (the drain
    /// flag is set first). Keeping takes a place in the store, returned with it.
    fn keeps(&self) -> Option<Arc<Store>> {
        let serving = &self.serving;
        if self.fate.load(Ordering::Acquire) == OPEN {
            let placed = place_in_store(serving);
            let fate = self.decide(if placed { KEEP } else { CLOSE });
            if placed && fate != KEEP {
                serving.store.release();
            }
        }
        (self.fate.load(Ordering::Acquire) == KEEP).then(|| serving.store.clone())
    }

    /// The connection ended on its own: a place a response took for it goes back.
    fn ended(&self) {
        if self.fate.load(Ordering::Acquire) == KEEP {
            self.serving.store.release();
        }
    }

    /// Sets the fate unless it is set already; returns the fate that holds.
    fn decide(&self, fate: u8) -> u8 {
        match self
            .fate
            .compare_exchange(OPEN, fate, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => fate,
            Err(decided) => decided,
        }
    }

    /// Whether a response going out now must carry `Connection: close`: during the drain,
    /// unless the connection is kept.
    fn closes(&self) -> bool {
        // A place taken here is held until the connection task uses or returns it.
        self.serving.shared.draining() && self.keeps().is_none()
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    fn reusable(&self) -> bool {
        !self.not_reusable.load(Ordering::Acquire)
    }

    fn not_reusable(&self) {
        self.not_reusable.store(true, Ordering::Release);
    }
}

/// Counts a request in progress until dropped (its response is ready, or it was abandoned).
struct InFlight(Arc<Exchange>);

impl InFlight {
    fn begin(exchange: &Arc<Exchange>) -> Self {
        exchange.started.fetch_add(1, Ordering::AcqRel);
        exchange.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(exchange.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_one();
        }
    }
}

/// Answers a connection's requests: the built-in routes, then the application's router.
#[derive(Debug)]
struct Handler {
    exchange: Arc<Exchange>,
    peer: Peer,
    /// The generation this connection serves with, followed to the live one per request. A
    /// `RefCell`, as hyper calls the handler through `&self`, from the connection's task only.
    current: RefCell<Current>,
}

impl Handler {
    fn new(exchange: &Arc<Exchange>, peer: &Peer) -> Self {
        Handler {
            current: RefCell::new(Current::new(exchange.serving.live.load_full())),
            exchange: exchange.clone(),
            peer: peer.clone(),
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Handler {
    type Response = Response;
    type Error = Infallible;
    type Future = Responding;

    fn call(&self, request: hyper::Request<Incoming>) -> Responding {
        let in_flight = InFlight::begin(&self.exchange);
        let version = request.version();
        if version <= Version::HTTP_11 && !keeps_alive(&request) {
            self.exchange.not_reusable();
        }
        let serving = &self.exchange.serving;
        // Per-request logging costs allocations; pay for them only when it is on.
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| Logged {
            started: Instant::now(),
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            peer: self.peer.clone(),
        });
        let mut current = self.current.borrow_mut();
        current.follow(&serving.live);
        let routed = match routes::builtin(&request, &serving.shared) {
            Some(response) => Routed::answered(response),
            None => current.route(request.map(|body| Tracked::body(body, &self.exchange))),
        };
        Responding {
            routed,
            version,
            then: Some(Then {
                in_flight,
                header: current.header(),
                logged,
            }),
        }
    }
}

/// A response on its way: the route's answer, then what the server does to every response.
///
/// A future of its own rather than a boxed `async` block: hyper can hand an HTTP/1 socket
/// back only when the handler's futures are `Unpin`, and a box per request (with a copy of
/// the future into it) is what the `async` block would need for that.
struct Responding {
    routed: Routed,
    version: Version,
    /// Taken when the response is ready.
    then: Option<Then>,
}

/// What a response needs once it is ready.
struct Then {
    in_flight: InFlight,
    /// `x-config-generation`.
    header: HeaderValue,
    logged: Option<Logged>,
}

/// What the per-request debug line says, kept only while it is enabled.
struct Logged {
    started: Instant,
    method: Method,
    path: String,
    peer: Peer,
}

impl Future for Responding {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(Pin::new(&mut self.routed).poll(cx));
        let Some(Then {
            in_flight,
            header: generation,
            logged,
        }) = self.then.take()
        else {
            // Polled again after `Ready`: a caller's bug, answered like `Routed` answers it.
            return Poll::Ready(Ok(response));
        };
        let exchange = &in_flight.0;
        let http1 = self.version <= Version::HTTP_11;
        let close = http1 && exchange.closes();
        routes::finish(&mut response, &exchange.serving.shared, generation, close);
        if http1 && has_close(response.headers().get(header::CONNECTION)) {
            exchange.not_reusable();
        }
        drop(in_flight);
        if let Some(logged) = logged {
            tracing::debug!(
                peer = &*logged.peer.0,
                method = %logged.method,
                path = logged.path,
                status = response.status().as_u16(),
                elapsed_us = u64::try_from(logged.started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "request"
            );
        }
        Poll::Ready(Ok(response))
    }
}

/// Whether an HTTP/1 request lets the connection carry another one.
fn keeps_alive<B>(request: &hyper::Request<B>) -> bool {
    let connection = request.headers().get(header::CONNECTION);
    if request.version() == Version::HTTP_10 {
        connection.is_some_and(|v| has_token(v, "keep-alive"))
    } else {
        !has_close(connection)
    }
}

fn has_close(value: Option<&HeaderValue>) -> bool {
    value.is_some_and(|v| has_token(v, "close"))
}

/// Whether a comma-separated header value holds `token`, in any case.
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A request body that tells its connection when it was left unread: hyper then cannot stop
/// the connection at a clean boundary, so the drain must not keep it.
struct Tracked {
    inner: Incoming,
    exchange: Arc<Exchange>,
    ended: bool,
}

impl Tracked {
    /// `body` as the router takes it; tracked only when there is a body at all.
    fn body(body: Incoming, exchange: &Arc<Exchange>) -> Body {
        if hyper::body::Body::is_end_stream(&body) {
            Body::new(body)
        } else {
            Body::new(Tracked {
                inner: body,
                exchange: exchange.clone(),
                ended: false,
            })
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() || self.inner.is_end_stream() {
            self.ended = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.ended {
            self.exchange.not_reusable();
        }
    }
}

/// A stream with bytes already read from it in front: what protocol detection read, or what
/// hyper had read ahead when it stopped.
#[derive(Debug)]
pub(crate) struct Prefixed {
    prefix: Bytes,
    stream: Stream,
}

impl Prefixed {
    pub(crate) fn new(prefix: Bytes, stream: Stream) -> Self {
        Prefixed { prefix, stream }
    }

    /// The stream, and every byte read from it but not consumed: `read_ahead` (hyper's
    /// buffer) first, then what is left of the prefix.
    fn into_parts(self, read_ahead: Bytes) -> (Stream, Bytes) {
        let unread = match (read_ahead.is_empty(), self.prefix.is_empty()) {
            (_, true) => read_ahead,
            (true, false) => self.prefix,
            (false, false) => [read_ahead, self.prefix].concat().into(),
        };
        (self.stream, unread)
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Stream {
    /// Takes over a connected socket from the fd store.
    pub(crate) fn adopt(fd: OwnedFd) -> io::Result<(Stream, Peer)> {
        let socket = socket2::Socket::from(fd);
        socket.set_nonblocking(true)?;
        if socket.domain()? == socket2::Domain::UNIX {
            let std = std::os::unix::net::UnixStream::from(OwnedFd::from(socket));
            Ok((
                Stream::Unix(tokio::net::UnixStream::from_std(std)?),
                Peer("unix".into()),
            ))
        } else {
            let std = std::net::TcpStream::from(socket);
            let stream = tokio::net::TcpStream::from_std(std)?;
            let _ = stream.set_nodelay(true);
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "tcp:?".to_owned(), |a| a.to_string());
            Ok((Stream::Tcp(stream), Peer(peer.into())))
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
            Stream::Tls(s) => s.get_ref().0.stream.as_fd(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Answers a connection over the limit with `503` and closes it gently: half-close, then read
/// what the client sent, so the kernel does not reset the connection and eat the response.
pub(crate) async fn reject(mut stream: Stream) {
    const RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 20\r\nretry-after: 1\r\n\r\ntoo many connections";
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        stream.write_all(RESPONSE).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}
