//! The Agent workflow language: YAML with positions, a typed model whose nodes keep their
//! spans, semantic validation with `file:line:col` diagnostics, and `${{ }}` expressions.
//!
//! Pure: no tokio, no processes. The engine (in `agent`) and the runners consume the model.

pub mod expr;
