//! End-to-end: a real daemon, a failing workflow, real webhook receivers on 127.0.0.1.
//! A failed run posts one message in Slack's incoming-webhook shape, signed with the
//! documented scheme (recomputed here); a generic webhook hears every event of the run in
//! order; a template webhook gets its rendered body; a secret the steps print and write to
//! their outputs never appears in any payload; `GET /api/v1/deliveries` and
//! `agent deliveries` show every delivery with its attempt.

use crate::common;
use crate::common::notify;

use std::time::Duration;

use common::daemon::{TEST_TOKEN, TestDaemon, init_repo, trigger_with, yaml_quote};
use hmac::{Hmac, Mac};
use notify::{Receiver, Recorded};
use sha2::Sha256;

const LIMIT: Duration = Duration::from_secs(60);
const SECRET_VALUE: &str = "pa55-w0rd-very-secret";
const SIGNING_KEY: &str = "signing key";

const WORKFLOW: &str = r#"workflow:
  name: breaks
  parameters:
    - name: note
      type: string
      default: none
  stages:
    - name: main
      steps:
        - id: leak
          run: |
            echo "token=${{ secrets.TOKEN }}" >> "$AGENT_OUTPUT"
            echo "the token is ${{ secrets.TOKEN }}"
        - id: boom
          run: |
            echo "failing with ${{ secrets.TOKEN }}" >&2
            exit 3
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The documented scheme: `sha256=` + hex HMAC-SHA256(secret, timestamp + "." + body).
fn expected_signature(secret: &str, req: &Recorded) -> String {
    let ts = req.header("x-agent-timestamp").expect("timestamp header");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&req.body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

#[test]
fn failed_run_posts_signed_slack_message_and_every_event_without_secrets() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(&repo, &[(".workflows/breaks.yaml", WORKFLOW)]);
    let head = common::daemon::git(&repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let slack = Receiver::start(Vec::new());
    let all = Receiver::start(Vec::new());
    let tpl = Receiver::start(Vec::new());
    let config = format!(
        "repos:\n  - name: app\n    path: {repo}\n\
         secrets:\n  TOKEN: {{env: NOTIFY_TEST_TOKEN}}\n\
         webhooks:\n\
         \x20 - name: chat\n    url: {slack}\n    format: slack\n    events: [run.failed]\n\
         \x20   workflows: ['bre*']\n    secret: {SIGNING_KEY}\n    retry: {{initial_delay: 100ms}}\n\
         \x20 - name: everything\n    url: {all}\n    retry: {{initial_delay: 100ms}}\n    headers: {{X-Team: platform}}\n\
         \x20 - name: other-workflows\n    url: {all}\n    workflows: [deploy]\n\
         \x20 - name: custom\n    url: {tpl}\n    events: [run.finished]\n\
         \x20   template: '{{\"text\": \"{{{{ workflow }}}} {{{{ status }}}} at {{{{ commit[:7] }}}}\", \"report\": {{{{ report | tojson }}}}}}'\n",
        repo = yaml_quote(&repo.to_string_lossy()),
        slack = slack.url("/slack"),
        all = all.url("/all"),
        tpl = tpl.url("/tpl"),
    );
    let d = TestDaemon::start_with_env(
        &tmp.path().join("daemon"),
        &config,
        &[("NOTIFY_TEST_TOKEN", SECRET_VALUE)],
    );
    // The secret also comes in as a parameter value, which the report carries as given.
    let id = trigger_with(
        &d,
        "breaks",
        &format!(r#"{{"parameters": {{"note": "{SECRET_VALUE}"}}}}"#),
    );
    let run = d.wait_run_final(&id, LIMIT);
    assert_eq!(run["status"], "failed", "{run}");

    // Slack: exactly one message, in the incoming-webhook shape, signed.
    let got = slack.wait_for(1, LIMIT);
    let msg = &got[0];
    assert_eq!(msg.method, "POST");
    assert_eq!(msg.path, "/slack");
    assert_eq!(msg.header("content-type"), Some("application/json"));
    assert_eq!(msg.header("x-agent-event"), Some("run.failed"));
    assert!(
        msg.header("x-agent-delivery")
            .is_some_and(|v| v.len() == 36)
    );
    assert_eq!(
        msg.header("x-agent-signature-256"),
        Some(expected_signature(SIGNING_KEY, msg).as_str())
    );
    let body = msg.json();
    let text = body["text"].as_str().expect("slack `text`");
    assert!(text.contains("breaks") && text.contains("failed"), "{text}");
    let att = &body["attachments"][0];
    assert_eq!(att["color"], "#D50200", "{body}");
    let link = format!("{}/runs/{id}", d.url());
    assert_eq!(att["title_link"], link.as_str());
    let field = |name: &str| -> String {
        att["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .find(|f| f["title"] == name)
            .and_then(|f| f["value"].as_str())
            .unwrap_or_else(|| panic!("no field {name}: {body}"))
            .to_string()
    };
    assert_eq!(field("Workflow"), "breaks");
    assert_eq!(field("Repository"), "app");
    assert_eq!(field("Branch"), "main");
    assert_eq!(field("Commit"), &head[..12]);
    assert!(field("Failing step").starts_with("boom"), "{body}");
    assert!(!field("Duration").is_empty());
    assert!(!field("Error").is_empty());

    // Generic: every event of the run, in order, version 1.
    let wanted = ["run.queued", "run.started", "step.failed", "run.failed"];
    let deadline = std::time::Instant::now() + LIMIT;
    let events = loop {
        let events: Vec<String> = all
            .requests()
            .iter()
            .map(|r| r.header("x-agent-event").unwrap_or_default().to_string())
            .collect();
        if events.len() >= wanted.len() || std::time::Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(events, wanted, "generic webhook events");
    let reqs = all.requests();
    for r in &reqs {
        let b = r.json();
        assert_eq!(b["version"], 1);
        assert_eq!(b["event"], r.header("x-agent-event").expect("event"));
        assert_eq!(b["workflow"], "breaks");
        assert_eq!(b["run"]["run_id"], id.as_str());
        assert_eq!(b["run"]["commit"], head.as_str());
        assert_eq!(b["run"]["url"], link.as_str());
        assert!(r.header("x-agent-signature-256").is_none());
        assert_eq!(r.header("x-team"), Some("platform"));
        let content_types = r
            .headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .count();
        assert_eq!(content_types, 1);
        assert!(
            r.header("user-agent")
                .is_some_and(|u| u.starts_with("agent/"))
        );
    }
    let failed = reqs[3].json();
    assert_eq!(failed["step"]["id"], "boom");
    assert_eq!(failed["step"]["exit_code"], 3);
    assert!(failed["error"].is_string());
    assert_eq!(reqs[2].json()["step"]["id"], "boom");

    // Template: rendered with the run report as context.
    let got = tpl.wait_for(1, LIMIT);
    let b = got[0].json();
    assert_eq!(
        b["text"],
        format!("breaks failed at {}", &head[..7]).as_str()
    );
    assert_eq!(b["report"]["stages"][0]["steps"][1]["id"], "boom");
    assert_eq!(b["report"]["parameters"]["note"], "***");

    // No payload ever carries the secret.
    for r in slack.requests().iter().chain(&reqs).chain(&tpl.requests()) {
        assert!(
            !r.text().contains(SECRET_VALUE),
            "secret leaked: {}",
            r.text()
        );
    }

    // The API and the CLI show the deliveries and their attempts.
    let deadline = std::time::Instant::now() + LIMIT;
    let list = loop {
        let v = d.get_json("/api/v1/deliveries");
        let list = v["deliveries"].as_array().cloned().unwrap_or_default();
        if (list.len() == 6 && list.iter().all(|d| d["status"] == "delivered"))
            || std::time::Instant::now() > deadline
        {
            break list;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(list.len(), 6, "{list:?}");
    for del in &list {
        assert_eq!(del["status"], "delivered", "{del}");
        assert_eq!(del["attempts"], 1);
        assert_eq!(del["history"][0]["status_code"], 200);
        assert_eq!(del["run_id"], id.as_str());
        assert!(!del["payload"].to_string().contains(SECRET_VALUE));
    }
    let slack_row = list
        .iter()
        .find(|d| d["webhook"] == "chat")
        .expect("chat delivery");
    assert_eq!(
        slack_row["id"].as_str(),
        slack.requests()[0].header("x-agent-delivery")
    );
    let v = d.get_json("/api/v1/deliveries?webhook=chat&status=delivered&limit=5");
    assert_eq!(v["deliveries"].as_array().map(Vec::len), Some(1));
    let (code, body) = d.get("/api/v1/deliveries?status=nope");
    assert_eq!(code, 400, "{body}");

    let mut cmd = common::agent(&["deliveries", "--server", &d.url(), "--webhook", "chat"]);
    cmd.env("AGENT_TOKEN", TEST_TOKEN);
    let out = common::run_with_deadline(cmd, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("DELIVERY"), "{stdout}");
    assert!(
        stdout.contains("chat") && stdout.contains("run.failed") && stdout.contains("delivered"),
        "{stdout}"
    );
}
