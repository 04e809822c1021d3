//! [`TopologyError`] and the [`Location`] every error points at.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use thiserror::Error;

/// A place in a topology file: file name (as given to the parser), 1-based line and
/// 1-based column (counted in characters, not bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name or other origin name the text was parsed under.
    pub file: String,
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number, starting at 1, in characters.
    pub column: usize,
}

impl Location {
    /// The location of byte offset `offset` in `text`, which came from `file`.
    ///
    /// Offsets past the end (TOML reports end-of-file errors that way) point just after
    /// the last character.
    pub fn from_offset(file: &str, text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: file.to_owned(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    /// The location of the start of `span` in `text`.
    pub(crate) fn from_span(file: &str, text: &str, span: &Range<usize>) -> Location {
        Location::from_offset(file, text, span.start)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Everything that can be wrong with a topology file.
///
/// Except for [`TopologyError::Io`], every variant carries the [`Location`] of the
/// offending item, and its `Display` starts with `file:line:column: `, the format
/// editors and terminals turn into a link.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The file could not be read.
    #[error("{}: cannot read topology file: {error}", path.display())]
    Io {
        /// The path that was being read.
        path: PathBuf,
        /// What the operating system said (part of the message, so not also
        /// reported as the error's source).
        error: std::io::Error,
    },

    /// The text is not valid TOML, or does not fit the format: an unknown key, a value of
    /// the wrong type, a missing required key, an unknown link model. The message is
    /// the TOML parser's.
    #[error("{at}: {message}")]
    Syntax {
        /// Where the parser stopped.
        at: Location,
        /// What the parser said.
        message: String,
    },

    /// The topology has no `[[nodes]]`.
    #[error("{at}: topology has no nodes; add at least one [[nodes]] entry")]
    NoNodes {
        /// The network name, for want of a better place.
        at: Location,
    },

    /// A network or node name is empty, too long, or uses characters outside
    /// `[A-Za-z0-9_-]`.
    #[error("{at}: invalid {what} name \"{name}\": {reason}")]
    InvalidName {
        /// The name's value.
        at: Location,
        /// `"network"` or `"node"`.
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// Two nodes have the same name.
    #[error(
        "{at}: duplicate node name \"{name}\" (first defined at line {first_line}, column {first_column})"
    )]
    DuplicateNode {
        /// The second definition.
        at: Location,
        /// The name used twice.
        name: String,
        /// Line of the first definition (same file).
        first_line: usize,
        /// Column of the first definition.
        first_column: usize,
    },

    /// A link names a node that is not defined.
    #[error("{at}: link refers to unknown node \"{name}\"")]
    UnknownNode {
        /// The link end (`a` or `b`) that names the node.
        at: Location,
        /// The unknown name.
        name: String,
    },

    /// A link connects a node to itself.
    #[error("{at}: link connects node \"{name}\" to itself")]
    SelfLink {
        /// The link's `b` end.
        at: Location,
        /// The node at both ends.
        name: String,
    },

    /// Two links connect the same pair of nodes (in either direction).
    #[error(
        "{at}: duplicate link between \"{a}\" and \"{b}\" (first defined at line {first_line}, column {first_column})"
    )]
    DuplicateLink {
        /// The second link's `a` end.
        at: Location,
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// Line of the first link's `a` end (same file).
        first_line: usize,
        /// Column of the first link's `a` end.
        first_column: usize,
    },

    /// Some node cannot be reached from the first node over links.
    #[error(
        "{at}: node \"{node}\" cannot be reached from node \"{from}\": the network is not connected"
    )]
    Disconnected {
        /// The unreachable node's name.
        at: Location,
        /// The first unreachable node, in file order.
        node: String,
        /// The first node of the file, where the search started.
        from: String,
    },

    /// A node's T2 is longer than twice its T1, which no physical qubit allows.
    #[error("{at}: node \"{node}\" has T2 = {t2} > 2·T1 = 2 × {t1}; T2 must be at most 2·T1")]
    T2ExceedsTwiceT1 {
        /// The `t2` value that applies to the node (in the node or in the defaults).
        at: Location,
        /// The node's name.
        node: String,
        /// T1 as written.
        t1: String,
        /// T2 as written.
        t2: String,
    },

    /// A probability (gate or readout error, efficiency, visibility) outside [0, 1].
    #[error("{at}: {field} must be a probability in [0, 1], got {value}")]
    ProbabilityOutOfRange {
        /// The value.
        at: Location,
        /// The key, such as `gate_error`.
        field: &'static str,
        /// The value found.
        value: f64,
    },

    /// A link fidelity outside [0.25, 1] (0.25 is the fully mixed state).
    #[error("{at}: fidelity must be in [0.25, 1], got {value}")]
    FidelityOutOfRange {
        /// The value.
        at: Location,
        /// The value found.
        value: f64,
    },

    /// A negative (or infinite, or NaN) fibre length.
    #[error("{at}: length_km must be a finite number >= 0, got {value}")]
    NegativeLength {
        /// The value.
        at: Location,
        /// The value found.
        value: f64,
    },

    /// `time_scale` is not a finite number > 0.
    #[error("{at}: time_scale must be a finite number > 0, got {value}")]
    InvalidTimeScale {
        /// The value.
        at: Location,
        /// The value found.
        value: f64,
    },

    /// A node has `memory_qubits = 0`.
    #[error("{at}: memory_qubits must be at least 1")]
    ZeroMemory {
        /// The value.
        at: Location,
    },

    /// A duration string that does not parse.
    #[error("{at}: bad duration \"{text}\" for {field}: {reason}")]
    BadDuration {
        /// The string.
        at: Location,
        /// The key, such as `t1`.
        field: &'static str,
        /// The string found.
        text: String,
        /// Why it does not parse (already part of the message, so not a `source`).
        reason: super::DurationError,
    },

    /// Any other value outside its allowed range, such as `bright_state = 0.7` or
    /// `cycle_time = "0s"`.
    #[error("{at}: {field} must be {expected}, got {value}")]
    OutOfRange {
        /// The value.
        at: Location,
        /// The key.
        field: &'static str,
        /// The allowed range, in words.
        expected: &'static str,
        /// The value found, as written or formatted.
        value: String,
    },
}

impl TopologyError {
    /// Where in the file the error is, for every variant but [`TopologyError::Io`].
    pub fn location(&self) -> Option<&Location> {
        use TopologyError::*;
        match self {
            Io { .. } => None,
            Syntax { at, .. }
            | NoNodes { at }
            | InvalidName { at, .. }
            | DuplicateNode { at, .. }
            | UnknownNode { at, .. }
            | SelfLink { at, .. }
            | DuplicateLink { at, .. }
            | Disconnected { at, .. }
            | T2ExceedsTwiceT1 { at, .. }
            | ProbabilityOutOfRange { at, .. }
            | FidelityOutOfRange { at, .. }
            | NegativeLength { at, .. }
            | InvalidTimeScale { at, .. }
            | ZeroMemory { at }
            | BadDuration { at, .. }
            | OutOfRange { at, .. } => Some(at),
        }
    }
}
