//! `agent validate` and `agent schema`, driven through the built binary: exit codes,
//! directory selection, hostile input (alias bomb, huge file) rejected fast and in little
//! memory, and the printed schema equal to the committed file.

use crate::common;

use common::{agent, run_with_deadline, stderr, stdout, workspace_root};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn validate(args: &[&str]) -> std::process::Output {
    let mut full = vec!["validate"];
    full.extend_from_slice(args);
    let mut cmd = agent(&full);
    cmd.current_dir(workspace_root());
    run_with_deadline(cmd, LIMIT)
}

#[test]
fn examples_directory_is_valid() {
    let out = validate(&["examples"]);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    let so = stdout(&out);
    assert!(so.contains("checked 6 workflow files: all valid"), "{so}");
}

#[test]
fn invalid_file_exits_1_with_position() {
    let out = validate(&["dsl/tests/fixtures/invalid/unknown_key.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let se = stderr(&out);
    assert!(
        se.starts_with(
            "dsl/tests/fixtures/invalid/unknown_key.yaml:5:7: error: unknown key `paralel` in a stage, did you mean `parallel`?\n"
        ),
        "{se}"
    );
    assert!(
        se.contains("5 |       paralel: true\n  |       ^^^^^^^\n"),
        "{se}"
    );
    assert!(stdout(&out).contains("1 invalid"), "{}", stdout(&out));
}

#[test]
fn three_problems_print_three_errors() {
    let out = validate(&["dsl/tests/fixtures/invalid/three_problems.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let se = stderr(&out);
    let heads: Vec<&str> = se.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(heads.len(), 3, "{se}");
    assert!(heads[0].contains(":7:7: "), "{se}");
    assert!(heads[1].contains(":11:23: "), "{se}");
    assert!(heads[2].contains(":16:37: "), "{se}");
}

#[test]
fn warnings_do_not_change_the_exit_code() {
    let out = validate(&["dsl/tests/fixtures/warnings/run_reads_commit_message.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(": warning: `repo.message`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = validate(&["does/not/exist.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot access `does/not/exist.yaml`"),
        "{}",
        stderr(&out)
    );
    let out = run_with_deadline(agent(&["validate"]), LIMIT);
    assert_eq!(out.status.code(), Some(2));
    let empty = tempfile::tempdir().expect("tempdir");
    let out = validate(&[empty.path().to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no workflow files in"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn directory_without_dot_workflows_checks_files_with_a_workflow_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a.yaml"),
        "workflow:\n  name: a\n  stages:\n    - name: s\n      steps:\n        - id: x\n          run: echo x\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("b.yml"), "not_a_workflow: true\n").expect("write");
    std::fs::write(dir.path().join("c.txt"), "workflow: nope\n").expect("write");
    let out = run_with_deadline(
        agent(&["validate", dir.path().to_str().expect("utf-8 path")]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("checked 1 workflow file: all valid"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn directory_with_dot_workflows_checks_every_yaml_file_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = dir.path().join(".workflows");
    std::fs::create_dir(&wf).expect("mkdir");
    std::fs::write(
        wf.join("good.yml"),
        "workflow:\n  stages:\n    - name: s\n      steps:\n        - id: x\n          run: echo x\n",
    )
    .expect("write");
    std::fs::write(wf.join("bad.yaml"), "workflow:\n  stages: 3\n").expect("write");
    // Outside `.workflows/`: ignored.
    std::fs::write(dir.path().join("other.yaml"), "workflow:\n  nonsense: 1\n").expect("write");
    let out = run_with_deadline(
        agent(&["validate", dir.path().to_str().expect("utf-8 path")]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("checked 2 workflow files: 1 invalid"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out)
            .contains("bad.yaml:2:11: error: expected a sequence for `stages`, found an integer"),
        "{}",
        stderr(&out)
    );
}

/// Runs `agent validate FILE` and returns (exit code, wall time, peak RSS in KiB, stderr).
fn measure(file: &Path) -> (Option<i32>, Duration, i64, String) {
    let errfile = tempfile::NamedTempFile::new().expect("temp");
    let mut cmd = Command::new(common::agent_bin());
    cmd.arg("validate")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errfile.reopen().expect("reopen"));
    let start = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped below with libc::wait4, which also gives its rusage"
    )]
    let child = cmd.spawn().expect("spawn agent");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped; both pointers are valid for writes.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(rc, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    let err = std::fs::read_to_string(errfile.path()).unwrap_or_default();
    // ru_maxrss is in KiB on Linux.
    (code, elapsed, usage.ru_maxrss, err)
}

/// Rejected with a bounded peak memory; the time it takes is measured by `bench/limits.sh`.
#[test]
fn alias_bomb_is_rejected_small() {
    // Nine levels of nine-fold aliases: 9^9 (387 million) nodes when expanded.
    let mut text = String::from("a: &a [x,x,x,x,x,x,x,x,x]\n");
    let mut prev = 'a';
    for c in 'b'..='i' {
        text.push_str(&format!(
            "{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = c;
    }
    assert!(text.len() <= 320, "bomb is {} bytes", text.len());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bomb.yaml");
    std::fs::write(&path, &text).expect("write");
    common::agent_bin();
    let (code, elapsed, rss_kib, err) = measure(&path);
    eprintln!(
        "alias bomb ({} bytes): {elapsed:?}, peak RSS {rss_kib} KiB",
        text.len()
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("expands to more than"), "{err}");
    assert!(rss_kib < 100 * 1024, "peak RSS {rss_kib} KiB");
}

/// Rejected with a bounded peak memory; the time it takes is measured by `bench/limits.sh`.
#[test]
fn huge_file_is_rejected_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge.yaml");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        f.write_all(b"workflow:\n  name: huge\n  description: \"")
            .expect("write");
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..50 {
            f.write_all(&chunk).expect("write");
        }
        f.write_all(b"\"\n").expect("write");
    }
    common::agent_bin();
    let (code, elapsed, rss_kib, err) = measure(&path);
    eprintln!("50 MiB file: {elapsed:?}, peak RSS {rss_kib} KiB");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("file is too large"), "{err}");
    assert!(rss_kib < 100 * 1024, "peak RSS {rss_kib} KiB");
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let out = run_with_deadline(agent(&["schema"]), LIMIT);
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read_to_string(workspace_root().join("schemas/workflow.schema.json"))
        .expect("committed schema");
    assert!(
        stdout(&out) == committed,
        "`agent schema` differs from schemas/workflow.schema.json"
    );
}

/// Two files of one `.workflows/` with the same `name:` validated cleanly and one of them was
/// unreachable; a daemon config or a GitHub Actions file got a dozen errors and no hint.
#[test]
fn duplicate_names_are_errors_and_foreign_files_get_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = dir.path().join(".workflows");
    std::fs::create_dir(&wf).expect("mkdir");
    let body = "  stages:\n    - name: s\n      steps:\n        - id: x\n          run: echo x\n";
    std::fs::write(
        wf.join("a.yaml"),
        format!("workflow:\n  name: same\n{body}"),
    )
    .expect("write");
    std::fs::write(
        wf.join("b.yaml"),
        format!("workflow:\n  name: same\n{body}"),
    )
    .expect("write");
    let out = run_with_deadline(
        agent(&["validate", dir.path().to_str().expect("utf-8 path")]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("b.yaml:2:9: error: duplicate workflow name `same`"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("1 invalid"), "{}", stdout(&out));

    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        "listen: 127.0.0.1:8420\nrepos:\n  - name: app\n    path: /srv/app\n",
    )
    .expect("write");
    let config_arg = config.to_str().expect("utf-8 path");
    let out = run_with_deadline(agent(&["validate", config_arg]), LIMIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "hint: `{config_arg}` looks like a daemon config: check it with `agent validate --config {config_arg}`"
        )),
        "{}",
        stderr(&out)
    );

    let gha = dir.path().join("ci.yml");
    std::fs::write(
        &gha,
        "name: CI\non: [push]\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: make\n",
    )
    .expect("write");
    let out = run_with_deadline(
        agent(&["validate", gha.to_str().expect("utf-8 path")]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("looks like a GitHub Actions workflow"),
        "{}",
        stderr(&out)
    );
}

/// A config that sets only `listen:` said nothing about watching nothing.
#[test]
fn a_config_without_repositories_is_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.yaml");
    let arg = config.to_str().expect("utf-8 path");
    std::fs::write(&config, "listen: 127.0.0.1:8420\n").expect("write");
    let out = run_with_deadline(agent(&["validate", "--config", arg]), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("watches the git repository it is started in"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&config, "listen: 127.0.0.1:8420\nrepos: []\n").expect("write");
    let out = run_with_deadline(agent(&["validate", "--config", arg]), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no repository configured: nothing will run"),
        "{}",
        stderr(&out)
    );
}
