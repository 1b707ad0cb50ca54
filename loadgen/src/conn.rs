//! Client connections over TCP, TLS over TCP, or a unix stream socket.
//!
//! A small enum rather than a trait object keeps the per-request read and
//! write calls statically dispatched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

use crate::Target;
use crate::outcome::Outcome;
use crate::tls::Connector;

/// An established connection to the target.
#[derive(Debug)]
pub(crate) enum Conn {
    Tcp(TcpStream),
    /// Boxed: the TLS session state is large, and most runs use none.
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl Conn {
    /// Opens a new connection and, with `tls`, completes the TLS handshake
    /// on it. TCP connections get `TCP_NODELAY`: requests are written in
    /// one piece, and Nagle would only add latency.
    ///
    /// A failure is returned as the request's outcome: connect errors as
    /// by [`Outcome::from_connect`], any failure of the handshake as
    /// [`Outcome::TlsHandshakeFailed`].
    pub(crate) async fn connect(target: &Target, tls: Option<&Connector>) -> Result<Conn, Outcome> {
        match target {
            Target::Tcp(addr) => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| Outcome::from_connect(&e))?;
                stream
                    .set_nodelay(true)
                    .map_err(|e| Outcome::from_connect(&e))?;
                match tls {
                    None => Ok(Conn::Tcp(stream)),
                    Some(tls) => tls
                        .connector
                        .connect(tls.name.clone(), stream)
                        .await
                        .map(|s| Conn::Tls(Box::new(s)))
                        .map_err(|_| Outcome::TlsHandshakeFailed),
                }
            }
            // `Load::validate` rejects TLS over unix sockets.
            Target::Unix(path) => UnixStream::connect(path)
                .await
                .map(Conn::Unix)
                .map_err(|e| Outcome::from_connect(&e)),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => match Pin::new(s.as_mut()).poll_read(cx, buf) {
                // rustls reports a TCP EOF that no close_notify preceded as
                // an error (a possible truncation). Here it is the same EOF
                // as on plain TCP: whether the response was complete is for
                // the parser to decide, as it does there. (Data received
                // before the EOF has already been returned by then.)
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Ok(()))
                }
                other => other,
            },
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
