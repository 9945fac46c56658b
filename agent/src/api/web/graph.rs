//! The run page's two drawings, as SVG built on the server from the run report: the graph
//! (stages as columns in order, their steps as boxes, sub-workflow calls labelled, and the
//! rollback and compensation steps in a lane of their own) and the timeline (one bar per
//! step on a shared time axis, with the wait before it started and its attempts marked, and
//! the step that ended each stage last highlighted as the critical path).
//!
//! Every text is escaped here (the SVG is inserted as it is into the page).

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
    pub id: String,
    /// Its status.
    pub status: String,
    /// The lane: a stage name, or `rollback` / `compensation`.
    pub lane: String,
    /// True for rollback and compensation steps.
    pub undo: bool,
    /// The step's record.
    pub json: Value,
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

const COL: i64 = 210;
const BOX_W: i64 = 180;
const BOX_H: i64 = 46;
const ROW: i64 = 58;
const TOP: i64 = 34;

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
    if let Some(called) = s.json.get("workflow").filter(|w| w.is_object()) {
        let count: usize = called
            .get("stages")
            .and_then(Value::as_array)
            .map(|st| {
                st.iter()
                    .map(|x| x.get("steps").and_then(Value::as_array).map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        second = format!(
            "↳ {} ({count} steps) {}",
            cut(str_of(called, "name"), 10),
            s.status
        );
    }
    out.push_str(&format!(
        "<a href=\"/runs/{run}?step={}#log\" class=\"node st-{}{focused}\" data-step=\"{}\">\
         <title>{} — {}</title>\
         <rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\"/>\
         <text x=\"{}\" y=\"{}\" class=\"n\">{}</text>\
         <text x=\"{}\" y=\"{}\" class=\"s\">{}</text></a>",
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
}

/// The graph of a run's steps as an SVG element.
pub(super) fn graph_svg(run: &str, steps: &[StepView], focus: &str) -> String {
    let mut lanes: Vec<(&str, Vec<&StepView>)> = Vec::new();
    for s in steps.iter().filter(|s| !s.undo) {
        match lanes.iter_mut().find(|(name, _)| *name == s.lane) {
            Some((_, list)) => list.push(s),
            None => lanes.push((&s.lane, vec![s])),
        }
    }
    let undo: Vec<&StepView> = steps.iter().filter(|s| s.undo).collect();
    let rows = lanes.iter().map(|(_, l)| l.len() as i64).max().unwrap_or(1);
    let main_h = TOP + rows * ROW;
    let undo_y = main_h + 36;
    let height = if undo.is_empty() {
        main_h + 10
    } else {
        undo_y + ROW + 10
    };
    let width = (lanes.len() as i64).max(undo.len() as i64).max(1) * COL + 20;
    let mut out = format!(
        "<svg class=\"graph\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" \
         role=\"img\" aria-label=\"steps graph\" xmlns=\"http://www.w3.org/2000/svg\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" class=\"arrowhead\"/></marker></defs>"
    );
    for (i, (name, list)) in lanes.iter().enumerate() {
        let x = 10 + i as i64 * COL;
        out.push_str(&format!(
            "<text x=\"{x}\" y=\"20\" class=\"stage\">{}</text>",
            esc(&cut(name, 26))
        ));
        for (j, s) in list.iter().enumerate() {
            node(&mut out, run, s, x, TOP + j as i64 * ROW, focus);
        }
        if i + 1 < lanes.len() {
            // Stage order: every step of the next stage waits for this one.
            let y_from = TOP + (list.len() as i64 * ROW) / 2 - 6;
            let y_to = TOP + (lanes[i + 1].1.len() as i64 * ROW) / 2 - 6;
            out.push_str(&format!(
                "<path class=\"edge\" d=\"M{},{y_from} C{},{y_from} {},{y_to} {},{y_to}\" marker-end=\"url(#arrow)\"/>",
                x + BOX_W,
                x + BOX_W + 15,
                x + COL - 15,
                x + COL - 2
            ));
        }
    }
    if !undo.is_empty() {
        out.push_str(&format!(
            "<g class=\"lane-undo\"><rect class=\"lane\" x=\"2\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"8\"/>\
             <text x=\"10\" y=\"{}\" class=\"stage\">rollback / compensation</text>",
            undo_y - 26,
            width - 4,
            ROW + 30,
            undo_y - 8
        ));
        for (i, s) in undo.iter().enumerate() {
            node(&mut out, run, s, 10 + i as i64 * COL, undo_y, focus);
        }
        out.push_str("</g>");
        // From the step whose failure started the undoing.
        if let Some((li, ri)) = lanes.iter().enumerate().find_map(|(li, (_, l))| {
            l.iter()
                .position(|s| s.status == "failed")
                .map(|ri| (li, ri))
        }) {
            let x = 10 + li as i64 * COL + BOX_W / 2;
            let y = TOP + ri as i64 * ROW + BOX_H;
            out.push_str(&format!(
                "<path class=\"edge undo\" d=\"M{x},{y} L{x},{}\" marker-end=\"url(#arrow)\"/>",
                undo_y - 2
            ));
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

/// When a step started and ended, as far as known.
type Span = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The timeline of a run's steps as an SVG element.
pub(super) fn timeline_svg(
    run: &str,
    steps: &[StepView],
    focus: &str,
    now: DateTime<Utc>,
) -> String {
    const LABEL: f64 = 150.0;
    const W: f64 = 900.0;
    const BAR: i64 = 22;
    let spans: Vec<Span> = steps
        .iter()
        .map(|s| (time(&s.json, "started_at"), time(&s.json, "finished_at")))
        .collect();
    let queued = |s: &StepView| s.json.get("queued_ms").and_then(Value::as_i64).unwrap_or(0);
    let t0 = steps
        .iter()
        .zip(&spans)
        .filter_map(|(s, (a, _))| a.map(|a| a - chrono::Duration::milliseconds(queued(s))))
        .min();
    let Some(t0) = t0 else {
        return "<p class=\"muted\">No step has started yet.</p>".to_string();
    };
    let t1 = spans
        .iter()
        .filter_map(|(a, b)| a.map(|_| b.unwrap_or(now)))
        .max()
        .unwrap_or(now);
    let span_ms = ((t1 - t0).num_milliseconds()).max(1) as f64;
    let x_of = |t: DateTime<Utc>| {
        LABEL + (t - t0).num_milliseconds().max(0) as f64 / span_ms * (W - LABEL - 10.0)
    };
    // The critical path: in each lane, the step that ended last.
    let mut critical: Vec<usize> = Vec::new();
    let mut lanes: Vec<&str> = steps.iter().map(|s| s.lane.as_str()).collect();
    lanes.dedup();
    for lane in lanes {
        if let Some((i, _)) = steps
            .iter()
            .enumerate()
            .filter(|(i, s)| s.lane == lane && spans[*i].0.is_some())
            .max_by_key(|(i, _)| spans[*i].1.unwrap_or(now))
        {
            critical.push(i);
        }
    }
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
    for (i, s) in steps.iter().enumerate() {
        let y = 24 + i as i64 * (BAR + 8);
        let focused = if s.id == focus { " focus" } else { "" };
        out.push_str(&format!(
            "<a href=\"/runs/{run}?step={}#log\" class=\"row{focused}\"><text class=\"label\" x=\"4\" y=\"{}\">{}</text>",
            encode(&s.id),
            y + 15,
            esc(&cut(&s.id, 20))
        ));
        if let (Some(start), end) = spans[i] {
            let end = end.unwrap_or(now);
            let q = queued(s);
            if q > 0 {
                let qs = x_of(start - chrono::Duration::milliseconds(q));
                out.push_str(&format!(
                    "<rect class=\"wait\" x=\"{qs:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{BAR}\"><title>waited {}</title></rect>",
                    (x_of(start) - qs).max(1.0),
                    duration(q)
                ));
            }
            let xs = x_of(start);
            let crit = if critical.contains(&i) { " crit" } else { "" };
            let attempts = s.json.get("attempts").and_then(Value::as_i64).unwrap_or(1);
            out.push_str(&format!(
                "<rect class=\"bar st-{}{crit}\" x=\"{xs:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{BAR}\" rx=\"3\">\
                 <title>{} {} {}{}</title></rect>",
                esc(&s.status),
                (x_of(end) - xs).max(2.0),
                esc(&s.id),
                esc(&s.status),
                duration((end - start).num_milliseconds()),
                if attempts > 1 { format!(", {attempts} attempts") } else { String::new() }
            ));
            if attempts > 1 {
                out.push_str(&format!(
                    "<text class=\"attempts\" x=\"{:.1}\" y=\"{}\">×{attempts}</text>",
                    xs + 4.0,
                    y + 15
                ));
            }
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
        let svg = graph_svg("7", &steps, &focus);
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
        let svg = timeline_svg("7", &steps, "restore", Utc::now());
        assert_eq!(svg.matches("class=\"bar ").count(), 3, "{svg}");
        assert!(svg.contains("class=\"wait\""));
        assert!(svg.contains("×3"));
        assert!(svg.contains(" crit"));
    }
}
