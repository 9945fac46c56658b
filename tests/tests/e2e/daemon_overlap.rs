//! `concurrency.overlap` for push runs through a real `agent daemon`: the store decides the
//! rule in the transaction that records the push, so a push that a `skip` group turns away
//! never runs and is listed as a cancelled run saying which run it gave way to.

use crate::common;

use std::time::Duration;

use common::daemon::yaml_quote;
use common::daemon::{TestDaemon, commit_files, fixture, init_repo, repo_config, run_id, wait_for};
use serde_json::Value;

const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Guards the one overlap rule for pushes: before it, a push run was queued first and only
/// then cancelled by the scheduler, so it could start in between. Now the second push under
/// `overlap: skip` is recorded cancelled at once, naming the active run, and never starts;
/// the first run is untouched.
#[test]
fn a_push_skipped_by_its_group_is_recorded_cancelled_and_never_starts() {
    let (tmp, repo, out) = fixture();
    init_repo(&repo, &[("README", "x\n")]);
    let d = TestDaemon::start(&tmp.path().join("daemon"), &repo_config("app", &repo));
    let wf = format!(
        "workflow:\n  name: deploy\n  on:\n    push: {{branches: [main]}}\n  concurrency:\n    group: deploy\n    overlap: skip\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: |\n            touch \"$OUT/started-$AGENT_RUN_ID\"\n            if [ \"$(cat wait)\" = yes ]; then sleep 60; fi\n",
        yaml_quote(&out.to_string_lossy())
    );
    commit_files(
        &repo,
        &[(".workflows/deploy.yaml", &wf), ("wait", "yes\n")],
        "one",
    );
    let runs_of = |d: &TestDaemon| -> Vec<Value> {
        let mut v = d.get_json("/api/v1/runs?workflow=deploy&limit=10")["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        v.reverse();
        v
    };
    wait_for("the first push run's step", RUN_LIMIT, || {
        runs_of(&d)
            .first()
            .is_some_and(|r| out.join(format!("started-{}", run_id(r))).exists())
    });
    let first = run_id(&runs_of(&d)[0]);
    commit_files(&repo, &[("wait", "no\n")], "two");
    wait_for("a second push run", RUN_LIMIT, || runs_of(&d).len() == 2);
    let second = d.wait_run_final(&run_id(&runs_of(&d)[1]), RUN_LIMIT);
    assert_eq!(second["status"], "cancelled", "{second:#}");
    let error = second["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "skipped: run {first} of concurrency group `deploy`"
        )),
        "{second:#}"
    );
    assert!(
        !out.join(format!("started-{}", run_id(&second))).exists(),
        "the skipped run started"
    );
    let run = d.get_json(&format!("/api/v1/runs/{first}"));
    assert_eq!(run["status"], "running", "{run:#}");
    let (code, body) = d.post(&format!("/api/v1/runs/{first}/cancel"), "{}");
    assert_eq!(code, 202, "{body}");
    assert_eq!(d.wait_run_final(&first, RUN_LIMIT)["status"], "cancelled");
}
