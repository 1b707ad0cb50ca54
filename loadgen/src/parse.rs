//! Incremental HTTP/1.x response parser, independent of any I/O.
//!
//! The worker appends whatever the socket delivers to a reusable buffer and
//! calls [`ResponseParser::parse`], which consumes exactly the bytes that
//! belong to the current response (head, then body framed by
//! `Content-Length`, `Transfer-Encoding: chunked`, or connection close) and
//! leaves anything after it in the buffer. At EOF, [`ResponseParser::eof`]
//! decides whether the response was complete, and if not, where it broke off —
//! that distinction (`closed_before_response` vs `closed_mid_body`) is what
//! the reports are about, so it lives here where it can be unit-tested with
//! arbitrary splits of the byte stream.
//!
//! The parser is strict where leniency could hide a server bug (chunk framing
//! must be exact, conflicting lengths are rejected) and never allocates after
//! warm-up: bodies are skipped, not stored.

use bytes::{Buf, BytesMut};

/// Largest response head accepted before declaring a protocol error.
const MAX_HEAD: usize = 64 * 1024;
/// Largest number of header fields accepted in one response head.
const MAX_HEADERS: usize = 64;
/// Largest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Why a response could not be completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// The bytes received are not a valid HTTP/1.x response.
    Protocol(&'static str),
    /// EOF arrived before a complete status line and header block.
    ClosedBeforeResponse,
    /// EOF arrived inside the body.
    ClosedMidBody,
}

/// Result of feeding bytes to the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More bytes are needed.
    Partial,
    /// The response is complete; the bytes after it remain in the buffer.
    Complete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailer,
    UntilEof,
    Done,
}

/// Parser state for one response at a time; reuse it with [`Self::reset`].
#[derive(Debug)]
pub(crate) struct ResponseParser {
    state: State,
    status: u16,
    close: bool,
    head_done: bool,
    capture_name: Option<Box<[u8]>>,
    captured: Vec<u8>,
    has_capture: bool,
}

impl ResponseParser {
    /// A parser that also records the value of header `capture` (matched
    /// case-insensitively), if given.
    pub(crate) fn new(capture: Option<&str>) -> Self {
        ResponseParser {
            state: State::Head,
            status: 0,
            close: false,
            head_done: false,
            capture_name: capture.map(|c| c.as_bytes().into()),
            captured: Vec::new(),
            has_capture: false,
        }
    }

    /// Prepares for the next response on the same or a new connection.
    pub(crate) fn reset(&mut self) {
        self.state = State::Head;
        self.status = 0;
        self.close = false;
        self.head_done = false;
        self.has_capture = false;
    }

    /// Status code of the final (non-1xx) response head, once parsed.
    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// Whether the connection cannot carry another request after this
    /// response: the server said `Connection: close`, spoke HTTP/1.0 without
    /// keep-alive, or delimited the body by closing the connection.
    pub(crate) fn must_close(&self) -> bool {
        self.close
    }

    /// Whether a complete final response head has been parsed.
    #[cfg(test)]
    pub(crate) fn head_done(&self) -> bool {
        self.head_done
    }

    /// Value of the captured header in the final response head, if present.
    pub(crate) fn captured(&self) -> Option<&[u8]> {
        self.has_capture.then_some(self.captured.as_slice())
    }

    /// Consumes the bytes of the current response from the front of `buf`.
    pub(crate) fn parse(&mut self, buf: &mut BytesMut) -> Result<Progress, ParseError> {
        loop {
            match self.state {
                State::Done => return Ok(Progress::Complete),
                State::Head => {
                    if !self.parse_head(buf)? {
                        return Ok(Progress::Partial);
                    }
                }
                State::Length(0) => self.state = State::Done,
                State::Length(rem) => {
                    let left = skip(buf, rem);
                    self.state = State::Length(left);
                    if left > 0 {
                        return Ok(Progress::Partial);
                    }
                }
                State::ChunkData(0) => self.state = State::ChunkDataEnd,
                State::ChunkData(rem) => {
                    let left = skip(buf, rem);
                    self.state = State::ChunkData(left);
                    if left > 0 {
                        return Ok(Progress::Partial);
                    }
                }
                State::ChunkDataEnd => {
                    if buf.len() < 2 {
                        // A lone byte can already be checked.
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(ParseError::Protocol("missing CRLF after chunk data"));
                        }
                        return Ok(Progress::Partial);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ParseError::Protocol("missing CRLF after chunk data"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::ChunkSize => {
                    let Some((len, used)) = line_at(buf)? else {
                        return Ok(Progress::Partial);
                    };
                    let size = parse_chunk_size(&buf[..len])?;
                    buf.advance(used);
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::Trailer => {
                    let Some((len, used)) = line_at(buf)? else {
                        return Ok(Progress::Partial);
                    };
                    buf.advance(used);
                    if len == 0 {
                        self.state = State::Done;
                    }
                }
                State::UntilEof => {
                    buf.clear();
                    return Ok(Progress::Partial);
                }
            }
        }
    }

    /// Tells the parser the peer closed the connection. Returns whether the
    /// response is complete (a body delimited by close) or how it broke off.
    pub(crate) fn eof(&mut self) -> Result<(), ParseError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilEof => {
                self.state = State::Done;
                Ok(())
            }
            State::Head => Err(ParseError::ClosedBeforeResponse),
            _ => Err(ParseError::ClosedMidBody),
        }
    }

    /// Parses a response head if complete; returns `Ok(false)` when more
    /// bytes are needed. Skips informational (1xx) heads.
    fn parse_head(&mut self, buf: &mut BytesMut) -> Result<bool, ParseError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(ParseError::Protocol("response head too large"));
                }
                return Ok(false);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ParseError::Protocol("too many response headers"));
            }
            Err(_) => return Err(ParseError::Protocol("malformed response head")),
        };
        let status = resp.code.unwrap_or(0);
        let http10 = resp.version == Some(0);

        let mut content_length: Option<u64> = None;
        let mut transfer_encoding = false;
        let mut chunked = false;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        self.has_capture = false;
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_content_length(h.value)?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(ParseError::Protocol("conflicting content-length"));
                }
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                transfer_encoding = true;
                // Only the last coding decides whether the body is chunked.
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|c| trim(c).eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = trim(token);
                    conn_close |= token.eq_ignore_ascii_case(b"close");
                    conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            if !self.has_capture
                && self
                    .capture_name
                    .as_deref()
                    .is_some_and(|c| name.eq_ignore_ascii_case(c))
            {
                self.captured.clear();
                self.captured.extend_from_slice(h.value);
                self.has_capture = true;
            }
        }
        buf.advance(len);

        if (100..200).contains(&status) {
            if status == 101 {
                return Err(ParseError::Protocol("unexpected 101 Switching Protocols"));
            }
            // Informational; the final response follows on the same stream.
            self.has_capture = false;
            return Ok(true);
        }

        self.status = status;
        self.head_done = true;
        self.close = conn_close || (http10 && !conn_keep_alive);
        self.state = if status == 204 || status == 304 {
            State::Length(0)
        } else if chunked {
            State::ChunkSize
        } else if transfer_encoding {
            // A non-chunked transfer coding is delimited by close.
            self.close = true;
            State::UntilEof
        } else if let Some(n) = content_length {
            State::Length(n)
        } else {
            self.close = true;
            State::UntilEof
        };
        Ok(true)
    }
}

/// Discards up to `rem` bytes from `buf`; returns how many are still owed.
fn skip(buf: &mut BytesMut, rem: u64) -> u64 {
    let n = usize::try_from(rem).unwrap_or(usize::MAX).min(buf.len());
    buf.advance(n);
    rem - n as u64
}

/// Finds the CRLF-terminated line at the front of `buf`. Returns the length
/// of its content and the number of bytes to consume with the terminator, or
/// `None` if the line is not complete yet.
fn line_at(buf: &[u8]) -> Result<Option<(usize, usize)>, ParseError> {
    let Some(pos) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE {
            return Err(ParseError::Protocol("chunk line too long"));
        }
        return Ok(None);
    };
    if pos == 0 || buf[pos - 1] != b'\r' {
        return Err(ParseError::Protocol("bare LF in chunked framing"));
    }
    Ok(Some((pos - 1, pos + 1)))
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = trim(size);
    if size.is_empty() || size.len() > 16 {
        return Err(ParseError::Protocol("bad chunk size"));
    }
    let mut n: u64 = 0;
    for &b in size {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(ParseError::Protocol("bad chunk size")),
        };
        n = (n << 4) | u64::from(d);
    }
    Ok(n)
}

fn parse_content_length(value: &[u8]) -> Result<u64, ParseError> {
    let value = trim(value);
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::Protocol("bad content-length"));
    }
    Ok(value
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t');
    let Some(start) = start else { return &[] };
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .unwrap_or(start);
    &s[start..=end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to a fresh parser in pieces of `step` bytes and returns
    /// the final progress, the parser and the bytes left over.
    fn feed(input: &[u8], step: usize) -> (Result<Progress, ParseError>, ResponseParser, BytesMut) {
        let mut p = ResponseParser::new(Some("X-Pid"));
        let mut buf = BytesMut::new();
        let mut res = Ok(Progress::Partial);
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            res = p.parse(&mut buf);
            if res != Ok(Progress::Partial) {
                break;
            }
        }
        (res, p, buf)
    }

    /// Asserts that `input` parses to the same result however it is split
    /// into two reads, and returns that result for the unsplit input.
    fn parse_all_splits(input: &[u8]) -> (Result<Progress, ParseError>, ResponseParser, BytesMut) {
        let whole = feed(input, input.len());
        for cut in 1..input.len() {
            let mut p = ResponseParser::new(Some("X-Pid"));
            let mut buf = BytesMut::from(&input[..cut]);
            let mut res = p.parse(&mut buf);
            if res == Ok(Progress::Partial) {
                buf.extend_from_slice(&input[cut..]);
                res = p.parse(&mut buf);
            } else {
                // Completed early: the rest must be left over untouched.
                buf.extend_from_slice(&input[cut..]);
            }
            assert_eq!(res, whole.0, "split at {cut}");
            assert_eq!(buf, whole.2, "leftover, split at {cut}");
            assert_eq!(p.status(), whole.1.status(), "split at {cut}");
            assert_eq!(p.must_close(), whole.1.must_close(), "split at {cut}");
        }
        // Byte-at-a-time as well.
        let bytewise = feed(input, 1);
        assert_eq!(bytewise.0, whole.0);
        whole
    }

    #[test]
    fn content_length_body() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Pid: 42\r\n\r\nhello";
        let (res, p, rest) = parse_all_splits(input);
        assert_eq!(res, Ok(Progress::Complete));
        assert_eq!(p.status(), 200);
        assert!(!p.must_close());
        assert_eq!(p.captured(), Some(&b"42"[..]));
        assert!(rest.is_empty());
    }

    #[test]
    fn content_length_incomplete_until_last_byte() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let mut p = ResponseParser::new(None);
        let mut buf = BytesMut::from(&input[..input.len() - 1]);
        assert_eq!(p.parse(&mut buf), Ok(Progress::Partial));
        assert!(p.head_done());
        assert_eq!(p.eof(), Err(ParseError::ClosedMidBody));
    }

    #[test]
    fn leftover_bytes_stay_in_buffer() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 500 Oops\r\n";
        let (res, _, rest) = parse_all_splits(input);
        assert_eq!(res, Ok(Progress::Complete));
        assert_eq!(&rest[..], b"HTTP/1.1 500 Oops\r\n");
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;name=value\r\nhello\r\n\
            A\r\n0123456789\r\n\
            0\r\nX-Trailer: yes\r\n\r\n";
        let (res, p, rest) = parse_all_splits(input);
        assert_eq!(res, Ok(Progress::Complete));
        assert_eq!(p.status(), 200);
        assert!(!p.must_close());
        assert!(rest.is_empty());
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nabc\r\n0\r\n\r\n";
        let (res, _, rest) = parse_all_splits(input);
        assert_eq!(res, Ok(Progress::Complete));
        assert!(rest.is_empty());
    }

    #[test]
    fn chunked_framing_errors() {
        let bad_size = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(
            feed(bad_size, 1000).0,
            Err(ParseError::Protocol(_))
        ));
        let no_crlf =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n";
        assert!(matches!(
            feed(no_crlf, 1000).0,
            Err(ParseError::Protocol(_))
        ));
        assert!(matches!(feed(no_crlf, 1).0, Err(ParseError::Protocol(_))));
    }

    #[test]
    fn chunked_eof_mid_body() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        let (res, mut p, _) = feed(input, 7);
        assert_eq!(res, Ok(Progress::Partial));
        assert_eq!(p.eof(), Err(ParseError::ClosedMidBody));
    }

    #[test]
    fn connection_close_is_honoured() {
        let input =
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
        let (res, p, _) = parse_all_splits(input);
        assert_eq!(res, Ok(Progress::Complete));
        assert!(p.must_close());
    }

    #[test]
    fn http10_defaults_to_close() {
        let (_, p, _) = feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 100);
        assert!(p.must_close());
        let (_, p, _) = feed(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            100,
        );
        assert!(!p.must_close());
    }

    #[test]
    fn body_until_eof() {
        let input = b"HTTP/1.1 200 OK\r\n\r\nsome body bytes";
        let (res, mut p, rest) = parse_all_splits(input);
        assert_eq!(res, Ok(Progress::Partial));
        assert!(rest.is_empty());
        assert!(p.must_close());
        assert_eq!(p.eof(), Ok(()));
        assert_eq!(p.status(), 200);
    }

    #[test]
    fn eof_before_or_inside_head() {
        let mut p = ResponseParser::new(None);
        assert_eq!(p.eof(), Err(ParseError::ClosedBeforeResponse));
        let (res, mut p, _) = feed(b"HTTP/1.1 200 OK\r\nContent-Len", 100);
        assert_eq!(res, Ok(Progress::Partial));
        assert!(!p.head_done());
        assert_eq!(p.eof(), Err(ParseError::ClosedBeforeResponse));
    }

    #[test]
    fn informational_responses_are_skipped() {
        let input = b"HTTP/1.1 100 Continue\r\nX-Pid: early\r\n\r\n\
            HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\n\r\nbye";
        let (res, p, rest) = parse_all_splits(input);
        assert_eq!(res, Ok(Progress::Complete));
        assert_eq!(p.status(), 503);
        assert_eq!(p.captured(), None);
        assert!(rest.is_empty());
    }

    #[test]
    fn no_body_statuses() {
        let (res, p, _) = feed(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
            100,
        );
        assert_eq!(res, Ok(Progress::Complete));
        assert_eq!(p.status(), 204);
    }

    #[test]
    fn malformed_heads() {
        for input in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let (res, _, _) = feed(input, 1000);
            assert!(
                matches!(res, Err(ParseError::Protocol(_))),
                "{:?} -> {res:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn oversized_head_is_rejected() {
        let mut input = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        input.resize(MAX_HEAD + 10, b'a');
        let (res, _, _) = feed(&input, 8192);
        assert!(matches!(res, Err(ParseError::Protocol(_))));
    }

    #[test]
    fn parser_reuse_after_reset() {
        let mut p = ResponseParser::new(Some("x-pid"));
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nX-PID: 1\r\nConnection: close\r\nContent-Length: 1\r\n\r\na"[..],
        );
        assert_eq!(p.parse(&mut buf), Ok(Progress::Complete));
        assert!(p.must_close());
        p.reset();
        buf.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(p.parse(&mut buf), Ok(Progress::Complete));
        assert_eq!(p.status(), 404);
        assert!(!p.must_close());
        assert_eq!(p.captured(), None);
    }

    #[test]
    fn trim_handles_edges() {
        assert_eq!(trim(b"  a b \t"), b"a b");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b""), b"");
        assert_eq!(trim(b"x"), b"x");
    }
}
