//! `agent schema`: print the JSON Schema of the workflow file format
//! (the same text as `schemas/workflow.schema.json`).

use super::EXIT_OK;

/// Prints the schema; returns the exit code.
pub(crate) fn run() -> i32 {
    print!("{}", dsl::schema::workflow_schema_json());
    EXIT_OK
}
