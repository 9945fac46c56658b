//! What the client commands print: tables of runs and deliveries, a run's details and its
//! steps in the order they ran, times in the local zone, durations.

use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::model::RunStatus;
use crate::model::api::{Delivery, RunDetail, RunSummary};
use crate::model::report::{RollbackReport, StageReport, StepReport};
use crate::model::{StepStatus, fmt};

/// A duration in milliseconds as `850ms`, `12.3s`, `4m05s` or `2h03m`; `-` when unknown.
pub(crate) fn human_duration(ms: Option<i64>) -> String {
    fmt::duration_opt(ms)
}

fn opt_ms(ms: Option<u64>) -> Option<i64> {
    ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
}

fn or_dash(text: Option<&str>) -> String {
    text.unwrap_or("-").to_string()
}

/// An RFC 3339 time in this machine's local time with its zone: `YYYY-MM-DD HH:MM:SS UTC`
/// or `YYYY-MM-DD HH:MM:SS +01:00`; text that is not a time as it is.
pub(super) fn short_time(t: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(time) => time_in(time.with_timezone(&chrono::Local).fixed_offset()),
        Err(_) => t.to_string(),
    }
}

fn short_time_opt(t: Option<&str>) -> String {
    short_time(t.unwrap_or("-"))
}

/// A time as `YYYY-MM-DD HH:MM:SS` and its zone (`UTC` for offset 0).
fn time_in(time: chrono::DateTime<chrono::FixedOffset>) -> String {
    if time.offset().local_minus_utc() == 0 {
        time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    } else {
        time.format("%Y-%m-%d %H:%M:%S %:z").to_string()
    }
}

/// The exit code of `--exit-status`: 0 when the run (or step) succeeded, 1 otherwise.
pub(super) fn exit_status_of(status: &str) -> i32 {
    if status == "succeeded" {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Columns padded to their widest cell, two spaces apart, the last one unpadded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// The runs table of `agent runs`.
pub(crate) fn runs_table(runs: &[RunSummary]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let mut what = r.trigger.kind.as_str().to_string();
            if let Some(branch) = &r.trigger.branch {
                what.push_str(&format!(" {branch}"));
            }
            if let Some(commit) = &r.trigger.commit {
                what.push_str(&format!("@{}", commit.get(..8).unwrap_or(commit)));
            }
            vec![
                r.run_id.clone(),
                r.workflow.clone(),
                or_dash(r.repo.as_deref()),
                r.status.as_str().to_string(),
                what,
                short_time(&r.created_at),
                human_duration(r.duration_ms),
            ]
        })
        .collect();
    table(
        &[
            "RUN", "WORKFLOW", "REPO", "STATUS", "TRIGGER", "CREATED", "DURATION",
        ],
        &rows,
    )
}

/// The parts of a report (or of a called workflow's) that hold steps.
struct Steps<'a> {
    stages: &'a [StageReport],
    compensation: &'a [StepReport],
    rollback: Option<&'a RollbackReport>,
}

/// Every step of a run report in the order they ran, as `(section, step)`: each stage's
/// steps (section: the stage), a called workflow's steps right after the step that called
/// it (section `CALL/STAGE`, ids `CALL/ID` as their logs are named), then the compensation
/// steps (section `compensation`) and the rollback steps (section `rollback`).
pub(super) fn report_steps(report: &crate::model::report::RunReport) -> Vec<(String, StepReport)> {
    let mut out = Vec::new();
    collect_steps(
        &Steps {
            stages: &report.stages,
            compensation: &report.compensation,
            rollback: report.rollback.as_ref(),
        },
        "",
        &mut out,
    );
    out
}

fn collect_steps(report: &Steps<'_>, prefix: &str, out: &mut Vec<(String, StepReport)>) {
    let add = |section: String, step: &StepReport, out: &mut Vec<(String, StepReport)>| {
        let mut step = step.clone();
        step.id = format!("{prefix}{}", step.id);
        let id = step.id.clone();
        let called = step.workflow.clone();
        out.push((section, step));
        if let Some(called) = called {
            let inner = Steps {
                stages: &called.stages,
                compensation: &called.compensation,
                rollback: called.rollback.as_ref(),
            };
            collect_steps(&inner, &format!("{id}/"), out);
        }
    };
    for stage in report.stages {
        let section = format!("{prefix}{}", stage.name);
        for step in &stage.steps {
            add(section.clone(), step, out);
        }
    }
    for step in report.compensation {
        add(format!("{prefix}compensation"), step, out);
    }
    for step in report
        .rollback
        .map(|r| r.steps.as_slice())
        .unwrap_or_default()
    {
        add(format!("{prefix}rollback"), step, out);
    }
}

/// True for a step that called a workflow (its own log is empty: its steps have theirs).
pub(super) fn is_call(step: &StepReport) -> bool {
    step.workflow.is_some()
}

/// The failed steps of a report for the recap, in order: a call step only when none of the
/// steps it called failed (otherwise they stand for it).
pub(super) fn failed_steps(steps: &[(String, StepReport)]) -> Vec<&StepReport> {
    steps
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.status == StepStatus::Failed)
        .filter(|s| {
            let inner = format!("{}/", s.id);
            !steps
                .iter()
                .any(|(_, o)| o.status == StepStatus::Failed && o.id.starts_with(&inner))
        })
        .collect()
}

/// The text of `agent runs RUN`.
pub(crate) fn run_details(detail: &RunDetail) -> String {
    let report = &detail.report;
    let trigger = &detail.trigger;
    let mut out = format!(
        "run {}  {}  {}\nworkflow: {}\nrepo: {}\ntrigger: {}",
        report.run_id,
        report.status.as_str(),
        human_duration(opt_ms(report.duration_ms)),
        report.workflow,
        or_dash(detail.repo.as_deref()),
        trigger.kind.as_str(),
    );
    for (key, value) in [
        ("branch", &trigger.branch),
        ("commit", &trigger.commit),
        ("scheduled_for", &trigger.scheduled_for),
    ] {
        if let Some(v) = value {
            out.push_str(&format!(" {key}={v}"));
        }
    }
    out.push('\n');
    out.push_str(&format!(
        "created: {}  started: {}  finished: {}\n",
        short_time(&detail.created_at),
        short_time_opt(report.started_at.as_deref()),
        short_time_opt(report.finished_at.as_deref()),
    ));
    if let Some(error) = &report.error {
        out.push_str(&format!("error: {error}\n"));
    }
    let steps = report_steps(report);
    // A NAME column only when some step has a `name:`.
    let named = steps.iter().any(|(_, s)| s.name.is_some());
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|(stage, s)| {
            let status = if s.status == StepStatus::Failed && s.continued {
                "failed (continued)".to_string()
            } else {
                s.status.as_str().to_string()
            };
            let mut row = vec![stage.clone(), s.id.clone()];
            if named {
                row.push(or_dash(s.name.as_deref()));
            }
            row.extend([
                status,
                s.attempts.to_string(),
                s.exit_code.map_or("-".into(), |c| c.to_string()),
                or_dash(s.error_class.as_deref()),
                human_duration(opt_ms(s.duration_ms)),
            ]);
            row
        })
        .collect();
    if !rows.is_empty() {
        let mut header = vec!["STAGE", "STEP"];
        if named {
            header.push("NAME");
        }
        header.extend(["STATUS", "ATTEMPTS", "EXIT", "ERROR", "DURATION"]);
        out.push('\n');
        out.push_str(&table(&header, &rows));
    }
    out
}

/// True while the run may still change (`queued`, `running`).
pub(super) fn is_live(status: RunStatus) -> bool {
    matches!(status, RunStatus::Queued | RunStatus::Running)
}

/// The table of `agent deliveries`; with `attempts`, each delivery's attempts under it.
pub(crate) fn deliveries_table(deliveries: &[Delivery], attempts: bool) -> String {
    let code = |c: Option<u16>| c.map_or_else(|| "-".to_string(), |c| c.to_string());
    let mut rows: Vec<Vec<String>> = Vec::new();
    for d in deliveries {
        rows.push(vec![
            d.id.clone(),
            d.webhook.clone(),
            d.event.clone(),
            or_dash(d.run_id.as_deref()),
            d.status.as_str().to_string(),
            d.attempts.to_string(),
            code(d.history.last().and_then(|a| a.status_code)),
            short_time(&d.created_at),
            or_dash(d.last_error.as_deref()),
        ]);
        if attempts {
            for a in &d.history {
                rows.push(vec![
                    format!("  #{}", a.attempt),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    code(a.status_code),
                    short_time(&a.at),
                    or_dash(a.error.as_deref()),
                ]);
            }
        }
    }
    table(
        &[
            "DELIVERY", "WEBHOOK", "EVENT", "RUN", "STATUS", "ATTEMPTS", "HTTP", "CREATED", "ERROR",
        ],
        &rows,
    )
}

/// The node list of `agent nodes`: name, state (`up` or `lost`), runs held out of its
/// capacity, last heartbeat.
pub fn nodes_table(nodes: &[crate::model::api::NodeInfo]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                if n.lost { "lost" } else { "up" }.to_string(),
                format!("{}/{}", n.runs, n.capacity),
                short_time(&n.last_heartbeat),
            ]
        })
        .collect();
    table(&["NODE", "STATE", "RUNS", "LAST HEARTBEAT"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// `partial` over `defaults`, key by key (recursing into the steps of stages, the
    /// called workflow of a step and the rollback).
    fn fill(defaults: Value, partial: Value) -> Value {
        let mut out = defaults;
        if let (Some(o), Value::Object(p)) = (out.as_object_mut(), partial) {
            for (k, v) in p {
                o.insert(k, v);
            }
        }
        out
    }

    fn step_value(v: Value) -> Value {
        let mut v = fill(
            json!({"status": "succeeded", "cached": false, "attempts": 0, "exit_code": null,
                   "error_class": null, "outputs": {}, "started_at": null,
                   "finished_at": null, "duration_ms": null}),
            v,
        );
        if let Some(called) = v.get("workflow").cloned() {
            v["workflow"] = steps_in(called);
        }
        v
    }

    fn steps_in(mut v: Value) -> Value {
        if let Some(stages) = v.get_mut("stages").and_then(Value::as_array_mut) {
            for stage in stages {
                if let Some(steps) = stage.get_mut("steps").and_then(Value::as_array_mut) {
                    for s in steps.iter_mut() {
                        *s = step_value(s.take());
                    }
                }
            }
        }
        for key in ["compensation"] {
            if let Some(steps) = v.get_mut(key).and_then(Value::as_array_mut) {
                for s in steps.iter_mut() {
                    *s = step_value(s.take());
                }
            }
        }
        if let Some(steps) = v
            .get_mut("rollback")
            .and_then(|r| r.get_mut("steps"))
            .and_then(Value::as_array_mut)
        {
            for s in steps.iter_mut() {
                *s = step_value(s.take());
            }
        }
        v
    }

    fn detail(v: Value) -> RunDetail {
        let v = fill(
            json!({"run_id": "1", "workflow": "w", "status": "failed", "started_at": null,
                   "finished_at": null, "duration_ms": null, "parameters": {}, "stages": [],
                   "rollback": null, "compensated": [], "error": null, "repo": null,
                   "trigger": {"kind": "manual", "commit": null, "branch": null,
                               "scheduled_for": null},
                   "created_at": "-", "retry_of": null}),
            v,
        );
        serde_json::from_value(steps_in(v)).expect("a run detail")
    }

    fn summary(v: Value) -> RunSummary {
        let mut v = fill(
            json!({"repo": null, "started_at": null, "finished_at": null, "error": null,
                   "retry_of": null}),
            v,
        );
        v["trigger"] = fill(json!({"scheduled_for": null}), v["trigger"].take());
        serde_json::from_value(v).expect("a run summary")
    }

    fn deliveries(list: &[Value]) -> Vec<Delivery> {
        list.iter()
            .map(|d| {
                let d = fill(
                    json!({"next_attempt_at": null, "url": null, "content_type": null,
                           "payload": null}),
                    d.clone(),
                );
                serde_json::from_value(d).expect("a delivery")
            })
            .collect()
    }

    /// Times were shown in UTC without saying so: they carry their zone now.
    #[test]
    fn times_carry_their_zone() {
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("time");
        assert_eq!(
            time_in(t("2026-11-27T08:00:01.250Z")),
            "2026-11-27 08:00:01 UTC"
        );
        assert_eq!(
            time_in(t("2026-11-27T09:00:01+01:00")),
            "2026-11-27 09:00:01 +01:00"
        );
        assert_eq!(short_time("-"), "-");
        let local = short_time("2026-11-27T08:00:01Z");
        assert!(
            local.ends_with(" UTC") || local.contains(" +") || local.contains(" -"),
            "{local}"
        );
        assert_eq!(exit_status_of("succeeded"), EXIT_OK);
        assert_eq!(exit_status_of("failed"), EXIT_FAILED);
        assert_eq!(exit_status_of("cancelled"), EXIT_FAILED);
    }

    #[test]
    fn what_users_read() {
        let runs = [
            json!({"run_id": "12", "workflow": "deploy", "repo": "app", "status": "running",
                   "trigger": {"kind": "push", "branch": "main", "commit": "0123456789abcdef",
                               "scheduled_for": null},
                   "created_at": "2026-11-27T08:00:01.250Z", "duration_ms": 65_000}),
            json!({"run_id": "9", "workflow": "nightly", "repo": null, "status": "queued",
                   "trigger": {"kind": "schedule", "branch": null, "commit": null},
                   "created_at": "2026-11-27T07:59:00.000Z", "duration_ms": null}),
        ];
        // Times are shown in the local zone of whoever runs the tests.
        let (a, b) = (
            short_time("2026-11-27T08:00:01.250Z"),
            short_time("2026-11-27T07:59:00.000Z"),
        );
        let pad = " ".repeat(a.len().saturating_sub("CREATED".len()));
        assert_eq!(
            runs_table(&runs.iter().map(|r| summary(r.clone())).collect::<Vec<_>>()),
            format!(
                "RUN  WORKFLOW  REPO  STATUS   TRIGGER             CREATED{pad}  DURATION\n\
                 12   deploy    app   running  push main@01234567  {a}  1m05s\n\
                 9    nightly   -     queued   schedule            {b}  -\n"
            )
        );
        let report = json!({
            "run_id": "12", "workflow": "deploy", "repo": "app", "status": "failed",
            "duration_ms": 1500, "error": "step `b` failed",
            "trigger": {"kind": "manual", "commit": "abc", "branch": null, "scheduled_for": null},
            "created_at": "2026-11-27T08:00:00.000Z", "started_at": "2026-11-27T08:00:00.100Z",
            "finished_at": "2026-11-27T08:00:01.600Z",
            "stages": [{"name": "build", "status": "failed", "steps": [
                {"id": "a", "status": "succeeded", "attempts": 1, "exit_code": 0,
                 "error_class": null, "duration_ms": 20},
                {"id": "b", "status": "failed", "attempts": 3, "exit_code": 2,
                 "error_class": "ExitCode", "duration_ms": 1400}]}],
        });
        let (c, st, f) = (
            short_time("2026-11-27T08:00:00.000Z"),
            short_time("2026-11-27T08:00:00.100Z"),
            short_time("2026-11-27T08:00:01.600Z"),
        );
        assert_eq!(
            run_details(&detail(report.clone())),
            format!(
                "run 12  failed  1.5s\n\
             workflow: deploy\n\
             repo: app\n\
             trigger: manual commit=abc\n\
             created: {c}  started: {st}  finished: {f}\n\
             error: step `b` failed\n\
             \n\
             STAGE  STEP  STATUS     ATTEMPTS  EXIT  ERROR     DURATION\n\
             build  a     succeeded  1         0     -         20ms\n\
             build  b     failed     3         2     ExitCode  1.4s\n"
            )
        );
    }

    /// Guards `agent runs RUN` for a step `name:` and a tolerated failure.
    #[test]
    fn run_details_show_names_and_tolerated_failures() {
        let report = json!({
            "run_id": "3", "workflow": "w", "repo": "app", "status": "succeeded",
            "duration_ms": 50, "error": null,
            "trigger": {"kind": "manual", "commit": null, "branch": null, "scheduled_for": null},
            "created_at": "2026-11-27T08:00:00.000Z", "started_at": "2026-11-27T08:00:00.000Z",
            "finished_at": "2026-11-27T08:00:00.050Z",
            "stages": [{"name": "s", "status": "failed", "steps": [
                {"id": "probe", "name": "Probe", "status": "failed", "continued": true,
                 "attempts": 1, "exit_code": 3, "error_class": "ExitCode", "duration_ms": 10},
                {"id": "b", "status": "succeeded", "attempts": 1, "exit_code": 0,
                 "error_class": null, "duration_ms": 20}]}],
        });
        let text = run_details(&detail(report.clone()));
        assert!(
            text.ends_with(
                "STAGE  STEP   NAME   STATUS              ATTEMPTS  EXIT  ERROR     DURATION\n\
                 s      probe  Probe  failed (continued)  1         3     ExitCode  10ms\n\
                 s      b      -      succeeded           1         0     -         20ms\n"
            ),
            "{text}"
        );
    }

    /// A finished run's report nests a called workflow's steps under their call; the client
    /// lists them (with the ids their logs have), then compensation and rollback steps, and
    /// recaps the failed ones without their calls.
    #[test]
    fn nested_and_cleanup_steps_are_listed_in_order() {
        let step = |id: &str, status: &str| json!({"id": id, "status": status});
        let mut call = step("ci", "failed");
        call["workflow"] = json!({"name": "ci", "status": "failed", "stages": [
            {"name": "test", "status": "failed", "steps": [step("unit", "failed"), step("lint", "succeeded")]}
        ], "rollback": null, "compensated": [], "error": "x"});
        let report = json!({
            "stages": [{"name": "build", "status": "failed", "steps": [step("a", "succeeded"), call, step("b", "failed")]}],
            "compensation": [step("undo_a", "succeeded")],
            "rollback": {"status": "failed", "steps": [step("restore", "failed")]},
        });
        let steps = report_steps(&detail(report.clone()).report);
        let got: Vec<(String, String)> = steps
            .iter()
            .map(|(section, s)| (section.clone(), s.id.clone()))
            .collect();
        let want = [
            ("build", "a"),
            ("build", "ci"),
            ("ci/test", "ci/unit"),
            ("ci/test", "ci/lint"),
            ("build", "b"),
            ("compensation", "undo_a"),
            ("rollback", "restore"),
        ];
        assert_eq!(
            got,
            want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
        );
        let failed: Vec<&str> = failed_steps(&steps).iter().map(|s| s.id.as_str()).collect();
        assert_eq!(failed, ["ci/unit", "b", "restore"]);
        assert!(is_call(&steps[1].1) && !is_call(&steps[0].1));
        let details = run_details(&detail(report.clone()));
        assert!(details.contains("ci/test       ci/unit "), "{details}");
        assert!(details.contains("rollback      restore "), "{details}");
    }

    #[test]
    fn deliveries_table_with_attempts() {
        let list = vec![json!({
            "id": "0b6a-1", "webhook": "chat", "event": "run.failed", "run_id": "4",
            "status": "delivered", "attempts": 2, "created_at": "2026-11-27T08:00:01.250Z",
            "last_error": "HTTP 500", "history": [
                {"attempt": 1, "at": "2026-11-27T08:00:01.300Z", "status_code": 500,
                 "error": "HTTP 500"},
                {"attempt": 2, "at": "2026-11-27T08:00:02.300Z", "status_code": 200,
                 "error": null}]
        })];
        let at = short_time("2026-11-27T08:00:01.250Z");
        let pad = " ".repeat(at.len().saturating_sub("CREATED".len()));
        assert_eq!(
            deliveries_table(&deliveries(&list), false),
            format!(
                "DELIVERY  WEBHOOK  EVENT       RUN  STATUS     ATTEMPTS  HTTP  CREATED{pad}  ERROR\n\
                 0b6a-1    chat     run.failed  4    delivered  2         200   {at}  HTTP 500\n"
            )
        );
        let with = deliveries_table(&deliveries(&list), true);
        assert!(with.contains("  #1"), "{with}");
        let first = short_time("2026-11-27T08:00:01.300Z");
        assert!(with.contains(&format!("500   {first}  HTTP 500")), "{with}");
    }

    #[test]
    fn durations_and_tables() {
        assert_eq!(human_duration(None), "-");
        assert_eq!(human_duration(Some(850)), "850ms");
        assert_eq!(human_duration(Some(12_340)), "12.3s");
        assert_eq!(human_duration(Some(245_000)), "4m05s");
        assert_eq!(human_duration(Some(7_380_000)), "2h03m");
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
        assert_eq!(super::super::http::encode("a b/c"), "a%20b%2Fc");
    }
}
