//! STUB: the PostgreSQL side of these operations is being written.

use chrono::{DateTime, Utc};

use crate::store::{
    Delivery, DeliveryAttempt, DeliveryOutcome, NewDelivery, RunId, RunRecord, StoreError,
};

use super::PgDb;

impl PgDb {
    /// Queues a webhook delivery, due now; returns its id (the `X-Agent-Delivery` header).
    pub fn enqueue_delivery(&mut self, _delivery: &NewDelivery) -> Result<String, StoreError> {
        Err(super::unsupported("enqueue_delivery"))
    }

    /// Turns the un-rendered outbox events (of `run`, or all of them written at or before
    /// `written_by`) into deliveries, due now, in one transaction: `render` gets each event's run and event name and answers
    /// its deliveries; the event row goes with them, so a crash renders it again or not at
    /// all. Returns the deliveries queued.
    pub fn render_outbox_events(
        &mut self,
        _run: Option<RunId>,
        _written_by: Option<DateTime<Utc>>,
        _render: impl FnMut(&RunRecord, &str) -> Vec<NewDelivery>,
    ) -> Result<Vec<NewDelivery>, StoreError> {
        Err(super::unsupported("render_outbox_events"))
    }

    /// Releases the held, never-attempted deliveries of `run` whose event is one of
    /// `events` (a run's end, queued by `finish_run`): each is due now and moves to the back
    /// of its webhook's queue (same id, `created_at` now), behind the run's earlier events.
    /// Returns how many were released.
    pub fn release_run_deliveries(
        &mut self,
        _run: RunId,
        _events: &[&str],
    ) -> Result<usize, StoreError> {
        Err(super::unsupported("release_run_deliveries"))
    }

    /// Pending deliveries due at `now`, the most overdue first.
    pub fn due_deliveries(
        &self,
        _now: DateTime<Utc>,
        _limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        Err(super::unsupported("due_deliveries"))
    }

    /// The oldest pending delivery of one webhook, due or not: the head of its FIFO queue
    /// (deliveries of a webhook are attempted one at a time, in the order they were queued).
    pub fn next_pending_delivery(&self, _webhook: &str) -> Result<Option<Delivery>, StoreError> {
        Err(super::unsupported("next_pending_delivery"))
    }

    /// Deletes delivered and failed deliveries (and their attempts) last touched before
    /// `before`; pending ones stay. Returns how many went.
    pub fn prune_deliveries(&mut self, _before: DateTime<Utc>) -> Result<usize, StoreError> {
        Err(super::unsupported("prune_deliveries"))
    }

    /// The latest attempt of a delivery, if it was attempted.
    pub fn last_delivery_attempt(&self, _id: &str) -> Result<Option<DeliveryAttempt>, StoreError> {
        Err(super::unsupported("last_delivery_attempt"))
    }

    /// The webhooks that have pending deliveries, with how many each.
    pub fn pending_delivery_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Err(super::unsupported("pending_delivery_counts"))
    }

    /// When the next pending delivery is due, so the notifier can sleep until then.
    pub fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Err(super::unsupported("next_delivery_due"))
    }

    /// Records one attempt of a delivery and its consequence; returns the attempt number.
    pub fn record_delivery_attempt(
        &mut self,
        _id: &str,
        _outcome: &DeliveryOutcome,
    ) -> Result<u32, StoreError> {
        Err(super::unsupported("record_delivery_attempt"))
    }

    /// The newest deliveries first, each with its attempt history.
    pub fn list_deliveries(&self, _limit: usize) -> Result<Vec<Delivery>, StoreError> {
        Err(super::unsupported("list_deliveries"))
    }
}
