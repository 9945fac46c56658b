//! Typed HTTP bodies.
