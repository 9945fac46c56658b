//! Every example workflow validates (warnings allowed).

use std::path::PathBuf;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/.workflows")
}

#[test]
fn every_example_validates() {
    let mut count = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    entries.sort();
    for path in entries {
        match dsl::load_workflow(&path) {
            Ok(loaded) => {
                eprint!("{}", loaded.warnings.render());
                count += 1;
            }
            Err(d) => panic!("{} is invalid:\n{}", path.display(), d.render()),
        }
    }
    assert!(count >= 6, "expected at least 6 examples, found {count}");
}

#[test]
fn example_workflows_have_their_shape() {
    let deploy = dsl::load_workflow(&examples_dir().join("deploy.yaml")).expect("deploy");
    let wf = &deploy.workflow;
    assert_eq!(wf.name.value, "Complex Deployment Pipeline");
    assert_eq!(wf.stages.len(), 3);
    assert_eq!(wf.error_handlers.len(), 3);
    assert!(wf.rollback.is_some());
    assert!(deploy.subworkflow("create_backup").is_some());
    let canary = dsl::load_workflow(&examples_dir().join("canary.yaml")).expect("canary");
    assert!(canary.subworkflow("progressive_traffic_increase").is_some());
}
