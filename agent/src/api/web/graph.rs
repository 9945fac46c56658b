//! The run page's two drawings, as SVG built on the server from the run report, the
//! workflow's definition (when the run's commit is still in the mirror) and the recorded
//! attempts:
//!
//! - the graph: stages as columns in order, joined by an edge; inside a stage the steps as
//!   boxes with edges for what orders them (`parallel: false`: each after the one before;
//!   `parallel: auto`: the `needs` and `${{ steps.X }}` of siblings, laid out in layers);
//!   sub-workflow calls as boxes holding their own steps; the rollback and compensation
//!   steps in a lane of their own. Each box shows its status and time.
//! - the timeline: one bar per step attempt on a shared time axis, with the wait for
//!   admission before the first attempt, the retry backoff between attempts and attempts cut
//!   off by their timeout drawn apart, and the critical path (from the step that ended
//!   last, back through what it waited for) highlighted.
//!
//! Every text is escaped here (the SVG is inserted as it is into the page).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::form::encode;
use super::templates::{defang_str, duration, status_icon};

/// Escapes text for SVG/HTML content and attributes.
pub(super) fn esc(s: &str) -> String {
    let s = defang_str(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A step as drawn.
#[derive(Debug, Clone)]
pub(super) struct StepView {
    /// Its id.
    pub(crate) id: String,
    /// Its status.
    pub(crate) status: String,
    /// The lane: a stage name, or `rollback` / `compensation`.
    pub(crate) lane: String,
    /// True for rollback and compensation steps.
    pub(crate) undo: bool,
    /// The step's record.
    pub(crate) json: Value,
}

/// Every step of a report in order: the stages', then rollback, then compensation.
pub(super) fn steps(report: &Value) -> Vec<StepView> {
    let mut out = Vec::new();
    let mut push = |lane: &str, undo: bool, s: &Value| {
        out.push(StepView {
            id: str_of(s, "id").to_string(),
            status: str_of(s, "status").to_string(),
            lane: lane.to_string(),
            undo,
            json: s.clone(),
        });
    };
    for stage in report
        .get("stages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = str_of(stage, "name");
        for s in stage
            .get("steps")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            push(name, false, s);
        }
    }
    for s in report
        .pointer("/rollback/steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push("rollback", true, s);
    }
    for s in report
        .get("compensation")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push("compensation", true, s);
    }
    out
}

/// The step a run page focuses by default: the first failed step whose failure was not
/// tolerated, else a running one, else the first.
pub(super) fn default_focus(steps: &[StepView]) -> Option<String> {
    let failed = steps.iter().find(|s| {
        !s.undo
            && s.status == "failed"
            && !s
                .json
                .get("continued")
                .and_then(Value::as_bool)
                .unwrap_or(false)
    });
    failed
        .or_else(|| steps.iter().find(|s| s.status == "failed"))
        .or_else(|| steps.iter().find(|s| s.status == "running"))
        .or_else(|| steps.first())
        .map(|s| s.id.clone())
}

/// How a stage orders its steps (`parallel:`), when the definition is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// One after another (`parallel: false`).
    Sequential,
    /// All at once (`parallel: true`).
    Parallel,
    /// As their dependencies allow (`parallel: auto`).
    Auto,
}

/// What the workflow's definition says about the order of its steps. Empty when the
/// definition could not be read (then only the stage order is drawn).
#[derive(Debug, Clone, Default)]
pub(super) struct Plan {
    /// Each stage's order, by stage name.
    pub(crate) stages: HashMap<String, Order>,
    /// In `parallel: auto` stages: each step's sibling dependencies, by step id.
    pub(crate) deps: HashMap<String, Vec<String>>,
}

impl Plan {
    /// The plan of a workflow definition.
    pub(super) fn of(wf: &dsl::Workflow) -> Plan {
        let mut plan = Plan::default();
        for stage in &wf.stages {
            let order = match stage.parallel.value {
                dsl::model::Parallelism::Sequential => Order::Sequential,
                dsl::model::Parallelism::Parallel => Order::Parallel,
                dsl::model::Parallelism::Auto => Order::Auto,
            };
            plan.stages.insert(stage.name.value.clone(), order);
            if order == Order::Auto {
                for (step, deps) in stage.steps.iter().zip(stage.sibling_dependencies()) {
                    plan.deps.insert(
                        step.id.value.clone(),
                        deps.iter()
                            .map(|&j| stage.steps[j].id.value.clone())
                            .collect(),
                    );
                }
            }
        }
        plan
    }
}

/// One recorded attempt of a step.
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    /// From 1.
    pub(crate) number: u32,
    /// How it went.
    pub(crate) status: String,
    /// The error class of a failed attempt.
    pub(crate) error_class: Option<String>,
    /// When its process started.
    pub(crate) start: DateTime<Utc>,
    /// When it ended (none while it runs).
    pub(crate) end: Option<DateTime<Utc>>,
}

impl Attempt {
    /// True for an attempt cut off by its timeout.
    fn timed_out(&self) -> bool {
        self.error_class
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("timeout"))
    }
}

/// The definition id of a report step: a matrix instance `ID (k=v, ...)` is step `ID`.
fn def_id<'a>(plan: &Plan, id: &'a str) -> &'a str {
    if plan.deps.contains_key(id) {
        return id;
    }
    match id.find(" (") {
        Some(at) if id.ends_with(')') => &id[..at],
        _ => id,
    }
}

/// The steps' order as drawn: lanes (stages in order, then the undo lane), each step's
/// lane, layer inside its lane and what it waits for.
struct Layout {
    /// `(lane name, order, step indices)` of the stages, in order.
    lanes: Vec<(String, Option<Order>, Vec<usize>)>,
    /// The rollback and compensation steps, in order.
    undo: Vec<usize>,
    /// Each step's layer inside its lane (columns of a `parallel: auto` stage).
    layer: Vec<usize>,
    /// Edges inside a stage: `(from, to, sequential)`.
    edges: Vec<(usize, usize, bool)>,
    /// What each step waited for (the critical path walks back along these).
    preds: Vec<Vec<usize>>,
}

fn layout(steps: &[StepView], plan: &Plan) -> Layout {
    let mut lanes: Vec<(String, Option<Order>, Vec<usize>)> = Vec::new();
    let mut undo = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if s.undo {
            undo.push(i);
            continue;
        }
        match lanes.iter_mut().find(|(name, _, _)| *name == s.lane) {
            Some((_, _, list)) => list.push(i),
            None => lanes.push((s.lane.clone(), plan.stages.get(&s.lane).copied(), vec![i])),
        }
    }
    let mut layer = vec![0usize; steps.len()];
    let mut edges = Vec::new();
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    let mut previous: Vec<usize> = Vec::new();
    for (_, order, list) in &lanes {
        let mut inner: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
        match order {
            Some(Order::Sequential) => {
                for pair in list.windows(2) {
                    edges.push((pair[0], pair[1], true));
                    inner[pair[1]].push(pair[0]);
                }
            }
            Some(Order::Auto) => {
                for &i in list {
                    let wants = plan
                        .deps
                        .get(def_id(plan, &steps[i].id))
                        .cloned()
                        .unwrap_or_default();
                    for &j in list {
                        if j != i && wants.iter().any(|w| w == def_id(plan, &steps[j].id)) {
                            edges.push((j, i, false));
                            inner[i].push(j);
                        }
                    }
                }
                // Layers: one more than the deepest dependency (a cycle, which the
                // validator refuses, would just stop deepening).
                for _ in 0..list.len() {
                    for &i in list {
                        let l = inner[i].iter().map(|&j| layer[j] + 1).max().unwrap_or(0);
                        layer[i] = l.min(list.len());
                    }
                }
            }
            Some(Order::Parallel) | None => {}
        }
        for &i in list {
            preds[i] = if inner[i].is_empty() {
                previous.clone()
            } else {
                std::mem::take(&mut inner[i])
            };
        }
        previous = list.clone();
    }
    let main: Vec<usize> = lanes.iter().flat_map(|(_, _, l)| l.clone()).collect();
    for (k, &i) in undo.iter().enumerate() {
        preds[i] = if k == 0 {
            main.clone()
        } else {
            vec![undo[k - 1]]
        };
    }
    Layout {
        lanes,
        undo,
        layer,
        edges,
        preds,
    }
}

const COL: i64 = 210;
const BOX_W: i64 = 180;
const BOX_H: i64 = 46;
const GAP: i64 = 14;
const TOP: i64 = 34;
const INNER_H: i64 = 20;

/// The steps of a sub-workflow call, by stage: `(stage, [(id, status)])`.
fn called_steps(s: &StepView) -> Option<(String, Vec<(String, String)>)> {
    let called = s.json.get("workflow").filter(|w| w.is_object())?;
    let inner = called
        .get("stages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|st| {
            st.get("steps")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .map(|x| (str_of(x, "id").to_string(), str_of(x, "status").to_string()))
        .collect();
    Some((str_of(called, "name").to_string(), inner))
}

/// A box's height: a call's box holds its steps, two to a row.
fn node_height(s: &StepView) -> i64 {
    match called_steps(s) {
        Some((_, inner)) if !inner.is_empty() => {
            BOX_H + inner.len().div_ceil(2) as i64 * (INNER_H + 4) + 4
        }
        _ => BOX_H,
    }
}

fn node(out: &mut String, run: &str, s: &StepView, x: i64, y: i64, focus: &str) {
    let focused = if s.id == focus { " focus" } else { "" };
    let dur = s
        .json
        .get("duration_ms")
        .and_then(Value::as_i64)
        .map(duration)
        .unwrap_or_default();
    let mut second = format!("{} {}", status_icon(&s.status), s.status);
    if !dur.is_empty() {
        second.push_str(&format!(" · {dur}"));
    }
    if let Some(n) = s.json.get("attempts").and_then(Value::as_i64)
        && n > 1
    {
        second.push_str(&format!(" · ×{n}"));
    }
    let called = called_steps(s);
    let h = node_height(s);
    let call = if called.is_some() { " call" } else { "" };
    out.push_str(&format!(
        "<a href=\"/runs/{run}?step={}#log\" class=\"node st-{}{focused}{call}\" data-step=\"{}\">\
         <title>{} — {}</title>\
         <rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{h}\" rx=\"6\"/>\
         <text x=\"{}\" y=\"{}\" class=\"n\">{}</text>\
         <text x=\"{}\" y=\"{}\" class=\"s\">{}</text>",
        encode(&s.id),
        esc(&s.status),
        esc(&s.id),
        esc(&s.id),
        esc(&s.status),
        x + 10,
        y + 19,
        esc(&cut(&s.id, 22)),
        x + 10,
        y + 37,
        esc(&cut(&second, 28)),
    ));
    if let Some((name, inner)) = called {
        out.push_str(&format!(
            "<g class=\"sub\" data-workflow=\"{}\"><title>calls {}</title>",
            esc(&name),
            esc(&name)
        ));
        let w = (BOX_W - 24) / 2;
        for (k, (id, status)) in inner.iter().enumerate() {
            let ix = x + 8 + (k as i64 % 2) * (w + 8);
            let iy = y + BOX_H + (k as i64 / 2) * (INNER_H + 4);
            out.push_str(&format!(
                "<g class=\"inner st-{}\"><title>{} — {}</title>\
                 <rect x=\"{ix}\" y=\"{iy}\" width=\"{w}\" height=\"{INNER_H}\" rx=\"4\"/>\
                 <text x=\"{}\" y=\"{}\">{} {}</text></g>",
                esc(status),
                esc(id),
                esc(status),
                ix + 5,
                iy + 14,
                status_icon(status),
                esc(&cut(id, 10))
            ));
        }
        out.push_str("</g>");
    }
    out.push_str("</a>");
}

fn edge(out: &mut String, class: &str, from: (i64, i64), to: (i64, i64), vertical: bool) {
    let (x1, y1) = from;
    let (x2, y2) = to;
    let d = if vertical {
        format!("M{x1},{y1} L{x2},{y2}")
    } else {
        let mid = (x2 - x1) / 2;
        format!("M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}", x1 + mid, x2 - mid)
    };
    out.push_str(&format!(
        "<path class=\"edge {class}\" d=\"{d}\" marker-end=\"url(#arrow)\"/>"
    ));
}

/// The graph of a run's steps as an SVG element.
pub(super) fn graph_svg(run: &str, steps: &[StepView], plan: &Plan, focus: &str) -> String {
    let lay = layout(steps, plan);
    // Box positions: lanes left to right, a lane's layers as columns, a layer's steps
    // stacked.
    let mut pos: Vec<(i64, i64)> = vec![(0, 0); steps.len()];
    let mut lane_x: Vec<(i64, i64)> = Vec::new();
    let mut x = 10;
    let mut bottom = TOP;
    for (_, _, list) in &lay.lanes {
        let layers = list.iter().map(|&i| lay.layer[i]).max().unwrap_or(0) as i64 + 1;
        let mut ys: Vec<i64> = vec![TOP; layers as usize];
        for &i in list {
            let l = lay.layer[i];
            pos[i] = (x + l as i64 * COL, ys[l]);
            ys[l] += node_height(&steps[i]) + GAP;
        }
        bottom = bottom.max(ys.iter().copied().max().unwrap_or(TOP));
        lane_x.push((x, x + layers * COL - (COL - BOX_W)));
        x += layers * COL;
    }
    let main_w = x;
    let undo_y = bottom + 36;
    let undo_h = lay
        .undo
        .iter()
        .map(|&i| node_height(&steps[i]))
        .max()
        .unwrap_or(BOX_H);
    for (k, &i) in lay.undo.iter().enumerate() {
        pos[i] = (10 + k as i64 * COL, undo_y);
    }
    let height = if lay.undo.is_empty() {
        bottom
    } else {
        undo_y + undo_h + 14
    };
    let width = main_w.max(lay.undo.len() as i64 * COL + 10).max(COL) + 10;
    let mut out = format!(
        "<svg class=\"graph\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" \
         role=\"img\" aria-label=\"steps graph\" xmlns=\"http://www.w3.org/2000/svg\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" class=\"arrowhead\"/></marker></defs>"
    );
    for (k, (name, order, list)) in lay.lanes.iter().enumerate() {
        let (x0, _) = lane_x[k];
        let mode = match order {
            Some(Order::Sequential) => " · in order",
            Some(Order::Parallel) => " · parallel",
            Some(Order::Auto) => " · auto",
            None => "",
        };
        out.push_str(&format!(
            "<text x=\"{x0}\" y=\"20\" class=\"stage\">{}<tspan class=\"mode\">{mode}</tspan></text>",
            esc(&cut(name, 22))
        ));
        // Stage order: the next stage starts once this one is done.
        if let Some((_, _, next)) = lay.lanes.get(k + 1) {
            let mid = |l: &[usize]| {
                let top = l.iter().map(|&i| pos[i].1).min().unwrap_or(TOP);
                let bot = l
                    .iter()
                    .map(|&i| pos[i].1 + node_height(&steps[i]))
                    .max()
                    .unwrap_or(TOP);
                (top + bot) / 2
            };
            let (_, x1) = lane_x[k];
            let (x2, _) = lane_x[k + 1];
            edge(
                &mut out,
                "stage",
                (x1, mid(list)),
                (x2 - 2, mid(next)),
                false,
            );
        }
    }
    for &(a, b, sequential) in &lay.edges {
        let (ax, ay) = pos[a];
        let (bx, by) = pos[b];
        if sequential {
            edge(
                &mut out,
                "seq",
                (ax + BOX_W / 2, ay + node_height(&steps[a])),
                (bx + BOX_W / 2, by - 2),
                true,
            );
        } else {
            edge(
                &mut out,
                "dep",
                (ax + BOX_W, ay + BOX_H / 2),
                (bx - 2, by + BOX_H / 2),
                false,
            );
        }
    }
    for (_, _, list) in &lay.lanes {
        for &i in list {
            node(&mut out, run, &steps[i], pos[i].0, pos[i].1, focus);
        }
    }
    if !lay.undo.is_empty() {
        out.push_str(&format!(
            "<g class=\"lane-undo\"><rect class=\"lane\" x=\"2\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"8\"/>\
             <text x=\"10\" y=\"{}\" class=\"stage\">rollback / compensation</text>",
            undo_y - 26,
            width - 4,
            undo_h + 36,
            undo_y - 8
        ));
        for &i in &lay.undo {
            node(&mut out, run, &steps[i], pos[i].0, pos[i].1, focus);
        }
        out.push_str("</g>");
        // From the step whose failure started the undoing.
        if let Some(&f) = lay
            .lanes
            .iter()
            .flat_map(|(_, _, l)| l.iter())
            .find(|&&i| steps[i].status == "failed")
        {
            let (fx, fy) = pos[f];
            let x = fx + BOX_W / 2;
            edge(
                &mut out,
                "undo",
                (x, fy + node_height(&steps[f])),
                (x, undo_y - 2),
                true,
            );
        }
    }
    out.push_str("</svg>");
    out
}

fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.get(key)?.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The attempts of a step as drawn: the recorded ones, else one made of the step's own
/// start and end.
fn attempts_of(s: &StepView, recorded: &HashMap<String, Vec<Attempt>>) -> Vec<Attempt> {
    if let Some(list) = recorded.get(&s.id).filter(|l| !l.is_empty()) {
        return list.clone();
    }
    match time(&s.json, "started_at") {
        Some(start) => vec![Attempt {
            number: s
                .json
                .get("attempts")
                .and_then(Value::as_u64)
                .map_or(1, |n| u32::try_from(n).unwrap_or(1).max(1)),
            status: s.status.clone(),
            error_class: s
                .json
                .get("error_class")
                .and_then(Value::as_str)
                .map(str::to_string),
            start,
            end: time(&s.json, "finished_at"),
        }],
        None => Vec::new(),
    }
}

/// The critical path: from the step that ended last, back through the step it waited for
/// that ended last, to a step that waited for nothing.
fn critical_path(preds: &[Vec<usize>], ends: &[Option<DateTime<Utc>>]) -> Vec<usize> {
    let mut path = Vec::new();
    let last = (0..ends.len())
        .filter(|&i| ends[i].is_some())
        .max_by_key(|&i| ends[i]);
    let mut at = last;
    while let Some(i) = at {
        if path.contains(&i) {
            break;
        }
        path.push(i);
        at = preds[i]
            .iter()
            .copied()
            .filter(|&j| ends[j].is_some())
            .max_by_key(|&j| ends[j]);
    }
    path
}

/// The timeline of a run's steps as an SVG element: one bar per attempt (`attempts`, by
/// step id; a step without records gets one bar from its own times).
pub(super) fn timeline_svg(
    run: &str,
    steps: &[StepView],
    plan: &Plan,
    attempts: &HashMap<String, Vec<Attempt>>,
    focus: &str,
    now: DateTime<Utc>,
) -> String {
    const LABEL: f64 = 150.0;
    const W: f64 = 900.0;
    const BAR: i64 = 22;
    let tries: Vec<Vec<Attempt>> = steps.iter().map(|s| attempts_of(s, attempts)).collect();
    let queued = |s: &StepView| s.json.get("queued_ms").and_then(Value::as_i64).unwrap_or(0);
    let t0 = steps
        .iter()
        .zip(&tries)
        .filter_map(|(s, t)| {
            t.first()
                .map(|a| a.start - chrono::Duration::milliseconds(queued(s)))
        })
        .min();
    let Some(t0) = t0 else {
        return "<p class=\"muted\">No step has started yet.</p>".to_string();
    };
    let ends: Vec<Option<DateTime<Utc>>> = tries
        .iter()
        .map(|t| t.last().map(|a| a.end.unwrap_or(now)))
        .collect();
    let t1 = ends.iter().flatten().copied().max().unwrap_or(now).max(t0);
    let span_ms = ((t1 - t0).num_milliseconds()).max(1) as f64;
    let x_of = |t: DateTime<Utc>| {
        LABEL + (t - t0).num_milliseconds().max(0) as f64 / span_ms * (W - LABEL - 10.0)
    };
    let critical = critical_path(&layout(steps, plan).preds, &ends);
    let height = 30 + steps.len() as i64 * (BAR + 8);
    let mut out = format!(
        "<svg class=\"timeline\" viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"timeline\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for k in 0..=4 {
        let x = LABEL + k as f64 / 4.0 * (W - LABEL - 10.0);
        out.push_str(&format!(
            "<line class=\"tick\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"18\" y2=\"{height}\"/>\
             <text class=\"axis\" x=\"{x:.1}\" y=\"12\" text-anchor=\"{}\">{}</text>",
            if k == 4 { "end" } else { "start" },
            duration((span_ms * k as f64 / 4.0) as i64)
        ));
    }
    let segment = |out: &mut String,
                   class: &str,
                   from: DateTime<Utc>,
                   to: DateTime<Utc>,
                   y: i64,
                   title: String| {
        let xs = x_of(from);
        out.push_str(&format!(
            "<rect class=\"{class}\" x=\"{xs:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{BAR}\" rx=\"2\"><title>{}</title></rect>",
            (x_of(to) - xs).max(2.0),
            esc(&title)
        ));
    };
    for (i, s) in steps.iter().enumerate() {
        let y = 24 + i as i64 * (BAR + 8);
        let focused = if s.id == focus { " focus" } else { "" };
        let crit = if critical.contains(&i) { " crit" } else { "" };
        out.push_str(&format!(
            "<a href=\"/runs/{run}?step={}#log\" class=\"row{focused}{crit}\" data-step=\"{}\">\
             <text class=\"label\" x=\"4\" y=\"{}\">{}</text>",
            encode(&s.id),
            esc(&s.id),
            y + 15,
            esc(&cut(&s.id, 20))
        ));
        let list = &tries[i];
        if let Some(first) = list.first() {
            let q = queued(s);
            if q > 0 {
                segment(
                    &mut out,
                    "wait admission",
                    first.start - chrono::Duration::milliseconds(q),
                    first.start,
                    y,
                    format!("{}: waited {} for admission", s.id, duration(q)),
                );
            }
        }
        let n = list.len();
        for (k, a) in list.iter().enumerate() {
            // An attempt whose end was not recorded ended when the next one started.
            let end = a
                .end
                .or_else(|| list.get(k + 1).map(|next| next.start))
                .unwrap_or(now);
            if k > 0
                && let Some(prev_end) = list[k - 1].end
                && a.start > prev_end
            {
                segment(
                    &mut out,
                    "wait backoff",
                    prev_end,
                    a.start,
                    y,
                    format!(
                        "{}: retry backoff {} before attempt {}",
                        s.id,
                        duration((a.start - prev_end).num_milliseconds()),
                        a.number
                    ),
                );
            }
            let timeout = if a.timed_out() { " timeout" } else { "" };
            let mut title = format!(
                "{} attempt {}{}: {} {}",
                s.id,
                a.number,
                if n > 1 {
                    format!(" of {n}")
                } else {
                    String::new()
                },
                a.status,
                duration((end - a.start).num_milliseconds())
            );
            if let Some(c) = &a.error_class {
                title.push_str(&format!(" ({c})"));
            }
            segment(
                &mut out,
                &format!("bar attempt st-{}{timeout}{crit}", esc(&a.status)),
                a.start,
                end,
                y,
                title,
            );
        }
        // Steps drawn from their own times only know how many attempts they made.
        if let [only] = list.as_slice()
            && only.number > 1
        {
            out.push_str(&format!(
                "<text class=\"attempts\" x=\"{:.1}\" y=\"{}\">×{}</text>",
                x_of(only.start) + 4.0,
                y + 15,
                only.number
            ));
        }
        out.push_str("</a>");
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        json!({
            "stages": [
                {"name": "build", "steps": [{"id": "compile", "status": "succeeded",
                    "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:02Z",
                    "duration_ms": 2000}]},
                {"name": "deploy", "steps": [{"id": "<script>alert(1)</script>", "status": "failed",
                    "attempts": 3, "queued_ms": 500,
                    "started_at": "2026-01-01T00:00:03Z", "finished_at": "2026-01-01T00:00:05Z"}]}
            ],
            "rollback": {"status": "succeeded", "steps": [{"id": "restore", "status": "succeeded",
                "started_at": "2026-01-01T00:00:05Z", "finished_at": "2026-01-01T00:00:06Z"}]},
            "compensation": []
        })
    }

    #[test]
    fn the_failed_step_is_focused_and_the_rollback_lane_drawn() {
        let steps = steps(&report());
        assert_eq!(steps.len(), 3);
        let focus = default_focus(&steps).expect("focus");
        assert_eq!(focus, "<script>alert(1)</script>");
        let svg = graph_svg("7", &steps, &Plan::default(), &focus);
        assert!(svg.contains("lane-undo"), "{svg}");
        assert!(svg.contains("rollback / compensation"));
        assert!(svg.contains("edge undo"));
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("class=\"node st-failed focus\""));
    }

    #[test]
    fn the_timeline_has_a_bar_per_step_with_waits() {
        let steps = steps(&report());
        let svg = timeline_svg(
            "7",
            &steps,
            &Plan::default(),
            &HashMap::new(),
            "restore",
            Utc::now(),
        );
        assert_eq!(svg.matches("class=\"bar ").count(), 3, "{svg}");
        assert!(svg.contains("class=\"wait admission\""));
        assert!(svg.contains("×3"));
        assert!(svg.contains(" crit"));
    }

    fn parse(yaml: &str) -> dsl::Workflow {
        dsl::parse_str("w.yaml", yaml).expect("valid").0
    }

    fn step(id: &str, status: &str) -> Value {
        json!({"id": id, "status": status, "started_at": "2026-01-01T00:00:00Z",
               "finished_at": "2026-01-01T00:00:01Z", "duration_ms": 1000})
    }

    /// Guards the graph's edges: a `parallel: auto` stage draws its `needs` and
    /// `${{ steps.X }}` dependencies (matrix instances included) in layers, a sequential
    /// stage chains its steps, stages are joined in order, and a sub-workflow call is a box
    /// holding its steps.
    #[test]
    fn the_graph_draws_dependencies_stage_order_and_calls() {
        let wf = parse(
            r#"workflow:
  name: w
  stages:
    - name: build
      parallel: auto
      steps:
        - id: a
          run: echo a
        - id: b
          run: echo ${{ steps.a.outputs.x }}
        - id: c
          needs: [a]
          matrix: {os: [x, y]}
          run: echo c
        - id: d
          needs: [b, c]
          run: echo d
    - name: ship
      steps:
        - id: e
          run: echo e
        - id: f
          run: echo f
"#,
        );
        let plan = Plan::of(&wf);
        assert_eq!(plan.stages.get("build"), Some(&Order::Auto));
        assert_eq!(plan.stages.get("ship"), Some(&Order::Sequential));
        let mut call = step("f", "succeeded");
        call["workflow"] = json!({"name": "sub", "status": "succeeded", "stages": [
            {"name": "s", "status": "succeeded", "steps": [step("x1", "succeeded"), step("x2", "failed"), step("x3", "succeeded")]}
        ], "compensated": []});
        let report = json!({"stages": [
            {"name": "build", "steps": [step("a", "succeeded"), step("b", "succeeded"),
                step("c (os=x)", "succeeded"), step("c (os=y)", "succeeded"), step("d", "succeeded")]},
            {"name": "ship", "steps": [step("e", "succeeded"), call]}
        ]});
        let steps = steps(&report);
        let svg = graph_svg("1", &steps, &plan, "a");
        // a→b, a→c(x), a→c(y), b→d, c(x)→d, c(y)→d.
        assert_eq!(svg.matches("class=\"edge dep\"").count(), 6, "{svg}");
        assert_eq!(svg.matches("class=\"edge seq\"").count(), 1, "{svg}");
        assert_eq!(svg.matches("class=\"edge stage\"").count(), 1, "{svg}");
        assert!(svg.contains("class=\"node st-succeeded call\""), "{svg}");
        assert_eq!(svg.matches("class=\"inner st-").count(), 3, "{svg}");
        assert!(svg.contains("class=\"inner st-failed\""));
        // Layers: a in the first column, b and c in the second, d in the third.
        let lay = layout(&steps, &plan);
        assert_eq!(&lay.layer[..5], &[0, 1, 1, 1, 2]);
        // Without the definition: only the stage order.
        let bare = graph_svg("1", &steps, &Plan::default(), "a");
        assert_eq!(bare.matches("class=\"edge ").count(), 1, "{bare}");
    }

    /// Guards the timeline's attempts: each recorded attempt is its own bar, the backoff
    /// between attempts and the admission wait are separate segments, an attempt cut off by
    /// its timeout is marked, and the critical path runs back from the step that ended last.
    #[test]
    fn the_timeline_draws_attempts_backoff_timeouts_and_the_critical_path() {
        let t = |s: i64| {
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .expect("time")
                .with_timezone(&Utc)
                + chrono::Duration::seconds(s)
        };
        let report = json!({"stages": [
            {"name": "one", "steps": [{"id": "fetch", "status": "succeeded", "attempts": 3, "queued_ms": 2000,
                "started_at": "2026-01-01T00:00:02Z", "finished_at": "2026-01-01T00:00:20Z"},
                {"id": "side", "status": "succeeded",
                "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z"}]},
            {"name": "two", "steps": [{"id": "use", "status": "succeeded",
                "started_at": "2026-01-01T00:00:21Z", "finished_at": "2026-01-01T00:00:22Z"}]}
        ]});
        let attempt = |n: u32, status: &str, class: Option<&str>, a: i64, b: i64| Attempt {
            number: n,
            status: status.into(),
            error_class: class.map(str::to_string),
            start: t(a),
            end: Some(t(b)),
        };
        let recorded = HashMap::from([(
            "fetch".to_string(),
            vec![
                attempt(1, "failed", Some("Timeout"), 2, 7),
                attempt(2, "failed", Some("ExitCode"), 9, 12),
                attempt(3, "succeeded", None, 16, 20),
            ],
        )]);
        let steps = steps(&report);
        let svg = timeline_svg("1", &steps, &Plan::default(), &recorded, "use", t(30));
        assert_eq!(svg.matches("class=\"bar attempt ").count(), 5, "{svg}");
        assert_eq!(svg.matches("class=\"wait backoff\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"wait admission\"").count(), 1, "{svg}");
        assert_eq!(svg.matches(" timeout").count(), 1, "{svg}");
        // use ← fetch (ended last in the stage before); side is off the path.
        assert!(
            svg.contains("class=\"row focus crit\" data-step=\"use\""),
            "{svg}"
        );
        assert!(
            svg.contains("class=\"row crit\" data-step=\"fetch\""),
            "{svg}"
        );
        assert!(svg.contains("class=\"row\" data-step=\"side\""), "{svg}");
    }
}
