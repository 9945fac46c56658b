//! The run contract, with no I/O: run and step statuses, the run report, run references,
//! the typed bodies of the HTTP API (shared by the server and the CLI client), secret
//! masking and the one duration formatter. Every other module speaks these types.

pub(crate) mod api;
pub(crate) mod event;
pub(crate) mod fmt;
pub(crate) mod mask;
pub(crate) mod report;
mod run_ref;
pub(crate) mod status;

pub(crate) use report::rfc3339;
pub use run_ref::RunId;
#[expect(
    unused_imports,
    reason = "part of the run contract; no run records it yet"
)]
pub(crate) use run_ref::WorkflowRef;
pub use status::{RunStatus, StepStatus};
