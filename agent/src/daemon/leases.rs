//! The roles one node of a fleet at a time has, each held through a named lease of the store
//! with a fencing token ([`crate::store::Db::acquire_lease`]): `cron` (evaluating the
//! schedules), `poll:<repo>` (fetching and scanning a repository on its interval) and `outbox`
//! (sending webhook deliveries). A holder renews its lease every heartbeat
//! (`limits.heartbeat`, [`tick`]); a node that stops (killed, paused, cut off from the
//! database) loses it `limits.lease` ([`ttl`]) after its last renewal, and the next node that
//! asks takes it over with the next token.
//!
//! On SQLite there is one node (the state directory's lock sees to it): its holder name is
//! the same across restarts ([`SQLITE_HOLDER`]), so a restarted daemon takes its roles back at
//! once instead of waiting for the killed one's leases to expire.

use std::time::Duration;

use chrono::Utc;

use crate::config::Config;
use crate::store::{Fence, Store, StoreError};

/// How often a holder renews its leases (and a node without them asks again): the node's
/// heartbeat.
pub(crate) fn tick(config: &Config) -> Duration {
    config.limits.heartbeat
}

/// How long a lease holds without renewal: the node's lease time (a few heartbeats).
pub(crate) fn ttl(config: &Config) -> Duration {
    config.limits.lease
}

/// The holder name on a SQLite store, whose one node needs no other.
pub(crate) const SQLITE_HOLDER: &str = "local";

/// The name this node holds leases under: [`SQLITE_HOLDER`] on SQLite; on PostgreSQL the
/// node's name (`node`, the same as the owner of the runs it claims).
pub(crate) fn holder(store: &Store, config: &Config) -> String {
    if store.kind() == "sqlite" {
        SQLITE_HOLDER.to_string()
    } else {
        config.node.clone()
    }
}

/// What one renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// The lease was taken just now (it was not held at the last tick): the role starts, with
    /// whatever catching up it needs.
    Gained(u64),
    /// Still held, renewed.
    Kept(u64),
    /// Another node has it (or the store could not be asked).
    No,
}

impl Held {
    /// Whether this node has the role.
    pub(crate) fn is_held(self) -> bool {
        !matches!(self, Held::No)
    }
}

/// One named lease as this node asks for it, tick after tick.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    name: String,
    holder: String,
    ttl: Duration,
    token: Option<u64>,
}

impl Lease {
    /// Lease `name` held as `holder` for `ttl` after each renewal.
    pub(crate) fn new(name: impl Into<String>, holder: impl Into<String>, ttl: Duration) -> Lease {
        Lease {
            name: name.into(),
            holder: holder.into(),
            ttl,
            token: None,
        }
    }

    /// The fence of the lease while it is held (as of the last tick).
    pub(crate) fn fence(&self) -> Option<Fence> {
        self.token.map(|token| Fence {
            lease: self.name.clone(),
            holder: self.holder.clone(),
            token,
        })
    }

    /// What the store answered, remembered.
    fn answer(&mut self, answer: Result<Option<u64>, StoreError>) -> Held {
        let before = self.token;
        self.token = match answer {
            Ok(token) => token,
            Err(err) => {
                // Unknown: act as if lost; the next tick asks again.
                tracing::warn!(lease = %self.name, error = %err, "cannot renew a lease");
                None
            }
        };
        match (before, self.token) {
            (_, None) => {
                if before.is_some() {
                    tracing::info!(lease = %self.name, holder = %self.holder, "lease lost");
                }
                Held::No
            }
            (Some(old), Some(new)) if old == new => Held::Kept(new),
            (_, Some(new)) => {
                tracing::info!(lease = %self.name, holder = %self.holder, token = new, "lease taken");
                Held::Gained(new)
            }
        }
    }

    /// Takes or renews the lease (async).
    pub(crate) async fn tick(&mut self, store: &Store) -> Held {
        let (name, holder, ttl) = (self.name.clone(), self.holder.clone(), self.ttl);
        let answer = store
            .write(move |db| db.acquire_lease(&name, &holder, ttl, Utc::now()))
            .await;
        self.answer(answer)
    }

    /// Takes or renews the lease (from a blocking thread).
    pub(crate) fn blocking_tick(&mut self, store: &Store) -> Held {
        let (name, holder, ttl) = (self.name.clone(), self.holder.clone(), self.ttl);
        let answer =
            store.blocking_write(move |db| db.acquire_lease(&name, &holder, ttl, Utc::now()));
        self.answer(answer)
    }

    /// Gives the lease up (shutdown), so another node takes it at once.
    pub(crate) async fn release(&mut self, store: &Store) {
        if self.token.take().is_none() {
            return;
        }
        let (name, holder) = (self.name.clone(), self.holder.clone());
        if let Err(err) = store
            .write(move |db| db.release_lease(&name, &holder))
            .await
        {
            tracing::warn!(lease = %self.name, error = %err, "cannot release a lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two nodes asking for one lease on one store: the first gains it, keeps it at each
    /// renewal; the second gets nothing until the first gives it up, then gains it with the
    /// next token and the first's fence is gone; the SQLite holder is the same on every run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gained_kept_and_handed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_in_dir(dir.path()).expect("store");
        let config = Config::parse_str(
            "agent.yaml",
            "node: n1\nrepos: []\n",
            std::path::Path::new("/tmp"),
        )
        .expect("config");
        assert_eq!(holder(&store, &config), SQLITE_HOLDER);
        let mut a = Lease::new("cron", "a", Duration::from_secs(15));
        let mut b = Lease::new("cron", "b", Duration::from_secs(15));
        assert_eq!(a.fence(), None);
        assert_eq!(a.tick(&store).await, Held::Gained(1));
        assert_eq!(a.tick(&store).await, Held::Kept(1));
        assert_eq!(b.tick(&store).await, Held::No);
        assert!(!b.tick(&store).await.is_held());
        assert_eq!(
            a.fence().map(|f| (f.holder, f.token)),
            Some(("a".into(), 1))
        );
        a.release(&store).await;
        assert_eq!(a.fence(), None);
        assert_eq!(b.tick(&store).await, Held::Gained(2));
        assert_eq!(a.tick(&store).await, Held::No);
        let store2 = store.clone();
        let held = tokio::task::spawn_blocking(move || b.blocking_tick(&store2))
            .await
            .expect("join");
        assert_eq!(held, Held::Kept(2));
    }
}
