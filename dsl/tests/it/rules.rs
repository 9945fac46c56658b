//! Valid cases and model conveniences: what the checks accept, and what the engine reads.

use dsl::model::{Backoff, OnFailure, Parallelism, StepKind};
use std::time::Duration;

fn parse(src: &str) -> dsl::Workflow {
    match dsl::parse_str("rules.yaml", src) {
        Ok((wf, _)) => wf,
        Err(d) => panic!("{}", d.render()),
    }
}

#[test]
fn auto_stage_allows_forward_references_as_dependencies() {
    let wf = parse(
        r#"
workflow:
  stages:
    - name: all
      parallel: auto
      steps:
        - id: package
          run: tar czf out.tgz "${{ steps.compile.output.dir }}"
        - id: compile
          run: make
          needs: [fetch]
        - id: fetch
          run: git fetch
"#,
    );
    assert_eq!(wf.name.value, "rules");
    assert_eq!(wf.stages[0].parallel.value, Parallelism::Auto);
    let package = wf.step("package").expect("package");
    assert_eq!(package.step_references(), vec!["compile".to_owned()]);
    assert_eq!(
        wf.step("compile").expect("compile").step_references(),
        vec!["fetch".to_owned()]
    );
}

#[test]
fn defaults_and_inference() {
    let wf = parse(
        r#"
workflow:
  name: d
  parameters:
    - {name: flag, type: boolean, default: false}
  metadata:
    retry_policy: {max_attempts: 3, backoff: exponential, delay: 2s}
  stages:
    - name: s
      steps:
        - id: a
          skill: builder
          retry: {max_attempts: 5}
          timeout: 1.5
        - id: b
          workflow: other
        - id: c
          run: echo hi
          when: parameters.flag
"#,
    );
    let a = wf.step("a").expect("a");
    assert!(matches!(&a.kind, StepKind::Skill(s) if s.value == "builder"));
    assert_eq!(a.on_failure.value, OnFailure::Abort);
    assert!(a.idempotent.value);
    assert_eq!(
        a.timeout.as_ref().map(|t| t.value),
        Some(Duration::from_millis(1500))
    );
    let r = wf.retry_for(a);
    assert_eq!(r.max_attempts, 5);
    assert_eq!(r.backoff, Backoff::Exponential);
    assert_eq!(r.delay, Duration::from_secs(2));
    assert!(r.retries("ExitCode"));
    assert!(!r.retries("SkillNotFound"));
    assert_eq!(wf.stages[0].max_parallel.value, 5);
    assert_eq!(wf.called_workflows(), vec!["other"]);
    // A bare `when` is one expression.
    let c = wf.step("c").expect("c");
    assert!(c.when.as_ref().is_some_and(|w| !w.template.is_literal()));
}

#[test]
fn bare_when_must_be_a_declared_parameter() {
    let err = dsl::parse_str(
        "w.yaml",
        "workflow:\n  stages:\n    - name: s\n      steps:\n        - id: c\n          run: echo\n          when: parameters.flag\n",
    )
    .map(|_| ())
    .expect_err("flag is not declared");
    assert!(
        err.render()
            .contains("w.yaml:7:28: error: undeclared parameter `flag`"),
        "{}",
        err.render()
    );
}

#[test]
fn steps_iterates_nested_steps() {
    let wf = parse(
        r#"
workflow:
  parameters:
    - {name: env, enum: [a, b], default: a}
  stages:
    - name: s
      steps:
        - id: pick
          decision:
            branches:
              - when: ${{ parameters.env == 'a' }}
                steps:
                  - {id: on_a, run: echo a}
              - default: true
                steps:
                  - {id: on_b, run: echo b}
          compensate:
            - {id: undo_pick, run: echo undo}
        - id: after
          run: echo "${{ steps.on_a.status }}"
  error_handlers:
    - error: "*"
      action: rollback
      steps: [notify_team]
  rollback:
    steps:
      - {id: restore, skill: restorer}
"#,
    );
    let ids: Vec<&str> = wf.steps().map(|s| s.id.value.as_str()).collect();
    assert_eq!(
        ids,
        [
            "pick",
            "on_a",
            "on_b",
            "undo_pick",
            "after",
            "notify_team",
            "restore"
        ]
    );
    assert!(wf.step("notify_team").expect("implicit").implicit);
    assert!(wf.handler_for("Anything").is_some());
}

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

fn caller(next: &str) -> String {
    format!(
        "workflow:\n  stages:\n    - name: s\n      steps:\n        - id: call\n          workflow: {next}\n"
    )
}

#[test]
fn sub_workflows_nest_at_most_ten_deep() {
    let dir = tempfile::tempdir().expect("tempdir");
    // w0 -> w1 -> ... -> w11: eleven levels of calls below the root.
    for i in 0..11 {
        write(
            dir.path(),
            &format!("w{i}.yaml"),
            &caller(&format!("w{}", i + 1)),
        );
    }
    write(
        dir.path(),
        "w11.yml",
        "workflow:\n  stages:\n    - name: s\n      steps:\n        - {id: leaf, run: echo}\n",
    );
    let err = dsl::load_workflow(&dir.path().join("w0.yaml")).expect_err("too deep");
    assert!(
        err.render().contains("sub-workflows nest too deeply"),
        "{}",
        err.render()
    );
    // Ten levels are fine (and `.yml` is found).
    let ok = dsl::load_workflow(&dir.path().join("w1.yaml")).expect("ten levels");
    assert_eq!(ok.subworkflows.len(), 10);
    assert!(ok.subworkflow("w11").is_some());
}

#[test]
fn long_dependency_chains_do_not_overflow_the_stack() {
    // 8,000 steps in reverse order, each needing the next one in the file: a chain as deep
    // as the stage is long, checked on a test thread's small stack.
    let n = 8000;
    let mut src =
        String::from("workflow:\n  stages:\n    - name: all\n      parallel: auto\n      steps:\n");
    for i in (0..n).rev() {
        if i == 0 {
            src.push_str(&format!(
                "        - {{id: s{i}, run: x, needs: s{}}}\n",
                n - 1
            ));
        } else {
            src.push_str(&format!(
                "        - {{id: s{i}, run: x, needs: s{}}}\n",
                i - 1
            ));
        }
    }
    let err = dsl::parse_str("chain.yaml", &src)
        .map(|_| ())
        .expect_err("one big cycle");
    assert_eq!(err.error_count(), 1, "{}", err.render());
    assert!(
        err.render().contains("dependency cycle"),
        "{}",
        err.render()
    );
}

/// Guards the validation of `${{ }}` positions a shell cannot honour: each is an error at
/// the expression's own line and column; forms that work (quotes, comments, heredocs) pass.
#[test]
fn shell_positions_that_cannot_be_honoured_are_errors_at_the_expression() {
    let src = r#"workflow:
  name: sh
  parameters:
    - {name: x, default: a}
  stages:
    - name: s
      steps:
        - id: ok
          run: |
            # don't
            echo "${{ parameters.x }}" '${{ parameters.x }}' $(echo ${{ parameters.x }})
            cat <<'EOF'
            $HOME ${{ parameters.x }}
            EOF
        - id: bad
          run: |
            echo \${{ parameters.x }}
            cat <<E${{ parameters.x }}
            x
        - id: python
          shell: python3
          run: print("\${{ parameters.x }}")
"#;
    let err = match dsl::parse_str("sh.yaml", src) {
        Ok(_) => panic!("must be invalid"),
        Err(d) => d.render(),
    };
    assert!(
        err.contains("sh.yaml:17:19: error: a `${{ }}` right after a backslash"),
        "{err}"
    );
    assert!(
        err.contains("sh.yaml:18:20: error: a `${{ }}` cannot be part of a heredoc delimiter"),
        "{err}"
    );
    assert_eq!(err.matches(": error:").count(), 2, "{err}");
}
