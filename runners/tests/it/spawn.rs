//! Spawning real processes: stdin and environment, line capture from both streams, exit
//! codes and signals, shell-like errors of direct exec, floods, and output held by
//! background processes.

use std::time::Duration;

use crate::common::*;
use runners::{Cancel, StepCommand, param_env, plan_script, run};

#[tokio::test]
async fn stdin_env_and_cwd_reach_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params =
        serde_json::json!({"name": "web app", "replicas": 3, "dry-run": true, "tags": ["a"]});
    let mut cmd = StepCommand::from_plan(plan_script(
        r#"echo "stdin=$(cat)"; echo "name=$AGENT_PARAM_NAME replicas=$AGENT_PARAM_REPLICAS dry=$AGENT_PARAM_DRY_RUN"; echo "tags=${AGENT_PARAM_TAGS-unset}"; pwd; echo "marker=$AGENT_RUN_MARKER"; test -n "$AGENT_STEP_MARKER"; echo err >&2"#,
        None,
    ))
    .cwd(dir.path())
    .stdin(params.to_string())
    .marker("run-77");
    cmd.env.extend(param_env(&params));
    let (outcome, cap) = run_capture(cmd, Cancel::new()).await;
    assert!(outcome.success(), "{outcome:?} {cap:?}");
    assert_eq!(cap.stdout[0], format!("stdin={params}"));
    assert_eq!(cap.stdout[1], "name=web app replicas=3 dry=true");
    assert_eq!(cap.stdout[2], "tags=unset");
    let cwd = dir.path().canonicalize().expect("canonical");
    assert_eq!(cap.stdout[3], cwd.to_string_lossy());
    assert_eq!(cap.stdout[4], "marker=run-77");
    assert_eq!(cap.stderr, vec!["err"]);
    assert!(outcome.pid > 0);
}

#[tokio::test]
async fn exit_codes_and_signals() {
    let (o, _) = run_capture(
        StepCommand::from_plan(plan_script("exit 7", None)),
        Cancel::new(),
    )
    .await;
    assert_eq!(o.exit_code, Some(7));
    assert!(!o.success());
    let (o, _) = run_capture(
        StepCommand::from_plan(plan_script("kill -9 $$", None)),
        Cancel::new(),
    )
    .await;
    assert_eq!(o.exit_code, None);
    assert_eq!(o.signal, Some(9));
    assert!(!o.timed_out && !o.cancelled);
}

#[tokio::test]
async fn shell_runs_with_errexit() {
    let (o, cap) = run_capture(
        StepCommand::from_plan(plan_script("echo one\nfalse\necho two", None)),
        Cancel::new(),
    )
    .await;
    assert_eq!(o.exit_code, Some(1));
    assert_eq!(cap.stdout, vec!["one"]);
}

#[tokio::test]
async fn direct_exec_of_missing_program_behaves_like_a_shell() {
    let plan = plan_script("no-such-program-4711 --x", None);
    assert!(plan.direct);
    let (o, cap) = run_capture(StepCommand::from_plan(plan), Cancel::new()).await;
    assert_eq!(o.exit_code, Some(127));
    assert_eq!(cap.stderr, vec!["no-such-program-4711: command not found"]);

    // Without shell_errors it is a spawn error.
    let err = run(
        StepCommand::new("no-such-program-4711"),
        |_, _| {},
        Cancel::new(),
    )
    .await
    .expect_err("spawn must fail");
    assert!(err.to_string().contains("no-such-program-4711"), "{err}");
}

#[tokio::test]
async fn direct_exec_passes_words_verbatim() {
    let plan = plan_script("printenv HOME", None);
    assert!(plan.direct);
    let (o, cap) = run_capture(
        StepCommand::from_plan(plan_script("echo a=b  c", None)),
        Cancel::new(),
    )
    .await;
    assert!(o.success());
    assert_eq!(cap.stdout, vec!["a=b c"]);
}

#[tokio::test]
async fn a_megabyte_on_each_stream_does_not_deadlock() {
    let mut out_bytes = 0usize;
    let mut err_bytes = 0usize;
    let mut last = String::new();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        run(
            StepCommand::new(helper("flood_stdout.sh")),
            |stream, line| match stream {
                runners::Stream::Stdout => {
                    out_bytes += line.len() + 1;
                    last = line.to_string();
                }
                runners::Stream::Stderr => err_bytes += line.len() + 1,
            },
            Cancel::new(),
        ),
    )
    .await
    .expect("no deadlock")
    .expect("run");
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(out_bytes, 10486 * 100 + "done\n".len());
    assert_eq!(err_bytes, 10486 * 100);
    assert_eq!(last, "done");
}

#[tokio::test]
async fn stdin_larger_than_a_pipe_is_written_while_output_drains() {
    // 1 MiB on stdin, echoed back: writing and reading must happen at the same time.
    let input: String = "0123456789abcdef\n".repeat(64 * 1024);
    let mut got = 0usize;
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        run(
            StepCommand::new("cat").stdin(input.clone()),
            |_, line| got += line.len() + 1,
            Cancel::new(),
        ),
    )
    .await
    .expect("no deadlock")
    .expect("run");
    assert!(outcome.success());
    assert_eq!(got, input.len());
}

#[tokio::test]
async fn step_that_ignores_stdin_is_fine() {
    let big = vec![b'x'; 1 << 20];
    let (o, _) = run_capture(StepCommand::new("true").stdin(big), Cancel::new()).await;
    assert!(o.success(), "{o:?}");
}

#[tokio::test]
async fn background_process_holding_stdout_does_not_block_the_step() {
    let tag = unique_tag();
    // Finished after the linger time, not after the server's 300 s (the deadline is far
    // below them).
    let (o, cap) = tokio::time::timeout(
        Duration::from_secs(60),
        run_capture(
            StepCommand::new(helper("background_server.sh"))
                .args([tag.clone()])
                .marker(format!("bg-{tag}")),
            Cancel::new(),
        ),
    )
    .await
    .expect("the step does not wait for its background server");
    assert!(o.success());
    assert!(cap.stdout.contains(&"started".to_string()), "{cap:?}");
    // The server lives on (the run has not ended) ...
    assert!(
        !pids_with_arg(&tag).is_empty(),
        "server must survive the step"
    );
    // ... until the run ends.
    let killed = tokio::task::spawn_blocking({
        let marker = format!("bg-{tag}");
        move || runners::sweep_run(&marker)
    })
    .await
    .expect("sweep");
    assert!(killed >= 1, "killed {killed}");
    let gone = wait_until(Duration::from_secs(5), || pids_with_arg(&tag).is_empty());
    kill_tagged(&tag);
    assert!(gone, "sweep_run must end the server");
}

#[tokio::test]
async fn invalid_utf8_and_missing_final_newline() {
    let (o, cap) = run_capture(
        StepCommand::from_plan(plan_script(r"printf 'ok\n\377bad\nlast'", None)),
        Cancel::new(),
    )
    .await;
    assert!(o.success());
    assert_eq!(cap.stdout, vec!["ok", "\u{fffd}bad", "last"]);
}

#[tokio::test]
async fn expression_values_never_become_shell_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let evil = [
        format!("$(touch {}/a)", dir.path().display()),
        format!("\"; touch {}/b; \"", dir.path().display()),
        format!("`touch {}/c`", dir.path().display()),
    ];
    let cmd = StepCommand::for_script(
        "echo \"$AGENT_EXPR_0\"; echo \"${AGENT_EXPR_1}\"; echo $AGENT_EXPR_2",
        None,
        &evil,
    );
    let (o, cap) = run_capture(cmd, Cancel::new()).await;
    assert!(o.success(), "{o:?}");
    assert_eq!(cap.stdout, evil.to_vec());
    let created: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(created.is_empty(), "injection created {created:?}");
}

#[tokio::test]
async fn merged_output_keeps_the_order_of_both_streams() {
    let mut cmd = StepCommand::from_plan(plan_script(
        "echo one; echo two >&2; echo three; echo four >&2",
        None,
    ));
    cmd.merge_output = true;
    let (o, cap) = run_capture(cmd, Cancel::new()).await;
    assert!(o.success());
    assert_eq!(cap.stdout, vec!["one", "two", "three", "four"]);
    assert!(cap.stderr.is_empty());
}

#[tokio::test]
async fn merged_output_with_a_timeout_and_background_holder() {
    let tag = unique_tag();
    let mut cmd = StepCommand::new(helper("fork_grandchildren.sh"))
        .args([tag.clone()])
        .timeout(Duration::from_millis(500))
        .grace(Duration::from_secs(5));
    cmd.merge_output = true;
    let (o, cap) = run_capture(cmd, Cancel::new()).await;
    let left = pids_with_arg(&tag);
    kill_tagged(&tag);
    assert!(o.timed_out, "{o:?}");
    assert_eq!(cap.stdout, vec!["ready"]);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn missing_working_directory_is_a_clear_error() {
    let err = run(
        StepCommand::from_plan(plan_script("true", None)).cwd("/no/such/dir/4711"),
        |_, _| {},
        Cancel::new(),
    )
    .await
    .expect_err("no cwd");
    assert!(err.to_string().contains("/no/such/dir/4711"), "{err}");
}

#[test]
fn debug_output_hides_env_values_and_stdin() {
    let cmd = StepCommand::new("deploy")
        .env("API_TOKEN", "s3cr3t-value")
        .stdin("{\"password\":\"hunter2\"}");
    let text = format!("{cmd:?}");
    assert!(text.contains("API_TOKEN"), "{text}");
    assert!(
        !text.contains("s3cr3t") && !text.contains("hunter2"),
        "{text}"
    );
}

#[tokio::test]
async fn explicit_shells_run_the_script_text() {
    let (o, cap) = run_capture(
        StepCommand::from_plan(plan_script("echo $0; false; echo not reached", Some("sh"))),
        Cancel::new(),
    )
    .await;
    assert_eq!(o.exit_code, Some(1), "sh -e stops at the failure");
    assert_eq!(cap.stdout, vec!["sh"]);
    if runners::find_on_path("python3").is_some() {
        let (o, cap) = run_capture(
            StepCommand::for_script(
                "import os, sys\nprint(os.environ['AGENT_EXPR_0'])\nsys.exit(3)",
                Some("python3"),
                &["$(no injection)".to_string()],
            ),
            Cancel::new(),
        )
        .await;
        assert_eq!(o.exit_code, Some(3));
        assert_eq!(cap.stdout, vec!["$(no injection)"]);
        let (o, cap) = run_capture(
            StepCommand::from_plan(plan_script("print(6 * 7)", Some("python3 -u -c {0}"))),
            Cancel::new(),
        )
        .await;
        assert!(o.success());
        assert_eq!(cap.stdout, vec!["42"]);
    }
}

#[tokio::test]
async fn environment_overrides_and_path_lookup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = dir.path().join("my-tool-4711");
    write_exec(&tool, "#!/bin/sh\necho \"tool HOME=$HOME X=$X\"\n");
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    // A program found on the step's own PATH; later entries win; inherited ones are replaced.
    let cmd = StepCommand::from_plan(plan_script("my-tool-4711", None))
        .env("PATH", path.clone())
        .env("X", "first")
        .env("X", "second")
        .env("HOME", "/nowhere");
    let (o, cap) = run_capture(cmd, Cancel::new()).await;
    assert!(o.success(), "{o:?} {cap:?}");
    assert_eq!(cap.stdout, vec!["tool HOME=/nowhere X=second"]);
    // Not on that PATH: like a shell.
    let cmd =
        StepCommand::from_plan(plan_script("my-tool-4711", None)).env("PATH", "/usr/bin:/bin");
    let (o, cap) = run_capture(cmd, Cancel::new()).await;
    assert_eq!(o.exit_code, Some(127));
    assert_eq!(cap.stderr, vec!["my-tool-4711: command not found"]);
    // Invalid names and NUL bytes are errors, not panics.
    let err = run(
        StepCommand::new("true").env("A=B", "x"),
        |_, _| {},
        Cancel::new(),
    )
    .await
    .expect_err("bad name");
    assert!(err.to_string().contains("A=B"), "{err}");
    assert!(
        run(
            StepCommand::new("true").env("A", "x\0y"),
            |_, _| {},
            Cancel::new()
        )
        .await
        .is_err()
    );
}

/// Guards the step environment: with `inherit_env` off the child sees exactly the variables
/// it was given (plus the run and step markers), none of the agent's own.
#[tokio::test]
async fn without_inheritance_only_the_given_variables_reach_the_child() {
    // The test process has PATH and HOME; neither may leak through.
    let mut cmd = StepCommand::new("/usr/bin/env").env("ONLY", "me");
    cmd.inherit_env = false;
    let (o, cap) = run_capture(cmd, Cancel::new()).await;
    assert!(o.success(), "{o:?} {cap:?}");
    let names: Vec<&str> = cap
        .stdout
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !k.starts_with("AGENT_") || *k == "AGENT_SECRET")
        .collect();
    assert_eq!(names, vec!["ONLY"], "{:?}", cap.stdout);
    // A program without `/` is still found (on the agent's PATH) when the child has none.
    let mut cmd = StepCommand::new("true");
    cmd.inherit_env = false;
    let (o, cap) = run_capture(cmd, Cancel::new()).await;
    assert!(o.success(), "{o:?} {cap:?}");
}

#[tokio::test]
async fn merged_flood_does_not_deadlock() {
    let mut cmd = StepCommand::new(helper("flood_stdout.sh"));
    cmd.merge_output = true;
    let mut bytes = 0usize;
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        run(cmd, |_, line| bytes += line.len() + 1, Cancel::new()),
    )
    .await
    .expect("no deadlock")
    .expect("run");
    assert!(outcome.success());
    assert_eq!(bytes, 2 * 10486 * 100 + "done\n".len());
}

#[test]
fn concurrent_steps_in_every_runtime_context() {
    // Two steps at once: on a multi-thread runtime's block_on thread (not a worker), in
    // worker tasks, and on a current-thread runtime. None of them may panic or hang.
    let two = || async {
        let a = run_capture(StepCommand::new("echo").args(["a"]), Cancel::new());
        let b = run_capture(StepCommand::new("echo").args(["b"]), Cancel::new());
        let ((oa, ca), (ob, cb)) = tokio::join!(a, b);
        assert!(oa.success() && ob.success());
        assert_eq!(
            (ca.stdout, cb.stdout),
            (vec!["a".to_string()], vec!["b".to_string()])
        );
    };
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    multi.block_on(two());
    multi
        .block_on(async move {
            let t1 = tokio::spawn(two());
            let t2 = tokio::spawn(two());
            t1.await.and(t2.await)
        })
        .expect("tasks");
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    single.block_on(two());
}

#[tokio::test]
async fn output_after_the_leader_exits_is_still_captured() {
    // The leader prints and exits at once (its pipes are read in one go at exit); a
    // background process that keeps stdout and stderr prints later, within the linger time.
    let mut cmd = StepCommand::from_plan(plan_script(
        "echo first; (sleep 0.2; echo late; echo late-err >&2) & exit 0",
        None,
    ));
    cmd.linger = Duration::from_secs(3);
    let (o, cap) = run_capture(cmd, Cancel::new()).await;
    assert!(o.success(), "{o:?}");
    assert_eq!(cap.stdout, vec!["first", "late"]);
    assert_eq!(cap.stderr, vec!["late-err"]);
}

#[tokio::test]
async fn lines_of_a_long_step_arrive_while_it_runs() {
    // The step prints a line, then waits for a file that is only created once that line has
    // reached us: without streaming it would wait until its timeout.
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("seen");
    let script = format!(
        "echo early; while [ ! -e '{}' ]; do sleep 0.01; done; echo done",
        flag.display()
    );
    let mut cmd = StepCommand::from_plan(plan_script(&script, None));
    cmd.timeout = Some(Duration::from_secs(20));
    let (o, cap) = run_capture_with(cmd, |line| {
        if line == "early" {
            std::fs::write(&flag, b"").expect("create the flag");
        }
    })
    .await;
    assert!(o.success() && !o.timed_out, "{o:?}");
    assert_eq!(cap.stdout, vec!["early", "done"]);
}

#[tokio::test]
async fn an_executable_still_open_for_writing_is_retried_not_failed() {
    // While any process holds a file open for writing, executing it fails with ETXTBSY
    // ("text file busy"); a checkout racing a spawn elsewhere in the agent can cause that
    // for a moment. The writer here lets go 20 ms after the step is started.
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = dir.path().join("fresh-tool");
    write_exec(&tool, "#!/bin/sh\necho fresh\n");
    let writer = std::fs::OpenOptions::new()
        .append(true)
        .open(&tool)
        .expect("open for writing");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        drop(writer);
    });
    let (o, cap) = run_capture(StepCommand::new(tool.to_string_lossy()), Cancel::new()).await;
    release.join().expect("writer thread");
    assert!(o.success(), "{o:?}");
    assert_eq!(cap.stdout, vec!["fresh"]);
}

/// A sink that takes one read's lines, then makes the reader wait a moment before the next
/// read, and records the most bytes it was handed between two waits.
#[derive(Default)]
struct SlowSink {
    lines: u64,
    held: usize,
    max_held: usize,
    last: Option<String>,
}

impl runners::OutputSink for SlowSink {
    fn line(&mut self, _stream: runners::Stream, line: &str) {
        self.lines += 1;
        self.held += line.len() + 1;
        self.last = Some(line.to_string());
    }

    fn end_of_read(&mut self) -> bool {
        self.max_held = self.max_held.max(self.held);
        false
    }

    async fn ready(&mut self) {
        tokio::time::sleep(Duration::from_micros(200)).await;
        self.held = 0;
    }
}

/// Guards the backpressure on a step's pipes: while the sink cannot take more, the pipes
/// are not read, so what the reader holds stays within one pipe's worth per read whatever
/// the step prints (it used to read everything as fast as the step wrote it), and no line
/// is lost.
#[tokio::test]
async fn a_sink_that_is_not_ready_holds_the_pipe_back() {
    let cmd = StepCommand::for_script("seq 200000; seq 3 >&2", None, &[]);
    let mut sink = SlowSink::default();
    let outcome = runners::run_with_sink(cmd, &mut sink, Cancel::new())
        .await
        .expect("run");
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(sink.lines, 200_003);
    // One read (or the drain of both pipes at the step's exit) at a time.
    let bound = 2 * (64 * 1024 + runners::MAX_LINE);
    assert!(sink.max_held <= bound, "held {} bytes", sink.max_held);
}

/// A step that prints without end still times out while its output is held back.
#[tokio::test]
async fn a_held_back_step_still_times_out() {
    let cmd = StepCommand::for_script("yes", None, &[]).timeout(Duration::from_millis(300));
    let mut sink = SlowSink::default();
    let outcome = runners::run_with_sink(
        cmd.grace(Duration::from_millis(200)),
        &mut sink,
        Cancel::new(),
    )
    .await
    .expect("run");
    assert!(outcome.timed_out, "{outcome:?}");
    assert!(sink.lines > 0);
}

/// The sweep at a run's end looks only at processes that can belong to the run (this
/// process's descendants and the run's process groups): a process outside both is left
/// alone even when it carries the run's marker, while the server a step left in its group
/// is killed.
#[tokio::test]
async fn run_sweep_spares_a_process_outside_the_run_with_its_marker() {
    let tag = unique_tag();
    let marker = format!("spare-{tag}");
    let (o, _) = run_capture(
        StepCommand::new(helper("background_server.sh"))
            .args([tag.clone()])
            .marker(marker.clone()),
        Cancel::new(),
    )
    .await;
    assert!(o.success(), "{o:?}");
    // Orphaned at once (its parent exits), so neither our descendant nor in a step's group.
    let other = unique_tag();
    let status = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("sleep {other} > /dev/null 2>&1 < /dev/null &"),
        ])
        .env(runners::RUN_MARKER_VAR, &marker)
        .status()
        .expect("sh");
    assert!(status.success());
    assert!(wait_until(Duration::from_secs(5), || !pids_with_arg(
        &other
    )
    .is_empty()));
    let killed = tokio::task::spawn_blocking(move || runners::sweep_run(&marker))
        .await
        .expect("sweep");
    let server_gone = wait_until(Duration::from_secs(5), || pids_with_arg(&tag).is_empty());
    let other_alive = !pids_with_arg(&other).is_empty();
    kill_tagged(&tag);
    kill_tagged(&other);
    assert!(
        server_gone && killed >= 1,
        "the run's server survived ({killed} killed)"
    );
    assert!(other_alive, "the sweep killed a process outside the run");
}
