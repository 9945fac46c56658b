//! `agent exec` end to end: `env:` at workflow, stage and step level (nearer wins),
//! `working_directory:` (relative, missing, escaping), `shell:` with GitHub Actions'
//! semantics (a script file; `bash` named explicitly has `pipefail`), and the `$AGENT_ENV` /
//! `$AGENT_PATH` files that change the environment of later steps.

use crate::common;
use crate::common::exec;

use exec::{Ws, assert_code, report, step};

/// Guards the env layers: step over stage over workflow, stage values rendered with
/// expressions and seen by the step's own `env:` through `${{ env.X }}`.
#[test]
fn env_nearer_wins() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: envs
  env:
    A: wf
    B: wf
    C: wf
  stages:
    - name: s
      env:
        B: stage
        C: "stage-${{ env.A }}"
      steps:
        - id: look
          env:
            C: "step-${{ env.C }}"
          run: |
            echo "a=$A" >> "$AGENT_OUTPUT"
            echo "b=$B" >> "$AGENT_OUTPUT"
            echo "c=$C" >> "$AGENT_OUTPUT"
    - name: t
      steps:
        - id: other
          run: echo "b=$B" >> "$AGENT_OUTPUT"
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let r = report(&out);
    let o = &step(&r, "look")["outputs"];
    assert_eq!(o["a"], "wf");
    assert_eq!(o["b"], "stage");
    assert_eq!(o["c"], "step-stage-wf");
    assert_eq!(step(&r, "other")["outputs"]["b"], "wf");
}

/// Guards `working_directory`: a stage's applies to its steps, a step's (rendered) wins,
/// both relative to the workspace.
#[test]
fn working_directory_relative() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.path().join("sub/inner")).unwrap();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: wd
  parameters:
    - name: dir
      default: inner
  stages:
    - name: s
      working_directory: sub
      steps:
        - id: a
          run: echo "dir=$(basename "$PWD")" >> "$AGENT_OUTPUT"
        - id: b
          working_directory: "sub/${{ parameters.dir }}"
          run: echo "dir=$(basename "$PWD")" >> "$AGENT_OUTPUT"
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let r = report(&out);
    assert_eq!(step(&r, "a")["outputs"]["dir"], "sub");
    assert_eq!(step(&r, "b")["outputs"]["dir"], "inner");
}

/// Guards the failures of `working_directory`: a missing directory and one that leaves the
/// workspace (by `..` or by a symbolic link) fail the step with a clear message, unrun.
#[test]
fn working_directory_missing_or_escaping_fails() {
    // A literal path leaving the workspace is a validation error before anything runs.
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: wd\n  stages:\n    - name: s\n      steps:\n        - id: a\n          working_directory: ../..\n          run: touch \"$AGENT_WORKSPACE/ran\"\n",
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 2);
    assert!(common::stderr(&out).contains("leaves the workspace"));
    assert!(!ws.exists("ran"));
    // Rendered paths are checked when the step starts.
    for (wd, needle) in [
        ("nope", "does not exist"),
        ("../..", "leaves the workspace"),
        ("link", "leaves the workspace"),
    ] {
        let ws = Ws::new();
        std::os::unix::fs::symlink("/tmp", ws.path().join("link")).unwrap();
        ws.write(
            "wf.yaml",
            &format!(
                "workflow:\n  name: wd\n  parameters:\n    - name: d\n      default: \"{wd}\"\n  stages:\n    - name: s\n      steps:\n        - id: a\n          working_directory: \"${{{{ parameters.d }}}}\"\n          run: touch \"$AGENT_WORKSPACE/ran\"\n"
            ),
        );
        let out = ws.exec("wf.yaml", &[]);
        assert_code(&out, 1);
        let stderr = common::stderr(&out);
        assert!(stderr.contains(needle), "{wd}: {stderr}");
        assert!(!ws.exists("ran"), "{wd}: the step must not run");
    }
}

/// Guards `shell: bash` (GitHub Actions' `-eo pipefail`): a failing element of a pipeline
/// fails the step, while the default shell (`-e` without `pipefail`) goes on; `shell: sh`
/// and a custom `CMD {0}` template run the script from a file.
#[test]
fn shell_bash_has_pipefail_default_does_not() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: sh
  stages:
    - name: s
      steps:
        - id: default
          run: |
            false | true
            echo "went=on" >> "$AGENT_OUTPUT"
        - id: sh
          shell: sh
          run: echo "zero=$0" >> "$AGENT_OUTPUT"
        - id: custom
          shell: "bash -u {0}"
          run: echo "zero=$0" >> "$AGENT_OUTPUT"
        - id: bash
          shell: bash
          run: |
            false | true
            echo "went=on" >> "$AGENT_OUTPUT"
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "default")["outputs"]["went"], "on");
    assert!(
        step(&r, "sh")["outputs"]["zero"]
            .as_str()
            .is_some_and(|z| z.ends_with(".sh")),
        "{r}"
    );
    assert!(
        step(&r, "custom")["outputs"]["zero"]
            .as_str()
            .is_some_and(|z| z.contains("script-")),
        "{r}"
    );
    assert_eq!(step(&r, "bash")["status"], "failed");
    assert!(step(&r, "bash")["outputs"].get("went").is_none(), "{r}");
}

/// Guards `shell: python`: the script is a Python file (`python`, else `python3`), and
/// `${{ }}` values reach it through the environment.
#[test]
fn python_shell_runs_a_file() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: py
  stages:
    - name: s
      steps:
        - id: py
          shell: python
          run: |
            import os, sys
            with open(os.environ["AGENT_OUTPUT"], "a") as f:
                f.write("file=" + sys.argv[0].rsplit(".", 1)[-1] + "\n")
                f.write("sum=" + str(20 + 22) + "\n")
                f.write("name=" + ${{ workflow.name }} + "\n")
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let r = report(&out);
    let o = &step(&r, "py")["outputs"];
    assert_eq!(o["file"], "py");
    assert_eq!(o["sum"], "42");
    assert_eq!(o["name"], "py");
}

/// Guards `$AGENT_ENV` (plain and heredoc lines) and `$AGENT_PATH`: what one step writes is
/// seen by the later steps of the run, also in a later stage and in `${{ env.X }}`, but an
/// `env:` naming the variable still wins.
#[test]
fn agent_env_and_path_reach_later_steps() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.path().join("tools")).unwrap();
    ws.write_exec("tools/mytool", "#!/bin/sh\necho tool-ran\n");
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: files
  stages:
    - name: s
      steps:
        - id: set
          run: |
            echo "PLAIN=one=1" >> "$AGENT_ENV"
            printf 'MULTI<<EOF\nline a\nline b\nEOF\n' >> "$AGENT_ENV"
            echo "PINNED=from-file" >> "$AGENT_ENV"
            echo "$AGENT_WORKSPACE/tools" >> "$AGENT_PATH"
        - id: same_stage
          run: echo "plain=$PLAIN" >> "$AGENT_OUTPUT"
    - name: t
      parallel: true
      env:
        PINNED: from-stage
      steps:
        - id: later
          run: |
            echo "plain=$PLAIN" >> "$AGENT_OUTPUT"
            echo "expr=${{ env.PLAIN }}" >> "$AGENT_OUTPUT"
            echo "pinned=$PINNED" >> "$AGENT_OUTPUT"
            printf 'multi<<X\n%s\nX\n' "$MULTI" >> "$AGENT_OUTPUT"
            echo "tool=$(mytool)" >> "$AGENT_OUTPUT"
        - id: sibling
          run: mytool
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let r = report(&out);
    assert_eq!(step(&r, "same_stage")["outputs"]["plain"], "one=1");
    let o = &step(&r, "later")["outputs"];
    assert_eq!(o["plain"], "one=1");
    assert_eq!(o["expr"], "one=1");
    assert_eq!(o["pinned"], "from-stage");
    assert_eq!(o["multi"], "line a\nline b");
    assert_eq!(o["tool"], "tool-ran");
    assert_eq!(step(&r, "sibling")["status"], "succeeded");
}

/// Guards the error for a malformed `$AGENT_ENV`: the step fails and the message names the
/// line; later steps do not run.
#[test]
fn malformed_agent_env_line_fails_with_its_number() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: bad
  stages:
    - name: s
      steps:
        - id: set
          run: printf 'OK=1\nthis is wrong\n' >> "$AGENT_ENV"
        - id: next
          run: touch ran
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let stderr = common::stderr(&out);
    assert!(stderr.contains("$AGENT_ENV line 2"), "{stderr}");
    assert!(!ws.exists("ran"));
}

/// Guards masking of values set through `$AGENT_ENV`: a value equal to a secret is `***`
/// wherever a later step prints it.
#[test]
fn agent_env_values_equal_to_secrets_are_masked() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: mask
  stages:
    - name: s
      steps:
        - id: set
          run: echo "COPY=${{ secrets.TOKEN }}" >> "$AGENT_ENV"
        - id: show
          run: echo "copy is $COPY"
"#,
    );
    let out = ws.exec_env(
        "wf.yaml",
        &["--secret", "TOKEN"],
        &[("TOKEN", "s3cr3t-value-xyz")],
    );
    assert_code(&out, 0);
    let stderr = common::stderr(&out);
    assert!(stderr.contains("copy is ***"), "{stderr}");
    assert!(!stderr.contains("s3cr3t-value-xyz"), "{stderr}");
}

/// Guards `shell: pwsh` on a machine without PowerShell: the step fails unrun and says so.
#[test]
fn pwsh_missing_fails_clearly() {
    if runners::find_on_path("pwsh").is_some() {
        return;
    }
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: ps\n  stages:\n    - name: s\n      steps:\n        - id: p\n          shell: pwsh\n          run: Write-Output hi\n",
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let stderr = common::stderr(&out);
    assert!(
        stderr.contains("pwsh") && stderr.contains("not installed"),
        "{stderr}"
    );
}
