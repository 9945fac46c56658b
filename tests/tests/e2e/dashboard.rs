//! The web dashboard end to end: a real `agent daemon` on 127.0.0.1 and, for the browser
//! cases, a real headless Chromium driven over WebDriver (`common/webdriver.rs`). The
//! browser test writes a screenshot of each page to `docs/screenshots/`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common;
use crate::common::daemon::{
    TEST_TOKEN, TestDaemon, commit_files, fixture, init_repo, wait_for, yaml_quote,
};
use crate::common::webdriver::{self, Browser};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// A run's graph, rollback and form all have something to show.
const HELLO: &str = r#"workflow:
  name: hello
  on:
    manual: true
  parameters:
    - name: count
      type: integer
      required: true
      default: 3
    - name: mode
      type: string
      enum: [fast, slow]
      default: fast
    - name: note
      type: string
      default: ""
  stages:
    - name: main
      steps:
        - id: greet
          run: |
            echo "<script>window.__xss = 1</script><img src=x onerror=window.__xss=2>"
            printf 'bidi \342\200\256evil\n'
            printf '\033[32mgreen\033[0m done\n'
"#;

const BUILD: &str = r#"workflow:
  name: build
  on:
    push: {}
  stages:
    - name: compile
      steps:
        - id: compile
          run: sleep 1; echo compiled
    - name: test
      steps:
        - id: unit
          run: echo tested
"#;

const DEPLOY: &str = r#"workflow:
  name: deploy
  on:
    manual: true
  stages:
    - name: prep
      steps:
        - id: backup
          run: echo "backup_id=bk-42" >> "$AGENT_OUTPUT"
    - name: release
      steps:
        - id: health
          run: |
            echo "checking health"
            echo "error: health check failed on canary" >&2
            echo "error_class=HealthCheckFailed" >> "$AGENT_OUTPUT"
            exit 1
  error_handlers:
    - error: HealthCheckFailed
      action: rollback
  rollback:
    steps:
      - id: restore
        run: echo "restoring ${{ steps.backup.output.backup_id }}"
"#;

const SLOW: &str = r#"workflow:
  name: slow
  on:
    manual: true
  stages:
    - name: main
      steps:
        - id: wait
          run: echo waiting; sleep 120
"#;

const SPAM: &str = r#"workflow:
  name: spam
  on:
    manual: true
  stages:
    - name: main
      steps:
        - id: print
          run: |
            sleep 2
            i=1
            while [ $i -le 10000 ]; do echo "line $i of the log"; i=$((i+1)); done
            sleep 2
"#;

const BIG: &str = r#"workflow:
  name: big
  on:
    manual: true
  stages:
    - name: main
      steps:
        - id: print
          run: seq 1 100000 | sed 's/^/row /'
"#;

/// A stage ordered by its dependencies, then a step that succeeds on its third attempt.
const FLAKY: &str = r#"workflow:
  name: flaky
  on:
    manual: true
  stages:
    - name: fan
      parallel: auto
      steps:
        - id: seed
          run: echo "n=1" >> "$AGENT_OUTPUT"
        - id: left
          needs: [seed]
          run: echo left
        - id: right
          run: echo "right ${{ steps.seed.output.n }}"
        - id: join
          needs: [left, right]
          run: echo joined
    - name: settle
      steps:
        - id: shaky
          retry:
            max_attempts: 3
            delay: 1s
          run: |
            n=$(cat .shaky-count 2>/dev/null || echo 0)
            n=$((n + 1))
            echo "$n" > .shaky-count
            echo "attempt $n"
            [ "$n" -ge 3 ] || exit 1
"#;

fn start() -> (tempfile::TempDir, PathBuf, TestDaemon) {
    let (tmp, repo, _out) = fixture();
    init_repo(
        &repo,
        &[
            (".workflows/hello.yaml", HELLO),
            (".workflows/build.yaml", BUILD),
            (".workflows/deploy.yaml", DEPLOY),
            (".workflows/slow.yaml", SLOW),
            (".workflows/spam.yaml", SPAM),
            (".workflows/big.yaml", BIG),
            (".workflows/flaky.yaml", FLAKY),
        ],
    );
    let config = format!(
        "repos:\n  - name: app\n    path: {}\n",
        yaml_quote(&repo.to_string_lossy())
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    wait_for("the workflows to be listed", LIMIT, || {
        d.get_json("/api/v1/workflows")["workflows"]
            .as_array()
            .is_some_and(|w| w.len() == 7)
    });
    (tmp, repo, d)
}

fn trigger(d: &TestDaemon, workflow: &str, body: &str) -> String {
    let (code, text) = d.post(&format!("/api/v1/workflows/{workflow}/runs"), body);
    assert_eq!(code, 202, "trigger {workflow}: {text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    v["run_id"].as_str().expect("run id").to_string()
}

/// A raw HTTP/1.1 exchange: (status, head, body).
fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut out = Vec::new();
    // An event stream would not end: read what comes within the timeout.
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"),
    )
}

fn post(addr: SocketAddr, path: &str, extra: &str, body: &str) -> (u16, String, String) {
    raw(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        ),
    )
}

/// A raw HTTP/1.0 GET (so the body is not chunked): (head, body bytes).
fn get_bytes(addr: SocketAddr, path: &str, extra: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}\r\n").as_bytes())
        .expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    (
        String::from_utf8_lossy(&out[..at]).to_ascii_lowercase(),
        out[at + 4..].to_vec(),
    )
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("gzip");
    text
}

/// Guards the dashboard's compression: with `Accept-Encoding: gzip` the runs page, a
/// fragment and the script come gzip-compressed (and decode to the page and to the file),
/// the script with its long-lived cache header; without it, they come as they are.
#[test]
fn pages_and_assets_are_gzip_compressed() {
    let (_tmp, _repo, d) = start();
    let addr = d.addr;
    let bearer = format!("Authorization: Bearer {TEST_TOKEN}\r\n");
    let gzip = format!("{bearer}Accept-Encoding: gzip\r\n");
    let (head, body) = get_bytes(addr, "/", &gzip);
    assert!(
        head.starts_with("http/1.0 200") || head.starts_with("http/1.1 200"),
        "{head}"
    );
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    let page = gunzip(&body);
    assert!(page.contains("<table class=\"runs\""), "{page}");
    let (head, body) = get_bytes(addr, "/?fragment=rows", &gzip);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(gunzip(&body).contains("<tr"));

    let (_, page) = get_bytes(addr, "/", &bearer);
    let page = String::from_utf8_lossy(&page).into_owned();
    let at = page.find("/assets/app.js?v=").expect("script link");
    let link = &page[at..page[at..].find('"').map_or(page.len(), |e| at + e)];
    let (head, body) = get_bytes(addr, link, "Accept-Encoding: gzip, deflate\r\n");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(
        head.contains("cache-control: public, max-age=31536000, immutable"),
        "{head}"
    );
    let script = std::fs::read_to_string(common::workspace_root().join("agent/assets/web/app.js"))
        .expect("app.js");
    assert_eq!(gunzip(&body), script);

    let (head, body) = get_bytes(addr, link, "");
    assert!(!head.contains("content-encoding"), "{head}");
    assert_eq!(String::from_utf8_lossy(&body), script);
}

/// The `csrf` value in a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 32].to_string()
}

/// Guards the dashboard's access rules: without the cookie or the token every page,
/// fragment, event stream and action answers 401 or redirects to the login, with none of
/// the run's data; a login sets an HttpOnly, SameSite=Strict cookie; a POST on that cookie
/// without the CSRF token, or from another site, is refused; the trigger form's server-side
/// errors come back next to the field (422); everything from runs is escaped.
#[test]
fn auth_csrf_escaping_and_form_errors_over_http() {
    let (_tmp, _repo, d) = start();
    let secret_param = "<script>alert(1)</script>\u{202E}gnp.exe";
    let body = serde_json::json!({"parameters": {"count": 1, "note": secret_param}}).to_string();
    let id = trigger(&d, "hello", &body);
    let run = d.wait_run_final(&id, LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let addr = d.addr;
    let html = "Accept: text/html\r\n";
    // No credentials: pages redirect, the rest is 401, and nothing of the run shows.
    for path in [
        "/",
        &format!("/runs/{id}"),
        "/workflows",
        "/deliveries",
        "/anomalies",
        "/?fragment=rows",
        &format!("/runs/{id}?fragment=views"),
    ] {
        let (status, head, body) = get(addr, path, html);
        assert_eq!(status, 303, "{path}: {head}");
        assert!(head.contains("location: /login?next="), "{head}");
        assert!(
            !body.contains("hello") && !body.contains("greet"),
            "{path}: {body}"
        );
    }
    for path in [
        "/events/runs".to_string(),
        format!("/runs/{id}/events"),
        format!("/runs/{id}/steps/greet/log"),
        format!("/runs/{id}/steps/greet/log?follow=true"),
        format!("/runs/{id}?fragment=views"),
    ] {
        let (status, _, body) = get(addr, &path, "Accept: */*\r\n");
        assert_eq!(status, 401, "{path}");
        assert!(
            !body.contains("hello") && !body.contains("window"),
            "{path}: {body}"
        );
    }
    for action in ["cancel", "retry", "rerun"] {
        let (status, _, _) = post(addr, &format!("/runs/{id}/{action}"), "", "");
        assert_eq!(status, 401, "{action}");
    }
    let (status, _, _) = post(addr, "/workflows/app/hello/runs", "", "p.count=1");
    assert_eq!(status, 401);
    // A wrong token does not log in.
    let (status, head, _) = post(addr, "/login", "", "token=nope&next=%2F");
    assert_eq!(status, 401);
    assert!(!head.to_ascii_lowercase().contains("set-cookie"));
    // The right one does, with a strict, script-proof cookie, and back to `next` only locally.
    let (status, head, _) = post(
        addr,
        "/login",
        "",
        &format!("token={TEST_TOKEN}&next=%2F%2Fevil.example"),
    );
    assert_eq!(status, 303, "{head}");
    assert!(
        head.contains("location: /\r\n") || head.ends_with("location: /"),
        "{head}"
    );
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(
        cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"),
        "{cookie_line}"
    );
    let cookie = cookie_line
        .split_once(':')
        .expect("header")
        .1
        .trim()
        .split(';')
        .next()
        .expect("value")
        .to_string();
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let (status, head, page) = get(addr, &format!("/runs/{id}"), &with_cookie);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{head}"
    );
    assert!(!page.contains("<script>alert(1)"), "unescaped parameter");
    assert!(page.contains("&lt;script&gt;alert(1)"), "escaped parameter");
    assert!(!page.contains('\u{202E}'), "bidi override kept");
    assert!(
        page.contains("&lt;U+202E&gt;"),
        "bidi override not shown as text"
    );
    // The log itself is plain text (rendered by the page's script through textContent).
    let (status, head, _) = get(
        addr,
        &format!("/runs/{id}/steps/greet/log?download=1"),
        &with_cookie,
    );
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    assert!(head.contains("attachment"), "{head}");
    // A POST on the cookie without the CSRF token, or from another site, is refused.
    let (status, _, _) = post(addr, &format!("/runs/{id}/rerun"), &with_cookie, "");
    assert_eq!(status, 403);
    let (status, _, _) = post(
        addr,
        &format!("/runs/{id}/rerun"),
        &with_cookie,
        "csrf=0123456789abcdef0123456789abcdef",
    );
    assert_eq!(status, 403);
    let csrf = csrf_of(&page);
    let evil = format!("{with_cookie}Origin: http://evil.example\r\n");
    let (status, _, _) = post(
        addr,
        &format!("/runs/{id}/rerun"),
        &evil,
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 403);
    let runs_before = d.get_json("/api/v1/runs")["runs"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(runs_before, 1, "a refused POST started a run");
    // With it, the re-run starts.
    let (status, head, _) = post(
        addr,
        &format!("/runs/{id}/rerun"),
        &with_cookie,
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /runs/2"), "{head}");
    // The trigger form: a wrong integer comes back as 422 with the error next to the field.
    let (status, _, page) = post(
        addr,
        "/workflows/app/hello/runs",
        &with_cookie,
        &format!("csrf={csrf}&p.count=twelve&p.mode=fast"),
    );
    assert_eq!(status, 422, "{page}");
    let at = page
        .find("id=\"err-hello-count\"")
        .expect("the count field's error");
    let error = &page[at..at + 300];
    assert!(error.contains("integer"), "{error}");
    assert!(page.contains("value=\"twelve\""), "the value typed is kept");
    // Bearer works on pages and actions without a CSRF token.
    let bearer = format!("Authorization: Bearer {TEST_TOKEN}\r\n");
    let (status, head, _) = post(
        addr,
        "/workflows/app/hello/runs",
        &bearer,
        "p.count=5&p.mode=slow",
    );
    assert_eq!(status, 303, "{head}");
    let (status, _, body) = get(addr, "/anomalies", &bearer);
    assert_eq!(status, 200);
    assert!(body.contains("<h1>Anomalies</h1>"));
    let (status, _, body) = get(addr, "/deliveries", &bearer);
    assert_eq!(status, 200);
    assert!(body.contains("<h1>Deliveries</h1>"));
}

fn shots() -> PathBuf {
    common::workspace_root().join("docs").join("screenshots")
}

fn shot(b: &Browser, name: &str) {
    b.screenshot(&shots().join(format!("{name}.png")));
}

fn status_of(d: &TestDaemon, id: &str) -> String {
    d.get_json(&format!("/api/v1/runs/{id}"))["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The dashboard in a real Chromium: logging in with the token; a pushed run appearing and
/// turning green without a reload; a failed deployment with its failed step focused, its
/// error visible and the rollback lane drawn; the trigger form refusing a wrong integer
/// next to the field and starting a run with a right one; cancelling a running run;
/// following a live log of 10,000 lines; step output shown as text, never run as markup;
/// `needs` and `${{ steps.X }}` drawn as graph edges and a retried step's attempts as bars;
/// the runs list narrowed by its filters and its text search.
#[test]
fn the_dashboard_in_a_real_browser() {
    // A missing browser fails the test (CI installs it); skipping is an explicit choice.
    if !webdriver::available() {
        if std::env::var_os("AGENT_SKIP_BROWSER_TESTS").is_some() {
            eprintln!("skipped: AGENT_SKIP_BROWSER_TESTS is set");
            return;
        }
        panic!(
            "{} or {} is not installed (apt-get install chromium chromium-driver), \
             or set AGENT_SKIP_BROWSER_TESTS=1 to skip the browser test",
            webdriver::CHROMIUM,
            webdriver::CHROMEDRIVER
        );
    }
    let (_tmp, repo, d) = start();
    let base = d.url();
    let b = Browser::start(1400, 1000);

    // Log in.
    b.goto(&format!("{base}/"));
    b.wait_js(
        "the login form",
        LIMIT,
        "return location.pathname === '/login' && !!document.getElementById('token')",
    );
    shot(&b, "login");
    b.fill("#token", "wrong");
    b.click("#login-submit");
    b.wait_js(
        "the login error",
        LIMIT,
        "return !!document.getElementById('login-error')",
    );
    b.fill("#token", TEST_TOKEN);
    b.click("#login-submit");
    b.wait_js(
        "the runs page",
        LIMIT,
        "return location.pathname === '/' && !!document.getElementById('runs')",
    );
    let cookie_visible = b.js("return document.cookie");
    assert_eq!(
        cookie_visible,
        Value::String(String::new()),
        "the session cookie is HttpOnly"
    );

    // A pushed run appears and turns green without a reload.
    b.js("window.__stay = 'same page'; return true");
    b.wait_js(
        "the live stream to connect",
        LIMIT,
        "return document.readyState === 'complete'",
    );
    commit_files(&repo, &[("src.txt", "v2\n")], "change the source");
    b.wait_js(
        "the pushed run to appear",
        LIMIT,
        "return !!document.querySelector('#rows tr[data-run]')",
    );
    b.wait_js("the pushed run to turn green", LIMIT, "return document.querySelector('#rows tr[data-run]').getAttribute('data-status') === 'succeeded'");
    assert_eq!(
        b.js("return window.__stay"),
        Value::String("same page".into()),
        "the page was reloaded"
    );
    assert!(
        b.text("#rows tr[data-run]").contains("succeeded"),
        "status word shown"
    );

    // A failed deployment with a rollback.
    let deploy = trigger(&d, "deploy", "{}");
    d.wait_run_final(&deploy, LIMIT);
    b.goto(&format!("{base}/runs/{deploy}"));
    b.wait_js(
        "the run page",
        LIMIT,
        "return !!document.getElementById('graph')",
    );
    let focused = b.js("var n = document.querySelector('#graph .node.focus'); return n ? n.getAttribute('data-step') : ''");
    assert_eq!(focused, Value::String("health".into()));
    assert!(
        b.text("#step-error").contains("health"),
        "the failed step's error is visible"
    );
    assert!(b.text("#run-status").contains("failed"));
    assert_eq!(
        b.js("return document.querySelectorAll('#graph .lane-undo .node').length"),
        Value::from(1),
        "rollback lane"
    );
    b.wait_js("the failing line in view", LIMIT, "var l = document.querySelector('#logview .logline.bad'); if (!l) return false; var v = document.getElementById('logview').getBoundingClientRect(), r = l.getBoundingClientRect(); return r.top >= v.top && r.bottom <= v.bottom;");
    shot(&b, "run");

    // Dependencies are drawn as edges; a retried step shows one bar per attempt with the
    // backoff between them, on the critical path.
    let flaky = trigger(&d, "flaky", "{}");
    let flaky_run = d.wait_run_final(&flaky, LIMIT);
    assert_eq!(flaky_run["status"], "succeeded", "{flaky_run:#}");
    b.goto(&format!("{base}/runs/{flaky}?step=shaky"));
    b.wait_js(
        "the flaky run's graph",
        LIMIT,
        "return !!document.querySelector('#graph svg') && !!document.getElementById('logview')",
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#graph .edge.dep').length"),
        Value::from(4),
        "seed→left, seed→right, left→join, right→join"
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#graph .edge.stage').length"),
        Value::from(1),
        "fan → settle"
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#timeline .row[data-step=\"shaky\"] .bar.attempt').length"),
        Value::from(3),
        "one bar per attempt"
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#timeline .row[data-step=\"shaky\"] .wait.backoff').length"),
        Value::from(2),
        "the backoff before attempts 2 and 3"
    );
    assert_eq!(
        b.js("return !!document.querySelector('#timeline .row.crit[data-step=\"shaky\"]')"),
        Value::Bool(true),
        "the last step is on the critical path"
    );
    shot(&b, "run-graph");

    // Step output is text: no script ran, the markup and the bidi override show as text.
    let hello = trigger(&d, "hello", r#"{"parameters":{"count":1}}"#);
    d.wait_run_final(&hello, LIMIT);
    b.goto(&format!("{base}/runs/{hello}"));
    b.wait_js(
        "the log lines",
        LIMIT,
        "return document.getElementById('logview').getAttribute('data-lines') === '3'",
    );
    let log_text = b.text("#logview");
    assert!(
        log_text.contains("<script>window.__xss = 1</script>"),
        "{log_text}"
    );
    assert!(log_text.contains("<U+202E>evil"), "{log_text}");
    assert_eq!(b.js("return window.__xss === undefined && document.querySelectorAll('#logview script, #logview img').length === 0"), Value::Bool(true));
    assert_eq!(
        b.js("return !!document.querySelector('#logview .a-32')"),
        Value::Bool(true),
        "ANSI colour"
    );

    // The trigger form: a wrong integer, then a right one.
    b.goto(&format!("{base}/workflows"));
    b.wait_js(
        "the workflows page",
        LIMIT,
        "return !!document.getElementById('f-hello-count')",
    );
    b.js("document.querySelector('#wf-app-hello details').open = true; return true");
    b.fill("#f-hello-count", "1.5");
    b.click("#wf-app-hello .run-button");
    let error = b.wait_js(
        "the field error",
        LIMIT,
        "return document.getElementById('err-hello-count').textContent.trim()",
    );
    assert!(error.as_str().unwrap_or("").contains("integer"), "{error}");
    assert_eq!(
        b.js("return location.pathname"),
        Value::String("/workflows".into())
    );
    shot(&b, "workflows");
    b.fill("#f-hello-count", "7");
    b.click("#wf-app-hello .run-button");
    b.wait_js(
        "the new run's page",
        LIMIT,
        "return location.pathname.indexOf('/runs/') === 0",
    );
    let new_id = b
        .url()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .to_string();
    let run = d.wait_run_final(&new_id, LIMIT);
    assert_eq!(run["parameters"]["count"], 7, "{run:#}");
    // The page opened before the run's first step, so it reloads itself once the step appears;
    // wait for that page before leaving, or its reload could cancel the next navigation.
    b.wait_js("the finished run's page with its log", LIMIT, "var s = document.getElementById('run-status'); return !!document.getElementById('logview') && !!s && s.getAttribute('data-status') === 'succeeded'");

    // Cancel a running run.
    let slow = trigger(&d, "slow", "{}");
    wait_for("the slow run to start", LIMIT, || {
        status_of(&d, &slow) == "running"
    });
    b.goto(&format!("{base}/runs/{slow}"));
    b.wait_js(
        "the cancel button",
        LIMIT,
        "return !!document.getElementById('cancel')",
    );
    b.click("#cancel");
    b.wait_js("the run to show cancelled", LIMIT, "var s = document.getElementById('run-status'); return s && s.getAttribute('data-status') === 'cancelled'");
    assert_eq!(status_of(&d, &slow), "cancelled");

    // Follow a live log of 10,000 lines.
    let spam = trigger(&d, "spam", "{}");
    wait_for("the spam run to start", LIMIT, || {
        status_of(&d, &spam) == "running"
    });
    b.goto(&format!("{base}/runs/{spam}"));
    b.wait_js("a live log view", LIMIT, "var v = document.getElementById('logview'); return v && v.getAttribute('data-live') === 'true'");
    b.wait_js(
        "10,000 lines followed",
        LIMIT,
        "return document.getElementById('logview').getAttribute('data-lines') === '10000'",
    );
    b.wait_js("the last line in view", LIMIT, "var l = document.getElementById('L10000'); return !!l && l.textContent.indexOf('line 10000 of the log') >= 0");
    assert!(
        b.js("return document.querySelectorAll('#logview .logline').length")
            .as_u64()
            .unwrap_or(0)
            < 500,
        "the log is rendered windowed"
    );
    // Anchors and search.
    b.goto(&format!("{base}/runs/{spam}?step=print#L120"));
    b.wait_js(
        "line 120 targeted",
        LIMIT,
        "var l = document.getElementById('L120'); return !!l && l.classList.contains('target')",
    );
    b.keys("#logsearch", "line 9999 of\u{E007}");
    b.wait_js(
        "the search hit",
        LIMIT,
        "var l = document.getElementById('L9999'); return !!l && l.classList.contains('hit')",
    );
    shot(&b, "log");

    // A finished log of 100,000 lines: its first lines show, rendered windowed.
    let big = trigger(&d, "big", "{}");
    d.wait_run_final(&big, LIMIT);
    b.goto(&format!("{base}/runs/{big}"));
    let shown_ms = b.wait_js(
        "the first lines of 100,000",
        LIMIT,
        "var l = document.getElementById('L1'); return l && document.getElementById('logview').getAttribute('data-lines') === '100000' ? performance.now() : 0",
    );
    eprintln!("100,000-line log: first lines shown {shown_ms} ms after navigation");
    assert!(b.text("#L1").contains("row 1"));
    assert!(
        b.js("return document.querySelectorAll('#logview .logline').length")
            .as_u64()
            .unwrap_or(0)
            < 500,
        "the log is rendered windowed"
    );

    // The other pages, and the narrow layout.
    b.goto(&format!("{base}/"));
    b.wait_js(
        "the runs list",
        LIMIT,
        "return document.querySelectorAll('#rows tr[data-run]').length >= 6",
    );
    shot(&b, "runs");
    assert!(
        b.js("return document.querySelectorAll('#rows svg.spark').length")
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "a sparkline of a workflow's durations"
    );

    // Filters and the text search narrow the list (the store filters, not the page). A
    // second push gives the runs two commits with their own messages.
    commit_files(&repo, &[("src.txt", "v3\n")], "tune the cache");
    wait_for("the second push run to finish", LIMIT, || {
        d.get_json("/api/v1/runs?trigger=push")["runs"]
            .as_array()
            .is_some_and(|r| r.len() == 2 && r.iter().all(|x| x["status"] == "succeeded"))
    });
    b.goto(&format!("{base}/"));
    b.wait_js(
        "the runs list",
        LIMIT,
        "return !!document.getElementById('search')",
    );
    b.fill("#search", "tune the");
    b.keys("#search", "\u{E007}");
    b.wait_js("the search result", LIMIT, "return location.search.indexOf('q=tune') >= 0 && document.querySelectorAll('#rows tr[data-run]').length === 1");
    assert!(
        b.text("#rows tr[data-run]").contains("tune the cache"),
        "the commit message is shown"
    );
    shot(&b, "runs-search");
    let rows = |b: &Browser, query: &str| -> u64 {
        b.goto(&format!("{base}/?{query}"));
        b.wait_js(
            "the runs page",
            LIMIT,
            "return !!document.getElementById('rows')",
        );
        b.js("return document.querySelectorAll('#rows tr[data-run]').length")
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(rows(&b, "q=change+the"), 8, "the runs of the first commit");
    assert_eq!(rows(&b, "workflow=deploy"), 1);
    assert!(b.text("#rows tr[data-run]").contains("deploy"));
    assert_eq!(rows(&b, "trigger=push"), 2);
    assert_eq!(rows(&b, "status=cancelled"), 1);
    assert_eq!(rows(&b, "q=FLAKY"), 1, "the search ignores case");
    let branch = d.get_json("/api/v1/runs?trigger=push")["runs"][0]["trigger"]["branch"]
        .as_str()
        .expect("the push run's branch")
        .to_string();
    assert_eq!(rows(&b, &format!("branch={branch}&trigger=push")), 2);
    assert_eq!(rows(&b, "branch=no-such-branch"), 0);
    assert!(b.text("#rows").contains("match these filters"));
    b.goto(&format!("{base}/deliveries"));
    shot(&b, "deliveries");
    b.goto(&format!("{base}/anomalies"));
    shot(&b, "anomalies");
    b.resize(360, 800);
    b.goto(&format!("{base}/runs/{deploy}"));
    b.wait_js(
        "the run page",
        LIMIT,
        "return !!document.getElementById('graph')",
    );
    let overflow = b.js("return document.documentElement.scrollWidth <= window.innerWidth + 1");
    assert_eq!(
        overflow,
        Value::Bool(true),
        "the page scrolls sideways at 360 px"
    );
    shot(&b, "run-360");
    b.goto(&format!("{base}/"));
    shot(&b, "runs-360");
    assert!(Path::new(&shots().join("run.png")).exists());
}
