//! The run contract, with no I/O: run and step statuses, the run report, run references,
//! the typed bodies of the HTTP API (shared by the server and the CLI client), secret
//! masking and the one duration formatter. Every other module speaks these types.

pub mod api;
pub mod event;
pub mod fmt;
pub mod mask;
pub mod report;
pub mod run_ref;
pub mod status;

pub use report::rfc3339;
pub use run_ref::{RunId, WorkflowRef};
pub use status::{RunStatus, StepStatus};
