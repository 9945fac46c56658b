//! The run contract shared by every part of the daemon: plain data, no I/O.

pub mod event;
