//! `agent plan FILE [-p NAME=VALUE]... [--state-dir DIR] [--json]`: the execution plan of a
//! workflow, without running anything.
//!
//! For each stage, in order: its DAG levels (explicit `needs` and the dependencies inferred
//! from `${{ steps.X }}` references; in a sequential stage every step is its own level, in a
//! `parallel: true` stage all share one), each step's resource request and how many such
//! steps admission lets run at once on this machine, and an estimated duration from history.
//! History is the daemon's store (`STATE_DIR/agent.sqlite3`, opened read-only): the mean
//! duration of each step's succeeded, non-cached runs in runs of the same workflow name. The
//! estimate of a stage simulates its scheduling (dependencies, `max_parallel`, CPU slots);
//! the critical path is the chain of steps that decides the run's length (by step count when
//! there is no history). Then the optimizer's suggestions, each with its reason: steps of a
//! sequential stage with no reference between them, a `max_parallel` above the machine's CPU
//! slots, a sub-workflow called twice with the same inputs, a step whose history shows the
//! same outputs for the same parameters and commit. The file is never rewritten.
//!
//! Exit codes: 0 planned, 2 invalid file, parameters or arguments (the validator's
//! diagnostics on stderr). Required parameters that are not given are only noted: nothing
//! runs, so a plan needs no values.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use dsl::model::{Parallelism, Stage, Step, StepKind, TemplateValue, TemplateValueKind};
use serde_json::{Value, json};

use super::{EXIT_INVALID, EXIT_OK};

/// Arguments of `agent plan`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PlanArgs {
    /// The workflow file.
    pub(crate) file: PathBuf,
    /// A parameter, `NAME=VALUE` (repeatable); checked against the declarations.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub(crate) params: Vec<String>,
    /// The state directory whose store holds the run history (default: `AGENT_STATE_DIR`,
    /// else `.agent` in the current directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Print the plan as one JSON object on stdout (shape in the README).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Durations recorded for one step.
#[derive(Debug, Clone, Copy)]
struct Sample {
    mean_ms: u64,
    count: u64,
}

/// The history read from a store, or why there is none.
struct History {
    source: Option<PathBuf>,
    runs: u64,
    steps: HashMap<String, Sample>,
    /// Steps whose recorded outputs were identical whenever the run's parameters and commit
    /// were: id -> how many runs showed it (only steps with some repeated input).
    repeatable: HashMap<String, u64>,
    note: Option<String>,
}

/// One step of the plan.
struct PlannedStep<'a> {
    step: &'a Step,
    level: usize,
    /// Indices of sibling steps it depends on (a subset of `references`).
    deps: Vec<usize>,
    /// Every step id it refers to (`needs` first, then `${{ steps.X }}`).
    references: Vec<String>,
    cpu: u32,
    memory_mb: u64,
    /// How many steps of this request admission runs at once (`None`: no CPU slot needed).
    admits: Option<u32>,
    estimate: Option<Sample>,
    critical: bool,
    /// The skill's manifest declares `side_effects: true`.
    side_effects: bool,
    /// Its `when` reads only parameters and is false with the ones given.
    skipped: bool,
    /// A `cache:` step: `hit` when the step's last cache entry has the same script (when
    /// it has no expression) and the same `inputs` files as the workspace now, else `miss`.
    cache: Option<&'static str>,
}

struct PlannedStage<'a> {
    stage: &'a Stage,
    steps: Vec<PlannedStep<'a>>,
    levels: Vec<Vec<usize>>,
    concurrency: usize,
    /// Simulated length (ms; unknown step durations count as 0), and whether any is known.
    estimate_ms: u64,
    critical: Vec<usize>,
}

/// A step shorter than this is not worth a cache entry.
const CACHE_WORTH_MS: u64 = 1000;

struct Suggestion {
    kind: &'static str,
    stage: Option<String>,
    steps: Vec<String>,
    message: String,
    saves_ms: Option<u64>,
}

/// Runs the command; returns the exit code.
pub(crate) fn run(args: PlanArgs) -> i32 {
    if args.file.is_dir() {
        eprintln!(
            "error: `{}` is a directory: give a workflow file",
            args.file.display()
        );
        return EXIT_INVALID;
    }
    let loaded = match dsl::load_workflow(&args.file) {
        Ok(l) => l,
        Err(diags) => {
            eprint!("{}", diags.render());
            return EXIT_INVALID;
        }
    };
    if !loaded.warnings.0.is_empty() {
        eprint!("{}", loaded.warnings.render());
    }
    let wf = &loaded.workflow;
    let params = dsl::params::resolve_text(wf, &args.params);
    // With every parameter known, a `when` that reads only parameters is decided here.
    let when_ctx = params.as_ref().ok().map(|p| {
        let mut roots = serde_json::Map::new();
        roots.insert("parameters".into(), Value::Object(p.clone()));
        dsl::expr::MapContext::new(roots)
    });
    if let Err(errs) = params {
        let mut fatal = false;
        for e in &errs {
            if let dsl::ParamError::Missing(name) = e {
                eprintln!(
                    "note: parameter `{name}` is not given; the plan does not need it (`when:` conditions are decided only when every parameter is known)"
                );
            } else {
                eprintln!("error: {e}");
                fatal = true;
            }
        }
        if fatal {
            return EXIT_INVALID;
        }
    }

    let admission = runners::Admission::new(runners::AdmissionConfig::default());
    let capacity = admission.cpu_capacity().max(1);
    let memory_mb = admission.memory_capacity_mb();
    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| std::env::var_os("AGENT_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".agent"));
    let history = read_history(&state_dir, &wf.name.value);

    let workspace = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let beside: Vec<PathBuf> = args
        .file
        .parent()
        .map(|d| d.join("skills"))
        .filter(|d| d.is_dir())
        .into_iter()
        .collect();
    // Per skill: its manifest's request and whether it declares side effects.
    let mut skills: HashMap<String, (runners::Request, bool)> = HashMap::new();
    let mut request_of = |step: &Step| -> (runners::Request, bool) {
        let (default, side_effects) = match &step.kind {
            StepKind::Skill(name) => *skills.entry(name.value.clone()).or_insert_with(|| {
                runners::find_skill(&name.value, &workspace, &beside)
                    .map(|s| {
                        let side = s.manifest.as_ref().is_some_and(|m| m.side_effects);
                        (s.request(), side)
                    })
                    .unwrap_or_default()
            }),
            StepKind::Run(_) => (runners::Request::default(), false),
            // A call or a decision takes no slot itself: its own steps do.
            StepKind::Workflow(_) | StepKind::Decision(_) => (runners::Request::new(0, 0), false),
        };
        let request = match &step.resources {
            None => default,
            Some(r) => runners::Request {
                cpu: r
                    .cpu
                    .as_ref()
                    .map(|c| c.value.slots(capacity))
                    .unwrap_or(default.cpu),
                memory_mb: r
                    .memory_mb
                    .as_ref()
                    .map(|m| m.value)
                    .unwrap_or(default.memory_mb),
            },
        };
        (request, side_effects)
    };

    let mut stages: Vec<PlannedStage<'_>> = Vec::new();
    for stage in &wf.stages {
        let sibling = stage.sibling_dependencies();
        let mut steps: Vec<PlannedStep<'_>> = stage
            .steps
            .iter()
            .zip(sibling)
            .map(|(step, deps)| {
                let (req, side_effects) = request_of(step);
                PlannedStep {
                    step,
                    level: 0,
                    deps,
                    references: step.step_references(),
                    cpu: req.cpu,
                    memory_mb: req.memory_mb,
                    admits: (req.cpu > 0).then(|| capacity / req.cpu.min(capacity)),
                    estimate: history.steps.get(&step.id.value).copied(),
                    critical: false,
                    side_effects,
                    skipped: when_ctx.as_ref().is_some_and(|c| skipped_by_when(step, c)),
                    cache: predicted_cache(&state_dir, &wf.name.value, step, &workspace),
                }
            })
            .collect();
        let levels = match stage.parallel.value {
            Parallelism::Sequential => (0..steps.len()).map(|i| vec![i]).collect(),
            Parallelism::Parallel => vec![(0..steps.len()).collect()],
            Parallelism::Auto => {
                auto_levels(&steps.iter().map(|s| s.deps.clone()).collect::<Vec<_>>())
            }
        };
        for (l, members) in levels.iter().enumerate() {
            for &i in members {
                steps[i].level = l;
            }
        }
        let limit = match stage.parallel.value {
            Parallelism::Sequential => 1,
            _ => stage.max_parallel.value.max(1) as usize,
        };
        let widest = levels.iter().map(Vec::len).max().unwrap_or(0);
        let cpu_steps_fit = steps
            .iter()
            .filter(|s| s.cpu > 0)
            .map(|s| s.cpu.min(capacity))
            .min()
            .map(|c| (capacity / c) as usize);
        let free_steps = steps.iter().filter(|s| s.cpu == 0).count();
        let concurrency = limit
            .min(widest)
            .min(cpu_steps_fit.map_or(usize::MAX, |n| n + free_steps))
            .max(usize::from(!steps.is_empty()));
        let sched = simulate(&steps, stage.parallel.value, limit, capacity, |s| {
            if s.skipped {
                0
            } else {
                s.estimate.map_or(1, |e| e.mean_ms.max(1))
            }
        });
        // A skipped step takes no time: it is never what the run waits on.
        let mut critical = sched.critical.clone();
        critical.retain(|&i| !steps[i].skipped);
        for &i in &critical {
            steps[i].critical = true;
        }
        let estimate_ms = if history.steps.is_empty() {
            0
        } else {
            simulate(&steps, stage.parallel.value, limit, capacity, |s| {
                if s.skipped {
                    0
                } else {
                    s.estimate.map_or(0, |e| e.mean_ms)
                }
            })
            .length
        };
        stages.push(PlannedStage {
            stage,
            steps,
            levels,
            concurrency,
            estimate_ms,
            critical,
        });
    }

    let suggestions = suggest(wf, &stages, capacity, &history);
    let known = !history.steps.is_empty();
    let total_ms: u64 = stages.iter().map(|s| s.estimate_ms).sum();
    let critical_path: Vec<String> = stages
        .iter()
        .flat_map(|s| s.critical.iter().map(|&i| s.steps[i].step.id.value.clone()))
        .collect();

    if args.json {
        let doc = json!({
            "workflow": wf.name.value,
            "file": args.file.display().to_string(),
            "machine": {"cpu": capacity, "memory_mb": memory_mb},
            "history": {
                "source": history.source.as_ref().map(|p| p.display().to_string()),
                "runs": history.runs,
                "note": history.note,
            },
            "stages": stages.iter().map(|st| stage_json(st, known)).collect::<Vec<_>>(),
            "estimated_ms": known.then_some(total_ms),
            "critical_path": critical_path,
            "critical_path_by": if known { "duration" } else { "steps" },
            "suggestions": suggestions.iter().map(|s| json!({
                "kind": s.kind,
                "stage": s.stage,
                "steps": s.steps,
                "message": s.message,
                "saves_ms": s.saves_ms,
            })).collect::<Vec<_>>(),
        });
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot print the plan: {e}");
                return EXIT_INVALID;
            }
        }
        return EXIT_OK;
    }

    let mut out = String::new();
    out.push_str(&format!(
        "plan of `{}` ({}): nothing is run\n",
        wf.name.value,
        args.file.display()
    ));
    out.push_str(&format!(
        "machine: {capacity} CPU slot{}, {memory_mb} MiB memory admissible\n",
        if capacity == 1 { "" } else { "s" }
    ));
    match (&history.source, &history.note) {
        (Some(src), _) if known => out.push_str(&format!(
            "history: {} run{} in `{}`\n",
            history.runs,
            if history.runs == 1 { "" } else { "s" },
            src.display()
        )),
        (_, Some(note)) => out.push_str(&format!("history: {note}\n")),
        _ => out.push_str("history: none\n"),
    }
    for (n, st) in stages.iter().enumerate() {
        let mode = match st.stage.parallel.value {
            Parallelism::Sequential => "sequential".to_string(),
            Parallelism::Parallel => {
                format!("parallel, max_parallel {}", st.stage.max_parallel.value)
            }
            Parallelism::Auto => format!("auto, max_parallel {}", st.stage.max_parallel.value),
        };
        out.push_str(&format!(
            "\nstage {}/{} `{}` ({mode}): {} step{}, up to {} at once{}\n",
            n + 1,
            stages.len(),
            st.stage.name.value,
            st.steps.len(),
            if st.steps.len() == 1 { "" } else { "s" },
            st.concurrency,
            if known {
                format!(", ~{}", human_ms(st.estimate_ms))
            } else {
                String::new()
            }
        ));
        for (l, members) in st.levels.iter().enumerate() {
            out.push_str(&format!("  level {}\n", l + 1));
            for &i in members {
                out.push_str(&step_line(&st.steps[i]));
            }
        }
    }
    out.push('\n');
    if known {
        out.push_str(&format!("estimated run: ~{}\n", human_ms(total_ms)));
    } else {
        out.push_str("estimated run: unknown (no recorded durations)\n");
    }
    out.push_str(&format!(
        "critical path{} (marked *): {}\n",
        if known { "" } else { " by step count" },
        match critical_path.len() {
            0 => "-".to_string(),
            n if n > 12 => format!(
                "{} -> ... -> {} ({n} steps)",
                critical_path[..6].join(" -> "),
                critical_path[n - 5..].join(" -> ")
            ),
            _ => critical_path.join(" -> "),
        }
    ));
    if suggestions.is_empty() {
        out.push_str("suggestions: none\n");
    } else {
        out.push_str("suggestions (the file is not changed):\n");
        for s in &suggestions {
            out.push_str(&format!("  - {}\n", s.message));
        }
    }
    print!("{out}");
    EXIT_OK
}

/// The predicted cache answer of a `cache:` step (see [`PlannedStep::cache`]): from the
/// newest entry of `workflow/step` in the state directory's cache. Parameters and other
/// expressions are not evaluated, so a hit is a prediction.
fn predicted_cache(
    state_dir: &Path,
    workflow: &str,
    step: &Step,
    workspace: &Path,
) -> Option<&'static str> {
    let cache = step.cache.as_ref()?;
    let store = crate::cache::CacheStore::new(state_dir, u64::MAX);
    let identity = format!("{workflow}/{}", step.id.value);
    let Some(last) = store
        .list()
        .ok()?
        .into_iter()
        .filter(|e| e.identity == identity)
        .max_by_key(|e| e.created_at)
    else {
        return Some("miss");
    };
    if last
        .expires_at
        .is_some_and(|t| t <= chrono::Utc::now().timestamp_millis())
    {
        return Some("miss");
    }
    if let StepKind::Run(r) = &step.kind
        && !r.text.contains("${{")
        && last.parts.definition.get("run").and_then(Value::as_str) != Some(r.text.as_str())
    {
        return Some("miss");
    }
    let request = crate::engine::step_cache::CacheRequest {
        identity,
        repo: String::new(),
        branch: String::new(),
        branch_scope: false,
        definition: Value::Null,
        parameters: Default::default(),
        env: Vec::new(),
        inputs: cache.inputs.iter().map(|i| i.value.clone()).collect(),
        key: Vec::new(),
        paths: Vec::new(),
        ttl: None,
        workspace: workspace.to_path_buf(),
    };
    let now = crate::cache::key::parts(&request).ok()?.0;
    Some(if now.inputs == last.parts.inputs {
        "hit"
    } else {
        "miss"
    })
}

fn step_line(s: &PlannedStep<'_>) -> String {
    let what = match &s.step.kind {
        StepKind::Skill(n) => format!("skill `{}`", n.value),
        StepKind::Workflow(n) => format!("workflow `{}`", n.value),
        StepKind::Decision(_) => "decision".to_string(),
        StepKind::Run(_) => "run".to_string(),
    };
    let refs = if s.references.is_empty() {
        String::new()
    } else {
        format!(", after {}", s.references.join(", "))
    };
    let admits = match s.admits {
        None => "no CPU slot".to_string(),
        Some(n) => format!("{n} at once"),
    };
    let mem = if s.memory_mb > 0 {
        format!(", {} MiB", s.memory_mb)
    } else {
        String::new()
    };
    let est = match s.estimate {
        Some(e) => format!(
            ", ~{} ({} sample{})",
            human_ms(e.mean_ms),
            e.count,
            if e.count == 1 { "" } else { "s" }
        ),
        None => String::new(),
    };
    let est = match s.cache {
        Some(c) => format!("{est}, cache {c} (predicted)"),
        None => est,
    };
    format!(
        "  {} {} [{what}{refs}] cpu {}{mem} ({admits}){est}{}\n",
        if s.critical { "*" } else { " " },
        s.step.id.value,
        s.cpu,
        if s.skipped {
            " - skipped: its `when` is false with these parameters"
        } else {
            ""
        }
    )
}

fn stage_json(st: &PlannedStage<'_>, known: bool) -> Value {
    json!({
        "name": st.stage.name.value,
        "parallel": match st.stage.parallel.value {
            Parallelism::Sequential => "false",
            Parallelism::Parallel => "true",
            Parallelism::Auto => "auto",
        },
        "max_parallel": st.stage.max_parallel.value,
        "concurrency": st.concurrency,
        "estimated_ms": known.then_some(st.estimate_ms),
        "levels": st.levels.iter().map(|l| l.iter().map(|&i| st.steps[i].step.id.value.clone()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "steps": st.steps.iter().map(|s| {
            let (kind, target) = match &s.step.kind {
                StepKind::Skill(n) => ("skill", Some(n.value.clone())),
                StepKind::Workflow(n) => ("workflow", Some(n.value.clone())),
                StepKind::Decision(_) => ("decision", None),
                StepKind::Run(_) => ("run", None),
            };
            json!({
                "id": s.step.id.value,
                "type": kind,
                "target": target,
                "level": s.level + 1,
                "needs": s.step.needs.iter().map(|n| n.value.clone()).collect::<Vec<_>>(),
                "references": s.references,
                "depends_on": s.deps.iter().map(|&d| st.steps[d].step.id.value.clone()).collect::<Vec<_>>(),
                "resources": {"cpu": s.cpu, "memory_mb": s.memory_mb},
                "admits": s.admits,
                "estimated_ms": s.estimate.map(|e| e.mean_ms),
                "samples": s.estimate.map_or(0, |e| e.count),
                "critical": s.critical,
                "skipped": s.skipped,
                "cache": s.cache,
            })
        }).collect::<Vec<_>>(),
    })
}

/// Whether a step's `when` reads only parameters (no status function) and is false.
fn skipped_by_when(step: &Step, ctx: &dsl::expr::MapContext) -> bool {
    let Some(w) = &step.when else {
        return false;
    };
    let refs = w.references();
    let status_fn = ["success(", "failure(", "always(", "cancelled("]
        .iter()
        .any(|f| w.text.contains(f));
    if status_fn || refs.is_empty() || refs.iter().any(|r| r.root != "parameters") {
        return false;
    }
    match w.render(ctx) {
        Ok(v) => !truthy(&v),
        Err(_) => false,
    }
}

/// Truthiness of a `when` value as the engine judges it: `false`, `null`, `0` and `""` are
/// false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Levels of a dependency DAG (validation rejects cycles; a cycle left anyway lands on the
/// last level rather than looping).
fn auto_levels(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = deps.len();
    let mut level: Vec<Option<usize>> = vec![None; n];
    let mut changed = true;
    let mut rounds = 0;
    while changed && rounds <= n {
        changed = false;
        rounds += 1;
        for i in 0..n {
            if level[i].is_some() {
                continue;
            }
            if deps[i].iter().all(|&d| level[d].is_some()) {
                let l = deps[i]
                    .iter()
                    .filter_map(|&d| level[d])
                    .max()
                    .map_or(0, |m| m + 1);
                level[i] = Some(l);
                changed = true;
            }
        }
    }
    let top = level.iter().flatten().max().map_or(0, |m| m + 1);
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, l) in level.iter().enumerate() {
        let l = l.unwrap_or(top);
        if out.len() <= l {
            out.resize(l + 1, Vec::new());
        }
        out[l].push(i);
    }
    out.retain(|l| !l.is_empty());
    out
}

struct Schedule {
    length: u64,
    critical: Vec<usize>,
}

/// Simulates a stage as the engine schedules it: ready steps start in file order while
/// fewer than `limit` run and their CPU requests fit. Returns its length and the chain of
/// steps that decided it (each step's start waited on the previous one in the chain).
fn simulate(
    steps: &[PlannedStep<'_>],
    mode: Parallelism,
    limit: usize,
    capacity: u32,
    duration: impl Fn(&PlannedStep<'_>) -> u64,
) -> Schedule {
    let n = steps.len();
    let deps: Vec<Vec<usize>> = match mode {
        Parallelism::Auto => steps.iter().map(|s| s.deps.clone()).collect(),
        _ => vec![Vec::new(); n],
    };
    let limit = if mode == Parallelism::Sequential {
        1
    } else {
        limit
    };
    let mut finish: Vec<Option<u64>> = vec![None; n];
    let mut started = vec![false; n];
    let mut pred: Vec<Option<usize>> = vec![None; n];
    // Running steps: (finish time, index).
    let mut running: Vec<(u64, usize)> = Vec::new();
    let mut now = 0u64;
    let mut cpu_used = 0u32;
    let mut last_done: Option<usize> = None;
    let mut done_count = 0;
    while done_count < n {
        for i in 0..n {
            if started[i] || running.len() >= limit {
                continue;
            }
            if !deps[i].iter().all(|&d| finish[d].is_some()) {
                continue;
            }
            let cpu = steps[i].cpu.min(capacity);
            if cpu > 0 && cpu_used + cpu > capacity {
                continue;
            }
            started[i] = true;
            cpu_used += cpu;
            // What this step waited for: its latest dependency, else the step whose end
            // freed the slot it took.
            pred[i] = deps[i]
                .iter()
                .copied()
                .max_by_key(|&d| finish[d].unwrap_or(0))
                .filter(|&d| finish[d] == Some(now))
                .or(last_done.filter(|&d| finish[d] == Some(now)));
            running.push((now + duration(&steps[i]), i));
            if mode == Parallelism::Sequential {
                break;
            }
        }
        let Some(pos) = running
            .iter()
            .enumerate()
            .min_by_key(|(_, (t, i))| (*t, *i))
            .map(|(p, _)| p)
        else {
            break;
        };
        let (t, i) = running.swap_remove(pos);
        now = t;
        finish[i] = Some(t);
        cpu_used -= steps[i].cpu.min(capacity);
        last_done = Some(i);
        done_count += 1;
    }
    let end = (0..n)
        .filter_map(|i| finish[i].map(|f| (f, i)))
        .max_by_key(|&(f, i)| (f, std::cmp::Reverse(i)));
    let mut critical = Vec::new();
    let mut cur = end.map(|(_, i)| i);
    while let Some(i) = cur {
        if critical.contains(&i) {
            break;
        }
        critical.push(i);
        cur = pred[i];
    }
    critical.reverse();
    Schedule {
        length: end.map_or(0, |(f, _)| f),
        critical,
    }
}

/// The optimizer's suggestions, each with its reason.
fn suggest(
    wf: &dsl::Workflow,
    stages: &[PlannedStage<'_>],
    capacity: u32,
    history: &History,
) -> Vec<Suggestion> {
    let mut out = Vec::new();
    let known = !history.steps.is_empty();
    for st in stages {
        let name = &st.stage.name.value;
        // Steps of a sequential stage that no reference orders could run together.
        if st.stage.parallel.value == Parallelism::Sequential && st.steps.len() > 1 {
            let deps: Vec<Vec<usize>> = st.steps.iter().map(|s| s.deps.clone()).collect();
            let levels = auto_levels(&deps);
            if levels.len() < st.steps.len() {
                let saves = known.then(|| {
                    let seq = st.estimate_ms;
                    let auto = simulate(
                        &st.steps,
                        Parallelism::Auto,
                        st.stage.max_parallel.value.max(1) as usize,
                        capacity,
                        |s| {
                            if s.skipped {
                                0
                            } else {
                                s.estimate.map_or(0, |e| e.mean_ms)
                            }
                        },
                    )
                    .length;
                    seq.saturating_sub(auto)
                });
                for level in &levels {
                    let ids: Vec<String> = level
                        .iter()
                        .filter(|&&i| !st.steps[i].skipped)
                        .map(|&i| st.steps[i].step.id.value.clone())
                        .collect();
                    if ids.len() < 2 {
                        continue;
                    }
                    out.push(Suggestion {
                        kind: "parallelize",
                        stage: Some(name.clone()),
                        message: format!(
                            "{} could run in parallel: no reference between them (stage `{name}` is sequential; `parallel: auto` runs steps as their references allow{})",
                            list(&ids),
                            match saves {
                                Some(ms) if ms > 0 => format!("; saves ~{}", human_ms(ms)),
                                _ => String::new(),
                            }
                        ),
                        steps: ids,
                        saves_ms: saves,
                    });
                }
            }
        }
        // A `max_parallel` above what admission allows at once.
        if st.stage.parallel.value != Parallelism::Sequential {
            let cpu_steps: Vec<&PlannedStep<'_>> = st
                .steps
                .iter()
                .filter(|s| s.cpu > 0 && !s.skipped)
                .collect();
            let min_cpu = cpu_steps.iter().map(|s| s.cpu.min(capacity)).min();
            if let Some(c) = min_cpu {
                let fits = (capacity / c) as usize;
                let mp = st.stage.max_parallel.value as usize;
                if mp > fits && cpu_steps.len() > fits {
                    out.push(Suggestion {
                        kind: "max_parallel",
                        stage: Some(name.clone()),
                        steps: Vec::new(),
                        message: format!(
                            "stage `{name}`: `max_parallel: {mp}` is above this machine's capacity: {capacity} CPU slot{} and its steps ask for {c} each, so at most {fits} of its {} CPU-bound steps run at once (the others wait for a slot); `max_parallel: {fits}` says what happens, or `cpu: 0` on steps that mostly wait on I/O",
                            if capacity == 1 { "" } else { "s" },
                            cpu_steps.len()
                        ),
                        saves_ms: None,
                    });
                }
            }
        }
    }
    // Steps that history shows give identical outputs for identical inputs, long enough to
    // be worth caching (a second at least), not already cached, without declared side
    // effects.
    for st in stages {
        for s in &st.steps {
            let id = &s.step.id.value;
            let (Some(n), Some(e)) = (history.repeatable.get(id), s.estimate) else {
                continue;
            };
            if e.mean_ms < CACHE_WORTH_MS
                || s.step.cache.is_some()
                || s.side_effects
                || !matches!(s.step.kind, StepKind::Skill(_) | StepKind::Run(_))
            {
                continue;
            }
            out.push(Suggestion {
                kind: "cache",
                stage: Some(st.stage.name.value.clone()),
                steps: vec![id.clone()],
                message: format!(
                    "`{id}` could be cached (`cache:` with the files it reads as `inputs`): in {n} recorded runs it gave the same outputs whenever the parameters and the commit were the same; saves ~{} per hit",
                    human_ms(e.mean_ms)
                ),
                saves_ms: Some(e.mean_ms),
            });
        }
    }
    // Sub-workflows called twice with the same inputs.
    let mut calls: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    for s in wf.steps() {
        if let StepKind::Workflow(w) = &s.kind {
            let mut inputs = String::new();
            for (k, v) in &s.parameters {
                inputs.push_str(k);
                inputs.push('=');
                canonical(v, &mut inputs);
                inputs.push(';');
            }
            let key = (w.value.clone(), inputs);
            let e = calls.entry(key.clone()).or_default();
            if e.is_empty() {
                order.push(key);
            }
            e.push(s.id.value.clone());
        }
    }
    for key in order {
        let ids = &calls[&key];
        if ids.len() > 1 {
            out.push(Suggestion {
                kind: "duplicate_call",
                stage: None,
                steps: ids.clone(),
                message: format!(
                    "{} call workflow `{}` with the same inputs: call it once and read `steps.{}.output` where the others are used",
                    list(ids),
                    key.0,
                    ids[0]
                ),
                saves_ms: None,
            });
        }
    }
    out
}

/// A parameter tree as text (expressions by their source), to compare call inputs.
fn canonical(v: &TemplateValue, out: &mut String) {
    match &v.kind {
        TemplateValueKind::Null => out.push_str("null"),
        TemplateValueKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        TemplateValueKind::Number(n) => out.push_str(&n.to_string()),
        TemplateValueKind::String(t) => {
            out.push_str(&serde_json::to_string(&t.text).unwrap_or_default())
        }
        TemplateValueKind::Array(items) => {
            out.push('[');
            for i in items {
                canonical(i, out);
                out.push(',');
            }
            out.push(']');
        }
        TemplateValueKind::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                canonical(&map[k], out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

/// "`a` and `b`", "`a`, `b` and `c`", at most six names.
fn list(ids: &[String]) -> String {
    const SHOWN: usize = 6;
    let quoted: Vec<String> = ids.iter().take(SHOWN).map(|i| format!("`{i}`")).collect();
    if ids.len() > SHOWN {
        return format!("{} and {} more", quoted.join(", "), ids.len() - SHOWN);
    }
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Mean durations of succeeded, non-cached steps of this workflow's runs in the daemon's
/// store, opened read-only through the store ([`crate::store::Db::step_history`]). Any problem (no file, another schema) means no history, with a
/// note saying why.
fn read_history(state_dir: &Path, workflow: &str) -> History {
    let path = state_dir.join(crate::store::DB_FILE_NAME);
    let none = |note: String| History {
        source: None,
        runs: 0,
        steps: HashMap::new(),
        repeatable: HashMap::new(),
        note: Some(note),
    };
    if !path.is_file() {
        return none(format!(
            "none (no store at `{}`; `--state-dir` or AGENT_STATE_DIR names the daemon's)",
            path.display()
        ));
    }
    let found = crate::store::Db::open_read_only(&path)
        .and_then(|db| db.step_history(workflow))
        .map(|history| {
            let steps: HashMap<String, Sample> = history
                .durations
                .into_iter()
                .map(|d| {
                    let sample = Sample {
                        mean_ms: d.mean_ms,
                        count: d.count,
                    };
                    (d.step_id, sample)
                })
                .collect();
            // step -> (parameters, commit) -> (first outputs, samples, all equal)
            type Seen = HashMap<(String, String), (String, u64, bool)>;
            let mut seen: HashMap<String, Seen> = HashMap::new();
            for sample in history.outputs {
                let e = seen
                    .entry(sample.step_id)
                    .or_default()
                    .entry((sample.parameters, sample.commit))
                    .or_insert_with(|| (sample.outputs.clone(), 0, true));
                e.1 += 1;
                e.2 &= e.0 == sample.outputs;
            }
            let repeatable: HashMap<String, u64> = seen
                .into_iter()
                .filter(|(_, groups)| {
                    groups.values().all(|g| g.2) && groups.values().any(|g| g.1 > 1)
                })
                .map(|(id, groups)| (id, groups.values().map(|g| g.1).sum()))
                .collect();
            (history.succeeded_runs, steps, repeatable)
        });
    match found {
        Ok((runs, steps, repeatable)) => {
            let note = steps
                .is_empty()
                .then(|| format!("no recorded steps of `{workflow}` in `{}`", path.display()));
            History {
                source: Some(path),
                runs,
                steps,
                repeatable,
                note,
            }
        }
        Err(e) => none(format!(
            "skipped: `{}` could not be read as a store ({e})",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_dependencies() {
        let levels = auto_levels(&[vec![], vec![0], vec![], vec![1, 2]]);
        assert_eq!(levels, vec![vec![0, 2], vec![1], vec![3]]);
    }

    #[test]
    fn names_are_listed_readably() {
        let ids: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(list(&ids[..2]), "`a` and `b`");
        assert_eq!(list(&ids), "`a`, `b` and `c`");
    }
}
