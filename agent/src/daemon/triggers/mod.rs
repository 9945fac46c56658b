//! What to run, and when: [`git_watch`] (fetching the watched repositories), [`push`] (which
//! workflows a new commit starts) and [`cron`] (schedules). They write runs through the
//! store's deduping writes and wake the scheduler.

pub mod cron;
pub mod git_watch;
pub mod push;
