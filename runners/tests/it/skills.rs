//! Skill lookup with real directories and real skill processes: order, file and directory
//! skills, manifests, error codes, names that try to escape.

use std::path::PathBuf;

use crate::common::*;
use runners::{Cancel, ErrorClass, Request, RunnerError, SkillSource, classify, find_skill};

struct Fixture {
    _tmp: tempfile::TempDir,
    workspace: PathBuf,
    dir_a: PathBuf,
    dir_b: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let workspace = tmp.path().join("ws");
    let dir_a = tmp.path().join("skills-a");
    let dir_b = tmp.path().join("skills-b");
    for d in [&workspace, &dir_a, &dir_b] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    Fixture {
        _tmp: tmp,
        workspace,
        dir_a,
        dir_b,
    }
}

#[tokio::test]
async fn lookup_order_workspace_then_configured_dirs() {
    let f = fixture();
    write_exec(&f.dir_b.join("greet"), "#!/bin/sh\necho from-b\n");
    write_exec(&f.dir_a.join("greet.sh"), "#!/bin/sh\necho from-a\n");
    let dirs = vec![f.dir_a.clone(), f.dir_b.clone()];

    let skill = find_skill("greet", &f.workspace, &dirs).expect("found");
    assert_eq!(skill.source, SkillSource::Configured(f.dir_a.clone()));
    let (o, cap) = run_capture(skill.command(), Cancel::new()).await;
    assert!(o.success());
    assert_eq!(cap.stdout, vec!["from-a"]);

    write_exec(
        &f.workspace.join(".workflows/skills/greet.py"),
        "#!/usr/bin/env python3\nprint('from-workspace')\n",
    );
    let skill = find_skill("greet", &f.workspace, &dirs).expect("found");
    assert_eq!(skill.source, SkillSource::Workspace);
    if runners::find_on_path("python3").is_some() {
        let (o, cap) = run_capture(skill.command(), Cancel::new()).await;
        assert!(o.success());
        assert_eq!(cap.stdout, vec!["from-workspace"]);
    }
}

#[tokio::test]
async fn directory_skill_with_manifest_runs_relative_command() {
    let f = fixture();
    let skill_dir = f.dir_a.join("deploy");
    write_exec(
        &skill_dir.join("run.sh"),
        "#!/bin/sh\necho \"arg=$1 cwd=$(pwd) dir=$AGENT_SKILL_DIR\"\nread -r params\necho \"params=$params\"\nexit 4\n",
    );
    std::fs::write(
        skill_dir.join("skill.yaml"),
        "name: deploy\ndescription: test\ncommand: ./run.sh --fast\ninputs:\n  environment: {type: string, required: true}\noutputs:\n  url: {type: string}\nresources: {cpu: 2, memory_mb: 64}\nside_effects: true\nerror_codes:\n  4: DeployFailed\n  5: Timeout\n",
    )
    .expect("manifest");
    let skill = find_skill("deploy", &f.workspace, std::slice::from_ref(&f.dir_a)).expect("found");
    assert_eq!(skill.request(), Request::new(2, 64));
    let manifest = skill.manifest.as_ref().expect("manifest");
    assert!(manifest.inputs["environment"].required);
    let cmd = skill
        .command()
        .cwd(&f.workspace)
        .stdin(r#"{"environment":"staging"}"#);
    let (o, cap) = run_capture(cmd, Cancel::new()).await;
    assert_eq!(o.exit_code, Some(4));
    let ws = f.workspace.canonicalize().expect("canonical");
    let sd = skill_dir.canonicalize().expect("canonical");
    assert_eq!(
        cap.stdout,
        vec![
            format!("arg=--fast cwd={} dir={}", ws.display(), sd.display()),
            r#"params={"environment":"staging"}"#.to_string(),
        ]
    );
    assert_eq!(
        classify(&o, None, &skill.error_codes()),
        Some(ErrorClass::Other("DeployFailed".into()))
    );
}

#[test]
fn io_bound_manifest_requests_no_cpu() {
    let f = fixture();
    let skill_dir = f.dir_a.join("fetch");
    std::fs::create_dir_all(&skill_dir).expect("mkdir");
    std::fs::write(
        skill_dir.join("skill.yaml"),
        "command: [curl, --version]\nio_bound: true\n",
    )
    .expect("manifest");
    let skill = find_skill("fetch", &f.workspace, std::slice::from_ref(&f.dir_a)).expect("found");
    assert_eq!(skill.request(), Request::new(0, 0));
    assert_eq!(skill.program, "curl");
}

#[test]
fn escaping_names_are_rejected() {
    let f = fixture();
    write_exec(&f.workspace.join("evil"), "#!/bin/sh\necho pwned\n");
    let dirs = vec![f.dir_a.clone()];
    for name in [
        "../evil",
        "../../ws/evil",
        "a/b",
        "..",
        ".",
        "",
        "/bin/sh",
        ".hidden",
    ] {
        match find_skill(name, &f.workspace, &dirs) {
            Err(RunnerError::InvalidSkillName { .. }) => {}
            other => panic!("{name:?} must be rejected, got {other:?}"),
        }
    }
    // A symlink pointing out of the skill directory is rejected too.
    std::os::unix::fs::symlink(f.workspace.join("evil"), f.dir_a.join("sneaky")).expect("symlink");
    let err = find_skill("sneaky", &f.workspace, &dirs).expect_err("outside");
    assert!(err.to_string().contains("outside"), "{err}");
}

#[test]
fn missing_skill_is_skill_not_found() {
    let f = fixture();
    let err =
        find_skill("nope", &f.workspace, std::slice::from_ref(&f.dir_a)).expect_err("missing");
    assert!(matches!(err, RunnerError::SkillNotFound { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::SkillNotFound);
    let text = err.to_string();
    assert!(text.contains("nope") && text.contains("skills-a"), "{text}");
    // No built-in skills exist: none are claimed to be searched.
    assert!(!text.contains("built-in"), "{text}");
}

/// An unknown skill got no did-you-mean.
#[test]
fn a_misspelt_skill_gets_a_suggestion() {
    let f = fixture();
    write_exec(&f.dir_a.join("deployer.sh"), "#!/bin/sh\n");
    let dirs = [f.dir_a.clone()];
    let err = find_skill("deployr", &f.workspace, &dirs).expect_err("missing");
    assert!(
        err.to_string().contains("did you mean `deployer`?"),
        "{err}"
    );
    let err = find_skill("zzz", &f.workspace, &dirs).expect_err("missing");
    assert!(!err.to_string().contains("did you mean"), "{err}");
}

#[test]
fn bad_skills_give_clear_errors() {
    let f = fixture();
    let dirs = vec![f.dir_a.clone()];
    // Not executable.
    std::fs::write(f.dir_a.join("plain"), "echo hi\n").expect("write");
    let err = find_skill("plain", &f.workspace, &dirs).expect_err("not executable");
    assert!(
        matches!(err, RunnerError::SkillNotExecutable { .. }),
        "{err}"
    );
    // Directory without manifest.
    std::fs::create_dir_all(f.dir_a.join("empty")).expect("mkdir");
    let err = find_skill("empty", &f.workspace, &dirs).expect_err("no manifest");
    assert!(err.to_string().contains("skill.yaml"), "{err}");
    // Unknown manifest key, with its position.
    let bad = f.dir_a.join("typo");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::write(
        bad.join("skill.yaml"),
        "command: x\nresources:\n  cpus: 2\n",
    )
    .expect("write");
    let err = find_skill("typo", &f.workspace, &dirs).expect_err("bad manifest");
    let text = err.to_string();
    assert!(text.contains("cpus") && text.contains("line 3"), "{text}");
    // Error code mapped to something that is not a string.
    std::fs::write(
        bad.join("skill.yaml"),
        "command: x\nerror_codes: {1: [a]}\n",
    )
    .expect("write");
    assert!(find_skill("typo", &f.workspace, &dirs).is_err());
    // A relative command that is not in the skill directory.
    std::fs::write(bad.join("skill.yaml"), "command: ./missing.sh\n").expect("write");
    let err = find_skill("typo", &f.workspace, &dirs).expect_err("missing command");
    assert!(err.to_string().contains("missing.sh"), "{err}");
}
