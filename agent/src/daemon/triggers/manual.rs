//! Manual and hook runs: the requests of the API (`POST /api/v1/workflows/{name}/runs`) and
//! of the inbound push hooks, checked against the repository before they are queued: the
//! repository, the commit (fetched once if it is not in the mirror yet), the workflow at that
//! commit (from the [`Catalog`]), `on.manual`, the parameters, and the workflow's
//! concurrency group and overlap rule. The scheduler queues what passes; the store decides
//! the overlap rule as it queues.

use serde_json::{Map, Value};

use crate::daemon::catalog::Catalog;
use crate::daemon::handle::{DaemonError, NewRunRequest, Shared};
use crate::daemon::run::mirror::Mirror;
use crate::daemon::run::task;
use crate::store::overlap::{self, Overlap};
use crate::store::{NewRun, Trigger, TriggerKind};

/// Checks a manual run (blocking: git reads): the repository, the commit, the workflow at
/// that commit and the parameters. Returns the run to queue, with its overlap rule.
pub(crate) fn check_request(
    shared: &Shared,
    request: &NewRunRequest,
) -> Result<NewRun, DaemonError> {
    let repo = match &request.repo {
        Some(name) => shared
            .config
            .repo(name)
            .ok_or_else(|| DaemonError::UnknownRepo(name.clone()))?,
        None => match shared.config.repos.as_slice() {
            [only] => only,
            [] => return Err(DaemonError::UnknownRepo("(none configured)".into())),
            _ => {
                return Err(DaemonError::UnknownRepo(
                    "(several are configured: name one with `repo`)".into(),
                ));
            }
        },
    };
    let mirror = task::open_mirror(shared, repo).map_err(|e| DaemonError::Git(e.to_string()))?;
    let branch = request.branch.clone().or_else(|| mirror.default_branch());
    let spec = request
        .commit
        .clone()
        .or_else(|| branch.clone())
        .unwrap_or_else(|| "HEAD".into());
    let oid = match mirror.resolve_commit(&spec) {
        Ok(oid) => oid,
        Err(_) => {
            let mut mirror = mirror;
            mirror
                .fetch()
                .map_err(|e| DaemonError::Git(e.to_string()))?;
            mirror
                .resolve_commit(&spec)
                .map_err(|e| DaemonError::Git(e.to_string()))?
        }
    };
    let mirror =
        Mirror::open(&shared.state_dir, &repo.name).map_err(|e| DaemonError::Git(e.to_string()))?;
    let catalog = Catalog::at(&mirror, oid).map_err(|e| DaemonError::Git(e.to_string()))?;
    let Some((workflow_file, wf)) = catalog.by_name(&request.workflow) else {
        return Err(match catalog.invalid_by_stem(&request.workflow) {
            Some(diagnostics) => DaemonError::InvalidWorkflow {
                workflow: request.workflow.clone(),
                diagnostics: diagnostics.to_string(),
            },
            None => DaemonError::UnknownWorkflow {
                workflow: request.workflow.clone(),
                repo: repo.name.clone(),
            },
        });
    };
    if request.trigger == TriggerKind::Manual && wf.on.manual.as_ref().is_some_and(|m| !m.value) {
        return Err(DaemonError::ManualDisabled(wf.name.value.clone()));
    }
    let parameters = dsl::params::resolve_json(wf, &request.parameters).map_err(|errors| {
        DaemonError::InvalidParameters(errors.iter().map(ToString::to_string).collect())
    })?;
    let trigger = Trigger {
        kind: request.trigger,
        commit: Some(oid.to_string()),
        branch,
        scheduled_for: None,
    };
    let (group, overlap) = concurrency_of(wf, &repo.name, &parameters, &trigger);
    let run = NewRun {
        workflow: wf.name.value.clone(),
        repo: Some(repo.name.clone()),
        trigger,
        parameters: Value::Object(parameters),
        priority: wf.metadata.priority.as_ref().map(|p| p.value).unwrap_or(0),
        concurrency_group: group,
        dedup_key: None,
        retry_of: None,
        workflow_file: Some(workflow_file.to_string()),
        overlap: overlap::mode(overlap, request.trigger),
        event: None,
    };
    Ok(run)
}

/// A workflow's concurrency group and overlap rule: `concurrency.group` rendered against the
/// run's parameters, `workflow` and `repo` (the workflow's name when the section has no
/// group or the template cannot be rendered; the same rule as push and cron runs);
/// `None` without the section.
pub(crate) fn concurrency_of(
    wf: &dsl::Workflow,
    repo: &str,
    parameters: &Map<String, Value>,
    trigger: &Trigger,
) -> (Option<String>, Option<Overlap>) {
    let Some(c) = &wf.concurrency else {
        return (None, None);
    };
    let fallback = wf.name.value.clone();
    let group = match &c.group {
        None => fallback,
        Some(t) => {
            let mut ctx = dsl::expr::MapContext::new(Map::new())
                .with_base_env(crate::engine::step_env::base_env(&[]));
            ctx.insert("parameters", Value::Object(parameters.clone()));
            ctx.insert("workflow", serde_json::json!({ "name": wf.name.value }));
            ctx.insert(
                "repo",
                serde_json::json!({
                    "name": repo,
                    "branch": trigger.branch,
                    "commit": trigger.commit,
                }),
            );
            match t.render(&ctx) {
                Ok(Value::String(s)) if !s.is_empty() => s,
                Ok(Value::Null) | Err(_) => fallback,
                Ok(other) => other.to_string(),
            }
        }
    };
    (Some(group), Some(c.overlap.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_render_parameters() {
        let (wf, _) = dsl::parse_str(
            "w.yaml",
            "workflow:\n  name: w\n  parameters:\n    - name: env\n  concurrency:\n    group: deploy-${{ parameters.env }}\n    overlap: skip\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n",
        )
        .expect("valid");
        let mut p = Map::new();
        p.insert("env".into(), Value::from("prod"));
        let t = Trigger::new(TriggerKind::Manual);
        let (group, overlap) = concurrency_of(&wf, "app", &p, &t);
        assert_eq!(group.as_deref(), Some("deploy-prod"));
        assert_eq!(overlap, Some(Overlap::Skip));
    }
}
