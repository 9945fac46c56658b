//! The CI keys (`env`, `working_directory`, `shell`, `checkout`, `matrix`, `services`,
//! `artifacts`, `cache`): valid files lower to the model the engine reads, and match the
//! JSON Schema. Their errors are snapshot tests among the invalid fixtures (`ci_*.yaml`).

use std::path::Path;

use dsl::model::{
    CacheScope, MatrixValues, ServiceKind, ServiceReady, ShellName, ShellSpec, StepKind,
};

fn load(name: &str) -> dsl::Loaded {
    let path = Path::new("tests/fixtures/ci").join(name);
    match dsl::load_workflow(&path) {
        Ok(l) => l,
        Err(d) => panic!("{} should be valid:\n{}", path.display(), d.render()),
    }
}

/// Every new key, with expressions in the places they are allowed, lowers without errors
/// and with the values the engine will read.
#[test]
fn a_ci_workflow_lowers_to_the_model() {
    let loaded = load("valid.yaml");
    let wf = &loaded.workflow;
    assert_eq!(wf.env.keys().collect::<Vec<_>>(), ["RUST_LOG", "VERSION"]);
    let co = wf.checkout.as_ref().expect("checkout");
    assert!(co.enabled && co.tags && !co.submodules);
    assert_eq!(co.depth, None, "`full`");
    assert_eq!(co.path.as_ref().map(|p| p.value.as_str()), Some("src"));
    let db = &wf.services[0];
    assert_eq!(db.name.value, "db");
    assert!(matches!(db.kind, ServiceKind::Run(_)));
    assert!(matches!(db.ready, Some(ServiceReady::Tcp(_))));
    assert_eq!(
        db.ready_timeout.as_ref().map(|d| d.value.as_secs()),
        Some(30)
    );

    let test = &wf.stages[0];
    assert_eq!(test.env.len(), 1);
    assert_eq!(
        test.working_directory.as_ref().map(|w| w.value.as_str()),
        Some("src")
    );
    let m = test.matrix.as_ref().expect("matrix");
    assert!(!m.fail_fast);
    assert_eq!(m.max_parallel.as_ref().map(|m| m.value), Some(2));
    let ids: Vec<String> = m
        .expand()
        .expect("static")
        .expect("expands")
        .iter()
        .map(|i| i.id(&test.name.value))
        .collect();
    assert_eq!(
        ids,
        [
            "test (python=3.10, os=linux)",
            "test (python=3.11, os=linux)",
            "test (python=3.11, os=mac)",
            "test (python=3.12, os=linux)",
            "test (python=3.12, os=mac)",
        ]
    );
    let cache_svc = &test.services[0];
    assert!(matches!(&cache_svc.kind, ServiceKind::Skill(s) if s.value == "redis"));
    assert!(cache_svc.parameters.contains_key("port"));

    let unit = &test.steps[0];
    assert_eq!(unit.shell_spec(), Some(ShellSpec::Named(ShellName::Bash)));
    assert_eq!(
        unit.working_directory.as_ref().map(|w| w.value.as_str()),
        Some("tests/unit")
    );
    let report = unit.artifact("report").expect("artifact");
    assert_eq!(report.paths.len(), 2);
    assert_eq!(
        report.retention.as_ref().map(|r| r.value.as_secs()),
        Some(7 * 86400)
    );
    let c = unit.cache.as_ref().expect("cache");
    assert!(c.key.is_some());
    assert_eq!(c.inputs[0].value, "requirements.txt");
    assert_eq!(c.paths[0].value, ".venv");
    assert_eq!(c.scope.as_ref().map(|s| s.value), Some(CacheScope::Branch));

    let build = wf.step("build").expect("build");
    assert_eq!(
        build.shell_spec(),
        Some(ShellSpec::Template("sh -e {0}".into()))
    );
    let bm = build.matrix.as_ref().expect("matrix");
    assert!(!bm.is_static() && bm.expand().is_none());
    assert!(matches!(bm.axes[0].values, MatrixValues::Dynamic(_)));
    let bc = build.cache.as_ref().expect("cache: true");
    assert!(bc.key.is_none() && bc.inputs.is_empty());
    let docs = build.artifact("docs").expect("docs");
    let from = docs.from.as_ref().expect("from");
    assert_eq!(from.workflow.value, "docs");
    assert!(matches!(build.kind, StepKind::Run(_)));
    // A dynamic matrix step depends on the step whose output it reads.
    assert!(build.step_references().contains(&"list".to_owned()));
    let whole = wf.step("whole").expect("whole");
    assert!(whole.matrix.as_ref().is_some_and(|m| m.whole.is_some()));
}

/// `checkout: false` turns the sources off.
#[test]
fn checkout_false_means_no_sources() {
    let loaded = load("no_checkout.yaml");
    let co = loaded.workflow.checkout.as_ref().expect("checkout");
    assert!(!co.enabled);
}

/// The valid CI files match the JSON Schema, and a misspelt CI key does not.
#[test]
fn ci_files_validate_against_the_schema() {
    let schema = dsl::schema::workflow_schema();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    for name in ["valid.yaml", "no_checkout.yaml"] {
        let text =
            std::fs::read_to_string(Path::new("tests/fixtures/ci").join(name)).expect("read");
        let doc = dsl::yaml::parse_str(&text).expect("yaml").root.to_json();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
    let bad = dsl::yaml::parse_str(
        "workflow:\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: x\n          artifacts: [{name: a, pathz: [x]}]\n",
    )
    .expect("yaml")
    .root
    .to_json();
    assert!(!validator.is_valid(&bad));
}

/// Shell values: the four documented names, other interpreters the runner knows, absolute
/// paths to them, and command lines with `{0}`; anything else is an error with a hint.
#[test]
fn shell_values() {
    for ok in [
        "bash",
        "sh",
        "python",
        "pwsh",
        "python3",
        "/bin/dash",
        "perl {0}",
    ] {
        assert!(ShellSpec::parse(ok).is_ok(), "{ok}");
    }
    assert_eq!(
        ShellSpec::parse("bsh").expect_err("unknown"),
        "unknown shell `bsh`, did you mean `bash`? Expected one of `bash`, `sh`, `python`, `pwsh`, or a command line with `{0}`"
    );
    assert!(
        ShellSpec::parse("bash -x")
            .expect_err("no {0}")
            .contains("`{0}`")
    );
}

/// A dynamic matrix is expanded from the values its expressions give when the step starts
/// (a JSON list, or the text of one as step outputs usually are).
#[test]
fn a_dynamic_matrix_expands_from_its_context() {
    let loaded = load("valid.yaml");
    let build = loaded.workflow.step("build").expect("build");
    let m = build.matrix.as_ref().expect("matrix");
    let ctx = dsl::expr::MapContext::from_value(serde_json::json!({
        "steps": {"list": {"output": {"targets": "[\"x86\", \"arm\"]"}}}
    }));
    let ids: Vec<String> = m
        .instances(&ctx)
        .expect("expands")
        .iter()
        .map(|i| i.id("build"))
        .collect();
    assert_eq!(ids, ["build (target=x86)", "build (target=arm)"]);
    let bad = dsl::expr::MapContext::from_value(serde_json::json!({
        "steps": {"list": {"output": {"targets": "not json"}}}
    }));
    let err = m.instances(&bad).expect_err("not a list");
    assert_eq!(
        err.to_string(),
        "`target` must be a JSON list, found the text `not json`"
    );
}

fn parse_ci(src: &str) -> Result<dsl::Workflow, String> {
    dsl::parse_str("ci.yaml", src)
        .map(|(wf, _)| wf)
        .map_err(|d| d.render())
}

/// `resources.cpu: all` and `isolate: true` lower to the model (isolation off by
/// default), match the JSON Schema, and wrong values are precise errors.
#[test]
fn cpu_all_and_isolate() {
    let src = "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          isolate: true\n          resources:\n            cpu: all\n          run: 'true'\n        - id: b\n          resources:\n            cpu: 1.5\n          run: 'true'\n";
    let wf = parse_ci(src).expect("valid");
    let a = wf.step("a").expect("a");
    assert!(a.isolate.value);
    let cpu = a
        .resources
        .as_ref()
        .and_then(|r| r.cpu.as_ref())
        .map(|c| c.value);
    assert_eq!(cpu, Some(dsl::model::Cpu::All));
    assert_eq!(cpu.map(|c| c.slots(8)), Some(8));
    let b = wf.step("b").expect("b");
    assert!(!b.isolate.value);
    let cpu = b
        .resources
        .as_ref()
        .and_then(|r| r.cpu.as_ref())
        .map(|c| c.value);
    assert_eq!(cpu.map(|c| c.slots(8)), Some(2));

    let schema = dsl::schema::workflow_schema();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let doc = dsl::yaml::parse_str(src).expect("yaml").root.to_json();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    for bad in ["cpu: most", "cpu: -1"] {
        let text = src.replace("cpu: all", bad);
        let doc = dsl::yaml::parse_str(&text).expect("yaml").root.to_json();
        assert!(!validator.is_valid(&doc), "{bad}");
    }

    let err = parse_ci(&src.replace("cpu: all", "cpu: most")).expect_err("most");
    assert!(
        err.contains("expected a number of cores or `all` for `cpu`, found a string"),
        "{err}"
    );
    let err = parse_ci(&src.replace("isolate: true", "isolate: maybe")).expect_err("maybe");
    assert!(err.contains("`isolate`"), "{err}");
}

/// `isolate` on a decision or workflow step has no effect: a warning says so.
#[test]
fn isolate_on_a_decision_is_a_warning() {
    let src = "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: d\n          isolate: true\n          decision:\n            branches:\n              - default: true\n                steps:\n                  - id: x\n                    run: 'true'\n";
    let (_, warnings) = dsl::parse_str("ci.yaml", src).expect("valid");
    let text = warnings.render();
    assert!(
        text.contains("`isolate` has no effect on a `decision` step"),
        "{text}"
    );
}

/// The compensation of a matrix stage's step runs per instance and may read `matrix`.
#[test]
fn compensation_in_a_matrix_stage_reads_matrix() {
    let src = "workflow:\n  name: w\n  stages:\n    - name: s\n      matrix:\n        region: [eu, us]\n      steps:\n        - id: push\n          run: 'true'\n          compensate:\n            - id: unpush\n              run: echo ${{ matrix.region }}\n";
    parse_ci(src).expect("valid");
    let err = parse_ci(&src.replace("matrix.region", "matrix.regoin")).expect_err("typo");
    assert!(err.contains("regoin"), "{err}");
}
