//! Minimal keep-alive HTTP/1.1 "hello" server for measuring the generator
//! itself: `cargo run --release -p loadgen --example hello -- 127.0.0.1:8099`.
//!
//! It answers every request head with a fixed 200 response (with an `x-pid`
//! header), honours `Connection: close`, and does nothing else, so that a
//! benchmark against it shows the generator's ceiling, not a server's.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("hello: listening on {}", listener.local_addr()?);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nx-pid: {}\r\nContent-Length: 13\r\n\r\nhello, world\n",
        std::process::id()
    );
    let close_response = response.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
    let (response, close_response): (&'static str, &'static str) = (
        Box::leak(response.into_boxed_str()),
        Box::leak(close_response.into_boxed_str()),
    );
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(stream, response, close_response).await;
        });
    }
}

async fn serve(mut stream: TcpStream, response: &str, close_response: &str) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        // Answer every complete request head in the buffer (pipelining-safe).
        let mut start = 0;
        let mut close = false;
        while let Some(end) = find_head_end(&buf[start..filled]) {
            let head = &buf[start..start + end];
            close = contains_ignore_case(head, b"\r\nconnection: close");
            out.extend_from_slice(if close { close_response } else { response }.as_bytes());
            start += end;
            if close {
                break;
            }
        }
        if start == 0 && filled == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return stream.shutdown().await;
        }
    }
}

/// Length of the request head (including the blank line) at the front of
/// `buf`, if complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
