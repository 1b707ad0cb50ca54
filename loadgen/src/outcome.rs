//! The closed set of ways a single request can end.
//!
//! Every request the generator starts ends in exactly one [`Outcome`]. The
//! per-request records store a compact `u16` code instead of the enum: a
//! complete response keeps its exact HTTP status (100..=999), every failure
//! without a complete response gets a code of 1000 or more. That keeps a
//! record at 12 bytes and still lets the report break `ok` down by status.

use std::borrow::Cow;
use std::fmt;
use std::io;

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// A 2xx response whose body was read completely.
    Ok,
    /// A complete non-2xx response (body read completely) with this status.
    Status(u16),
    /// `connect()` was refused (`ECONNREFUSED`): nothing was listening.
    ConnectRefused,
    /// `connect()` failed for any other reason.
    ConnectError,
    /// The TCP connection was established but the TLS handshake on it
    /// failed: the certificate did not verify against the trusted CAs or
    /// the server name, no protocol version or cipher suite was shared, or
    /// the server closed or reset the connection mid-handshake. A handshake
    /// that outlasts the per-request deadline is a [`Outcome::Timeout`].
    TlsHandshakeFailed,
    /// The peer reset the connection (`ECONNRESET`, `EPIPE`, `ECONNABORTED`)
    /// while the request was written or the response read.
    Reset,
    /// The connection reached EOF before a complete status line and header
    /// block arrived. On a reused keep-alive connection this is the classic
    /// "server closed an idle connection just as the client sent on it" race.
    ClosedBeforeResponse,
    /// The connection reached EOF inside the response body.
    ClosedMidBody,
    /// The per-request deadline (connect + write + read) expired.
    Timeout,
    /// The response could not be parsed as HTTP/1.x.
    ProtocolError,
    /// Any other I/O error while writing the request or reading the response.
    IoError,
}

impl Outcome {
    /// Every outcome that is not tied to a particular status code, in the
    /// order reports list them.
    pub const KINDS: [Outcome; 10] = [
        Outcome::Ok,
        Outcome::ConnectRefused,
        Outcome::ConnectError,
        Outcome::TlsHandshakeFailed,
        Outcome::Reset,
        Outcome::ClosedBeforeResponse,
        Outcome::ClosedMidBody,
        Outcome::Timeout,
        Outcome::ProtocolError,
        Outcome::IoError,
    ];

    /// Stable machine-readable name, as used in the JSON report:
    /// `ok`, `status_503`, `connect_refused`, ...
    pub fn name(self) -> Cow<'static, str> {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Status(code) => format!("status_{code}").into(),
            Outcome::ConnectRefused => "connect_refused".into(),
            Outcome::ConnectError => "connect_error".into(),
            Outcome::TlsHandshakeFailed => "tls_handshake_failed".into(),
            Outcome::Reset => "reset".into(),
            Outcome::ClosedBeforeResponse => "closed_before_response".into(),
            Outcome::ClosedMidBody => "closed_mid_body".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::ProtocolError => "protocol_error".into(),
            Outcome::IoError => "io_error".into(),
        }
    }

    /// `true` only for [`Outcome::Ok`].
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }

    /// Classifies an I/O error seen while writing a request or reading its
    /// response on an established connection.
    pub(crate) fn from_io(err: &io::Error) -> Outcome {
        match err.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Outcome::Reset,
            io::ErrorKind::UnexpectedEof => Outcome::ClosedBeforeResponse,
            io::ErrorKind::TimedOut => Outcome::Timeout,
            _ => Outcome::IoError,
        }
    }

    /// Classifies an error returned by `connect()`.
    pub(crate) fn from_connect(err: &io::Error) -> Outcome {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Outcome::ConnectRefused,
            io::ErrorKind::TimedOut => Outcome::Timeout,
            _ => Outcome::ConnectError,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Compact per-record encoding of an outcome (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Code(pub(crate) u16);

/// Number of distinct codes: statuses 0..=999 plus the failure kinds.
pub(crate) const CODE_SPACE: usize = 1000 + 9;

impl Code {
    /// A complete response with `status`.
    pub(crate) fn status(status: u16) -> Code {
        // httparse guarantees a three-digit status.
        Code(status.min(999))
    }

    /// A failure that produced no complete response.
    pub(crate) fn failure(outcome: Outcome) -> Code {
        let k = match outcome {
            Outcome::ConnectRefused => 0,
            Outcome::ConnectError => 1,
            Outcome::Reset => 2,
            Outcome::ClosedBeforeResponse => 3,
            Outcome::ClosedMidBody => 4,
            Outcome::Timeout => 5,
            Outcome::ProtocolError => 6,
            Outcome::IoError => 7,
            Outcome::TlsHandshakeFailed => 8,
            // Responses are encoded by status; never reached by callers.
            Outcome::Ok => return Code(200),
            Outcome::Status(s) => return Code::status(s),
        };
        Code(1000 + k)
    }

    /// The HTTP status of a complete response, if this code is one.
    pub(crate) fn http_status(self) -> Option<u16> {
        (self.0 < 1000).then_some(self.0)
    }

    /// Decodes back to the public outcome.
    pub(crate) fn outcome(self) -> Outcome {
        match self.0 {
            200..=299 => Outcome::Ok,
            s @ 0..=999 => Outcome::Status(s),
            1000 => Outcome::ConnectRefused,
            1001 => Outcome::ConnectError,
            1002 => Outcome::Reset,
            1003 => Outcome::ClosedBeforeResponse,
            1004 => Outcome::ClosedMidBody,
            1005 => Outcome::Timeout,
            1006 => Outcome::ProtocolError,
            1008 => Outcome::TlsHandshakeFailed,
            _ => Outcome::IoError,
        }
    }

    /// `true` for a 2xx response.
    pub(crate) fn is_ok(self) -> bool {
        (200..300).contains(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for kind in Outcome::KINDS {
            if kind == Outcome::Ok {
                continue;
            }
            let code = Code::failure(kind);
            assert!((code.0 as usize) < CODE_SPACE);
            assert_eq!(code.outcome(), kind);
            assert!(!code.is_ok());
            assert_eq!(code.http_status(), None);
        }
        assert_eq!(Code::status(204).outcome(), Outcome::Ok);
        assert_eq!(Code::status(503).outcome(), Outcome::Status(503));
        assert_eq!(Code::status(503).http_status(), Some(503));
        assert_eq!(Outcome::Status(503).name(), "status_503");
        assert_eq!(Outcome::TlsHandshakeFailed.name(), "tls_handshake_failed");
    }
}
