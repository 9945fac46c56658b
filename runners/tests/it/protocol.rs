//! The step protocol with real processes: outputs in every format, context updates, the
//! error class decision, and no file created for a step that writes none.

use std::collections::HashMap;

use crate::common::*;
use runners::{
    Cancel, ErrorClass, RunDir, StepCommand, classify, parse_context_file, parse_output_file,
    plan_script,
};
use serde_json::json;

async fn run_step(
    dir: &RunDir,
    key: &str,
    script: &str,
) -> (runners::ProcessOutcome, runners::StepPaths) {
    let paths = dir.step_paths(key);
    let mut cmd = StepCommand::from_plan(plan_script(script, None)).stdin("{}");
    cmd.env.extend(paths.env());
    let (o, _) = run_capture(cmd, Cancel::new()).await;
    (o, paths)
}

fn run_dir() -> (tempfile::TempDir, RunDir) {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = RunDir::create_in(base.path(), "protocol-test").expect("run dir");
    (base, dir)
}

#[tokio::test]
async fn key_value_and_heredoc_outputs() {
    let (_base, dir) = run_dir();
    let script = r#"
echo "version=1.2.3" >> "$AGENT_OUTPUT"
echo "url=http://127.0.0.1:8080/?a=b" >> "$AGENT_OUTPUT"
{ echo "notes<<END_OF_NOTES"; echo "line 1"; echo "version=not a key"; echo "END_OF_NOTES"; } >> "$AGENT_OUTPUT"
"#;
    let (o, paths) = run_step(&dir, "build.1", script).await;
    assert!(o.success(), "{o:?}");
    let out = parse_output_file(&paths.output)
        .expect("parse")
        .expect("written");
    assert_eq!(out["version"], json!("1.2.3"));
    assert_eq!(out["url"], json!("http://127.0.0.1:8080/?a=b"));
    assert_eq!(out["notes"], json!("line 1\nversion=not a key"));
    assert_eq!(out.len(), 3);
}

#[tokio::test]
async fn json_outputs_keep_types_and_context_updates_parse() {
    let (_base, dir) = run_dir();
    let script = r#"
printf '{"count": 3, "ok": true, "items": ["a", "b"], "name": "x"}' > "$AGENT_OUTPUT"
printf '{"deploy": {"last": "v2"}}' > "$AGENT_CONTEXT"
"#;
    let (o, paths) = run_step(&dir, "deploy.1", script).await;
    assert!(o.success());
    let out = parse_output_file(&paths.output)
        .expect("parse")
        .expect("written");
    assert_eq!(out["count"], json!(3));
    assert_eq!(out["ok"], json!(true));
    assert_eq!(out["items"], json!(["a", "b"]));
    let ctx = parse_context_file(&paths.context)
        .expect("parse")
        .expect("written");
    assert_eq!(ctx["deploy"], json!({"last": "v2"}));
}

#[tokio::test]
async fn a_step_that_writes_nothing_creates_no_file() {
    let (_base, dir) = run_dir();
    let (o, paths) = run_step(&dir, "noop.1", "true").await;
    assert!(o.success());
    assert_eq!(parse_output_file(&paths.output).expect("ok"), None);
    assert_eq!(parse_context_file(&paths.context).expect("ok"), None);
    let entries: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(entries.is_empty(), "files were created: {entries:?}");
}

#[tokio::test]
async fn error_class_output_decides_first() {
    let (_base, dir) = run_dir();
    let (o, paths) = run_step(
        &dir,
        "x.1",
        r#"echo error_class=NetworkError >> "$AGENT_OUTPUT"; exit 3"#,
    )
    .await;
    assert_eq!(o.exit_code, Some(3));
    let out = parse_output_file(&paths.output).expect("parse");
    let mut codes = HashMap::new();
    codes.insert(3, ErrorClass::from_name("FromManifest"));
    assert_eq!(
        classify(&o, out.as_ref(), &codes),
        Some(ErrorClass::Other("NetworkError".into()))
    );
    // Without the output key the manifest's code decides, then plain ExitCode.
    let (o, paths) = run_step(&dir, "y.1", "exit 3").await;
    let out = parse_output_file(&paths.output).expect("parse");
    assert_eq!(
        classify(&o, out.as_ref(), &codes),
        Some(ErrorClass::Other("FromManifest".into()))
    );
    assert_eq!(
        classify(&o, out.as_ref(), &HashMap::new()),
        Some(ErrorClass::ExitCode)
    );
}

#[tokio::test]
async fn timed_out_step_is_classified_timeout() {
    let (_base, dir) = run_dir();
    let paths = dir.step_paths("slow.1");
    let mut cmd = StepCommand::new("sleep")
        .args(["10"])
        .timeout(std::time::Duration::from_millis(200));
    cmd.env.extend(paths.env());
    let (o, _) = run_capture(cmd, Cancel::new()).await;
    assert_eq!(
        classify(&o, None, &HashMap::new()),
        Some(ErrorClass::Timeout)
    );
}

#[tokio::test]
async fn malformed_output_is_an_error_naming_file_and_line() {
    let (_base, dir) = run_dir();
    let (o, paths) = run_step(
        &dir,
        "bad.1",
        r#"printf 'a=1\nnonsense\n' > "$AGENT_OUTPUT""#,
    )
    .await;
    assert!(o.success());
    let err = parse_output_file(&paths.output).expect_err("malformed");
    let text = err.to_string();
    assert!(
        text.contains("bad.1.output") && text.contains("line 2"),
        "{text}"
    );
}

#[tokio::test]
async fn retry_reuses_paths_after_remove() {
    let (_base, dir) = run_dir();
    let (_, paths) = run_step(&dir, "r", r#"echo k=v > "$AGENT_OUTPUT""#).await;
    assert!(paths.output.exists());
    paths.remove();
    assert!(!paths.output.exists());
}
