//! What can go wrong on a stream ([`WireError`]) and the codes a connection is closed
//! with ([`CloseCode`]).

use std::io;

/// A stream-level failure: the bytes on a stream could not be read or written as the
/// protocol says. Broker-side refusals of well-formed requests are not `WireError`s
/// but [`ErrorBody`](super::ErrorBody) values inside a response.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The underlying stream failed (connection lost, reset by the peer, …).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A frame header announced `len` bytes, more than the `max` this reader accepts,
    /// or a message to be sent encodes to more than `max` bytes. The body is never
    /// read; the stream is out of sync afterwards and must be abandoned.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    Oversize {
        /// Announced (or encoded) body length in bytes.
        len: usize,
        /// The maximum that was in force.
        max: usize,
    },
    /// A complete frame arrived but its body is not a valid message of the expected
    /// type (postcard's error text, or trailing bytes). Framing is intact: the next
    /// read returns the next frame.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The stream ended in the middle of a frame, or before a message that had to
    /// come (such as the hello).
    #[error("stream ended in the middle of a frame or before a required message")]
    UnexpectedEof,
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: ours is {ours}, the peer's is {theirs}")]
    VersionMismatch {
        /// [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION) of this build.
        ours: u32,
        /// The version in the peer's hello.
        theirs: u32,
    },
    /// A well-formed message that is not allowed at this point (a request on the
    /// event stream, a hello from an unexpected role, …); the text says what was
    /// expected.
    #[error("unexpected message: {0}")]
    UnexpectedMessage(&'static str),
    /// A message could not be serialised. This is a bug in a message type, never
    /// caused by input from a peer.
    #[error("could not encode message: {0}")]
    Encode(String),
}

impl WireError {
    /// The application error code to close the connection with after this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            WireError::Io(_) | WireError::Encode(_) => CloseCode::Internal,
            WireError::VersionMismatch { .. } => CloseCode::VersionMismatch,
            WireError::Oversize { .. }
            | WireError::Malformed(_)
            | WireError::UnexpectedEof
            | WireError::UnexpectedMessage(_) => CloseCode::ProtocolViolation,
        }
    }
}

/// Application error codes for closing a QUIC connection (the `error_code` of a
/// CONNECTION_CLOSE frame). The numbers are part of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// Orderly close: this side is done with the connection.
    Done = 0,
    /// The peer sent something the protocol does not allow (oversize or malformed
    /// frame, unexpected message); its stream cannot be trusted any more.
    ProtocolViolation = 1,
    /// The peer's hello carried another protocol version.
    VersionMismatch = 2,
    /// The peer's certificate identity may not do what it tried (a node asking for an
    /// admin operation, a node name that is not in the topology, a hello whose role
    /// contradicts the certificate).
    NotAuthorised = 3,
    /// This process is shutting down.
    Shutdown = 4,
    /// This side hit an internal error unrelated to what the peer sent.
    Internal = 5,
}

impl CloseCode {
    /// Every close code, in numeric order.
    pub const ALL: [CloseCode; 6] = [
        CloseCode::Done,
        CloseCode::ProtocolViolation,
        CloseCode::VersionMismatch,
        CloseCode::NotAuthorised,
        CloseCode::Shutdown,
        CloseCode::Internal,
    ];

    /// The numeric code.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The close code with this number, if it is one of ours.
    pub fn from_u64(code: u64) -> Option<CloseCode> {
        CloseCode::ALL
            .into_iter()
            .find(|c| u64::from(c.as_u32()) == code)
    }

    /// A short human-readable reason, sent as the close reason.
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Done => "done",
            CloseCode::ProtocolViolation => "protocol violation",
            CloseCode::VersionMismatch => "protocol version mismatch",
            CloseCode::NotAuthorised => "not authorised",
            CloseCode::Shutdown => "shutting down",
            CloseCode::Internal => "internal error",
        }
    }

    /// Closes `conn` with this code and its [`reason`](Self::reason).
    pub fn close(self, conn: &quinn::Connection) {
        conn.close(self.into(), self.reason().as_bytes());
    }

    /// The code the peer closed a connection with, if it closed it with one of ours.
    pub fn from_connection_error(err: &quinn::ConnectionError) -> Option<CloseCode> {
        match err {
            quinn::ConnectionError::ApplicationClosed(close) => {
                CloseCode::from_u64(close.error_code.into_inner())
            }
            _ => None,
        }
    }
}

impl From<CloseCode> for quinn::VarInt {
    fn from(code: CloseCode) -> quinn::VarInt {
        quinn::VarInt::from_u32(code.as_u32())
    }
}
