//! The triggers real CIs use, end to end against the built daemon:
//!
//! - a signed `pull_request` hook runs the pull request's head commit (fetched from the
//!   forge's `refs/pull/N/head`, here a local bare repository) once, with `AGENT_EVENT`,
//!   `AGENT_PR_*` and `run.pr_number`, and its commit status reaches a `github_status`
//!   receiver on 127.0.0.1 for the head commit; the same head delivered again queues nothing;
//!   a `closed` action is ignored with a reason; a new head announced by Gitea
//!   (`synchronized`) runs again; a fork's pull request runs without secrets;
//! - a tag push runs `on.push.tags` workflows only, at the tagged commit, where `git describe
//!   --tags` and `AGENT_REF` show the tag: noticed by the watcher of a local repository, and
//!   by an inbound push hook for a repository polled hourly;
//! - a push to a feature branch runs `on.branch` workflows (and not `on.push` ones filtered
//!   to `main`); the default branch does not run `on.branch` workflows.

use crate::common;
use crate::common::notify::Receiver;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, commit_files, git, init_repo, lines, wait_for, yaml_quote};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "forge-secret";
/// Generous: eventual checks on a loaded machine, never latency claims.
const LIMIT: Duration = Duration::from_secs(90);
/// How long "nothing else happens" is watched for.
const QUIET: Duration = Duration::from_millis(1500);

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A signed GitHub hook: (status, JSON body).
fn hook(d: &TestDaemon, event: &str, delivery: &str, body: &str) -> (u16, Value) {
    let signature = sign(body.as_bytes());
    let headers = format!(
        "X-GitHub-Event: {event}\r\nX-GitHub-Delivery: {delivery}\r\nX-Hub-Signature-256: {signature}\r\n"
    );
    post_hook(d, "/hooks/github", &headers, body)
}

/// A signed Gitea hook (bare hex in `X-Gitea-Signature`): (status, JSON body).
fn gitea_hook(d: &TestDaemon, event: &str, delivery: &str, body: &str) -> (u16, Value) {
    let signature = sign(body.as_bytes());
    let hex = signature.trim_start_matches("sha256=");
    let headers = format!(
        "X-Gitea-Event: {event}\r\nX-Gitea-Delivery: {delivery}\r\nX-Gitea-Signature: {hex}\r\n"
    );
    post_hook(d, "/hooks/gitea", &headers, body)
}

fn post_hook(d: &TestDaemon, route: &str, headers: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect_timeout(&d.addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let head = format!(
        "POST {route} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n",
        d.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body.as_bytes()).expect("write body");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read answer");
    let (head, rest) = raw.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, serde_json::from_str(rest).unwrap_or(Value::Null))
}

fn runs(d: &TestDaemon) -> Vec<Value> {
    d.get_json("/api/v1/runs?limit=1000")["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_workflows_known(d: &TestDaemon, n: usize) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let known = d.get_json("/api/v1/workflows")["workflows"]
            .as_array()
            .map_or(0, Vec::len);
        if known >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workflows never known\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `path` has at least `n` lines; returns them.
fn wait_lines(d: &TestDaemon, path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = lines(path);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} never had {n} lines (has {got:?})\n{}",
            path.display(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts the number of runs stays `n` for [`QUIET`].
fn assert_runs_stay(d: &TestDaemon, n: usize, what: &str) {
    let end = Instant::now() + QUIET;
    while Instant::now() < end {
        let all = runs(d);
        assert_eq!(all.len(), n, "{what}: {all:#?}\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pull_request_payload(
    action: &str,
    number: u64,
    head: (&str, &str, &str),
    base_sha: &str,
    forge: &str,
) -> String {
    let (head_ref, head_sha, head_repo) = head;
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": "open",
            "head": {"ref": head_ref, "sha": head_sha, "repo": {"full_name": head_repo}},
            "base": {"ref": "main", "sha": base_sha, "repo": {"full_name": "me/app", "clone_url": forge}},
        },
        "repository": {"full_name": "me/app", "clone_url": forge},
        "sender": {"login": "someone"},
    })
    .to_string()
}

/// A pull request's head commit runs once (also when the hook comes twice), with the pull
/// request in its environment and expressions, and its status is posted for the head commit;
/// a fork's pull request runs without secrets; a `closed` action starts nothing.
#[test]
fn pull_request_hooks_run_the_head_commit_once_and_report_its_status() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let record = out.join("pr.txt");
    let pr_workflow = format!(
        "workflow:\n  name: pr\n  on:\n    pull_request:\n      branches: [main]\n  stages:\n    - name: s\n      steps:\n        - id: show\n          run: |\n            echo \"$AGENT_EVENT|$AGENT_PR_NUMBER|$AGENT_PR_BASE|$AGENT_PR_HEAD|$AGENT_SHA|$AGENT_REF|${{{{ run.pr_number }}}}|secrets=${{{{ len(secrets) }}}}|$(git rev-parse HEAD)|$(cat feature.txt)\" >> {}\n",
        yaml_quote(&record.to_string_lossy())
    );
    let release_only = "workflow:\n  name: release-prs\n  on:\n    pull_request:\n      branches: ['release/*']\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n";
    let push_only = "workflow:\n  name: ci\n  on:\n    push: {}\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n";
    let work = tmp.path().join("work");
    init_repo(
        &work,
        &[
            (".workflows/pr.yaml", &pr_workflow),
            (".workflows/release.yaml", release_only),
            (".workflows/ci.yaml", push_only),
            ("feature.txt", "base"),
        ],
    );
    let forge = tmp.path().join("forge.git");
    git(
        tmp.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &forge.to_string_lossy(),
        ],
    );
    git(&work, &["remote", "add", "forge", &forge.to_string_lossy()]);
    git(&work, &["push", "-q", "forge", "main"]);
    let base_sha = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    let forge_url = format!("file://{}", forge.display());

    let github = Receiver::start(Vec::new());
    let config = format!(
        "repos:\n  - name: app\n    path: {}\n    full_name: me/app\n    poll_interval: 1h\n\
         hooks:\n  github_secret: {SECRET}\n  gitea_secret: {SECRET}\n\
         secrets:\n  TOKEN: {{env: TRIGGERS_PR_SECRET}}\n\
         webhooks:\n  - name: gh\n    format: github_status\n    api: {}\n    token_env: TRIGGERS_GH_TOKEN\n    workflows: [pr]\n",
        yaml_quote(&forge.to_string_lossy()),
        github.url("/gh"),
    );
    let d = TestDaemon::start_with_env(
        &tmp.path().join("daemon"),
        &config,
        &[
            ("TRIGGERS_PR_SECRET", "pr-secret-value"),
            ("TRIGGERS_GH_TOKEN", "gh-token"),
        ],
    );
    wait_workflows_known(&d, 3);
    assert!(runs(&d).is_empty());

    // Pull request 1 from a branch of the same repository: only its ref is on the forge.
    git(&work, &["checkout", "-q", "-b", "feature"]);
    let head = commit_files(&work, &[("feature.txt", "feature")], "feature work");
    git(&work, &["push", "-q", "forge", "HEAD:refs/pull/1/head"]);
    let body = pull_request_payload(
        "opened",
        1,
        ("feature", &head, "me/app"),
        &base_sha,
        &forge_url,
    );
    let (status, answer) = hook(&d, "pull_request", "pr-1", &body);
    assert_eq!(status, 202, "{answer}\n{}", d.log_text());
    let queued: Vec<String> = answer["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(queued.len(), 1, "{answer}");
    let done = d.wait_run_final(&queued[0], LIMIT);
    assert_eq!(done["status"], "succeeded", "{done:#}\n{}", d.log_text());
    assert_eq!(done["workflow"], "pr");
    assert_eq!(done["trigger"]["kind"], "pull_request");
    assert_eq!(done["trigger"]["commit"], head.as_str());
    assert_eq!(done["trigger"]["ref"], "refs/pull/1/head");
    assert_eq!(done["trigger"]["pull_request"]["number"], 1);
    assert_eq!(done["trigger"]["pull_request"]["fork"], false);
    let got = wait_lines(&d, &record, 1);
    assert_eq!(
        got[0],
        format!("pull_request|1|main|feature|{head}|refs/pull/1/head|1|secrets=1|{head}|feature")
    );

    // The same head again (a redelivery, another delivery id): nothing new is queued.
    let (status, answer) = hook(&d, "pull_request", "pr-1-again", &body);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["runs"], json!([]), "{answer}");
    // Closing it starts nothing, and says why.
    let closed = pull_request_payload(
        "closed",
        1,
        ("feature", &head, "me/app"),
        &base_sha,
        &forge_url,
    );
    let (status, answer) = hook(&d, "pull_request", "pr-1-closed", &closed);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "ignored");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("closed")),
        "{answer}"
    );
    assert_runs_stay(&d, 1, "a repeated or closed pull request");

    // The commit status of the head commit: pending (queued, started), then success.
    let deadline = Instant::now() + LIMIT;
    let statuses = loop {
        let for_head: Vec<_> = github
            .requests()
            .into_iter()
            .filter(|r| r.path == format!("/gh/repos/me/app/statuses/{head}"))
            .collect();
        if for_head
            .last()
            .is_some_and(|r| r.json()["state"] == "success")
        {
            break for_head;
        }
        assert!(
            Instant::now() < deadline,
            "no success status for {head}: {:?}\n{}",
            github.requests(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(statuses[0].header("authorization"), Some("Bearer gh-token"));
    assert!(
        github
            .requests()
            .iter()
            .all(|r| r.path.ends_with(&format!("/statuses/{head}"))),
        "a status for another commit than the head"
    );

    // A new push to pull request 1, announced by Gitea (`synchronized`): the new head runs.
    git(&work, &["checkout", "-q", "feature"]);
    let head2 = commit_files(&work, &[("feature.txt", "feature 2")], "more feature work");
    git(
        &work,
        &["push", "-q", "-f", "forge", "HEAD:refs/pull/1/head"],
    );
    let body = pull_request_payload(
        "synchronized",
        1,
        ("feature", &head2, "me/app"),
        &base_sha,
        &forge_url,
    );
    let (status, answer) = gitea_hook(&d, "pull_request", "gitea-1", &body);
    assert_eq!(status, 202, "{answer}\n{}", d.log_text());
    let id = answer["runs"][0].as_str().expect("a run").to_string();
    let done = d.wait_run_final(&id, LIMIT);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let got = wait_lines(&d, &record, 2);
    assert_eq!(
        got[1],
        format!(
            "pull_request|1|main|feature|{head2}|refs/pull/1/head|1|secrets=1|{head2}|feature 2"
        )
    );

    // Pull request 2 from a fork: it runs, without the daemon's secrets.
    git(&work, &["checkout", "-q", "-b", "fork-work", "main"]);
    let fork_head = commit_files(&work, &[("feature.txt", "from a fork")], "fork work");
    git(&work, &["push", "-q", "forge", "HEAD:refs/pull/2/head"]);
    let body = pull_request_payload(
        "synchronize",
        2,
        ("main", &fork_head, "someone/app"),
        &base_sha,
        &forge_url,
    );
    let (status, answer) = hook(&d, "pull_request", "pr-2", &body);
    assert_eq!(status, 202, "{answer}\n{}", d.log_text());
    let id = answer["runs"][0].as_str().expect("a run").to_string();
    let done = d.wait_run_final(&id, LIMIT);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let got = wait_lines(&d, &record, 3);
    assert_eq!(
        got[2],
        format!(
            "pull_request|2|main|main|{fork_head}|refs/pull/2/head|2|secrets=0|{fork_head}|from a fork"
        )
    );
}

/// A tag runs the `on.push.tags` workflows only, at the tagged commit, with the tag in the
/// checkout and in `AGENT_REF`: for a watched local repository (the watcher sees the tag)
/// and for a repository polled hourly (an inbound push hook for the tag makes it look).
#[test]
fn tag_pushes_run_tag_workflows_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let tags = out.join("tags.txt");
    let pushes = out.join("pushes.txt");
    let release = format!(
        "workflow:\n  name: release\n  on:\n    push:\n      tags: ['v*']\n  stages:\n    - name: s\n      steps:\n        - id: show\n          run: echo \"$AGENT_REPO|$(git describe --tags)|$AGENT_REF|$AGENT_EVENT|$AGENT_SHA|$AGENT_BRANCH\" >> {}\n",
        yaml_quote(&tags.to_string_lossy())
    );
    let ci = format!(
        "workflow:\n  name: ci\n  on:\n    push: {{}}\n  stages:\n    - name: s\n      steps:\n        - id: show\n          run: echo \"$AGENT_REPO|$AGENT_REF\" >> {}\n",
        yaml_quote(&pushes.to_string_lossy())
    );
    let files = [
        (".workflows/release.yaml", release.as_str()),
        (".workflows/ci.yaml", ci.as_str()),
    ];
    let local = tmp.path().join("local");
    let remote = tmp.path().join("remote");
    init_repo(&local, &files);
    init_repo(&remote, &files);
    // A tag that exists before the daemon starts is history.
    git(&local, &["tag", "v0.9"]);
    let remote_url = format!("file://{}", remote.display());
    let config = format!(
        "repos:\n  - name: local\n    path: {}\n  - name: remote\n    url: {}\n    full_name: me/remote\n    poll_interval: 1h\n\
         hooks:\n  github_secret: {SECRET}\n",
        yaml_quote(&local.to_string_lossy()),
        yaml_quote(&remote_url),
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    wait_workflows_known(&d, 4);

    let tagged = git(&local, &["rev-parse", "HEAD"]).trim().to_string();
    git(&local, &["tag", "-a", "v1.2.0", "-m", "release 1.2.0"]);
    let got = wait_lines(&d, &tags, 1);
    assert_eq!(
        got[0],
        format!("local|v1.2.0|refs/tags/v1.2.0|push|{tagged}|")
    );

    // The polled repository: the tag is pushed, then announced by a hook.
    let remote_head = git(&remote, &["rev-parse", "HEAD"]).trim().to_string();
    git(&remote, &["tag", "v2.0.0"]);
    let body = json!({
        "ref": "refs/tags/v2.0.0",
        "before": "0000000000000000000000000000000000000000",
        "after": remote_head,
        "repository": {"full_name": "me/remote", "clone_url": remote_url},
    })
    .to_string();
    let (status, answer) = hook(&d, "push", "tag-1", &body);
    assert_eq!(status, 202, "{answer}");
    let got = wait_lines(&d, &tags, 2);
    assert_eq!(
        got[1],
        format!("remote|v2.0.0|refs/tags/v2.0.0|push|{remote_head}|")
    );

    // Only the tag workflow ran: no branch-push workflow, no run for the old tag.
    assert_runs_stay(&d, 2, "a tag push");
    assert!(lines(&pushes).is_empty(), "{:?}", lines(&pushes));
    for run in runs(&d) {
        assert_eq!(run["workflow"], "release", "{run}");
        let detail = d.get_json(&format!("/api/v1/runs/{}", common::daemon::run_id(&run)));
        let tag = detail["trigger"]["ref"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            tag == "refs/tags/v1.2.0" || tag == "refs/tags/v2.0.0",
            "{detail:#}"
        );
        assert_eq!(detail["trigger"]["branch"], Value::Null);
    }
}

/// A push to a non-default branch of a watched bare repository runs `on.branch` workflows
/// whose globs match it; the default branch does not.
#[test]
fn feature_branch_pushes_run_branch_workflows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let branch_log = out.join("branch.txt");
    let main_log = out.join("main.txt");
    let branchy = format!(
        "workflow:\n  name: branchy\n  on:\n    branch:\n      branches: ['feature/*']\n  stages:\n    - name: s\n      steps:\n        - id: show\n          run: echo \"$AGENT_BRANCH|$AGENT_REF|$AGENT_EVENT|$(cat f.txt)\" >> {}\n",
        yaml_quote(&branch_log.to_string_lossy())
    );
    let mainline = format!(
        "workflow:\n  name: mainline\n  on:\n    push:\n      branches: [main]\n  stages:\n    - name: s\n      steps:\n        - id: show\n          run: echo \"$AGENT_BRANCH\" >> {}\n",
        yaml_quote(&main_log.to_string_lossy())
    );
    // A bare repository people push to (no forge): its `HEAD` names the default branch.
    let work = tmp.path().join("work");
    init_repo(
        &work,
        &[
            (".workflows/branchy.yaml", &branchy),
            (".workflows/mainline.yaml", &mainline),
            ("f.txt", "0"),
        ],
    );
    let origin = tmp.path().join("origin.git");
    git(
        tmp.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &origin.to_string_lossy(),
        ],
    );
    git(
        &work,
        &["remote", "add", "origin", &origin.to_string_lossy()],
    );
    git(&work, &["push", "-q", "origin", "main"]);
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &common::daemon::repo_config("app", &origin),
    );
    wait_workflows_known(&d, 2);

    git(&work, &["checkout", "-q", "-b", "feature/login"]);
    commit_files(&work, &[("f.txt", "1")], "feature work");
    git(&work, &["push", "-q", "origin", "feature/login"]);
    let got = wait_lines(&d, &branch_log, 1);
    assert_eq!(got[0], "feature/login|refs/heads/feature/login|push|1");

    // A branch the globs do not select, then the default branch.
    git(&work, &["checkout", "-q", "-b", "experiment"]);
    commit_files(&work, &[("f.txt", "2")], "experiment");
    git(&work, &["push", "-q", "origin", "experiment"]);
    git(&work, &["checkout", "-q", "main"]);
    commit_files(&work, &[("f.txt", "3")], "main work");
    git(&work, &["push", "-q", "origin", "main"]);
    let got = wait_lines(&d, &main_log, 1);
    assert_eq!(got, ["main"]);
    wait_for("the runs to end", LIMIT, || {
        runs(&d)
            .iter()
            .all(|r| r["status"] != "queued" && r["status"] != "running")
    });
    assert_runs_stay(&d, 2, "pushes to `experiment` and `main`");
    assert_eq!(lines(&branch_log).len(), 1, "{:?}", lines(&branch_log));
}
