//! End-to-end tests for the `agent` binary live in `tests/tests/e2e/` (one test binary,
//! one module per topic); this library is empty.
