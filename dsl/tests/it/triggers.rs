//! The forge triggers: `on.push.tags`, `on.pull_request` and `on.branch` lower to the model
//! the daemon reads, and a bad glob in any of them is an error at its own line.

fn workflow(on: &str) -> String {
    format!(
        "workflow:\n  name: w\n  on:\n{on}  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n"
    )
}

fn values(list: &[dsl::model::Spanned<String>]) -> Vec<&str> {
    list.iter().map(|s| s.value.as_str()).collect()
}

#[test]
fn forge_triggers_lower_to_the_model() {
    let text = workflow(
        "    push:\n      tags: ['v*', '!v0.*']\n    pull_request:\n      branches: [main]\n      paths: ['src/**']\n    branch:\n      branches: ['feature/*']\n",
    );
    let (wf, diags) = dsl::parse_str("w.yaml", &text).expect("valid");
    assert!(diags.0.is_empty(), "{}", diags.render());
    let push = wf.on.push.as_ref().expect("push");
    assert_eq!(values(push.tags.as_deref().expect("tags")), ["v*", "!v0.*"]);
    assert!(!push.runs_on_branches(), "only `tags`: no branch pushes");
    let pr = wf.on.pull_request.as_ref().expect("pull_request");
    assert_eq!(values(&pr.branches), ["main"]);
    assert_eq!(values(&pr.paths), ["src/**"]);
    let branch = wf.on.branch.as_ref().expect("branch");
    assert_eq!(values(&branch.branches), ["feature/*"]);

    // Bare keys mean "every": every pull request, every non-default branch.
    let (wf, _) = dsl::parse_str(
        "w.yaml",
        &workflow("    pull_request:\n    branch:\n    push: {}\n"),
    )
    .expect("valid");
    assert!(wf.on.pull_request.is_some_and(|p| p.branches.is_empty()));
    assert!(wf.on.branch.is_some_and(|b| b.branches.is_empty()));
    assert!(
        wf.on
            .push
            .as_ref()
            .is_some_and(|p| p.runs_on_branches() && p.tags.is_none())
    );
}

/// Every trigger glob that does not compile is reported, each at its own line and column.
#[test]
fn bad_trigger_globs_are_errors_at_their_line() {
    let text = workflow(
        "    push:\n      branches: ['release/[']\n      tags: ['v{1']\n    pull_request:\n      paths: ['ok/**', 'src/[z-a]']\n    branch:\n      branches: ['']\n",
    );
    let diags = dsl::parse_str("w.yaml", &text).expect_err("invalid");
    let rendered = diags.render();
    for (at, glob) in [
        ("w.yaml:5:18", "release/["),
        ("w.yaml:6:14", "v{1"),
        ("w.yaml:8:24", "src/[z-a]"),
        ("w.yaml:10:18", ""),
    ] {
        assert!(
            rendered.contains(&format!("{at}: error: invalid glob `{glob}`")),
            "{at} {glob}:\n{rendered}"
        );
    }
    assert!(!rendered.contains("`ok/**`"), "{rendered}");
}

#[test]
fn unknown_trigger_keys_are_named() {
    let text = workflow("    pull_request:\n      tags: ['v*']\n");
    let diags = dsl::parse_str("w.yaml", &text).expect_err("invalid");
    let rendered = diags.render();
    assert!(rendered.contains("w.yaml:5:7"), "{rendered}");
    assert!(rendered.contains("`tags`"), "{rendered}");
}

/// A pull request, like a push, gives no parameters: a required one without a default is
/// a warning naming the trigger.
#[test]
fn pull_request_workflows_warn_about_required_parameters() {
    let text = "workflow:\n  name: w\n  on:\n    pull_request: {}\n  parameters:\n    - name: target\n      required: true\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n";
    let (_, diags) = dsl::parse_str("w.yaml", text).expect("valid with a warning");
    let rendered = diags.render();
    assert!(
        rendered.contains(
            "w.yaml:7:17: warning: `on.pull_request` runs this workflow without parameters"
        ) && rendered.contains("every pull-request run will fail"),
        "{rendered}"
    );
}
