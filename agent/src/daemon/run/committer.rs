//! Who the commits of a run's steps are by: steps of daemon runs commit as
//! `Agent <agent-run-ID@agent.invalid>`, so that the push trigger can tell a run's own
//! commits from others (its loop guard reads the address back).

use crate::model::RunId;

/// The committer name of commits made by steps of daemon runs.
pub(crate) const COMMITTER_NAME: &str = "Agent";

/// The committer address of commits made by steps of run `run`.
pub(crate) fn committer_email(run: RunId) -> String {
    format!("agent-run-{run}@agent.invalid")
}

/// The environment that makes commits of a run's steps recognisable as the run's:
/// `GIT_COMMITTER_NAME` and `GIT_COMMITTER_EMAIL` (the author stays whoever git's config
/// says; a workflow `env:` setting these wins, and then only a trailer marks the commit).
pub(crate) fn committer_env(run: RunId) -> Vec<(String, String)> {
    vec![
        ("GIT_COMMITTER_NAME".into(), COMMITTER_NAME.into()),
        ("GIT_COMMITTER_EMAIL".into(), committer_email(run)),
    ]
}
