//! The integration tests of `runners`, as one test binary with a module per topic: real
//! processes, pipes, signals and `/proc`, no mocks.

mod admission;
mod common;
mod isolation;
mod kill;
mod protocol;
mod skills;
mod spawn;
mod subreaper;
