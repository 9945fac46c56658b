//! Matrix steps and stages: a step with `matrix:` runs once per instance of its matrix
//! (below); a stage with `matrix:` runs all its steps once per instance
//! ([`run_matrix_stage`]).
//!
//! - The instances are computed when the step is reached ([`dsl::model::Matrix::instances`]:
//!   a dynamic matrix reads earlier steps' outputs). A matrix that cannot be expanded fails
//!   the step (`ExpressionError` for an expression, `ValidationError` for a bad shape).
//! - Each instance is the step with the id `ID (k=v, ...)` and `${{ matrix.K }}` set; it is
//!   a step of its own in events, logs and the report (with its `matrix` values), in the
//!   stage's list of steps where the matrix step stands, in instance order.
//! - At most `max_parallel` instances run at once (default: the stage's `max_parallel`),
//!   admission applying on top. With `fail_fast` (the default) the first instance that
//!   fails (a failure the run tolerates with `continue` excepted) cancels the instances
//!   still running and those not yet started: they report `cancelled`.
//! - Afterwards `steps.ID` holds the aggregate: `status` (failed if any instance failed,
//!   else cancelled if any was, skipped if all were, else succeeded), `outputs` (and
//!   `output`): the instances' outputs as a list in instance order, and `instances`: a map
//!   from instance id to `{status, outputs, output, exit_code, error_class, matrix}`.

use dsl::expr::JobStatus;
use dsl::matrix::{MatrixError, MatrixInstance};
use dsl::model::Step;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Map, Value};

use super::Cancel;
use super::failure::Disposition;
use super::run_ctx::{RunCtx, Slot};
use super::scope::{RunData, has_status_fn};
use super::{stage, step};
use crate::model::report::{StageReport, StepReport, StepStatus};

/// Runs a stage step that has a `matrix:`; `default_limit` is the instances at once when
/// the matrix sets no `max_parallel`. `parent`: the cancel handle the step runs under (the
/// run's, or that of the stage-matrix instance it is in); `gate_on_job`: whether a failed
/// job status keeps it from running (not inside a stage-matrix instance, where only its own
/// instance's failures count).
pub(crate) async fn run_matrix_step(
    ctx: &RunCtx<'_>,
    step: &Step,
    slot: Slot,
    default_limit: usize,
    parent: &Cancel,
    gate_on_job: bool,
) -> StepStatus {
    let (Some(matrix), Slot::Stage { stage, index }) = (&step.matrix, slot) else {
        return step::run_step(ctx, step, slot).await;
    };
    let id = &step.id.value;
    // The matrix step as a whole passes the gates a plain step does; when it would not
    // run, it is judged (skipped or cancelled) under its own id.
    let explicit = step.when.as_ref().is_some_and(|w| has_status_fn(&w.text));
    let gated = !explicit
        && (parent.is_cancelled()
            || ctx.deadline_passed()
            || (gate_on_job && ctx.data().job_status() != JobStatus::Success));
    if gated || ctx.resume.contains_key(id) {
        return step::run_step(ctx, step, slot).await;
    }
    // Inside a stage-matrix instance the stage's values come first, then the step's own.
    let (instances, outer) = {
        let data = ctx.data();
        (
            matrix.instances(&data.step_view(&ctx.workdir, id)),
            data.matrix.get(id).and_then(Value::as_object).cloned(),
        )
    };
    let mut instances = match instances {
        Ok(i) => i,
        Err(e) => return expansion_failed(ctx, step, slot, &e),
    };
    let steps: Vec<Step> = instances
        .iter()
        .map(|inst| {
            let mut s = step.clone();
            s.id.value = inst.id(id);
            s.matrix = None;
            s
        })
        .collect();
    if let Some(outer) = outer {
        for inst in &mut instances {
            let mut values = outer.clone();
            values.extend(std::mem::take(&mut inst.values));
            inst.values = values;
        }
    }
    {
        let mut data = ctx.data();
        for (s, inst) in steps.iter().zip(&instances) {
            data.matrix.insert(s.id.value.clone(), inst.to_json());
        }
    }
    let limit = matrix
        .max_parallel
        .as_ref()
        .map_or(default_limit, |m| m.value as usize)
        .max(1);
    let cancel = parent.child();
    let mut running = FuturesUnordered::new();
    let mut next = 0;
    loop {
        while next < steps.len() && running.len() < limit {
            let pos = next;
            let fut = step::run_instance(
                ctx,
                &steps[pos],
                Slot::Instance { stage, index, pos },
                &cancel,
            );
            running.push(async move { (pos, fut.await) });
            next += 1;
        }
        let Some((pos, status)) = running.next().await else {
            break;
        };
        if matrix.fail_fast && status == StepStatus::Failed && !continued(ctx, &steps[pos].id.value)
        {
            cancel.request();
        }
    }
    aggregate(ctx, step, &steps, &instances)
}

/// Whether the failure of instance `iid` was one the run tolerated.
fn continued(ctx: &RunCtx<'_>, iid: &str) -> bool {
    ctx.state()
        .instances
        .iter()
        .any(|(_, _, _, r)| r.id == iid && r.continued)
}

/// Records a matrix that could not be expanded as the step's failure.
fn expansion_failed(ctx: &RunCtx<'_>, step: &Step, slot: Slot, e: &MatrixError) -> StepStatus {
    let id = &step.id.value;
    let class = match e {
        MatrixError::Invalid(t) if t.starts_with("`matrix`: ") => "ExpressionError",
        _ => "ValidationError",
    };
    let message = format!("step `{id}`: `matrix`: {e}");
    let disposition: Disposition = step.on_failure.value.into();
    let mut report = StepReport::pending(id.clone());
    report.name = step.name.as_ref().map(|n| n.value.clone());
    report.status = StepStatus::Failed;
    report.error_class = Some(class.to_string());
    report.continued = disposition == Disposition::Continue;
    ctx.data()
        .record_step_result(id, "failed", Map::new(), None, Some(class));
    ctx.apply(disposition, id, class, &message);
    step::finish(ctx, slot, &ctx.event_id(id), report);
    StepStatus::Failed
}

/// Builds `steps.ID` from the instances' results and returns the matrix step's status.
fn aggregate(
    ctx: &RunCtx<'_>,
    step: &Step,
    steps: &[Step],
    instances: &[MatrixInstance],
) -> StepStatus {
    {
        let mut st = ctx.state();
        for (_, _, pos, r) in st.instances.iter_mut() {
            if steps.get(*pos).is_some_and(|s| s.id.value == r.id) {
                r.matrix = instances.get(*pos).map(|i| Box::new(i.values.clone()));
            }
        }
    }
    let ids: Vec<String> = steps.iter().map(|s| s.id.value.clone()).collect();
    aggregate_entries(&mut ctx.data(), &step.id.value, &ids, instances, &[])
}

/// Replaces the `steps` entries of the instances `ids` (in instance order) by the entry
/// `steps.ID` of their aggregate, and returns its status. `aliases` (the stage instance
/// ids of a matrix stage, in the same order) are further keys of `instances`.
fn aggregate_entries(
    data: &mut RunData,
    id: &str,
    ids: &[String],
    instances: &[MatrixInstance],
    aliases: &[String],
) -> StepStatus {
    let mut list = Vec::with_capacity(ids.len());
    let mut by_id = Map::new();
    let mut statuses = Vec::with_capacity(ids.len());
    let mut error_class = Value::Null;
    for (iid, inst) in ids.iter().zip(instances) {
        data.matrix.remove(iid);
        let entry = match data.roots.get_mut("steps") {
            Some(Value::Object(all)) => all.remove(iid),
            _ => None,
        };
        let mut entry = match entry {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let status = entry
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("skipped")
            .to_string();
        if status == "failed" && error_class.is_null() {
            error_class = entry.get("error_class").cloned().unwrap_or(Value::Null);
        }
        statuses.push(status);
        list.push(
            entry
                .get("outputs")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new())),
        );
        entry.insert("matrix".into(), inst.to_json());
        by_id.insert(iid.clone(), Value::Object(entry));
    }
    for (alias, iid) in aliases.iter().zip(ids) {
        if !by_id.contains_key(alias)
            && let Some(entry) = by_id.get(iid).cloned()
        {
            by_id.insert(alias.clone(), entry);
        }
    }
    let has = |s: &str| statuses.iter().any(|x| x == s);
    let status = if has("failed") {
        StepStatus::Failed
    } else if has("cancelled") {
        StepStatus::Cancelled
    } else if !statuses.is_empty() && statuses.iter().all(|s| s == "skipped") {
        StepStatus::Skipped
    } else {
        StepStatus::Succeeded
    };
    let mut entry = Map::new();
    entry.insert("status".into(), Value::String(status.as_str().to_string()));
    entry.insert("outputs".into(), Value::Array(list.clone()));
    entry.insert("output".into(), Value::Array(list));
    entry.insert("exit_code".into(), Value::Null);
    entry.insert("error_class".into(), error_class);
    entry.insert("instances".into(), Value::Object(by_id));
    data.record_entry(id, Value::Object(entry));
    status
}

/// Puts the instance reports of stage `stage`'s matrix steps in their steps' places (in
/// instance order), once the stage has ended.
pub(crate) fn place_instances(ctx: &RunCtx<'_>, stage: usize) {
    let mut st = ctx.state();
    let (mut mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.instances)
        .into_iter()
        .partition(|(s, _, _, _)| *s == stage);
    st.instances = rest;
    if mine.is_empty() {
        return;
    }
    // Last step first, so that the earlier indices stay valid.
    mine.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
    let Some(rep) = st.stages.get_mut(stage) else {
        return;
    };
    let mut i = 0;
    while i < mine.len() {
        let index = mine[i].1;
        let mut j = i;
        while j < mine.len() && mine[j].1 == index {
            j += 1;
        }
        let group: Vec<StepReport> = mine[i..j]
            .iter_mut()
            .map(|(_, _, _, r)| std::mem::replace(r, StepReport::pending(String::new())))
            .collect();
        if index < rep.steps.len() {
            rep.steps.splice(index..=index, group);
        }
        i = j;
    }
}

/// Whether a step of the stage whose report is at `index` failed in a way the run does not
/// tolerate (for a stage-matrix instance: its later steps are then skipped).
pub(crate) fn instance_failed(ctx: &RunCtx<'_>, index: usize) -> bool {
    let st = ctx.state();
    let bad = |r: &StepReport| r.status == StepStatus::Failed && !r.continued;
    st.stages
        .get(index)
        .is_some_and(|s| s.steps.iter().any(bad))
        || st
            .instances
            .iter()
            .any(|(s, _, _, r)| *s == index && bad(r))
}

/// Gives `step` and the steps inside it (decision branches, `compensate`) the ids of
/// instance `inst`, calling `each(id in the file, step)` for every one renamed.
fn rename_steps(step: &mut Step, inst: &MatrixInstance, each: &mut dyn FnMut(&str, &Step)) {
    let base = std::mem::take(&mut step.id.value);
    step.id.value = inst.id(&base);
    if let dsl::model::StepKind::Decision(d) = &mut step.kind {
        for b in &mut d.branches {
            for s in &mut b.steps {
                rename_steps(s, inst, each);
            }
        }
    }
    for s in &mut step.compensate {
        rename_steps(s, inst, each);
    }
    each(&base, step);
}

/// The ids in the file of the steps of `stage` whose results are aggregated after a
/// matrix stage: its steps and those of their decision branches.
fn stage_step_ids(stage: &dsl::model::Stage) -> Vec<String> {
    fn walk(steps: &[Step], out: &mut Vec<String>) {
        for s in steps {
            out.push(s.id.value.clone());
            if let dsl::model::StepKind::Decision(d) = &s.kind {
                for b in &d.branches {
                    walk(&b.steps, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&stage.steps, &mut out);
    out
}

/// Runs a stage that has a `matrix:` once per instance.
///
/// - The instances are computed when the stage starts (a dynamic matrix reads earlier
///   steps' outputs); a matrix that cannot be expanded fails the run before the stage's
///   steps, which are then skipped.
/// - Instance `NAME (k=v, ...)` is a stage of its own in events, the progress view and the
///   report (listed where the matrix stage stands, in instance order); its steps have the
///   ids `ID (k=v, ...)` and the `matrix` values in their reports, see `${{ matrix.K }}`,
///   and read `${{ steps.X }}` of a sibling as that of their own instance. A step failing
///   skips the later steps of its instance only.
/// - At most `max_parallel` instances run at once (default: the stage's `max_parallel`).
///   With `fail_fast` (the default) the first instance that fails (a failure the run
///   tolerates excepted) cancels the others, running or not yet started.
/// - Afterwards `steps.ID` of each of the stage's steps is the aggregate of its instances,
///   as for a matrix step: `outputs` as a list in instance order and `instances` by the
///   step's instance id (`ID (k=v, ...)`) and by the stage's (`NAME (k=v, ...)`).
/// - A finished instance step is recorded under its own id, so a resumed run takes it over
///   instead of running it again; a succeeded instance step with `compensate` is undone
///   like any other step.
pub(crate) async fn run_matrix_stage(ctx: &RunCtx<'_>, index: usize, stage: &dsl::model::Stage) {
    let Some(matrix) = &stage.matrix else {
        stage::run_stage_as(ctx, index, stage, None).await;
        return;
    };
    let name = &stage.name.value;
    // A stage that would not run is judged (skipped or cancelled) under its own name.
    if ctx.cancel.is_cancelled() || ctx.data().job_status() != JobStatus::Success {
        stage::run_stage_as(ctx, index, stage, None).await;
        return;
    }
    let instances = {
        let data = ctx.data();
        matrix.instances(&data.view(&ctx.workdir))
    };
    let instances = match instances {
        Ok(i) => i,
        Err(e) => {
            let class = match &e {
                MatrixError::Invalid(t) if t.starts_with("`matrix`: ") => "ExpressionError",
                _ => "ValidationError",
            };
            ctx.apply(
                Disposition::Abort,
                name,
                class,
                &format!("stage `{name}`: `matrix`: {e}"),
            );
            stage::run_stage_as(ctx, index, stage, None).await;
            return;
        }
    };
    let mut copies: Vec<dsl::model::Stage> = Vec::with_capacity(instances.len());
    {
        let mut data = ctx.data();
        let mut st = ctx.state();
        let steps_now = data
            .roots
            .get("steps")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        for inst in &instances {
            let mut copy = stage.clone();
            copy.matrix = None;
            copy.name.value = inst.id(name);
            let group = copy.name.value.clone();
            data.group_steps.insert(group.clone(), steps_now.clone());
            for s in &mut copy.steps {
                rename_steps(s, inst, &mut |base, renamed| {
                    let iid = renamed.id.value.clone();
                    data.matrix.insert(iid.clone(), inst.to_json());
                    data.groups
                        .insert(iid.clone(), (group.clone(), base.to_string()));
                    if !renamed.compensate.is_empty() {
                        st.instance_steps.insert(iid, renamed.clone());
                    }
                });
            }
            copies.push(copy);
        }
    }
    // Each instance's report is kept past the run's stages while it runs, then set aside
    // to take the matrix stage's place at the end.
    let first = {
        let mut st = ctx.state();
        let first = st.stages.len();
        for (copy, inst) in copies.iter().zip(&instances) {
            st.stages.push(StageReport {
                name: copy.name.value.clone(),
                status: StepStatus::Pending,
                steps: copy
                    .steps
                    .iter()
                    .map(|s| StepReport {
                        name: s.name.as_ref().map(|n| n.value.clone()),
                        matrix: Some(Box::new(inst.values.clone())),
                        ..StepReport::pending(s.id.value.clone())
                    })
                    .collect(),
            });
        }
        first
    };
    let limit = matrix
        .max_parallel
        .as_ref()
        .map_or(stage.max_parallel.value as usize, |m| m.value as usize)
        .max(1);
    let cancel = ctx.cancel.child();
    let mut running = FuturesUnordered::new();
    let mut next = 0;
    loop {
        while next < copies.len() && running.len() < limit {
            let fut = stage::run_stage_as(ctx, first + next, &copies[next], Some(&cancel));
            running.push(fut);
            next += 1;
        }
        let Some((status, continued)) = running.next().await else {
            break;
        };
        if matrix.fail_fast && status == StepStatus::Failed && !continued {
            cancel.request();
        }
    }
    {
        let mut st = ctx.state();
        let mut reports: Vec<StageReport> = st.stages.drain(first..).collect();
        for (rep, inst) in reports.iter_mut().zip(&instances) {
            for s in &mut rep.steps {
                if s.matrix.is_none() {
                    s.matrix = Some(Box::new(inst.values.clone()));
                }
            }
        }
        if let Some(rep) = st.stages.get_mut(index) {
            rep.status = super::run_ctx::stage_status(
                &reports
                    .iter()
                    .map(|r| StepReport {
                        status: r.status,
                        ..StepReport::pending(r.name.clone())
                    })
                    .collect::<Vec<_>>(),
                true,
            );
        }
        st.expanded.push((index, reports));
    }
    let names: Vec<String> = copies.iter().map(|c| c.name.value.clone()).collect();
    let mut data = ctx.data();
    for id in stage_step_ids(stage) {
        let ids: Vec<String> = instances.iter().map(|i| i.id(&id)).collect();
        aggregate_entries(&mut data, &id, &ids, &instances, &names);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::engine::{Engine, EngineConfig, RunRequest, RunStatus};
    use crate::model::report::{StepReport, StepStatus};

    fn request(yaml: &str, workdir: &std::path::Path) -> RunRequest {
        crate::engine::test_request(yaml, workdir)
    }

    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    }

    /// Guards crash resume of matrix stages: an instance step that succeeded before the
    /// interruption (recorded under its instance id) is taken over, not run again (here it
    /// would fail if it ran), its outputs still reach the aggregate; the others run.
    #[test]
    fn a_resumed_run_does_not_rerun_finished_stage_instances() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new(EngineConfig::default());
        let mut prior = StepReport::pending("t (n=1)");
        prior.status = StepStatus::Succeeded;
        prior.attempts = 1;
        prior.outputs.insert("v".into(), Value::from("old"));
        let req = RunRequest {
            trigger: "retry".into(),
            attempt: 2,
            resume: vec![prior.clone()],
            ..request(
                "workflow:\n  name: w\n  stages:\n    - name: s\n      matrix:\n        n: [1, 2]\n      steps:\n        - id: t\n          run: |\n            test \"${{ matrix.n }}\" != 1\n            echo v=new >> \"$AGENT_OUTPUT\"\n    - name: u\n      steps:\n        - id: sum\n          run: test \"${{ steps.t.outputs[0].v }}${{ steps.t.outputs[1].v }}\" = oldnew\n",
                dir.path(),
            )
        };
        let result = block_on(engine.run(req));
        let r = &result.report;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        assert_eq!(r.stages[0].name, "s (n=1)");
        assert_eq!(r.stages[0].steps[0].id, "t (n=1)");
        assert_eq!(r.stages[0].steps[0].attempts, 1);
        assert_eq!(r.stages[0].steps[0].outputs, prior.outputs);
        assert_eq!(r.stages[1].name, "s (n=2)");
        assert_eq!(r.stages[1].steps[0].status, StepStatus::Succeeded);
        assert_eq!(r.stages[1].steps[0].outputs["v"], "new");
    }
}
