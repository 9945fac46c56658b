//! `agent exec` end to end: exit codes, the step protocol, outputs between steps, context
//! merge and preservation, conditions, decisions, sub-workflows and no script injection.

use crate::common;
use crate::common::exec;

use exec::{Ws, assert_code, report, step};
use serde_json::json;

#[test]
fn exit_codes_mean_what_design_says() {
    let ws = Ws::new();
    ws.write(
        "ok.yaml",
        "workflow:\n  name: ok\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: touch ran-ok\n",
    );
    ws.write(
        "bad.yaml",
        "workflow:\n  name: bad\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: exit 4\n",
    );
    ws.write(
        "invalid.yaml",
        "workflow:\n  name: inv\n  stages:\n    - name: s\n      paralel: true\n      steps:\n        - id: a\n          run: touch ran-invalid\n",
    );
    ws.write(
        "params.yaml",
        "workflow:\n  name: p\n  parameters:\n    - name: n\n      type: integer\n      required: true\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: touch ran-params\n",
    );
    let out = ws.exec("ok.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(report(&out)["status"], "succeeded");
    assert!(ws.exists("ran-ok"));

    let out = ws.exec("bad.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(r["status"], "failed");
    assert_eq!(step(&r, "a")["exit_code"], 4);
    assert_eq!(step(&r, "a")["error_class"], "ExitCode");

    let out = ws.exec("invalid.yaml", &[]);
    assert_code(&out, 2);
    assert!(
        common::stderr(&out).contains("paralel"),
        "{}",
        common::stderr(&out)
    );
    assert!(!ws.exists("ran-invalid"));

    for args in [&[][..], &["-p", "n=abc"][..], &["-p", "zzz=1"][..]] {
        let out = ws.exec("params.yaml", args);
        assert_code(&out, 2);
    }
    assert!(!ws.exists("ran-params"));
    let out = ws.exec("params.yaml", &["-p", "n=7"]);
    assert_code(&out, 0);
    assert_eq!(report(&out)["parameters"]["n"], 7);

    let out = ws.exec("missing.yaml", &[]);
    assert_code(&out, 2);
}

#[test]
fn step_protocol_outputs_and_context() {
    let ws = Ws::new();
    ws.write_exec(
        ".workflows/skills/echoer",
        "#!/bin/sh\nset -e\nread -r line || true\nprintf '%s' \"$line\" > stdin.json\nenv | grep '^AGENT_' | sort > env.txt\necho \"shout=$AGENT_PARAM_WORD!\" >> \"$AGENT_OUTPUT\"\nprintf 'multi<<EOF\\nl1\\nl2\\nEOF\\n' >> \"$AGENT_OUTPUT\"\necho '{\"deep\": {\"b\": 2}, \"from\": \"skill\"}' > \"$AGENT_CONTEXT\"\n",
    );
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: proto
  context:
    merge_strategy: deep
  parameters:
    - name: word
      type: string
      default: hey
  stages:
    - name: s
      steps:
        - id: first
          run: |
            echo '{"deep": {"a": 1}, "n": 1}' > "$AGENT_CONTEXT"
            echo '{"count": 3, "list": [1, 2]}' > "$AGENT_OUTPUT"
        - id: sk
          skill: echoer
          parameters:
            word: ${{ parameters.word }}
            count: ${{ steps.first.output.count }}
            flag: true
        - id: last
          run: |
            echo "${{ steps.sk.output.shout }}|${{ steps.sk.output.multi }}|${{ context.deep.a }}${{ context.deep.b }}|${{ steps.first.status }}" > last.txt
"#,
    );
    let out = ws.exec("wf.yaml", &["-p", "word=yo"]);
    assert_code(&out, 0);
    let r = report(&out);
    assert_eq!(
        step(&r, "first")["outputs"],
        json!({"count": 3, "list": [1, 2]})
    );
    assert_eq!(step(&r, "sk")["outputs"]["shout"], "yo!");
    let stdin: serde_json::Value =
        serde_json::from_str(&ws.read("stdin.json")).expect("stdin json");
    assert_eq!(stdin, json!({"word": "yo", "count": 3, "flag": true}));
    let env = ws.read("env.txt");
    for needle in [
        "AGENT_PARAM_WORD=yo",
        "AGENT_PARAM_COUNT=3",
        "AGENT_PARAM_FLAG=true",
        "AGENT_STEP_ID=sk",
        "AGENT_ATTEMPT=1",
        "AGENT_RUN_ID=",
        "AGENT_OUTPUT=",
        "AGENT_CONTEXT=",
    ] {
        assert!(env.contains(needle), "missing {needle} in\n{env}");
    }
    assert!(env.contains(&format!(
        "AGENT_WORKSPACE={}",
        ws.path().canonicalize().expect("canon").display()
    )));
    assert_eq!(ws.read("last.txt").trim(), "yo!|l1\nl2|12|succeeded");
    // No state directory without `preserve`.
    assert!(!ws.exists(".agent"));
}

#[test]
fn preserved_context_survives_between_runs() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: keep
  context:
    preserve: true
    merge_strategy: shallow
  stages:
    - name: s
      steps:
        - id: count
          run: |
            n=${{ context.n || 0 }}
            echo "{\"n\": $((n + 1))}" > "$AGENT_CONTEXT"
            echo "$((n + 1))" > seen.txt
"#,
    );
    for expected in ["1", "2", "3"] {
        let out = ws.exec("wf.yaml", &[]);
        assert_code(&out, 0);
        assert_eq!(ws.read("seen.txt").trim(), expected);
    }
    let files: Vec<_> = std::fs::read_dir(ws.path().join(".agent/context"))
        .expect("context dir")
        .collect();
    assert_eq!(files.len(), 1, "one context file, nothing else");
    // The state directory exec made inside the checkout ignores itself in git.
    assert_eq!(ws.read(".agent/.gitignore").lines().last(), Some("*"));
    let sd = ws.path().join("elsewhere");
    let out = ws.exec("wf.yaml", &["--state-dir", sd.to_str().expect("utf8")]);
    assert_code(&out, 0);
    assert_eq!(ws.read("seen.txt").trim(), "1");
}

#[test]
fn conditions_skip_and_status_functions() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: cond
  parameters:
    - name: run_tests
      type: boolean
      default: false
  stages:
    - name: s
      steps:
        - id: tests
          run: touch tests-ran
          when: ${{ parameters.run_tests }}
        - id: fails
          run: exit 1
        - id: after
          run: touch after-ran
        - id: on_fail
          run: touch on-fail-ran
          when: ${{ failure() }}
        - id: always
          run: touch always-ran
          when: always()
        - id: bad_expr
          run: touch bad-ran
          when: ${{ always() && from_json('{') }}
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "tests")["status"], "skipped");
    assert_eq!(step(&r, "fails")["status"], "failed");
    assert_eq!(step(&r, "after")["status"], "skipped");
    assert_eq!(step(&r, "on_fail")["status"], "succeeded");
    assert_eq!(step(&r, "always")["status"], "succeeded");
    assert!(!ws.exists("tests-ran") && !ws.exists("after-ran"));
    assert!(ws.exists("on-fail-ran") && ws.exists("always-ran"));
    assert_eq!(step(&r, "bad_expr")["error_class"], "ExpressionError");
    assert!(!ws.exists("bad-ran"));
    let out = ws.exec("wf.yaml", &["-p", "run_tests=true"]);
    assert_code(&out, 1);
    assert!(ws.exists("tests-ran"));
}

#[test]
fn expression_errors_fail_the_step() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: exprerr
  stages:
    - name: s
      steps:
        - id: a
          run: echo ${{ int('abc') }}
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "a")["error_class"], "ExpressionError");
    assert_eq!(step(&r, "a")["attempts"], 0);
}

#[test]
fn decision_takes_first_true_branch_else_default() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: dec
  parameters:
    - name: env
      type: string
      default: dev
  stages:
    - name: s
      steps:
        - id: pick
          type: decision
          decision:
            branches:
              - when: ${{ parameters.env == 'prod' }}
                steps:
                  - id: prod
                    run: echo prod > picked
              - when: ${{ parameters.env == 'staging' }}
                steps:
                  - id: staging
                    run: echo staging > picked
              - default: true
                steps:
                  - id: other
                    run: echo other > picked
"#,
    );
    for (env, picked) in [("prod", "prod"), ("staging", "staging"), ("dev", "other")] {
        let out = ws.exec("wf.yaml", &["-p", &format!("env={env}")]);
        assert_code(&out, 0);
        assert_eq!(ws.read("picked").trim(), picked);
        let r = report(&out);
        assert_eq!(step(&r, picked)["status"], "succeeded");
    }
}

#[test]
fn sub_workflow_gets_parameters_and_returns_outputs() {
    let ws = Ws::new();
    ws.write(
        "child.yaml",
        r#"workflow:
  name: child
  parameters:
    - name: x
      type: integer
      required: true
  outputs:
    doubled: ${{ steps.calc.output.v }}
  stages:
    - name: s
      steps:
        - id: calc
          run: echo "v=$(( ${{ parameters.x }} * 2 ))" >> "$AGENT_OUTPUT"
"#,
    );
    ws.write(
        "parent.yaml",
        r#"workflow:
  name: parent
  stages:
    - name: s
      steps:
        - id: call
          type: workflow
          workflow: child
          parameters:
            x: 21
        - id: use
          run: echo "${{ steps.call.output.doubled }}" > result
"#,
    );
    let out = ws.exec("parent.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(ws.read("result").trim(), "42");
    let r = report(&out);
    assert_eq!(step(&r, "call")["outputs"]["doubled"], "42");
}

#[test]
fn parameters_never_become_shell_text() {
    let ws = Ws::new();
    let target = ws.path().join("pwned");
    let t = target.display().to_string();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: inj
  parameters:
    - name: v
      type: string
  stages:
    - name: s
      steps:
        - id: plain
          run: echo ${{ parameters.v }} > plain.txt
        - id: dq
          run: echo "in dq ${{ parameters.v }}" > dq.txt
        - id: sq
          run: echo 'in sq ${{ parameters.v }}' > sq.txt
"#,
    );
    for payload in [
        format!("$(touch {t})"),
        format!("\"; touch {t}; \""),
        format!("'; touch {t}; '"),
        format!("`touch {t}`"),
    ] {
        let out = ws.exec("wf.yaml", &["-p", &format!("v={payload}")]);
        assert_code(&out, 0);
        assert!(!target.exists(), "payload {payload} ran");
        assert_eq!(ws.read("plain.txt").trim_end(), payload);
        assert_eq!(ws.read("dq.txt").trim_end(), format!("in dq {payload}"));
        assert_eq!(ws.read("sq.txt").trim_end(), format!("in sq {payload}"));
    }
}

#[test]
fn skills_manifest_error_codes_and_names_that_escape() {
    let ws = Ws::new();
    ws.write(
        ".workflows/skills/checker/skill.yaml",
        "command: ./check.sh\nerror_codes: {3: HealthCheckFailed}\nresources: {cpu: 0}\n",
    );
    ws.write_exec(
        ".workflows/skills/checker/check.sh",
        "#!/bin/sh\necho \"dir=$AGENT_SKILL_DIR\" > skill-ran\nexit \"$AGENT_PARAM_CODE\"\n",
    );
    ws.write_exec("outside", "#!/bin/sh\ntouch outside-ran\n");
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: skills
  parameters:
    - name: code
      type: integer
      default: 0
  stages:
    - name: s
      steps:
        - id: check
          skill: checker
          parameters:
            code: ${{ parameters.code }}
"#,
    );
    ws.write(
        "escape.yaml",
        "workflow:\n  name: esc\n  stages:\n    - name: s\n      steps:\n        - id: e\n          skill: ../../outside\n",
    );
    ws.write(
        "missing.yaml",
        "workflow:\n  name: miss\n  stages:\n    - name: s\n      steps:\n        - id: m\n          skill: no_such_skill\n",
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert!(ws.read("skill-ran").contains("checker"));
    let out = ws.exec("wf.yaml", &["-p", "code=3"]);
    assert_code(&out, 1);
    assert_eq!(
        step(&report(&out), "check")["error_class"],
        "HealthCheckFailed"
    );
    let out = ws.exec("wf.yaml", &["-p", "code=5"]);
    assert_code(&out, 1);
    assert_eq!(step(&report(&out), "check")["error_class"], "ExitCode");

    let out = ws.exec("missing.yaml", &[]);
    assert_code(&out, 1);
    assert_eq!(step(&report(&out), "m")["error_class"], "SkillNotFound");
    let out = ws.exec("escape.yaml", &[]);
    assert!(exec::code(&out) != 0);
    assert!(!ws.exists("outside-ran"));
}

#[test]
fn run_and_repo_contexts() {
    let ws = Ws::new();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(ws.path())
            .env("GIT_AUTHOR_NAME", "Ada")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_NAME", "Ada")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com")
            .output()
            .expect("git")
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: ctx
  version: "2.1"
  stages:
    - name: s
      steps:
        - id: show
          run: echo "${{ run.trigger }}|${{ run.attempt }}|${{ repo.branch }}|${{ repo.message }}|${{ workflow.name }}@${{ workflow.version }}|${{ len(run.id) > 0 }}" > ctx.txt
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(ws.read("ctx.txt").trim(), "manual|1|||ctx@2.1|true");
    git(&["init", "-q", "-b", "trunk"]);
    git(&["add", "wf.yaml"]);
    git(&["commit", "-q", "-m", "first commit"]);
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(
        ws.read("ctx.txt").trim(),
        "manual|1|trunk|first commit|ctx@2.1|true"
    );
}

#[test]
fn env_and_shell_override() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: envs
  parameters:
    - name: word
      type: string
      default: "it's $(x)"
  env:
    GREETING: hi ${{ parameters.word }}
    SHARED: workflow
  stages:
    - name: s
      steps:
        - id: sh
          env:
            SHARED: step
          run: echo "$GREETING|$SHARED|${{ env.SHARED }}" > env.txt
        - id: py
          shell: python3
          run: |
            open("py.txt", "w").write("py:" + ${{ parameters.word }})
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(ws.read("env.txt").trim(), "hi it's $(x)|step|step");
    assert_eq!(ws.read("py.txt"), "py:it's $(x)");
}

/// `agent exec DIR` said "not a regular file"; `-p n=abc` of a required integer printed a
/// second, wrong "missing required parameter"; skills beside the workflow file were not
/// found from another workdir; a stage of one step said "(1 steps)".
#[test]
fn directories_parameters_skills_beside_the_file_and_wording() {
    let ws = Ws::new();
    ws.write(
        "proj/.workflows/p.yaml",
        "workflow:\n  name: p\n  parameters:\n    - name: n\n      type: integer\n      required: true\n  stages:\n    - name: s\n      steps:\n        - id: a\n          skill: greet\n",
    );
    ws.write_exec(
        "proj/.workflows/skills/greet",
        "#!/bin/sh\necho hello from greet\n",
    );
    let out = ws.exec("proj", &[]);
    assert_code(&out, 2);
    let err = common::stderr(&out);
    assert!(
        err.contains("is a directory") && err.contains("p.yaml"),
        "{err}"
    );

    let out = ws.exec("proj/.workflows/p.yaml", &["-p", "n=abc"]);
    assert_code(&out, 2);
    let err = common::stderr(&out);
    assert!(err.contains("expects an integer"), "{err}");
    assert!(!err.contains("missing required"), "{err}");

    // The workdir is the temp dir, not `proj`: the skill is found beside the file.
    let out = ws.exec("proj/.workflows/p.yaml", &["-p", "n=1"]);
    assert_code(&out, 0);
    let err = common::stderr(&out);
    assert!(err.contains("(1 step)"), "{err}");
    assert!(err.contains("hello from greet"), "{err}");
}

/// Guards `run.workspace` (the steps' working directory as an expression) and the order
/// `env('NAME')` reads in: the workflow's `env` first, then the step base environment, so the
/// workflow's `env` can extend the agent's own `PATH`.
#[test]
fn run_workspace_and_env_function_order() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: w
  env:
    PATH: /opt/extra-4711:${{ env('PATH') }}
    WS: ${{ run.workspace }}
  stages:
    - name: s
      steps:
        - id: a
          run: |
            echo "path=${{ env('PATH') }}"
            echo "ws=${{ run.workspace }} pwd=$(pwd -P) same=$([ "$WS" = "$AGENT_WORKSPACE" ] && echo yes)"
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let stderr = common::stderr(&out);
    let path = std::env::var("PATH").expect("PATH");
    assert!(
        stderr.contains(&format!("path=/opt/extra-4711:{path}")),
        "{stderr}"
    );
    let ws_path = ws.path().to_string_lossy().into_owned();
    assert!(stderr.contains(&format!("ws={ws_path} ")), "{stderr}");
    assert!(stderr.contains("same=yes"), "{stderr}");
}

/// Guards the quoting of expression values in `run:` scripts: after a comment with an
/// apostrophe, inside `$( )` within double quotes (a `*` value is not globbed into the
/// workdir's file names), and in a quoted-delimiter heredoc, the shell gets the value as it
/// was written, without added quotes.
#[test]
fn expression_values_reach_the_shell_as_written() {
    let ws = Ws::new();
    ws.write("some-file", "");
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: q
  parameters:
    - {name: x, default: world}
    - {name: star, default: "* $(touch pwned)"}
  stages:
    - name: s
      steps:
        - id: a
          run: |
            # don't forget
            echo "hello ${{ parameters.x }}"
            echo "$(printf '<%s>' "${{ parameters.star }}")"
            cat <<'EOF'
            doc ${{ parameters.x }} $HOME
            EOF
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let stderr = common::stderr(&out);
    assert!(stderr.contains("hello world\n"), "{stderr}");
    assert!(stderr.contains("<* $(touch pwned)>"), "{stderr}");
    assert!(stderr.contains("doc world $HOME"), "{stderr}");
    assert!(!ws.exists("pwned"));
}
