//! The qnet controller.
