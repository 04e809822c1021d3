//! One qnet node.
