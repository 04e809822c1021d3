//! The qnet broker.
