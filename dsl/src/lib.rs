//! The Agent workflow language: YAML with positions, a typed model whose nodes keep their
//! spans, semantic validation with `file:line:col` diagnostics, and `${{ }}` expressions.
//!
//! Pure: no tokio, no processes. The engine (in `agent`) and the runners consume the model.
//!
//! The pipeline: [`yaml`] (text -> tree with spans) -> [`lower`] (tree -> [`model`], shape
//! errors) -> [`validate`] (meaning) -> [`load`] (files, sub-workflows). Entry points:
//! [`load_workflow`] and [`parse_str`]; run parameters go through [`params`].

mod cron;
pub mod diagnostic;
mod errors;
pub mod expr;
pub mod load;
pub mod lower;
pub mod matrix;
pub mod model;
pub mod params;
pub mod schema;
pub mod shell;
mod span;
pub mod validate;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, Severity, SourceFile};
pub use errors::ParamError;
pub use load::{Loaded, load_workflow, parse_str};
pub use model::Workflow;
