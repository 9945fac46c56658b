//! The JSON Schema: the committed file equals the generated one, each object's properties
//! equal the keys the lowering accepts, and every example validates against it with an
//! independent validator (the `jsonschema` crate).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_schema_is_current() {
    let path = root().join("schemas/workflow.schema.json");
    let generated = dsl::schema::workflow_schema_json();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/workflow.schema.json is out of date; regenerate it with `UPDATE_SCHEMA=1 cargo test -p dsl --test schema`"
    );
}

#[test]
fn schema_properties_match_accepted_keys() {
    let schema = dsl::schema::workflow_schema();
    for (name, keys) in dsl::lower::OBJECTS {
        let def = if *name == "WorkflowFile" {
            &schema
        } else {
            &schema["$defs"][*name]
        };
        let props = def["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema has no properties for `{name}`"));
        let mut in_schema: Vec<&str> = props.keys().map(String::as_str).collect();
        let mut accepted: Vec<&str> = keys.to_vec();
        in_schema.sort_unstable();
        accepted.sort_unstable();
        assert_eq!(
            in_schema, accepted,
            "keys of `{name}` differ between schema and lowering"
        );
        assert_eq!(
            def["additionalProperties"],
            serde_json::Value::Bool(false),
            "`{name}` must reject unknown keys"
        );
    }
}

fn yaml_to_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read");
    match dsl::yaml::parse_str(&text) {
        Ok(parsed) if parsed.diagnostics.is_empty() => parsed.root.to_json(),
        Ok(parsed) => panic!("{}: {:?}", path.display(), parsed.diagnostics),
        Err(d) => panic!("{}: {d:?}", path.display()),
    }
}

#[test]
fn examples_validate_against_the_schema() {
    let schema = dsl::schema::workflow_schema();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let dir = root().join("examples/.workflows");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let doc = yaml_to_json(&path);
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        n += 1;
    }
    assert!(n >= 6);
}

#[test]
fn schema_rejects_an_unknown_key() {
    let schema = dsl::schema::workflow_schema();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let doc = yaml_to_json(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/unknown_key.yaml"),
    );
    assert!(!validator.is_valid(&doc));
}
