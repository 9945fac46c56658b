//! What to run, and when: [`git_watch`] (fetching the watched repositories), [`push`] (which
//! workflows a new commit starts), [`tags`] (which workflows a new tag starts),
//! [`pull_request`] (the runs of an inbound pull-request hook), [`cron`] (schedules) and
//! [`manual`] (the API's and the hooks' run requests, checked before the scheduler queues
//! them). They write runs through the
//! store's deduping writes and wake the scheduler.

pub(crate) mod cron;
pub(crate) mod git_watch;
pub(crate) mod manual;
pub(crate) mod pull_request;
pub(crate) mod push;
pub(crate) mod tags;
