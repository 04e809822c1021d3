//! The wire protocol every qnet process speaks: message types, their postcard codec,
//! length-prefixed framing, the versioned hello and the QUIC close codes.
//!
//! # Connections and streams
//!
//! Every connection is mutual TLS (see [`crate::tls`]); a peer's identity comes from
//! its certificate ([`crate::tls::peer_identity`]), never from a message field.
//!
//! - **node or controller → broker.** The client opens one bidirectional stream, the
//!   *control stream*, and writes its [`Hello`]; the broker answers with its own
//!   [`Hello`] on the same stream. After that the client writes [`Request`]s and the
//!   broker writes [`Response`]s. Requests carry ids so a client can keep many in
//!   flight; responses to one stream come back in request order today, but clients
//!   must match them by id, not by position. After the hello the broker opens one
//!   unidirectional stream of its own and writes [`Event`]s on it (heralds, qubit
//!   arrivals).
//! - **node ↔ node.** The connecting side opens a bidirectional stream and both sides
//!   exchange [`Hello`]s on it; after that either side sends [`Classical`] messages.
//!
//! Every frame is a `u32` big-endian length followed by that many bytes of postcard
//! ([`frame`]). A frame longer than the reader's maximum ([`MAX_FRAME`] unless told
//! otherwise) is refused before its body is read.
//!
//! - **controller → node.** The admin API of [`admin`]: a bidirectional stream with
//!   hellos, then [`NodeRequest`]s and [`NodeResponse`]s.
//!
//! # Evolving the protocol
//!
//! postcard is not self-describing: an enum variant is sent as its index and a struct
//! as its fields in order. So variants are only ever appended, never reordered or
//! removed, and any change that an old peer cannot read bumps [`PROTOCOL_VERSION`].
//! The version is the first field of [`Hello`] and stays so forever, which is why a
//! mismatch is reported as [`WireError::VersionMismatch`] even when the rest of the
//! hello changed shape.
//!
//! # Errors
//!
//! A broker-side refusal travels back as an [`ErrorBody`] in the response and leaves
//! the connection open. A stream that can no longer be trusted (oversize frame,
//! undecodable hello, version mismatch) is a [`WireError`]; the caller closes the
//! connection with [`WireError::close_code`].

pub mod admin;
pub mod error;
pub mod frame;
pub mod messages;

pub use admin::{
    CardinalState, LinkKind, LinkLogEntry, LinkPairReport, LinkRunSpec, NodeRequest,
    NodeRequestBody, NodeResponse, NodeResponseBody,
};
pub use error::{CloseCode, WireError};
pub use frame::{
    FrameReader, FrameWriter, HELLO_MAX_FRAME, MAX_FRAME, decode, encode, encode_frame_into,
    read_frame, read_hello, write_frame, write_hello,
};
pub use messages::{
    BrokerStats, Classical, ErrorBody, Event, Gate, Hello, HeraldRecord, MAX_BATCH,
    MAX_DENSITY_QUBITS, PROTOCOL_VERSION, Pair, Request, RequestBody, Response, ResponseBody, Role,
};
