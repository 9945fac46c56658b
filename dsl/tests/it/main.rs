//! The `dsl` crate's integration tests, one binary with a module per topic.

mod ci;
mod examples;
mod expr_messages;
mod expr_props;
mod fixtures;
mod proptest_parser;
mod rules;
mod schema;
mod triggers;
