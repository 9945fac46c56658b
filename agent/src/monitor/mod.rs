//! Watching the daemon from outside the run path: [`metrics`] (the Prometheus registry and
//! its collector) and [`anomaly`] (slow runs, failure rates, step memory). Both are fed by
//! the bus's lossless lifecycle events and read the store; neither changes a run.

pub(crate) mod anomaly;
pub(crate) mod metrics;
