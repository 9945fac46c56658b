//! Matrix steps: a step with `matrix:` runs once per instance of its matrix.
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

use super::failure::Disposition;
use super::run_ctx::{RunCtx, Slot};
use super::scope::has_status_fn;
use super::step;
use crate::model::report::{StepReport, StepStatus};

/// Runs a stage step that has a `matrix:`; `default_limit` is the instances at once when
/// the matrix sets no `max_parallel`.
pub(crate) async fn run_matrix_step(
    ctx: &RunCtx<'_>,
    step: &Step,
    slot: Slot,
    default_limit: usize,
) -> StepStatus {
    let (Some(matrix), Slot::Stage { stage, index }) = (&step.matrix, slot) else {
        return step::run_step(ctx, step, slot).await;
    };
    let id = &step.id.value;
    // The matrix step as a whole passes the gates a plain step does; when it would not
    // run, it is judged (skipped or cancelled) under its own id.
    let explicit = step.when.as_ref().is_some_and(|w| has_status_fn(&w.text));
    let gated = !explicit
        && (ctx.cancel.is_cancelled()
            || ctx.deadline_passed()
            || ctx.data().job_status() != JobStatus::Success);
    if gated || ctx.resume.contains_key(id) {
        return step::run_step(ctx, step, slot).await;
    }
    let instances = {
        let data = ctx.data();
        matrix.instances(&data.view(&ctx.workdir))
    };
    let instances = match instances {
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
    let cancel = ctx.cancel.child();
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

/// A `matrix:` on a stage is not expanded yet: it fails the run with a precise message
/// before the stage's steps (which are then skipped) instead of letting `${{ matrix }}`
/// fail in each of them.
pub(crate) fn refuse_stage_matrix(ctx: &RunCtx<'_>, stage: &dsl::model::Stage) {
    if stage.matrix.is_none() || ctx.data().job_status() != JobStatus::Success {
        return;
    }
    let name = &stage.name.value;
    ctx.apply(
        Disposition::Abort,
        name,
        "ValidationError",
        &format!(
            "stage `{name}`: a matrix on a stage is not supported yet; put the matrix on its steps"
        ),
    );
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
    let mut data = ctx.data();
    let mut list = Vec::with_capacity(steps.len());
    let mut by_id = Map::new();
    let mut statuses = Vec::with_capacity(steps.len());
    let mut error_class = Value::Null;
    for (s, inst) in steps.iter().zip(instances) {
        let iid = &s.id.value;
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
    if let Some(Value::Object(all)) = data.roots.get_mut("steps") {
        all.insert(step.id.value.clone(), Value::Object(entry));
    }
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
