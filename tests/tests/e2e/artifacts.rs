//! Step artifacts end to end: an artifact made in one step is read by a later step (with
//! `agent exec` and in the daemon), listed and downloaded byte for byte through the API and
//! `agent artifacts` (a binary file and an executable bit included), paths leaving the
//! workspace are refused, retention removes artifacts with their run and at their own
//! `retention:`, and `from:` takes the latest successful run of another workflow on the same
//! branch.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common::daemon::{
    TEST_TOKEN, TestDaemon, fixture, git, init_repo, repo_config, trigger_with, wait_for,
};
use crate::common::exec::{Ws, assert_code, report, step};
use crate::common::{self, run_with_deadline, stderr, stdout};

const LIMIT: Duration = Duration::from_secs(120);

/// The bytes of the binary file the producing steps write (`printf` octal escapes).
const DATA: &[u8] = b"\x00\x01\xffbinary\n";
/// The executable script they write.
const TOOL: &[u8] = b"#!/bin/sh\necho tool\n";

/// A step script writing `dist/data.bin`, the executable `dist/bin/tool`, and a file that
/// is not part of the artifact.
const MAKE: &str = "mkdir -p dist/bin\n            printf '\\000\\001\\377binary\\n' > dist/data.bin\n            printf '#!/bin/sh\\necho tool\\n' > dist/bin/tool\n            chmod 755 dist/bin/tool\n            echo not-kept > other.txt\n";

/// A workflow whose step `make` keeps `dist` as artifact `dist` and whose step `use` reads it
/// through `${{ steps.make.artifacts.dist }}` (and writes what the kept tool prints to `out`).
fn producer(name: &str, out: &Path) -> String {
    format!(
        "workflow:\n  name: {name}\n  stages:\n    - name: build\n      steps:\n        - id: make\n          run: |\n            {MAKE}          artifacts:\n            - name: dist\n              paths: [dist]\n        - id: use\n          run: |\n            d=\"${{{{ steps.make.artifacts.dist }}}}\"\n            cmp \"$d/dist/data.bin\" dist/data.bin\n            test -x \"$d/dist/bin/tool\"\n            test ! -e \"$d/other.txt\"\n            \"$d/dist/bin/tool\" > '{}'\n",
        out.join("used.txt").display()
    )
}

/// Asserts that `dir` holds the artifact's files: bytes and executable bit.
fn assert_files(dir: &Path) {
    assert_eq!(
        std::fs::read(dir.join("dist/data.bin")).expect("data.bin"),
        DATA
    );
    let tool = dir.join("dist/bin/tool");
    assert_eq!(std::fs::read(&tool).expect("tool"), TOOL);
    let mode = std::fs::metadata(&tool).expect("meta").permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit lost: {mode:o}");
    assert!(!dir.join("other.txt").exists(), "a file outside `paths`");
}

/// `GET path` with the token, the body as raw bytes: (status, headers lower-cased, body).
fn get_bytes(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = raw[end + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "the archive comes with its length"
    );
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// `agent artifacts ARGS...` against the test daemon.
fn cli(d: &TestDaemon, args: &[&str]) -> std::process::Output {
    let url = d.url();
    let mut all = vec!["artifacts"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", url.as_str()]);
    let mut cmd = common::agent(&all);
    cmd.env("AGENT_TOKEN", TEST_TOKEN).current_dir(&d.root);
    run_with_deadline(cmd, LIMIT)
}

/// Guards local artifacts: with `agent exec`, a later step reads the artifact's directory
/// (bytes and executable bit kept, nothing outside `paths`), the report lists it, and its
/// archive is in the state directory under its digest.
#[test]
fn exec_keeps_an_artifact_that_a_later_step_reads() {
    let ws = Ws::new();
    let out = tempfile::tempdir().expect("out");
    ws.write("w.yaml", &producer("local", out.path()));
    let run = ws.exec("w.yaml", &[]);
    assert_code(&run, 0);
    assert_eq!(
        std::fs::read_to_string(out.path().join("used.txt")).expect("used"),
        "tool\n"
    );
    let r = report(&run);
    let kept = &step(&r, "make")["artifacts"][0];
    assert_eq!(kept["name"], "dist", "{r:#}");
    assert_eq!(kept["files"], 2, "{r:#}");
    let digest = kept["digest"].as_str().expect("digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let blob = ws
        .path()
        .join(".agent/artifacts")
        .join(format!("{hex}.tar.gz"));
    let bytes = std::fs::read(&blob).expect("archive in the state dir");
    assert_eq!(sha256(&bytes), digest, "content-addressed");
    assert_eq!(kept["size"].as_u64(), Some(bytes.len() as u64));
    let unpacked = tempfile::tempdir().expect("unpack");
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&blob)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .expect("tar");
    assert!(tar.success());
    assert_files(unpacked.path());
    assert!(step(&r, "use").get("artifacts").is_none(), "{r:#}");
}

/// Guards the workspace boundary: `..` and absolute `paths` are refused before anything
/// runs (exit 2, with the line), and a matched symlink pointing outside the workspace fails
/// the step with `ArtifactError`, naming the symlink.
#[test]
fn paths_leaving_the_workspace_are_refused() {
    let ws = Ws::new();
    for (file, path) in [("up.yaml", "../secret"), ("abs.yaml", "/etc/passwd")] {
        ws.write(
            file,
            &format!(
                "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n          artifacts:\n            - name: x\n              paths: ['{path}']\n"
            ),
        );
        let run = ws.exec(file, &[]);
        assert_code(&run, 2);
        let err = stderr(&run);
        assert!(err.contains(&format!("{file}:10:")), "{err}");
    }
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret"), "s").expect("secret");
    ws.write(
        "link.yaml",
        &format!(
            "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: ln -s '{}' out/leak\n          artifacts:\n            - name: x\n              paths: [out]\n        - id: b\n          run: 'true'\n",
            outside.path().join("secret").display()
        ),
    );
    std::fs::create_dir_all(ws.path().join("out")).expect("out");
    let run = ws.exec("link.yaml", &[]);
    assert_code(&run, 1);
    let r = report(&run);
    let a = step(&r, "a");
    assert_eq!(a["status"], "failed", "{r:#}");
    assert_eq!(a["error_class"], "ArtifactError", "{r:#}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`out/leak` is a symlink pointing outside the workspace"),
        "{error}"
    );
    assert_eq!(step(&r, "b")["status"], "skipped");
}

/// Guards the daemon's artifacts: a later step reads it; the API lists it and serves its
/// archive (`application/gzip`, the digest's bytes); `agent artifacts` lists it and unpacks
/// it byte for byte, executable bit included; an unknown name is 404.
#[test]
fn daemon_artifacts_are_listed_and_downloaded_byte_for_byte() {
    let (tmp, repo, out) = fixture();
    init_repo(
        &repo,
        &[(".workflows/build.yaml", &producer("build", &out))],
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &repo_config("app", &repo));
    let id = trigger_with(&d, "build", "{}");
    let run = d.wait_run_final(&id, LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(
        std::fs::read_to_string(out.join("used.txt")).expect("used"),
        "tool\n"
    );
    let in_report = &run["stages"][0]["steps"][0]["artifacts"][0];
    let list = d.get_json(&format!("/api/v1/runs/{id}/artifacts"));
    let a = &list["artifacts"][0];
    assert_eq!(
        list["artifacts"].as_array().map(Vec::len),
        Some(1),
        "{list:#}"
    );
    assert_eq!(
        (&a["name"], &a["step"], &a["files"]),
        (&"dist".into(), &"make".into(), &2.into())
    );
    assert_eq!(a["digest"], in_report["digest"], "{list:#} {run:#}");

    let (status, headers, body) = get_bytes(d.addr, &format!("/api/v1/runs/{id}/artifacts/dist"));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/gzip"));
    assert_eq!(sha256(&body), a["digest"].as_str().expect("digest"));
    assert_eq!(Some(body.len() as u64), a["size"].as_u64());
    let archive = tmp.path().join("dist.tar.gz");
    std::fs::write(&archive, &body).expect("write archive");
    let by_api = tmp.path().join("by-api");
    std::fs::create_dir_all(&by_api).expect("dir");
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&by_api)
        .status()
        .expect("tar");
    assert!(tar.success());
    assert_files(&by_api);

    let listed = cli(&d, &[&id]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let text = stdout(&listed);
    assert!(text.contains("dist") && text.contains("make"), "{text}");
    let by_cli = tmp.path().join("by-cli");
    let got = cli(&d, &[&id, "dist", "-o", &by_cli.to_string_lossy()]);
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    assert_files(&by_cli);
    // Without -o: the current directory.
    let got = cli(&d, &[&id, "dist"]);
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    assert_files(&d.root);

    assert_eq!(d.get(&format!("/api/v1/runs/{id}/artifacts/nope")).0, 404);
    assert_eq!(d.get("/api/v1/runs/999999/artifacts").0, 404);
    let missing = cli(&d, &[&id, "nope"]);
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
}

/// Guards retention: an artifact goes with its run (its archive too, when no other run
/// keeps the same content), and one with its own `retention:` leaves the listing when that
/// passes and its archive at the next retention pass, while the run stays.
#[test]
fn retention_removes_artifacts_with_their_run_and_at_their_own_retention() {
    let (tmp, repo, _out) = fixture();
    let wf = "workflow:\n  name: keep\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: |\n            echo \"long $AGENT_RUN_ID\" > long.txt\n            echo \"short $AGENT_RUN_ID\" > short.txt\n          artifacts:\n            - name: long\n              paths: [long.txt]\n            - name: short\n              paths: [short.txt]\n              retention: 1s\n";
    init_repo(&repo, &[(".workflows/keep.yaml", wf)]);
    let config = format!("{}retention:\n  max_runs: 1\n", repo_config("app", &repo));
    let mut d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let blobs = d.state_dir.join("artifacts");
    let blob = |digest: &serde_json::Value| {
        let hex = digest
            .as_str()
            .and_then(|s| s.strip_prefix("sha256:"))
            .expect("digest");
        blobs.join(format!("{hex}.tar.gz"))
    };
    let mut kept = Vec::new();
    for _ in 0..2 {
        let id = trigger_with(&d, "keep", "{}");
        assert_eq!(d.wait_run_final(&id, LIMIT)["status"], "succeeded");
        let list = d.get_json(&format!("/api/v1/runs/{id}/artifacts"));
        let names: Vec<_> = list["artifacts"].as_array().expect("list").to_vec();
        kept.push((id, names));
    }
    let (old, old_list) = &kept[0];
    let (new, new_list) = &kept[1];
    for a in old_list.iter().chain(new_list) {
        assert!(blob(&a["digest"]).exists(), "{a}");
    }
    let short = new_list
        .iter()
        .find(|a| a["name"] == "short")
        .expect("short");
    let long = new_list.iter().find(|a| a["name"] == "long").expect("long");
    assert!(short["expires_at"].is_string() && long["expires_at"].is_null());
    // `short` expires 1 s after its step: gone from the listing at once.
    wait_for("the short artifact to expire", LIMIT, || {
        let list = d.get_json(&format!("/api/v1/runs/{new}/artifacts"));
        list["artifacts"].as_array().is_some_and(|a| a.len() == 1)
    });
    assert_eq!(d.get(&format!("/api/v1/runs/{new}/artifacts/short")).0, 404);
    // Retention runs at start (and hourly).
    d.kill9();
    d.boot();
    wait_for("retention to delete the archives", LIMIT, || {
        old_list.iter().all(|a| !blob(&a["digest"]).exists()) && !blob(&short["digest"]).exists()
    });
    assert_eq!(d.get(&format!("/api/v1/runs/{old}/artifacts")).0, 404);
    assert!(
        blob(&long["digest"]).exists(),
        "the kept run's artifact stays"
    );
    let (status, _, body) = get_bytes(d.addr, &format!("/api/v1/runs/{new}/artifacts/long"));
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), long["digest"].as_str().expect("digest"));
}

/// Guards `from:`: a workflow takes the artifact of the newest succeeded run of another
/// workflow on its own branch: not a newer failed run, not a newer run on another branch.
#[test]
fn from_takes_the_latest_successful_run_of_another_workflow_on_the_same_branch() {
    let (tmp, repo, out) = fixture();
    let producer = "workflow:\n  name: producer\n  parameters:\n    - {name: v, type: string}\n    - {name: fail, type: boolean, default: false}\n  stages:\n    - name: s\n      steps:\n        - id: make\n          run: echo \"${{ parameters.v }}\" > value.txt\n          artifacts:\n            - name: value\n              paths: [value.txt]\n        - id: check\n          run: test \"${{ parameters.fail }}\" = false\n";
    let consumer = format!(
        "workflow:\n  name: consumer\n  stages:\n    - name: s\n      steps:\n        - id: get\n          run: 'true'\n          artifacts:\n            - name: got\n              from: {{workflow: producer, name: value}}\n        - id: use\n          run: cat \"${{{{ steps.get.artifacts.got }}}}/value.txt\" >> '{}'\n",
        out.join("seen.txt").display()
    );
    init_repo(
        &repo,
        &[
            (".workflows/producer.yaml", producer),
            (".workflows/consumer.yaml", &consumer),
        ],
    );
    git(&repo, &["branch", "other"]);
    let d = TestDaemon::start(&tmp.path().join("daemon"), &repo_config("app", &repo));
    // Nothing to take yet: the step fails and says why.
    let id = trigger_with(&d, "consumer", "{}");
    let run = d.wait_run_final(&id, LIMIT);
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no successful run of workflow `producer`"),
        "{error}"
    );
    let produce = |body: &str, status: &str| {
        let id = trigger_with(&d, "producer", body);
        assert_eq!(d.wait_run_final(&id, LIMIT)["status"], status, "{body}");
        id
    };
    produce(r#"{"parameters":{"v":"one"}}"#, "succeeded");
    let wanted = produce(r#"{"parameters":{"v":"two"}}"#, "succeeded");
    produce(r#"{"parameters":{"v":"three","fail":true}}"#, "failed");
    produce(
        r#"{"parameters":{"v":"elsewhere"},"branch":"other"}"#,
        "succeeded",
    );
    let id = trigger_with(&d, "consumer", "{}");
    let run = d.wait_run_final(&id, LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(
        std::fs::read_to_string(out.join("seen.txt")).expect("seen"),
        "two\n"
    );
    let list = d.get_json(&format!("/api/v1/runs/{id}/artifacts"));
    let a = &list["artifacts"][0];
    assert_eq!(a["name"], "got", "{list:#}");
    assert_eq!(a["from"]["workflow"], "producer", "{list:#}");
    assert_eq!(a["from"]["run_id"], wanted.as_str(), "{list:#}");
    assert_eq!(a["from"]["name"], "value", "{list:#}");
}

/// Guards the validator: a reference to an artifact the step does not declare is an error
/// at its line and column, before anything runs.
#[test]
fn an_unknown_artifact_name_is_a_line_precise_error() {
    let ws = Ws::new();
    let out = tempfile::tempdir().expect("out");
    let text = producer("local", out.path()).replace("artifacts.dist }}", "artifacts.dsit }}");
    ws.write("w.yaml", &text);
    let run = common::run_with_deadline(
        {
            let mut cmd = common::agent(&["validate", "w.yaml"]);
            cmd.current_dir(ws.path());
            cmd
        },
        LIMIT,
    );
    assert_eq!(run.status.code(), Some(1));
    let err = stderr(&run);
    assert!(
        err.contains(
            "w.yaml:18:20: error: step `make` has no artifact `dsit`, did you mean `dist`?"
        ),
        "{err}"
    );
    assert_code(&ws.exec("w.yaml", &[]), 2);
    assert!(!out.path().join("used.txt").exists());
}

/// Guards retried runs: the step the retry takes over gives its artifact back to the
/// steps that run again, and the new run lists it as its own.
#[test]
fn a_retried_run_keeps_the_artifacts_of_the_steps_it_takes_over() {
    let (tmp, repo, out) = fixture();
    let flag = out.join("flag");
    // The retry's fresh workspace has no `dist` of its own: only the artifact has it.
    let wf = producer("build", &out)
        .replace(
            "        - id: use\n          run: |\n",
            &format!(
                "        - id: use\n          run: |\n            test -e '{}'\n            test ! -e dist\n",
                flag.display()
            ),
        )
        .replace("            cmp \"$d/dist/data.bin\" dist/data.bin\n", "");
    init_repo(&repo, &[(".workflows/build.yaml", &wf)]);
    let d = TestDaemon::start(&tmp.path().join("daemon"), &repo_config("app", &repo));
    let first = trigger_with(&d, "build", "{}");
    assert_eq!(d.wait_run_final(&first, LIMIT)["status"], "failed");
    std::fs::write(&flag, "").expect("flag");
    let (code, body) = d.post(&format!("/api/v1/runs/{first}/retry"), "");
    assert_eq!(code, 202, "{body}");
    let retry: serde_json::Value = serde_json::from_str(&body).expect("json");
    let id = crate::common::daemon::run_id(&retry);
    let run = d.wait_run_final(&id, LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(
        std::fs::read_to_string(out.join("used.txt")).expect("used"),
        "tool\n"
    );
    let list = d.get_json(&format!("/api/v1/runs/{id}/artifacts"));
    assert_eq!(list["artifacts"][0]["step"], "make", "{list:#}");
    let by_cli = tmp.path().join("by-cli");
    let got = cli(&d, &[&id, "dist", "-o", &by_cli.to_string_lossy()]);
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    assert_files(&by_cli);
}
