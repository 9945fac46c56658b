//! The typed async methods of the [`Store`] handle for the run lifecycle: thin wrappers, one
//! transaction each, writes on the writer thread and reads on the read pool. Anything not
//! wrapped here is reached with [`Store::write`] / [`Store::read`] and a closure over [`Db`].

use std::time::Duration;

use super::overlap::Admission;
use super::{
    Db, Enqueued, NewRun, Retention, RunFilter, RunFinish, RunId, RunRecord, Store, StoreError,
};

impl Store {
    /// Queues a run (deduplicated by its key); see [`Db::enqueue_run`].
    pub(crate) async fn enqueue_run(&self, run: NewRun) -> Result<Enqueued, StoreError> {
        self.write(move |db| db.enqueue_run(&run)).await
    }

    /// Queues a run under its overlap rule (`run.overlap`), decided in the same transaction;
    /// a skipped run is not written. See [`Db::enqueue`].
    pub(crate) async fn enqueue(&self, run: NewRun) -> Result<Admission, StoreError> {
        self.write(move |db| db.enqueue(&run)).await
    }

    /// The queued and running runs whose cancellation was requested; see
    /// [`Db::cancel_requested_runs`].
    pub(crate) async fn cancel_requested_runs(&self) -> Result<Vec<RunId>, StoreError> {
        self.query(|db: &Db| db.cancel_requested_runs()).await
    }

    /// Claims up to `limit` queued runs for `owner`; see [`Db::claim`].
    pub(crate) async fn claim(
        &self,
        owner: String,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.write(move |db| db.claim(&owner, limit, lease)).await
    }

    /// Hands a claim back.
    pub(crate) async fn release_claim(&self, id: RunId) -> Result<(), StoreError> {
        self.write(move |db| db.release_claim(id)).await
    }

    /// Marks a claimed run running.
    pub(crate) async fn mark_running(&self, id: RunId) -> Result<RunRecord, StoreError> {
        self.write(move |db| db.mark_running(id)).await
    }

    /// Marks the run's running steps stopped by shutdown.
    pub(crate) async fn mark_steps_stopped(&self, id: RunId) -> Result<(), StoreError> {
        self.write(move |db| db.mark_steps_stopped(id)).await
    }

    /// Writes a run's end (and its outbox event) in one transaction.
    pub(crate) async fn finish_run(&self, id: RunId, finish: RunFinish) -> Result<(), StoreError> {
        self.write(move |db| db.finish_run(id, &finish)).await
    }

    /// Queues an interrupted run again.
    pub(crate) async fn resume_run(&self, id: RunId) -> Result<(), StoreError> {
        self.write(move |db| db.resume_run(id)).await
    }

    /// Deletes finished runs by the retention policy; answers their ids.
    pub(crate) async fn prune_runs(&self, retention: Retention) -> Result<Vec<RunId>, StoreError> {
        self.write(move |db| db.prune_runs(&retention)).await
    }

    /// One run.
    pub(crate) async fn get_run(&self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.query(move |db| db.get_run(id)).await
    }

    /// Runs matching `filter`, newest first.
    pub(crate) async fn list_runs(
        &self,
        filter: RunFilter,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.query(move |db| db.list_runs(&filter, limit)).await
    }
}
