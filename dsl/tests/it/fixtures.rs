//! Invalid fixtures: each file under `tests/fixtures/invalid/` breaks one rule (one breaks
//! three) and its exact rendered diagnostics are an insta snapshot. Files starting with `_`
//! are helpers (valid sub-workflows called by fixtures). Files under
//! `tests/fixtures/warnings/` are valid but warn.

use std::path::{Path, PathBuf};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new("tests/fixtures").join(dir))
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn stem(p: &Path) -> String {
    p.file_stem().expect("stem").to_string_lossy().into_owned()
}

#[test]
fn invalid_fixtures_render_their_diagnostics() {
    let files = fixtures("invalid");
    let mut count = 0;
    for path in files {
        let name = stem(&path);
        if name.starts_with('_') {
            assert!(
                dsl::load_workflow(&path).is_ok(),
                "helper {} must be valid",
                path.display()
            );
            continue;
        }
        let diags = match dsl::load_workflow(&path) {
            Ok(l) => panic!(
                "{} should be invalid but validated (warnings: {})",
                path.display(),
                l.warnings.render()
            ),
            Err(d) => d,
        };
        assert!(diags.has_errors(), "{}", path.display());
        count += 1;
        insta::assert_snapshot!(format!("invalid__{name}"), diags.render());
    }
    assert!(count >= 30, "only {count} invalid fixtures");
}

#[test]
fn warning_fixtures_validate_and_warn() {
    for path in fixtures("warnings") {
        let name = stem(&path);
        let loaded = match dsl::load_workflow(&path) {
            Ok(l) => l,
            Err(d) => panic!("{} should be valid:\n{}", path.display(), d.render()),
        };
        assert!(
            !loaded.warnings.0.is_empty(),
            "{} should warn",
            path.display()
        );
        insta::assert_snapshot!(format!("warnings__{name}"), loaded.warnings.render());
    }
}

#[test]
fn three_problems_are_all_reported() {
    let d = dsl::load_workflow(Path::new("tests/fixtures/invalid/three_problems.yaml"))
        .expect_err("invalid");
    assert_eq!(d.error_count(), 3, "{}", d.render());
}
