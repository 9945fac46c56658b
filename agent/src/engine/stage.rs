//! Scheduling inside one stage: `parallel: false` runs the steps one after another in file
//! order; `parallel: true` runs up to `max_parallel` at once; `parallel: auto` starts a
//! step as soon as the siblings it depends on (`needs` and `${{ steps.X }}`) are done, up
//! to `max_parallel`. Admission (CPU/memory) applies on top, inside each step.
//!
//! All step futures of a stage are polled by the run's own task (no task or thread per
//! step).
//!
//! A stage with `matrix:` runs once per instance (see `matrix.rs`): each instance is this
//! same scheduling over a copy of the stage named `NAME (k=v, ...)`.

use std::time::Instant;

use dsl::model::{Parallelism, Stage};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::Cancel;
use super::events::EngineEvent;
use super::matrix;
use super::run_ctx::{RunCtx, Slot, stage_status};
use super::step;
use crate::model::report::StepStatus;

/// Indices of the siblings each step waits for (only in `parallel: auto`).
fn dependencies(stage: &Stage) -> Vec<Vec<usize>> {
    if stage.parallel.value != Parallelism::Auto {
        return vec![Vec::new(); stage.steps.len()];
    }
    stage.sibling_dependencies()
}

/// Starts step `i` of the stage (a matrix step through `matrix.rs`). `instance`: the cancel
/// handle of the stage-matrix instance the stage is; its steps are then judged by their
/// own instance's failures, not by those of the instances beside it.
fn start<'a>(
    ctx: &'a RunCtx<'a>,
    stage: &'a Stage,
    s: &'a dsl::model::Step,
    index: usize,
    i: usize,
    instance: Option<&'a Cancel>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = StepStatus> + Send + 'a>> {
    let slot = Slot::Stage {
        stage: index,
        index: i,
    };
    let own = instance.filter(|_| !matrix::instance_failed(ctx, index));
    if s.matrix.is_some() {
        let limit = stage.max_parallel.value.max(1) as usize;
        Box::pin(matrix::run_matrix_step(
            ctx,
            s,
            slot,
            limit,
            own.unwrap_or(&ctx.cancel),
            own.is_none(),
        ))
    } else {
        match own {
            Some(cancel) => step::run_instance(ctx, s, slot, cancel),
            None => step::run_step(ctx, s, slot),
        }
    }
}

/// Runs one stage to the end (a matrix stage once per instance).
pub(crate) async fn run_stage(ctx: &RunCtx<'_>, index: usize, stage: &Stage) {
    if stage.matrix.is_some() {
        matrix::run_matrix_stage(ctx, index, stage).await;
    } else {
        run_stage_as(ctx, index, stage, None).await;
    }
}

/// Runs `stage` to the end with its report at `index` of the run's stages; `instance`: the
/// cancel handle when the stage is an instance of a matrix stage. Returns the stage's
/// status and whether it failed only through failures the run tolerated.
pub(crate) async fn run_stage_as(
    ctx: &RunCtx<'_>,
    index: usize,
    stage: &Stage,
    instance: Option<&Cancel>,
) -> (StepStatus, bool) {
    let t0 = Instant::now();
    // Inside a sub-workflow the stage is shown under the calling step (`call/stage`).
    let name: std::sync::Arc<str> = if ctx.prefix.is_empty() {
        std::sync::Arc::from(stage.name.value.as_str())
    } else {
        std::sync::Arc::from(format!("{}{}", ctx.prefix, stage.name.value))
    };
    ctx.events.emit(|| EngineEvent::StageStarted {
        run_id: ctx.run_id.clone(),
        stage: name.clone(),
        steps: stage.steps.len(),
    });
    let n = stage.steps.len();
    let limit = match stage.parallel.value {
        Parallelism::Sequential => 1,
        _ => stage.max_parallel.value.max(1) as usize,
    };
    let deps = dependencies(stage);
    let mut started = vec![false; n];
    let mut done = vec![false; n];
    let mut first_unstarted = 0;
    let mut running = FuturesUnordered::new();
    loop {
        // Start every ready step, in file order, while there is room.
        let mut i = first_unstarted;
        while i < n && running.len() < limit {
            if !started[i] && deps[i].iter().all(|&d| done[d]) {
                started[i] = true;
                let s = &stage.steps[i];
                let fut = start(ctx, stage, s, index, i, instance);
                running.push(async move {
                    fut.await;
                    i
                });
            }
            i += 1;
        }
        while first_unstarted < n && started[first_unstarted] {
            first_unstarted += 1;
        }
        match running.next().await {
            Some(i) => done[i] = true,
            None => {
                if first_unstarted >= n {
                    break;
                }
                // Unreachable for a validated file (no cycles); do not hang if it happens.
                for (i, s) in started.iter_mut().enumerate() {
                    if !*s {
                        *s = true;
                        start(ctx, stage, &stage.steps[i], index, i, instance).await;
                    }
                }
                break;
            }
        }
    }
    matrix::place_instances(ctx, index);
    let (status, continued) = {
        let mut st = ctx.state();
        match st.stages.get_mut(index) {
            Some(rep) => {
                rep.status = stage_status(&rep.steps, true);
                let continued = rep.status == StepStatus::Failed
                    && rep
                        .steps
                        .iter()
                        .all(|s| s.status != StepStatus::Failed || s.continued);
                (rep.status, continued)
            }
            None => (StepStatus::Succeeded, false),
        }
    };
    ctx.events.emit(|| EngineEvent::StageFinished {
        run_id: ctx.run_id.clone(),
        stage: name,
        status,
        continued,
        duration: t0.elapsed(),
    });
    (status, continued)
}
