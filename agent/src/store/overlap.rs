//! The one overlap rule.
