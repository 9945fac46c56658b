//! The dashboard's pages, fragments, event streams and actions. Data comes from the API's
//! own handlers (the same JSON the API answers), then goes through
//! [`super::templates::defang`] and the auto-escaping templates.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use minijinja::context;
use serde_json::{Value, json};

use super::WebState;
use super::form::{display, encode, parse_form, typed_parameters};
use super::graph;
use super::session::Auth;
use super::templates::{defang, render_page};
use crate::api::error::ApiError;
use crate::api::{anomalies, deliveries, logs, routes};

/// Rows per page of the runs list.
pub(super) const PAGE: usize = 50;
/// How often live pages look for changes.
const TICK: Duration = Duration::from_millis(700);

type Q = HashMap<String, String>;

fn json_of<T: serde::Serialize>(v: T) -> Value {
    defang(serde_json::to_value(v).unwrap_or(Value::Null))
}

fn safe(s: String) -> minijinja::Value {
    minijinja::Value::from_safe_string(s)
}

/// An error as a page (no data beyond the error's own text).
fn error_page(auth: &Auth, e: &ApiError) -> Response {
    render_page(
        e.status(),
        "error.html",
        context! { title => "Error", csrf => auth.csrf, message => defang(json!(e.to_string())) },
    )
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_string())]).into_response()
}

/// The API query for the runs list from the page's query: every filter is applied by the
/// store's paged listing.
fn api_query(q: &Q, limit: usize) -> Q {
    let mut out = Q::new();
    for key in [
        "workflow", "status", "repo", "branch", "trigger", "q", "before",
    ] {
        if let Some(v) = q.get(key).filter(|v| !v.trim().is_empty()) {
            out.insert(key.into(), v.trim().to_string());
        }
    }
    out.insert("limit".into(), limit.to_string());
    out
}

/// How many of a workflow's last runs its sparkline shows.
const SPARK_RUNS: usize = 20;

/// A sparkline of durations (oldest first) as SVG.
fn sparkline(durations: &[i64]) -> String {
    if durations.len() < 2 {
        return String::new();
    }
    let max = durations.iter().copied().max().unwrap_or(1).max(1) as f64;
    let step = 60.0 / (durations.len() - 1) as f64;
    let points: Vec<String> = durations
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                15.0 - *d as f64 / max * 13.0
            )
        })
        .collect();
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 60 16\" width=\"60\" height=\"16\" aria-hidden=\"true\">\
         <polyline points=\"{}\"/></svg>",
        points.join(" ")
    )
}

async fn list(web: &WebState, q: Q) -> Result<Value, ApiError> {
    let json = routes::list_runs(State(web.api.clone()), Ok(Query(q))).await?;
    Ok(serde_json::to_value(&json.0).unwrap_or(Value::Null))
}

/// `GET /?workflow=&repo=&branch=&status=&trigger=&q=&before=` (and `fragment=rows`).
pub(super) async fn runs(
    State(web): State<WebState>,
    Extension(auth): Extension<Auth>,
    Query(q): Query<Q>,
) -> Response {
    let page = match list(&web, api_query(&q, PAGE)).await {
        Ok(v) => v,
        Err(e) => return error_page(&auth, &e),
    };
    let runs: Vec<Value> = page
        .get("runs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(defang)
        .collect();
    // Each listed workflow's last durations, oldest first, for the sparklines (keyed by
    // repository and workflow: two repositories may have workflows of one name).
    let keys: BTreeSet<(Option<String>, String)> = runs
        .iter()
        .filter_map(|r| {
            Some((
                r.get("repo").and_then(Value::as_str).map(str::to_string),
                r.get("workflow")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let durations = web
        .api
        .stores
        .read(move |store| {
            let mut out = Vec::new();
            for (repo, wf) in keys {
                let d = store.recent_durations(repo.as_deref(), &wf, SPARK_RUNS)?;
                out.push((format!("{}/{wf}", repo.unwrap_or_default()), d));
            }
            Ok(out)
        })
        .await
        .unwrap_or_default();
    let sparks: BTreeMap<String, minijinja::Value> = durations
        .into_iter()
        .map(|(k, d)| (k, safe(sparkline(&d))))
        .collect();
    let anomalous: HashMap<String, String> = match anomalies::list(
        State(web.api.clone()),
        Ok(Query(Q::from([("limit".into(), "200".into())]))),
    )
    .await
    {
        Ok(json) => serde_json::to_value(&json.0)
            .ok()
            .and_then(|v| v.get("anomalies").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| {
                Some((
                    a.get("run_id")?.as_str()?.to_string(),
                    a.get("kind")?.as_str()?.to_string(),
                ))
            })
            .collect(),
        Err(_) => HashMap::new(),
    };
    let mut next = q.clone();
    let older = page.get("next_before").and_then(Value::as_str).map(|b| {
        next.insert("before".into(), b.to_string());
        next.remove("fragment");
        query_string(&next)
    });
    let mut filters = q.clone();
    filters.remove("before");
    filters.remove("fragment");
    let ctx = context! {
        title => "Runs",
        nav => "runs",
        csrf => auth.csrf,
        runs => runs,
        sparks => sparks,
        anomalies => anomalous,
        q => json_of(&q),
        older => older,
        newest => q.contains_key("before").then(|| query_string(&filters)),
        live_query => query_string(&filters),
    };
    if q.get("fragment").map(String::as_str) == Some("rows") {
        render_page(StatusCode::OK, "rows.html", ctx)
    } else {
        render_page(StatusCode::OK, "runs.html", ctx)
    }
}

fn query_string(q: &Q) -> String {
    let mut keys: Vec<_> = q.iter().filter(|(_, v)| !v.is_empty()).collect();
    keys.sort();
    keys.iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A server-sent event stream that sends `changed` whenever `fingerprint` gives a new
/// value, checked every [`TICK`]; it ends once `fingerprint` says the thing is final, or
/// at shutdown.
fn change_stream<F, Fut>(
    web: WebState,
    fingerprint: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn(WebState) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<(String, bool)>> + Send,
{
    let stream = futures_util::stream::unfold(
        (web, fingerprint, None::<String>, false),
        |(web, fingerprint, last, done)| async move {
            if done {
                return None;
            }
            let handle = web.api.handle.clone();
            loop {
                let (fp, finished) = fingerprint(web.clone()).await.unwrap_or_default();
                if last.as_deref() != Some(fp.as_str()) {
                    let event = Event::default().event("changed").data(if finished {
                        "final"
                    } else {
                        "live"
                    });
                    return Some((Ok(event), (web, fingerprint, Some(fp), finished)));
                }
                tokio::select! {
                    () = tokio::time::sleep(TICK) => {}
                    () = handle.shutdown_requested() => return None,
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `GET /events/runs?...`: `changed` whenever the runs the list shows change.
pub(super) async fn runs_events(
    State(web): State<WebState>,
    Query(q): Query<Q>,
) -> impl IntoResponse {
    let api_q = api_query(&q, PAGE);
    change_stream(web, move |web| {
        let api_q = api_q.clone();
        async move {
            let v = list(&web, api_q).await.ok()?;
            let fp: Vec<String> = v
                .get("runs")?
                .as_array()?
                .iter()
                .map(|r| format!("{}:{}", r["run_id"], r["status"]))
                .collect();
            Some((fp.join(","), false))
        }
    })
}

async fn report(web: &WebState, id: &str) -> Result<Value, ApiError> {
    let json = routes::get_run(State(web.api.clone()), Path(id.to_string())).await?;
    Ok(serde_json::to_value(&json.0).unwrap_or(Value::Null))
}

fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.get(key)?.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What the run page draws beyond the report: the order of the steps from the workflow's
/// definition at the run's commit (empty when the mirror no longer has it), and each step's
/// recorded attempts.
async fn plan_and_attempts(
    web: &WebState,
    report: &Value,
) -> (graph::Plan, HashMap<String, Vec<graph::Attempt>>) {
    let Some(id) = report
        .get("run_id")
        .and_then(Value::as_str)
        .and_then(crate::api::view::parse_run_id)
    else {
        return Default::default();
    };
    let read = web
        .api
        .stores
        .read(move |store| Ok((store.get_run(id)?, store.get_attempts(id)?)))
        .await;
    let Ok((Some(record), recorded)) = read else {
        return Default::default();
    };
    let mut attempts: HashMap<String, Vec<graph::Attempt>> = HashMap::new();
    for a in recorded {
        attempts
            .entry(a.step_id.clone())
            .or_default()
            .push(graph::Attempt {
                number: a.attempt,
                status: a.status.as_str().to_string(),
                error_class: a.error_class,
                start: a.started_at,
                end: a.finished_at,
            });
    }
    let handle = web.api.handle.clone();
    let plan = tokio::task::spawn_blocking(move || {
        handle.workflow_of_run(&record).map(|w| graph::Plan::of(&w))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default();
    (plan, attempts)
}

/// `GET /runs/{id}?step=` (and `fragment=views`): one run.
pub(super) async fn run(
    State(web): State<WebState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Query(q): Query<Q>,
) -> Response {
    let report = match report(&web, &id).await {
        Ok(v) => v,
        Err(e) => return error_page(&auth, &e),
    };
    let now = Utc::now();
    let steps = graph::steps(&report);
    let focus = q
        .get("step")
        .filter(|s| steps.iter().any(|st| &st.id == *s))
        .cloned()
        .or_else(|| graph::default_focus(&steps))
        .unwrap_or_default();
    let run_id = report
        .get("run_id")
        .and_then(Value::as_str)
        .unwrap_or(&id)
        .to_string();
    let (plan, attempts) = plan_and_attempts(&web, &report).await;
    let graph_svg = graph::graph_svg(&run_id, &steps, &plan, &focus);
    let timeline_svg = graph::timeline_svg(&run_id, &steps, &plan, &attempts, &focus, now);
    let focused = steps.iter().find(|s| s.id == focus);
    let status = report.get("status").and_then(Value::as_str).unwrap_or("");
    let run_final = !matches!(status, "queued" | "running" | "pending");
    let step_live = focused
        .is_some_and(|s| matches!(s.status.as_str(), "running" | "pending" | "queued"))
        || (!run_final && focused.is_some_and(|s| s.status.is_empty()));
    let queue_wait = match (time(&report, "created_at"), time(&report, "started_at")) {
        (Some(c), Some(s)) => Some((s - c).num_milliseconds()),
        _ => None,
    };
    let ctx = context! {
        title => format!("Run {run_id}"),
        nav => "runs",
        csrf => auth.csrf,
        run => defang(report.clone()),
        run_id => run_id,
        graph => safe(graph_svg),
        timeline => safe(timeline_svg),
        focus => defang(json!(focus)),
        focus_enc => encode(&focus),
        step => focused.map(|s| defang(s.json.clone())),
        step_live => step_live,
        run_final => run_final,
        queue_wait => queue_wait,
        can_cancel => matches!(status, "queued" | "running" | "pending"),
        can_retry => matches!(status, "failed" | "cancelled" | "interrupted"),
    };
    if q.get("fragment").map(String::as_str) == Some("views") {
        render_page(StatusCode::OK, "views.html", ctx)
    } else {
        render_page(StatusCode::OK, "run.html", ctx)
    }
}

/// `GET /runs/{id}/events`: `changed` whenever a step of the run moves; ends with the run.
pub(super) async fn run_events(State(web): State<WebState>, Path(id): Path<String>) -> Response {
    if let Err(e) = report(&web, &id).await {
        return (e.status(), e.to_string()).into_response();
    }
    change_stream(web, move |web| {
        let id = id.clone();
        async move {
            let r = report(&web, &id).await.ok()?;
            let status = r
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let steps: Vec<String> = graph::steps(&r)
                .iter()
                .map(|s| format!("{}:{}:{}", s.id, s.status, s.json["attempts"]))
                .collect();
            let finished = !matches!(status.as_str(), "queued" | "running" | "pending");
            Some((format!("{status}|{}", steps.join(",")), finished))
        }
    })
    .into_response()
}

/// `GET /runs/{id}/steps/{step}/log[?follow=true][&download=1]`: the API's step log.
pub(super) async fn step_log(
    State(web): State<WebState>,
    Path(path): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let download = Query::<Q>::try_from_uri(&uri)
        .map(|Query(q)| q.contains_key("download"))
        .unwrap_or(false);
    let file = format!("run-{}-{}.log", path.0, path.1)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>();
    let answer = logs::step_log(
        State(web.api.clone()),
        Path(path),
        Query::try_from_uri(&uri),
        headers,
    )
    .await;
    match answer {
        Ok(mut r) => {
            if download
                && let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
            {
                r.headers_mut().insert(CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(e) => (e.status(), e.to_string()).into_response(),
    }
}

/// The run id in a 202 answer of the API.
async fn new_run_id(r: Response) -> Option<String> {
    let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.ok()?;
    let v: Value = serde_json::from_slice(&body).ok()?;
    match &v["run_id"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `POST /runs/{id}/cancel`.
pub(super) async fn cancel(
    State(web): State<WebState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    match routes::cancel_run(State(web.api.clone()), Path(id.clone())).await {
        Ok(_) => see_other(&format!("/runs/{}", encode(&id))),
        Err(e) => error_page(&auth, &e),
    }
}

/// `POST /runs/{id}/retry`: on to the run that carries on.
pub(super) async fn retry(
    State(web): State<WebState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    match routes::retry_run(State(web.api.clone()), Path(id.clone())).await {
        Ok(r) => {
            let new = new_run_id(r).await.unwrap_or(id);
            see_other(&format!("/runs/{}", encode(&new)))
        }
        Err(e) => error_page(&auth, &e),
    }
}

/// `POST /runs/{id}/rerun`: a new manual run of the same workflow, repository, commit and
/// parameters.
pub(super) async fn rerun(
    State(web): State<WebState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    let r = match report(&web, &id).await {
        Ok(v) => v,
        Err(e) => return error_page(&auth, &e),
    };
    let body = json!({
        "parameters": r.get("parameters").cloned().unwrap_or(json!({})),
        "repo": r.get("repo"),
        "commit": r.pointer("/trigger/commit"),
        "branch": r.pointer("/trigger/branch"),
    });
    let workflow = r
        .get("workflow")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match routes::trigger(
        State(web.api.clone()),
        Path(workflow),
        Bytes::from(body.to_string()),
    )
    .await
    {
        Ok(resp) => {
            let new = new_run_id(resp).await.unwrap_or(id);
            see_other(&format!("/runs/{}", encode(&new)))
        }
        Err(e) => error_page(&auth, &e),
    }
}

/// What a failed trigger form shows again.
#[derive(Default)]
struct FormState {
    repo: String,
    workflow: String,
    values: HashMap<String, String>,
    field_errors: HashMap<String, Vec<String>>,
    errors: Vec<String>,
}

async fn workflows_page(
    web: &WebState,
    auth: &Auth,
    status: StatusCode,
    form: FormState,
) -> Response {
    let listed = routes::list_workflows(State(web.api.clone())).await;
    let listed = serde_json::to_value(&listed.0).unwrap_or(Value::Null);
    let snapshot = web.api.handle.shared.repos.snapshot();
    let mut workflows = Vec::new();
    for wf in listed
        .get("workflows")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = wf.get("name").and_then(Value::as_str).unwrap_or("");
        let repo = wf.get("repo").and_then(Value::as_str).unwrap_or("");
        let declared = snapshot
            .get(repo)
            .and_then(|r| r.workflows.iter().find(|w| w.name == name))
            .map(|w| w.parameters.clone())
            .unwrap_or_default();
        let this_form = form.repo == repo && form.workflow == name;
        let params: Vec<Value> = declared
            .iter()
            .map(|p| {
                let pname = p.get("name").and_then(Value::as_str).unwrap_or("");
                let value = if this_form {
                    form.values.get(pname).cloned()
                } else {
                    None
                };
                let value =
                    value.unwrap_or_else(|| p.get("default").map(display).unwrap_or_default());
                let options: Vec<String> = p
                    .get("enum")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(display).collect())
                    .unwrap_or_default();
                let errors = if this_form {
                    form.field_errors.get(pname).cloned().unwrap_or_default()
                } else {
                    Vec::new()
                };
                let mut p = p.clone();
                p["value"] = json!(value);
                p["options"] = json!(options);
                p["errors"] = json!(errors);
                p["checked"] = json!(matches!(value.as_str(), "true"));
                p
            })
            .collect();
        let mut recent_q = Q::new();
        recent_q.insert("workflow".into(), name.to_string());
        recent_q.insert("repo".into(), repo.to_string());
        recent_q.insert("limit".into(), "20".into());
        let recent: Vec<Value> = list(web, recent_q)
            .await
            .ok()
            .and_then(|v| v.get("runs").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|r| json!({"run_id": r["run_id"], "status": r["status"]}))
            .collect();
        let mut wf = wf.clone();
        wf["parameters"] = Value::Array(params);
        wf["recent"] = Value::Array(recent);
        wf["form_errors"] = json!(if this_form {
            form.errors.clone()
        } else {
            Vec::new()
        });
        wf["action"] = json!(format!("/workflows/{}/{}/runs", encode(repo), encode(name)));
        wf["open"] = json!(this_form);
        workflows.push(defang(wf));
    }
    render_page(
        status,
        "workflows.html",
        context! { title => "Workflows", nav => "workflows", csrf => auth.csrf, workflows => workflows },
    )
}

/// `GET /workflows`.
pub(super) async fn workflows(
    State(web): State<WebState>,
    Extension(auth): Extension<Auth>,
) -> Response {
    workflows_page(&web, &auth, StatusCode::OK, FormState::default()).await
}

/// `POST /workflows/{repo}/{name}/runs`: the trigger form. On to the new run, or the form
/// again (422) with each problem next to its field.
pub(super) async fn trigger(
    State(web): State<WebState>,
    Extension(auth): Extension<Auth>,
    Path((repo, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let fields = parse_form(&body);
    let declared = web
        .api
        .handle
        .shared
        .repos
        .snapshot()
        .get(&repo)
        .and_then(|r| r.workflows.iter().find(|w| w.name == name))
        .map(|w| w.parameters.clone())
        .unwrap_or_default();
    let mut form = FormState {
        repo: repo.clone(),
        workflow: name.clone(),
        values: fields
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("p.")?.to_string(), v.clone())))
            .collect(),
        ..FormState::default()
    };
    for p in &declared {
        if p.get("type").and_then(Value::as_str) == Some("boolean") {
            let n = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let on = form.values.contains_key(&n);
            form.values.insert(n, on.to_string());
        }
    }
    let (parameters, local) = typed_parameters(&declared, &fields);
    if !local.is_empty() {
        for (field, message) in local {
            form.field_errors.entry(field).or_default().push(message);
        }
        return workflows_page(&web, &auth, StatusCode::UNPROCESSABLE_ENTITY, form).await;
    }
    let body = json!({ "parameters": parameters, "repo": repo });
    match routes::trigger(
        State(web.api.clone()),
        Path(name.clone()),
        Bytes::from(body.to_string()),
    )
    .await
    {
        Ok(r) => match new_run_id(r).await {
            Some(id) => see_other(&format!("/runs/{}", encode(&id))),
            None => see_other("/"),
        },
        Err(ApiError::InvalidParameters { diagnostics, .. }) => {
            let names: HashSet<String> = declared
                .iter()
                .filter_map(|p| Some(p.get("name")?.as_str()?.to_string()))
                .collect();
            for line in diagnostics {
                match names.iter().find(|n| line.contains(&format!("`{n}`"))) {
                    Some(n) => form.field_errors.entry(n.clone()).or_default().push(line),
                    None => form.errors.push(line),
                }
            }
            workflows_page(&web, &auth, StatusCode::UNPROCESSABLE_ENTITY, form).await
        }
        Err(e) => {
            let status = e.status();
            form.errors.push(e.to_string());
            if let ApiError::InvalidWorkflow { diagnostics, .. } = e {
                form.errors.extend(diagnostics);
            }
            workflows_page(&web, &auth, status, form).await
        }
    }
}

/// A list of JSON objects as table rows: columns in order of first appearance; run ids
/// link to their run.
fn table(items: &[Value]) -> (Vec<String>, Vec<Vec<Value>>) {
    let mut columns: Vec<String> = Vec::new();
    for item in items {
        if let Some(o) = item.as_object() {
            for k in o.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let rows = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|c| {
                    let v = item.get(c).cloned().unwrap_or(Value::Null);
                    let text = match &v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => {
                            let t = other.to_string();
                            if t.chars().count() > 300 {
                                format!("{}…", t.chars().take(299).collect::<String>())
                            } else {
                                t
                            }
                        }
                    };
                    let href = (c == "run_id" && !text.is_empty())
                        .then(|| format!("/runs/{}", encode(&text)));
                    json!({ "text": text, "href": href, "code": v.is_object() || v.is_array() })
                })
                .collect()
        })
        .collect();
    (columns, rows)
}

fn table_page(auth: &Auth, title: &str, nav: &str, items: &[Value]) -> Response {
    let (columns, rows) = table(items);
    render_page(
        StatusCode::OK,
        "table.html",
        context! {
            title => title, nav => nav, csrf => auth.csrf,
            columns => defang(json!(columns)), rows => defang(json!(rows)),
        },
    )
}

/// `GET /deliveries`: the webhook outbox.
pub(super) async fn deliveries(
    State(web): State<WebState>,
    Extension(auth): Extension<Auth>,
    Query(q): Query<Q>,
) -> Response {
    match deliveries::list(State(web.api.clone()), Ok(Query(q))).await {
        Ok(json) => {
            let v = serde_json::to_value(&json.0).unwrap_or(Value::Null);
            let items = v
                .get("deliveries")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            table_page(&auth, "Deliveries", "deliveries", &items)
        }
        Err(e) => error_page(&auth, &e),
    }
}

/// `GET /anomalies`.
pub(super) async fn anomalies(
    State(web): State<WebState>,
    Extension(auth): Extension<Auth>,
    Query(q): Query<Q>,
) -> Response {
    match anomalies::list(State(web.api.clone()), Ok(Query(q))).await {
        Ok(json) => {
            let v = serde_json::to_value(&json.0).unwrap_or(Value::Null);
            let items = v
                .get("anomalies")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            table_page(&auth, "Anomalies", "anomalies", &items)
        }
        Err(e) => error_page(&auth, &e),
    }
}
