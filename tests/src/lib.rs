//! End-to-end tests for the `agent` binary live in `tests/tests/`; this library is empty.
