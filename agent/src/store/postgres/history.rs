//! STUB: the PostgreSQL side of these operations is being written.

use crate::store::{StepHistory, StoreError};

use super::PgDb;

impl PgDb {
    /// The step history of `workflow`: its succeeded runs, the mean duration of each step
    /// and the outputs of its recent executions (cached results left out).
    pub fn step_history(&self, _workflow: &str) -> Result<StepHistory, StoreError> {
        Err(super::unsupported("step_history"))
    }
}
